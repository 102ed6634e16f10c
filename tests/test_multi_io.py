"""Models with several inputs and outputs, end to end on a trained two-input, two-output
DS-CNN (models.TwoHead: a classification head on an image, a regression head on the image's
features and a side vector): every frontend lowers it alike, the int8 model keeps both
heads' accuracy, TFLite Micro running its export-tflite agrees on every output and every
intermediate tensor, and the generated C (NAME_run_multi, the per-input/output macros and
helpers) is bit-exact on the host and on QEMU; bad calibration data gets one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import models
from test_cli import assert_one_line_error, run
from tinyds.cli import main
from tinyds import float_ref, frontends, passes, quantize, reference, verify
from tinyds.codegen import render_library
from tinyds.errors import TinydsError
from tinyds.export_tflite import export_tflite
from tinyds.frontends.tflite import load_tflite

sys.path.insert(0, str(Path(__file__).parent))
from oputil import tflm_model  # noqa: E402

HELD_OUT = 1000


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    model, task = models.trained_two_head()
    d = tmp_path_factory.mktemp("two_head")
    (image, side), _ = task.draw(200, seed=1)
    example = (image[:1], side[:1])
    traced = d / "two_head.pt"
    torch.jit.trace(model, example).save(str(traced))
    pt2 = d / "two_head.pt2"
    torch.export.save(torch.export.export(model, example), str(pt2))
    np.savez(d / "calib.npz", image=image.numpy(), side=side.numpy())
    calib = [image.permute(0, 2, 3, 1).numpy(), side.numpy()]
    qg, report = quantize.quantize(passes.optimize(frontends.load(traced)), calib)
    return SimpleNamespace(model=model, task=task, dir=d, traced=traced, pt2=pt2,
                           calib_npz=d / "calib.npz", calib=calib, qg=qg, report=report)


def _int8_inputs(two, n_random=300, seed=3):
    """The quantized calibration inputs, then random int8 ones, as a batch per input."""
    rng = np.random.default_rng(seed)
    q = quantize.quantize_input(two.qg, two.calib)
    return [np.concatenate([b, rng.integers(-128, 128, (n_random, *b.shape[1:]), dtype=np.int8)])
            for b in q]


def test_every_frontend_lowers_both_inputs_and_outputs(two):
    """Traced and scripted TorchScript, .pt2 and the module in hand: the same inputs and
    outputs, in forward's order, and float outputs equal to PyTorch's."""
    scripted = two.dir / "scripted.pt"
    torch.jit.script(two.model).save(str(scripted))
    image, side = (torch.from_numpy(b[:16].copy()) for b in two.calib)
    with torch.no_grad():
        want = two.model(image.permute(0, 3, 1, 2), side)
    graphs = {"traced": frontends.load(two.traced), "pt2": frontends.load(two.pt2),
              "scripted": frontends.load(scripted, input_shape=[(1, 1, 16, 16), (1, 4)]),
              "module": frontends.from_module(two.model, [image[:1].permute(0, 3, 1, 2),
                                                          side[:1]])}
    for kind, g in graphs.items():
        assert g.inputs == ["image", "side"], kind
        assert [g.tensors[n].shape for n in g.inputs] == [(1, 16, 16, 1), (1, 4)], kind
        assert len(g.outputs) == 2, kind
        values = float_ref.run(passes.optimize(g), [image.numpy(), side.numpy()])
        for w, name in zip(want, g.outputs):
            np.testing.assert_allclose(values[name], w.numpy(), atol=1e-4, err_msg=kind)


def test_int8_keeps_both_heads_on_held_out_data(two):
    """Judged on a trained net: classification agrees with float, the regression head
    stays within a small fraction of its targets' spread, and each output depends on the
    inputs it should."""
    (image, side), (y, target) = two.task.draw(HELD_OUT, seed=99)
    x = [image.permute(0, 2, 3, 1).numpy(), side.numpy()]
    with torch.no_grad():
        f_cls, f_reg = (t.numpy() for t in two.model(image, side))
    q = reference.run_all(two.qg, quantize.quantize_input(two.qg, x))
    q_cls = quantize.dequantize_output(two.qg, q[two.qg.outputs[0]], 0)
    q_reg = quantize.dequantize_output(two.qg, q[two.qg.outputs[1]], 1)
    assert (f_cls.argmax(1) == y.numpy()).mean() > 0.9          # the float net learned
    agreement = (q_cls.argmax(1) == f_cls.argmax(1)).mean()
    assert agreement >= 0.98, agreement
    assert len(np.unique(q_cls.argmax(1))) == 3
    spread = target.numpy().std(axis=0)
    err = np.abs(q_reg - f_reg).mean(axis=0)
    assert (err < 0.05 * spread).all(), (err, spread)
    # at its task int8 adds under 1% of the targets' spread to float's error
    f_err = np.abs(f_reg - target.numpy()).mean(axis=0)
    q_err = np.abs(q_reg - target.numpy()).mean(axis=0)
    assert (q_err <= f_err + 0.01 * spread).all(), (q_err, f_err, spread)

    # the side input moves only the regression head, byte for byte
    xq = quantize.quantize_input(two.qg, [x[0][:64], x[1][:64]])
    moved = [xq[0], np.roll(xq[1], 1, axis=0)]
    a, b = reference.run_all(two.qg, xq), reference.run_all(two.qg, moved)
    np.testing.assert_array_equal(a[two.qg.outputs[0]], b[two.qg.outputs[0]])
    assert (a[two.qg.outputs[1]] != b[two.qg.outputs[1]]).any(axis=1).mean() > 0.5


def test_report_lists_every_input(two):
    rows = two.report.rows()
    assert [r[:2] for r in rows[:2]] == [("image", "input"), ("side", "input")]
    assert "top-1 agreement" in two.report.text()


runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                              reason="TFLM referee needs `pip install --pre tflite-micro`")


def test_tflm_equals_the_reference_on_every_output_and_intermediate(two, tmp_path):
    """TFLM on tinyds's export-tflite of the model, every tensor it keeps (both inputs set,
    both outputs read), and the export read back gives the same graph I/O and bytes."""
    data = export_tflite(two.qg)
    xs = _int8_inputs(two)
    ours = reference.run_all(two.qg, xs)
    theirs = tflm_model(data, xs)
    assert len(theirs) == 2
    for name, t in zip(two.qg.outputs, theirs):
        np.testing.assert_array_equal(t, ours[name])

    path = tmp_path / "two_head.tflite"
    path.write_bytes(data)
    g = load_tflite(path)
    assert g.inputs == two.qg.inputs and g.outputs == two.qg.outputs
    np.testing.assert_array_equal(reference.run_packed(g, xs), reference.run_packed(two.qg, xs))

    from test_tflm_referee import tflite_tensor_index
    index = tflite_tensor_index(path)
    names = [op.outputs[0] for op in two.qg.ops if op.outputs[0] in index]
    assert len(names) == len(two.qg.ops)          # every layer's output
    it = runtime.Interpreter.from_bytes(
        data, arena_size=1 << 18, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    bad = 0
    for n in range(len(xs[0])):
        for i, b in enumerate(xs):
            it.set_input(b[n:n + 1], i)
        it.invoke()
        for t in names:
            got = it.GetTensor(index[t], 0)["tensor_data"].reshape(-1)
            bad += int(np.count_nonzero(got != ours[t][n].reshape(-1)))
    assert bad == 0


def test_generated_c_api_for_several_inputs_and_outputs(two, tmp_path):
    """NAME.h's macros per input/output, NAME_run_multi (static arena, inputs and outputs
    in it at NAME_input(i)/NAME_output(i) or the caller's buffers) and its twin in the
    caller's arena, and the per-input/output quantize helpers, against the reference."""
    files, lib = render_library(two.qg, "th")
    header = files["th.h"]
    for line in ("#define TH_INPUT_COUNT 2", "#define TH_OUTPUT_COUNT 2",
                 "#define TH_INPUT0_SIZE 256", "#define TH_INPUT1_SIZE 4",
                 "#define TH_INPUT0_SHAPE {1, 16, 16, 1}", "#define TH_OUTPUT0_SIZE 3",
                 "#define TH_OUTPUT1_SIZE 2", "#define TH_INPUT_SIZES {256, 4}",
                 "#define TH_OUTPUT_TOTAL_SIZE 5",
                 "int th_run_multi(const int8_t *const inputs[], int8_t *const outputs[]);"):
        assert line in header, line
    assert "int th_run(" not in header and "th_quantize_input1(" in header
    s1, zp1 = two.qg.tensors["side"].qparams
    assert f"#define TH_INPUT1_ZERO_POINT ({zp1})" in header
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    in_arena, out_arena = lib.plan.input_in_arena, lib.plan.output_in_arena
    xs = [b[:8] for b in _int8_inputs(two, n_random=4)]
    want = reference.run_all(two.qg, xs)
    floats = [two.calib[0][:1].reshape(-1), two.calib[1][:1].reshape(-1)]
    main = tmp_path / "main.c"
    main.write_text(_c_program(xs, floats, in_arena, out_arena))
    for arena_flags in ([], ["-DTH_EXTERNAL_ARENA"]):
        exe = tmp_path / f"main{len(arena_flags)}"
        subprocess.run([verify.compiler(), *verify.CFLAGS, "-O1", "-fsanitize=address,undefined",
                        *arena_flags, "-I", str(tmp_path), str(main), str(tmp_path / "th.c"),
                        str(tmp_path / "th_io.c"), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
        def rows(tag):
            return np.stack([np.array(line.split()[1:], int) for line in out.splitlines()
                             if line.startswith(tag + " ")])
        got_cls, got_reg = rows("y0"), rows("y1")
        per_run = 1 if arena_flags else 2      # static: run_multi on caller's and in-arena buffers
        np.testing.assert_array_equal(got_cls, np.repeat(want[two.qg.outputs[0]], per_run, 0))
        np.testing.assert_array_equal(got_reg, np.repeat(want[two.qg.outputs[1]], per_run, 0))
        q = [int(v) for v in next(line for line in out.splitlines()
                                  if line.startswith("q")).split()[1:]]
        want_q = np.concatenate([quantize.quantize_input(two.qg, f[None], i).reshape(-1)
                                 for i, f in enumerate(floats)])
        assert q == want_q.tolist()
        assert ("null ok" in out) == (not arena_flags and (in_arena or out_arena))


def _c_program(xs, floats, in_arena: bool, out_arena: bool) -> str:
    """Runs each vector through th_run_multi (static arena: with the caller's buffers and
    with the arena's own; external arena: th_run_multi_with_arena), printing y0/y1 rows."""
    def arr(name, ctype, values):
        return f"static const {ctype} {name}[] = {{{', '.join(map(str, values))}}};"
    return "\n".join([
        "#include <stdio.h>", "#include <string.h>", "#include <stdint.h>", '#include "th.h"',
        arr("x0", "int8_t", xs[0].reshape(-1).tolist()), arr("x1", "int8_t", xs[1].reshape(-1).tolist()),
        arr("f0", "float", [repr(float(v)) + "f" for v in floats[0]]),
        arr("f1", "float", [repr(float(v)) + "f" for v in floats[1]]),
        "static void show(const int8_t *const y[]) {",
        "    printf(\"y0\"); for (int i = 0; i < TH_OUTPUT0_SIZE; i++) printf(\" %d\", y[0][i]);",
        "    printf(\"\\ny1\"); for (int i = 0; i < TH_OUTPUT1_SIZE; i++) printf(\" %d\", y[1][i]);",
        "    printf(\"\\n\");", "}",
        "int main(void) {",
        "    int8_t a[TH_INPUT0_SIZE], b[TH_INPUT1_SIZE], c[TH_OUTPUT0_SIZE], d[TH_OUTPUT1_SIZE];",
        "    int8_t q[TH_INPUT_TOTAL_SIZE];",
        "    th_quantize_input0(f0, q); th_quantize_input1(f1, q + TH_INPUT0_SIZE);",
        "    printf(\"q\"); for (int i = 0; i < TH_INPUT_TOTAL_SIZE; i++) printf(\" %d\", q[i]);",
        "    printf(\"\\n\");",
        "#ifdef TH_EXTERNAL_ARENA",
        "    static union { int32_t align; int8_t bytes[TH_ARENA_SIZE]; } arena;",
        "#endif",
        f"    for (int n = 0; n < {len(xs[0])}; n++) {{",
        "        memcpy(a, x0 + n * TH_INPUT0_SIZE, TH_INPUT0_SIZE);",
        "        memcpy(b, x1 + n * TH_INPUT1_SIZE, TH_INPUT1_SIZE);",
        "        const int8_t *in[2] = {a, b};",
        "        int8_t *out[2] = {c, d};",
        "        const int8_t *shown[2] = {c, d};",
        "#ifdef TH_EXTERNAL_ARENA",
        "        if (th_run_multi_with_arena(arena.bytes, in, out) != 0) return 1;",
        "        show(shown);",
        "#else",
        "        if (th_run_multi(in, out) != 0) return 1;",
        "        show(shown);",
        *(["        memcpy(th_input(0), a, TH_INPUT0_SIZE); memcpy(th_input(1), b, TH_INPUT1_SIZE);",
           "        const int8_t *own_in[2] = {th_input(0), th_input(1)};"] if in_arena else
          ["        const int8_t *own_in[2] = {a, b};"]),
        *(["        int8_t *own_out[2] = {th_output(0), th_output(1)};"] if out_arena else
          ["        int8_t *own_out[2] = {c, d};"]),
        "        if (th_run_multi(own_in, own_out) != 0) return 1;",
        "        const int8_t *own_shown[2] = {own_out[0], own_out[1]};",
        "        show(own_shown);",
        "#endif",
        "    }",
        "#ifndef TH_EXTERNAL_ARENA",
        *(["    if (th_input(2) == 0 && th_input(-1) == 0) printf(\"null ok\\n\");"] if in_arena else
          ["    if (th_output(2) == 0 && th_output(-1) == 0) printf(\"null ok\\n\");"] if out_arena
          else []),
        "#endif",
        "    return 0;", "}", ""])


def test_generate_and_verify_bit_exact_on_the_host(two, tmp_path, capsys):
    out = tmp_path / "out"
    rc, text, err = run(capsys, "generate", two.traced, "--calib", two.calib_npz, "-o", out,
                        "--mcu", "stm32f4")
    assert rc == 0, err
    rc, text, err = run(capsys, "verify", out)
    assert rc == 0, text + err
    assert "release: 2203 vectors run, 0 mismatching" in text
    assert "every byte of every layer equals the reference" in text
    stored = np.load(out / "verify" / "vectors.npy")
    assert stored.shape == (200, 260)          # both inputs' bytes per vector
    np.testing.assert_array_equal(stored, reference.pack(quantize.quantize_input(
        verify.load_output(out).qg, two.calib)))


@pytest.mark.slow
def test_verify_and_demo_on_qemu(two, tmp_path, capfd):
    """The firmware's vector runner (NAME_run_multi) on the emulated STM32F4, every output
    and layer byte; the demo prints each output and matches the reference's sample."""
    out = tmp_path / "out"
    assert run(capfd, "generate", two.pt2, "--calib", two.calib_npz, "-o", out)[0] == 0
    rc, text, err = run(capfd, "verify", out, "--target", "qemu")
    assert rc == 0, text + err
    assert "mismatches: 0 vectors" in text and "every byte of every layer" in text
    capfd.readouterr()
    rc = main(["run", str(out)])
    text = capfd.readouterr().out           # the firmware's console (QEMU's stdout)
    assert rc == 0, text
    assert text.count("top class") == 2 and "output 1 " in text and "sample match" in text


@pytest.mark.parametrize("arrays, words", [
    ({"image": 0}, ["calib.npz", "input 1 'side'", "input0=..., input1=..."]),
    ({"image": 0, "side": 1, "extra": 1}, ["calib.npz", "'extra'", "none of the model's inputs"]),
    ({"input0": 0, "input1": 1}, None),                       # keyed by position: accepted
    ({"image": 0, "side": 2}, ["calib.npz", "200, 150", "same number of samples"]),
])
def test_calibration_keys_are_checked(two, tmp_path, capsys, arrays, words):
    batches = [np.load(two.calib_npz)["image"], np.load(two.calib_npz)["side"],
               np.load(two.calib_npz)["side"][:150]]
    path = tmp_path / "calib.npz"
    np.savez(path, **{k: batches[v] for k, v in arrays.items()})
    rc, text, err = run(capsys, "export-tflite", two.traced, "--calib", path,
                        "-o", tmp_path / "m.tflite")
    if words is None:
        assert rc == 0 and (tmp_path / "m.tflite").exists(), err
    else:
        assert_one_line_error(rc, err, *words)
        assert not (tmp_path / "m.tflite").exists()


def test_other_bad_input_is_one_line(two, tmp_path, capsys):
    one = tmp_path / "one.npy"
    np.save(one, two.calib[0].transpose(0, 3, 1, 2))
    rc, _, err = run(capsys, "generate", two.traced, "--calib", one, "-o", tmp_path / "o1")
    assert_one_line_error(rc, err, "one.npy", "1 input batch", "2 inputs", "'image', 'side'", "input0")
    scripted = tmp_path / "s.pt"
    torch.jit.script(two.model).save(str(scripted))
    rc, _, err = run(capsys, "inspect", scripted, "--input-shape", "1,1,16,16")
    assert_one_line_error(rc, err, "s.pt", "2 input tensors", "1 input shapes",
                          "--input-shape once per input")
    rc, _, err = run(capsys, "inspect", scripted)
    assert_one_line_error(rc, err, "s.pt", "--input-shape", "once per input")
    rc, text, err = run(capsys, "inspect", scripted, "--input-shape", "1,1,16,16",
                        "--input-shape", "1,4")
    assert rc == 0, err
    assert not (tmp_path / "o1").exists()


def test_a_returned_tensor_twice_is_refused(tmp_path):
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            y = self.fc(x)
            return y, y
    with pytest.raises(TinydsError, match="returns the tensor .* twice; return each output once"):
        frontends.from_module(Twice().eval(), torch.zeros(1, 4))


MPY_API = """
import array
import {name}
m = {name}
print("consts", m.INPUT_COUNT, m.OUTPUT_COUNT, *m.INPUT_SIZES, *m.OUTPUT_SIZES,
      *m.INPUT_ZERO_POINTS, *m.OUTPUT_ZERO_POINTS)
print("scales", *m.INPUT_SCALES, *m.OUTPUT_SCALES)
with open("x.bin", "rb") as f:
    x = f.read()
xs = [bytearray(x[:m.INPUT_SIZES[0]]), bytearray(x[m.INPUT_SIZES[0]:])]
ys = (bytearray(m.OUTPUT_SIZES[0]), bytearray(m.OUTPUT_SIZES[1]))
m.run(xs, ys)
print("y", ys[0].hex(), ys[1].hex(), m.top_class(ys[0], 0))
v = m.dequantize(ys[1], array.array("f", [0.0] * m.OUTPUT_SIZES[1]), 1)
print("v", *v)
f = array.array("f", [0.25, -1.5, 3.0, 100.0])
q = bytearray(4)
m.quantize(f, q, 1)
print("q", q.hex())
for what, call in (("count", lambda: m.run(xs[:1], ys)),
                   ("type", lambda: m.run(xs, [bytearray(3), array.array("f", [0.0] * 2)])),
                   ("notuple", lambda: m.run(xs[0], ys)),
                   ("size", lambda: m.run([xs[1], xs[0]], ys)),
                   ("overlap", lambda: m.run([xs[0], memoryview(ys[0])[:4]], ys)),
                   ("index", lambda: m.top_class(ys[0], 2))):
    try:
        call()
        print("err", what, "none")
    except (TypeError, ValueError) as e:
        print("err", what, type(e).__name__)
"""


@pytest.mark.slow
def test_micropython_natmod_takes_tuples_of_buffers(two, tmp_path, capsys, monkeypatch):
    """--micropython for the two-head net: run(inputs, outputs) with a list or tuple of
    buffers per side, the per-index helpers and constants, the errors, and verify on the
    unix port and MicroPython on QEMU (M4, M3, M0+), every byte of every output."""
    from test_micropython import KIT, _missing
    from tinyds import verify_micropython as mpy_run
    if _missing():
        pytest.skip(_missing())
    if "MPY_DIR" not in __import__("os").environ:
        monkeypatch.setenv("MPY_DIR", str(KIT))
    out = tmp_path / "out"
    assert run(capsys, "generate", two.traced, "--calib", two.calib_npz, "-o", out,
               "--micropython", "--name", "th")[0] == 0
    qg = verify.load_output(out).qg
    x = reference.pack([b[:1] for b in _int8_inputs(two, n_random=0)])
    files = {f.name: f.read_bytes() for f in (out / "micropython" / "x64").glob("*.mpy")}
    files |= {"x.bin": x.tobytes(), "api.py": MPY_API.format(name="th").encode()}
    printed = mpy_run.unix_run(files, "api")
    assert "Traceback" not in printed, printed
    lines = {" ".join(ln.split()[:2]) if ln.startswith("err") else ln.split()[0]: ln.split()
             for ln in printed.splitlines() if ln.strip()}
    (s0, z0), (s1, z1) = (qg.tensors[n].qparams for n in qg.inputs)
    (t0, w0), (t1, w1) = (qg.tensors[n].qparams for n in qg.outputs)
    assert lines["consts"][1:] == list(map(str, [2, 2, 256, 4, 3, 2, z0, z1, w0, w1]))
    assert [np.float32(float(v)) for v in lines["scales"][1:]] == [np.float32(v)
                                                                   for v in (s0, s1, t0, t1)]
    want = reference.run_all(qg, x)
    assert lines["y"][1] == want[qg.outputs[0]].tobytes().hex()
    assert lines["y"][2] == want[qg.outputs[1]].tobytes().hex()
    assert int(lines["y"][3]) == int(want[qg.outputs[0]].argmax())
    np.testing.assert_array_equal(np.array(lines["v"][1:], np.float32),
                                  quantize.dequantize_output(qg, want[qg.outputs[1]], 1)[0])
    f = np.array([[0.25, -1.5, 3.0, 100.0]], np.float32)
    assert lines["q"][1] == quantize.quantize_input(qg, f, 1).tobytes().hex()
    for what, kind in (("count", "ValueError"), ("type", "TypeError"), ("notuple", "TypeError"),
                       ("size", "ValueError"), ("overlap", "ValueError"), ("index", "ValueError")):
        assert lines[f"err {what}"][2] == kind, (what, printed)

    rc, text, err = run(capsys, "verify", out, "--target", "micropython", "--vectors", "100")
    assert rc == 0, text + err
    for arch in ("x64", "armv7emsp", "armv7m", "armv6m"):
        assert any(line.startswith(arch) and ", 0 mismatching" in line
                   for line in text.splitlines()), (arch, text)


def test_python_api_takes_a_list_or_dict_of_batches(two, tmp_path):
    """tinyds.convert with the module in hand: calib as a list in forward's order, or a
    dict keyed by forward's argument names, quantizes exactly as the traced file does."""
    from tinyds.api import quantize_model
    image = two.calib[0].transpose(0, 3, 1, 2)
    for calib in ([image, two.calib[1]], {"side": two.calib[1], "image": image}):
        q = quantize_model(two.model, calib=calib, log=lambda text: None)
        assert q.qg.inputs == ["image", "side"]
        np.testing.assert_array_equal(q.vectors, reference.pack(quantize.quantize_input(
            two.qg, two.calib)))
        for name, t in two.qg.tensors.items():
            if t.is_const:
                np.testing.assert_array_equal(q.qg.tensors[name].data, t.data)


def test_eval_says_it_measures_one_output_classifiers(two, tmp_path, capsys):
    data = tmp_path / "test.npz"
    np.savez(data, x=two.calib[0].transpose(0, 3, 1, 2), y=np.zeros(200, np.int64))
    rc, _, err = run(capsys, "eval", two.traced, "--data", data, "--calib", two.calib_npz)
    assert_one_line_error(rc, err, "two_head.pt", "2 inputs and 2 outputs", "tinyds verify")


class _Detector(torch.nn.Module):
    """One input, two outputs: a class score and a detection-style map (a 1x1 conv head
    over the trunk's 4x4 grid, NHWC-flat in C)."""

    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU6(),
            torch.nn.Conv2d(8, 16, 1), torch.nn.ReLU())
        self.boxes = torch.nn.Conv2d(16, 5, 1)
        self.score = torch.nn.Linear(16, 4)

    def forward(self, x):
        f = self.trunk(x)
        return self.score(f.mean(dim=(2, 3))), self.boxes(f)


def test_detection_heads_from_pt2_tflm_and_c_bit_exact(tmp_path, capsys):
    """A one-input, two-output net from .pt2: TFLM on its export equals the reference on
    both outputs, and generate + verify compares both outputs and every layer."""
    torch.manual_seed(0)
    model = _Detector().eval()
    x = torch.randn(64, 3, 8, 8)
    path = tmp_path / "det.pt2"
    torch.export.save(torch.export.export(model, (x[:1],)), str(path))
    np.save(tmp_path / "calib.npy", x.numpy())
    g = passes.optimize(frontends.load(path))
    assert g.inputs == ["input"] and len(g.outputs) == 2
    assert [g.tensors[n].shape for n in g.outputs] == [(1, 4), (1, 4, 4, 5)]
    qg, _ = quantize.quantize(g, x.permute(0, 2, 3, 1).numpy())
    rng = np.random.default_rng(0)
    xs = np.concatenate([quantize.quantize_input(qg, x.permute(0, 2, 3, 1).numpy()),
                         rng.integers(-128, 128, (64, 8, 8, 3), dtype=np.int8)])
    from oputil import tflm
    scores, boxes = tflm(qg, xs)
    ours = reference.run_all(qg, xs)
    np.testing.assert_array_equal(scores, ours[qg.outputs[0]])
    np.testing.assert_array_equal(boxes, ours[qg.outputs[1]])
    assert len(np.unique(boxes.reshape(len(xs), -1), axis=0)) > 100    # depends on the input

    out = tmp_path / "out"
    assert run(capsys, "generate", path, "--calib", tmp_path / "calib.npy", "-o", out,
               "--mcu", "cortex-m0plus")[0] == 0
    rc, text, err = run(capsys, "verify", out, "--vectors", "200")
    assert rc == 0, text + err
    assert "0 mismatching" in text and "every byte of every layer" in text
    header = (out / "lib" / "det" / "det.h").read_text()
    assert "#define DET_OUTPUT1_SHAPE {1, 4, 4, 5}" in header and "int det_run(" not in header
