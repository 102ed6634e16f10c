"""uint8 model input and output (TFLite's inference_input_type / inference_output_type):
the trained digits DS-CNN generated with --input-type uint8 --output-type uint8 verifies
bit-exact on the host and in QEMU, its export runs in TFLite Micro like our reference on
every tensor, and the .tflite imports back with its uint8 edges; a uint8 tensor anywhere
else is refused in one line."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tinyds import api, firmware, reference, verify
from tinyds.cli import main
from tinyds.export_tflite import write_tflite
from tinyds.frontends.tflite import load_tflite, schema

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "examples" / "digits_dscnn.pt"
CALIB = REPO / "examples" / "digits_calib.npy"


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def graphs():
    """The digits model quantized twice: int8 edges, and uint8 ones."""
    q8 = api.quantize_model(MODEL, str(CALIB), log=quiet)
    qu = api.quantize_model(MODEL, str(CALIB), log=quiet, input_type="uint8", output_type="uint8")
    return q8, qu


def test_uint8_edges_wrap_the_same_int8_layers(graphs):
    """The converter's form: same scales, zero points + 128, one QUANTIZE at each end; the
    layers between are the int8 model's, so every output is the int8 one with its top bit
    flipped."""
    q8, qu = graphs
    g8, gu = q8.qg, qu.qg
    assert (gu.input.dtype, gu.output.dtype) == ("uint8", "uint8")
    assert [op.type for op in gu.ops] == ["quantize", *[op.type for op in g8.ops], "quantize"]
    assert gu.input.qparams == (g8.input.qparams[0], g8.input.qparams[1] + 128)
    assert gu.output.qparams == (g8.output.qparams[0], g8.output.qparams[1] + 128)
    assert qu.vectors.dtype == np.uint8
    np.testing.assert_array_equal(qu.vectors.view(np.int8) ^ -128, q8.vectors)
    y8, yu = reference.run(g8, q8.vectors), reference.run(gu, qu.vectors)
    np.testing.assert_array_equal(yu.view(np.int8) ^ -128, y8)
    assert len(np.unique(y8.argmax(axis=1))) > 5           # the outputs depend on the input


def test_tflm_runs_the_export_like_our_reference_on_every_tensor(graphs, tmp_path):
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    from test_tflm_referee import _tflm_all

    qg = graphs[1].qg
    path = write_tflite(qg, tmp_path / "digits_u8.tflite")
    m = schema().ModelT.InitFromObj(schema().Model.GetRootAsModel(path.read_bytes(), 0))
    index = {t.name.decode(): i for i, t in enumerate(m.subgraphs[0].tensors)}
    names = [op.outputs[0] for op in qg.ops]
    interp = runtime.Interpreter.from_file(
        str(path), intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    assert interp.get_input_details(0)["dtype"] == np.uint8
    rng = np.random.default_rng(5)
    xs = np.concatenate([graphs[1].vectors[:150],
                         rng.integers(0, 256, (50, *qg.input.shape[1:])).astype(np.uint8)])
    theirs = _tflm_all(interp, xs, index, names)
    ours = reference.run_all(qg, xs)
    bad = {t: int(np.count_nonzero(theirs[t] != ours[t].reshape(len(xs), -1))) for t in names}
    assert not any(bad.values()), bad

    back = load_tflite(path)                       # the uint8 .tflite imports as it was written
    assert (back.input.dtype, back.output.dtype) == ("uint8", "uint8")
    kinds = [op.type for op in back.ops]         # (export adds PADs TFLite needs)
    assert kinds[0] == kinds[-1] == "quantize" and kinds.count("quantize") == 2
    np.testing.assert_array_equal(reference.run(back, xs), ours[qg.outputs[0]])


def test_generate_verify_host_and_qemu(graphs, tmp_path):
    out = tmp_path / "out"
    assert main(["generate", str(MODEL), "--calib", str(CALIB), "--input-type", "uint8",
                 "--output-type", "uint8", "-o", str(out), "-q"]) == 0
    h = (out / "lib" / "digits_dscnn" / "digits_dscnn.h").read_text()
    assert "int digits_dscnn_run(const uint8_t *input, uint8_t *output);" in h
    assert "int digits_dscnn_quantize_input(const float *x, uint8_t *q);" in h
    res = verify.verify(out, n_random=200)
    assert res.ok and res.layers.layers == len(graphs[0].qg.ops) + 2, res.text()
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("the QEMU half needs arm-none-eabi-gcc and qemu-system-arm (make toolchain)")
    q = firmware.verify_qemu(out, n_random=20)
    assert q.ok and q.vectors > 20, q.text()


def test_cli_refuses_a_uint8_tensor_between_layers(tmp_path, capsys):
    """int8 -> uint8 -> int8 inside a graph: TFLM would run it, but only the model's edges
    may be uint8 here; one line names the layer and the fix."""
    from tinyds.ir import Graph, Op, Tensor
    from tinyds.requant import derive_int_params

    def act(name, dtype, zp):
        return Tensor(name, (1, 4, 4, 2), dtype, scale=np.array([0.02], np.float32),
                      zero_point=np.array([zp], np.int64))

    g = Graph("mid", {"x": act("x", "int8", 3), "m": act("m", "uint8", 131), "y": act("y", "int8", 3)},
              [Op("quantize", "to_u8", ["x"], ["m"]), Op("quantize", "to_s8", ["m"], ["y"])],
              ["x"], ["y"])
    path = write_tflite(derive_int_params(g), tmp_path / "mid.tflite")
    assert main(["generate", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "uint8 tensor 'm'" in err and "only the model's input or output" in err
    assert not (tmp_path / "out").exists()
