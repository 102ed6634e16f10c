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
from tinyds import frontends, passes, quantize, reference, targets
from tinyds.errors import TinydsError
from tinyds.export_tflite import export_tflite
from tinyds.frontends.tflite import load_tflite, schema

sys.path.insert(0, str(Path(__file__).parent))
from oputil import in_parallel, run_c  # noqa: E402

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


@pytest.fixture(scope="module")
def dscnn_files(dscnn, tmp_path_factory):
    """The trained DS-CNN as TorchScript, its calibration batch (NCHW) and held-out data."""
    import torch
    d = tmp_path_factory.mktemp("dscnn16")
    model, task = models.trained("dscnn")
    x, _ = task.draw(256, seed=11)
    torch.jit.save(torch.jit.trace(model, x[:1]), d / "dscnn.pt")
    np.save(d / "calib.npy", x.numpy())
    held, labels = task.draw(200, seed=12)
    np.savez(d / "test.npz", x=held.numpy(), y=labels.numpy())
    return d


@pytest.fixture(scope="module")
def generated16(dscnn_files, tmp_path_factory):
    from tinyds.cli import main
    out = tmp_path_factory.mktemp("gen16") / "out"
    assert main(["-q", "generate", str(dscnn_files / "dscnn.pt"), "--calib",
                 str(dscnn_files / "calib.npy"), "--activations", "int16", "-o", str(out)]) == 0
    return out


def test_generate_and_verify_host_bit_exact(generated16, capsys):
    """`tinyds generate --activations int16` + `tinyds verify`: every output and every
    layer's bytes equal the reference, -O2, ASan+UBSan and arm-none-eabi-gcc clean."""
    from tinyds.cli import main
    header = (generated16 / "lib" / "dscnn" / "dscnn.h").read_text()
    assert "int dscnn_run(const int16_t *input, int16_t *output);" in header
    assert "typedef int16_t dscnn_input_t;" in header and "typedef int16_t dscnn_output_t;" in header
    capsys.readouterr()
    assert main(["verify", str(generated16)]) == 0
    text = capsys.readouterr().out
    assert "release: 2259 vectors run, 0 mismatching" in text and "random int16" in text
    assert "every byte of every layer equals the reference" in text
    assert main(["verify", str(generated16), "--target", "micropython"]) == 2
    assert "--micropython takes int8 models only" in capsys.readouterr().err


def test_eval_and_inspect_of_the_16x8_model(generated16, dscnn_files, capsys):
    from tinyds.cli import main
    capsys.readouterr()
    assert main(["eval", str(dscnn_files / "dscnn.pt"), "--data", str(dscnn_files / "test.npz"),
                 "--out", str(generated16)]) == 0
    text = capsys.readouterr().out
    assert "int16 reference" in text and "(200 of 200 outputs byte-identical" in text
    assert main(["inspect", str(dscnn_files / "dscnn.pt"), "--activations", "int16"]) == 0
    text = capsys.readouterr().out
    meta = __import__("json").loads((generated16 / "tinyds.json").read_text())
    assert f"arena: {meta['arena_bytes']} B planned" in text          # what generate planned
    assert "input 980 B, output 24 B" in text                          # 490 and 12 int16 values


def test_cli_export_tflite_int16_and_refusals(dscnn_files, tmp_path, capsys):
    from tinyds.cli import main
    path = tmp_path / "m16.tflite"
    assert main(["export-tflite", str(dscnn_files / "dscnn.pt"), "--calib",
                 str(dscnn_files / "calib.npy"), "--activations", "int16", "-o", str(path)]) == 0
    g = load_tflite(path)
    assert g.input.dtype == "int16" and g.output.dtype == "int16"
    capsys.readouterr()
    # a 16x8 .tflite generates as it is; --micropython and --activations int16 on int8 refuse
    out = tmp_path / "out"
    assert main(["generate", str(path), "--micropython", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--micropython takes int8 models only" in err
    assert not out.exists()
    int8 = tmp_path / "m8.tflite"
    assert main(["export-tflite", str(dscnn_files / "dscnn.pt"), "--calib",
                 str(dscnn_files / "calib.npy"), "-o", str(int8)]) == 0
    capsys.readouterr()
    assert main(["generate", str(int8), "--activations", "int16", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an int8 model; --activations int16" in err
    assert main(["generate", str(path), "-o", str(out)]) == 0
    assert main(["verify", str(out), "--vectors", "50"]) == 0


QEMU_CORES = ["stm32f4", "cortex-m0plus"]


@pytest.fixture(scope="module")
def qemu_runs(generated16):
    """verify_qemu on each core, side by side (they wait on the compiler and QEMU)."""
    from tinyds.firmware import verify_qemu
    return in_parallel({mcu: lambda mcu=mcu: verify_qemu(generated16, n_random=20, target=targets.get(mcu))
                        for mcu in QEMU_CORES})


@pytest.mark.slow
@pytest.mark.parametrize("mcu", QEMU_CORES)
def test_qemu_verify_is_bit_exact(qemu_runs, mcu):
    """The 16x8 library cross-built for the core, run on its QEMU machine: every output and
    every layer's bytes (int64 accumulation on ARMv7E-M and on ARMv6-M's 32x32 multiply)."""
    q = qemu_runs[mcu]()
    assert q.ok and q.vectors == 299, q.text()
    assert q.layers.layers == 12 and not q.layers.first
