"""TensorFlow Lite Micro as the outside referee for the MLPerf Tiny int8 models
(KWS DS-CNN, VWW MobileNetV1, the IC ResNet with ADD, the AD autoencoder).

Imports each .tflite, runs our integer reference and TFLM's interpreter on the
same inputs (>= 500 random, saturating edge cases, and the real KWS sample) and
compares every tensor TFLM keeps, including the logits before the softmax
(softmax saturates and would hide +-1 errors).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tinyds import calib, reference
from tinyds.frontends.tflite import load_tflite, schema

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                              reason="TFLM referee needs `pip install --pre tflite-micro`")

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny"
N_RANDOM = 500
CHUNK = 100


def _model(name: str) -> Path:
    p = MODELS / f"{name}.tflite"
    if not p.exists():
        pytest.skip(f"{p} is missing: the MLPerf Tiny models live in ../shared (not in the repo)")
    return p


def kws_sample() -> np.ndarray:
    """The quantized input in MLPerf Tiny's kws_input_data.cc (1, 49, 10, 1)."""
    text = (MODELS / "kws_input_data.cc").read_text()
    body = text[text.index("g_kws_inputs"):]
    vals = [int(v) for v in re.findall(r"-?\d+", body[body.index("{"):])]
    return np.array(vals, np.int8).reshape(1, 49, 10, 1)


def inputs_for(name: str, shape) -> np.ndarray:
    rng = np.random.default_rng(20240501)
    xs = [rng.integers(-128, 128, (N_RANDOM, *shape[1:]), dtype=np.int8),
          np.full((1, *shape[1:]), -128, np.int8), np.full((1, *shape[1:]), 127, np.int8)]
    if name == "kws_ref_model":
        xs.append(kws_sample())
    return np.concatenate(xs)


def tflite_tensor_index(path: Path) -> dict[str, int]:
    S = schema()
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(path.read_bytes(), 0))
    names = [t.name.decode() for t in m.subgraphs[0].tensors]
    assert len(set(names)) == len(names), "tensor names must be unique to map them"
    return {n: i for i, n in enumerate(names)}


@pytest.mark.parametrize("name", ["kws_ref_model", "vww_96_int8",
                                  "pretrainedResnet_quant", "ad01_int8"])
def test_reference_equals_tflm_on_every_tensor(name):
    path = _model(name)
    g = load_tflite(path)
    index = tflite_tensor_index(path)
    # every op output except the flatten the importer inserts before FULLY_CONNECTED
    compared = [op.outputs[0] for op in g.ops if op.outputs[0] in index]
    assert len(compared) >= len(g.ops) - 1
    for op in g.ops:
        if op.type == "softmax":
            assert op.inputs[0] in compared    # the logits are compared too

    interp = runtime.Interpreter.from_file(
        str(path), intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    xs = inputs_for(name, g.input.shape)
    bad = dict.fromkeys(compared, 0)
    total = 0
    for start in range(0, len(xs), CHUNK):
        batch = xs[start:start + CHUNK]
        ours = reference.run_all(g, batch)
        for n in range(len(batch)):
            interp.set_input(batch[n:n + 1], 0)
            interp.invoke()
            for t in compared:
                theirs = interp.GetTensor(index[t], 0)["tensor_data"]
                bad[t] += int(np.count_nonzero(theirs.reshape(-1) != ours[t][n].reshape(-1)))
                total += theirs.size
    print(f"\n{name}: {len(xs)} inputs, {len(compared)} tensors, {total} bytes compared, "
          f"{sum(bad.values())} differ")
    assert not any(bad.values()), {t: b for t, b in bad.items() if b}


def _tflm_all(interp, xs, index: dict[str, int], names) -> dict[str, np.ndarray]:
    """Every named tensor TFLM computed for each input of xs, stacked on axis 0."""
    out = {n: [] for n in names}
    for n in range(len(xs)):
        interp.set_input(xs[n:n + 1], 0)
        interp.invoke()
        for t in names:
            out[t].append(interp.GetTensor(index[t], 0)["tensor_data"].reshape(-1))
    return {t: np.stack(v) for t, v in out.items()}


def test_tflm_runs_our_quantization_like_our_reference():
    """export_tflite of a graph using every op: TFLM re-derives all integer params from
    our float32 scales, so agreement on every tensor means requant.py is TFLM's Prepare."""
    from test_tflite_import import small_graph
    from tinyds.export_tflite import export_tflite

    g = small_graph(seed=3)
    buf = export_tflite(g)
    S = schema()
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(buf, 0))
    index = {t.name.decode(): i for i, t in enumerate(m.subgraphs[0].tensors)}
    names = [op.outputs[0] for op in g.ops]
    interp = runtime.Interpreter.from_bytes(
        buf, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    rng = np.random.default_rng(7)
    xs = np.concatenate([rng.integers(-128, 128, (300, *g.input.shape[1:]), dtype=np.int8),
                         np.full((1, *g.input.shape[1:]), -128, np.int8),
                         np.full((1, *g.input.shape[1:]), 127, np.int8)])
    theirs = _tflm_all(interp, xs, index, names)
    ours = reference.run_all(g, xs)
    bad = {t: int(np.count_nonzero(theirs[t] != ours[t].reshape(len(xs), -1))) for t in names}
    assert not any(bad.values()), bad


@pytest.mark.parametrize("name", ["kws_ref_model", "vww_96_int8"])
def test_generated_c_equals_tflm(name):
    from oputil import run_c, tflm_model

    path = _model(name)
    g = load_tflite(path)
    xs = inputs_for(name, g.input.shape)
    theirs = tflm_model(path.read_bytes(), xs)
    got = run_c(g, xs, sanitize=False)
    bad = int(np.count_nonzero(got != theirs))
    print(f"\n{name}: generated C vs TFLM on {len(xs)} inputs: {bad} bytes differ")
    assert bad == 0


@pytest.mark.parametrize("name", ["kws_ref_model", "vww_96_int8"])
def test_tflm_arena_size(name):
    """TFLM's smallest working arena; its head (tensor memory) bounds any planner from below
    by the largest op's input + output."""
    from tinyds.export_tflite import tflm_arena_size

    path = _model(name)
    g = load_tflite(path)
    sizes = tflm_arena_size(path.read_bytes())
    print(f"\n{name}: TFLM arena {sizes}")
    largest = max(sum(g.tensors[t].nbytes for t in op.inputs + op.outputs
                      if t and not g.tensors[t].is_const) for op in g.ops)
    assert largest <= sizes["head"] <= sizes["total"]


@pytest.mark.parametrize("zoo_name", ["ds_stack", "dscnn", "mobilenet_v1", "mobilenet_v2", "act_mix",
                                      "mobilenet_v3", "conv1d_kws"])
def test_exported_pytorch_model_runs_in_tflm_like_our_reference(zoo_name):
    """`export-tflite` of each PyTorch test model: TFLM on that file equals our reference on
    every tensor, so our quantizer's arithmetic is TFLite's."""
    import torch

    import models
    from tinyds import frontends, passes, quantize
    from tinyds.export_tflite import export_tflite

    model, example = models.build(zoo_name)
    torch.manual_seed(1)
    batch = calib.for_graph(g0 := frontends.from_module(model, example),
                            torch.randn(32, *example.shape[1:]).numpy())
    g = passes.optimize(g0)
    qg, _ = quantize.quantize(g, batch)
    buf = export_tflite(qg)
    S = schema()
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(buf, 0))
    index = {t.name.decode(): i for i, t in enumerate(m.subgraphs[0].tensors)}
    names = [op.outputs[0] for op in qg.ops]
    interp = runtime.Interpreter.from_bytes(
        buf, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    xs = np.concatenate([quantize.quantize_input(qg, batch),
                         np.random.default_rng(2).integers(-128, 128, (100, *qg.input.shape[1:]),
                                                           dtype=np.int8)])
    theirs = _tflm_all(interp, xs, index, names)
    ours = reference.run_all(qg, xs)
    bad = {t: int(np.count_nonzero(theirs[t] != ours[t].reshape(len(xs), -1))) for t in names}
    print(f"\n{zoo_name}: {len(xs)} inputs, {len(names)} tensors, {sum(bad.values())} bytes differ")
    assert not any(bad.values()), bad


def test_export_refuses_an_average_pool_tflite_cannot_express():
    """OpMix's AvgPool2d(2, stride=2, padding=1, count_include_pad=False) pads the top row:
    TFLite's only padded average pool is SAME, which pads bottom/right, and a PAD op would
    change the divisor. Export must say so, not write a model that computes something else."""
    import models
    from tinyds import frontends, passes, quantize
    from tinyds.errors import TinydsError
    from tinyds.export_tflite import export_tflite

    model, example = models.build("opmix")
    g = passes.optimize(frontends.from_module(model, example))
    qg, _ = quantize.quantize(g, np.random.default_rng(0).standard_normal(
        (8, *g.input.shape[1:])).astype(np.float32))
    with pytest.raises(TinydsError, match=r"avg2: pool padding \(1, 1, 1, 1\)"):
        export_tflite(qg)
