"""--activations int16 (TFLite's 16x8 scheme) on a trained DS-CNN: int16 activations with
zero point 0, int8 weights, int64 biases; TFLite Micro runs tinyds's export-tflite of it and
agrees with the NumPy reference on every tensor; the int16 model is closer to float than
the int8 one on held-out data. (tests/ops/test_int16_ops.py covers each op on its own.)"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import models
from tinyds import frontends, passes, quantize, reference
from tinyds.errors import TinydsError
from tinyds.export_tflite import export_tflite
from tinyds.frontends.tflite import load_tflite, schema

sys.path.insert(0, str(Path(__file__).parent))
from oputil import run_c  # noqa: E402

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                              reason="TFLM referee needs `pip install --pre tflite-micro`")


@pytest.fixture(scope="module")
def dscnn():
    """(float graph, int8 graph, int16 graph, held-out float NHWC inputs, labels)."""
    model, task = models.trained("dscnn")
    x, _ = task.draw(256, seed=11)
    g = passes.optimize(frontends.from_module(model, x[:1]))
    calib = x.permute(0, 2, 3, 1).numpy()
    q8, _ = quantize.quantize(g, calib)
    q16, _ = quantize.quantize(g, calib, activations="int16")
    held, labels = task.draw(400, seed=12)
    return g, q8, q16, held.permute(0, 2, 3, 1).numpy(), labels.numpy()


def vectors(qg, x, n_random=100, seed=3):
    """Held-out inputs quantized, the int16 rails, and random int16 values over the whole range."""
    shape = qg.input.shape[1:]
    rng = np.random.default_rng(seed)
    return np.concatenate([
        quantize.quantize_input(qg, x),
        np.stack([np.full(shape, v, np.int16) for v in (-32768, -1, 0, 32767)]),
        rng.integers(-32768, 32768, (n_random, *shape), dtype=np.int16)])


def test_the_graph_is_16x8(dscnn):
    _, q8, q16, _, _ = dscnn
    assert [op.type for op in q16.ops] == [op.type if op.type != "mean" else "avg_pool2d"
                                           for op in q8.ops]
    for op in q16.ops:
        for name in [op.inputs[0], op.outputs[0]]:
            t = q16.tensors[name]
            assert t.dtype == "int16" and t.zero_point[0] == 0
        if op.type in ("conv2d", "depthwise_conv2d", "fully_connected"):
            assert q16.tensors[op.inputs[1]].dtype == "int8"
            assert q16.tensors[op.inputs[2]].dtype == "int64"
            assert q16.tensors[op.inputs[2]].data.dtype == np.int64
        if op.attrs.get("activation") == "relu":
            assert (op.attrs["act_min"], op.attrs["act_max"]) == (0, 32767)
    assert q8.input.dtype == "int8"


def test_tflm_is_bit_exact_on_every_tensor(dscnn):
    """The must-hold: TFLM on export-tflite's 16x8 model, every op's output, every input."""
    _, _, q16, held, _ = dscnn
    buf = export_tflite(q16)
    S = schema()
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(buf, 0))
    sg = m.subgraphs[0]
    types = {t.name.decode(): t.type for t in sg.tensors}
    index = {t.name.decode(): i for i, t in enumerate(sg.tensors)}
    assert types[q16.input.name] == S.TensorType.INT16
    assert {types[op.inputs[2]] for op in q16.ops if op.type == "conv2d"} == {S.TensorType.INT64}
    interp = runtime.Interpreter.from_bytes(
        buf, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    xs = vectors(q16, held[:150])
    ours = reference.run_all(q16, xs)
    names = [op.outputs[0] for op in q16.ops]
    bad = dict.fromkeys(names, 0)
    for n in range(len(xs)):
        interp.set_input(xs[n:n + 1], 0)
        interp.invoke()
        for t in names:
            theirs = interp.GetTensor(index[t], 0)["tensor_data"]
            assert theirs.dtype == np.int16
            bad[t] += int(np.count_nonzero(theirs.reshape(-1) != ours[t][n].reshape(-1)))
    assert not any(bad.values()), bad
    logits = ours[q16.outputs[0]]
    assert len(np.unique(logits.argmax(axis=1))) > 3          # outputs depend on the input
    assert np.abs(logits).max() > 1000                         # int16's range is used


def test_exported_16x8_tflite_imports_back(dscnn, tmp_path):
    _, _, q16, held, _ = dscnn
    path = tmp_path / "dscnn16.tflite"
    path.write_bytes(export_tflite(q16))
    g = load_tflite(path)
    assert g.input.dtype == "int16"
    xs = vectors(q16, held[:50], n_random=20)
    np.testing.assert_array_equal(reference.run(g, xs), reference.run(q16, xs))


def test_int16_is_closer_to_float_than_int8(dscnn):
    """On held-out data of the trained net: output SNR and top-1 agreement with float."""
    g, q8, q16, held, labels = dscnn
    c8, c16 = quantize.compare(g, q8, held), quantize.compare(g, q16, held)
    print(f"\nDS-CNN held-out {len(held)}: int8 SNR {c8.snr_db:.1f} dB agreement "
          f"{c8.agreement:.2f}%, int16 SNR {c16.snr_db:.1f} dB agreement {c16.agreement:.2f}%")
    assert c16.snr_db > c8.snr_db + 6
    assert c16.agreement >= c8.agreement and c16.agreement > 99


def test_ops_without_int16_kernels_are_refused():
    model, x = models.build("opmix")           # max pool, add, softmax
    g = passes.optimize(frontends.from_module(model, x))
    with pytest.raises(TinydsError, match="max_pool2d has no int16 kernel.*--activations int8"):
        quantize.quantize(g, None, activations="int16")


def test_generated_c_equals_reference_and_tflm(dscnn):
    """Host C (-O2 and ASan+UBSan) of the 16x8 DS-CNN, byte for byte, and TFLM's outputs."""
    from oputil import tflm
    _, _, q16, held, _ = dscnn
    xs = vectors(q16, held[:100])
    got = run_c(q16, xs)
    np.testing.assert_array_equal(got, reference.run(q16, xs))
    np.testing.assert_array_equal(got[:60], tflm(q16, xs[:60]).reshape(got[:60].shape))
