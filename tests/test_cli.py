"""`tinyds generate` / `tinyds verify` from the user's side: every bad input
exits 2 with one `tinyds: error:` line and no traceback, and leaves no output
folder behind; good input generates and verifies. Bad files are built here."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from tinyds.cli import main
from tinyds.errors import TinydsError

REPO = Path(__file__).resolve().parent.parent


class Tiny(nn.Module):
    """Conv + BN + ReLU6, a depthwise-separable block, global pool, FC."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.pw = nn.Conv2d(4, 6, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.clamp(self.bn(self.conv(x)), 0, 6)
        x = torch.relu(self.pw(self.dw(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Tanh(Tiny):
    def forward(self, x):
        return torch.tanh(super().forward(x))


SHAPE = (1, 1, 8, 8)


def traced(model: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.trace(model.eval(), torch.zeros(SHAPE)), str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    good = traced(Tiny(), d / "tiny.pt")
    data = good.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "corrupt.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save(Tiny().state_dict(), d / "weights.pt")
    torch.save(Tiny(), d / "pickled.pt")
    traced(Tanh(), d / "tanh.pt")
    torch.jit.script(Tiny().eval()).save(str(d / "scripted.pt"))
    nan = Tiny()
    with torch.no_grad():
        nan.pw.weight[2, 1, 0, 0] = float("nan")
    traced(nan, d / "nan.pt")
    rng = np.random.default_rng(1)
    np.save(d / "calib.npy", rng.standard_normal((64, *SHAPE[1:])).astype(np.float32))
    np.save(d / "calib_nhwc.npy", rng.standard_normal((64, 8, 8, 1)).astype(np.float32))
    np.save(d / "calib_object.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (d / "calib_text.npy").write_text("not numpy")
    return {p.name: p for p in d.iterdir()}


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_one_line_error(rc, err, *words):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyds: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


BAD = [
    # (case, model file, extra args, words the message must contain)
    ("missing file", "nope.pt", [], ["nope.pt"]),
    ("corrupt", "corrupt.pt", [], ["corrupt.pt"]),
    ("truncated", "truncated.pt", [], ["truncated.pt"]),
    ("state_dict", "weights.pt", [], ["weights.pt", "architecture"]),
    ("pickle without opt-in", "pickled.pt", [], ["pickled.pt", "--allow-pickle"]),
    ("unsupported op", "tanh.pt", ["--calib", "calib.npy"], ["tanh"]),
    ("NaN weights", "nan.pt", ["--calib", "calib.npy"], ["NaN"]),
    ("calib layout", "tiny.pt", ["--calib", "calib_nhwc.npy"], ["(N, 1, 8, 8)"]),
    ("calib pickled", "tiny.pt", ["--calib", "calib_object.npy"], ["calib_object.npy"]),
    ("calib not npy", "tiny.pt", ["--calib", "calib_text.npy"], ["calib_text.npy"]),
    ("calib missing", "tiny.pt", ["--calib", "nope.npy"], ["nope.npy"]),
    ("unknown mcu", "tiny.pt", ["--mcu", "z80"], ["z80", "stm32f4"]),
    ("bad name", "tiny.pt", ["--name", "my-net"], ["my-net", "identifier"]),
    ("name shadows a C header", "tiny.pt", ["--name", "stdint"], ["<stdint.h>", "m_stdint"]),
    ("name of a firmware file", "tiny.pt", ["--name", "board"], ["board.c"]),
    ("name too long", "tiny.pt", ["--name", "n" * 250], ["250 characters"]),
]


@pytest.mark.parametrize("case, model, extra, words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_and_no_output(case, model, extra, words, files, tmp_path, capsys):
    resolve = lambda a: files.get(a, a)                   # noqa: E731
    out = tmp_path / "out"
    rc, _, err = run(capsys, "generate", resolve(model), *map(resolve, extra), "-o", out)
    assert_one_line_error(rc, err, *words)
    assert list(tmp_path.iterdir()) == []                 # no output folder, no temp folder


def test_existing_user_folder_is_refused_untouched(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    rc, _, err = run(capsys, "generate", files["tiny.pt"], "--calib", files["calib.npy"], "-o", out)
    assert_one_line_error(rc, err, "not a tinyds output")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_verify_of_a_folder_that_is_not_output(tmp_path, capsys):
    rc, _, err = run(capsys, "verify", tmp_path)
    assert_one_line_error(rc, err, "not a tinyds output", "tinyds generate")


def test_generate_and_verify(files, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "generate", files["tiny.pt"], "--calib", files["calib.npy"],
                          "-o", out)
    assert rc == 0, err
    assert "SYNTHETIC" not in err and "top-1 agreement" in stdout and "arena" in stdout
    assert (out / "lib" / "tiny" / "tiny.h").is_file()
    rc, stdout, _ = run(capsys, "verify", out)
    assert rc == 0 and "mismatches: 0 -> OK" in stdout


@pytest.mark.parametrize("mcu, optimize, kind", [("stm32f4", "speed", "fast"),
                                                 ("stm32f4", "size", "portable"),
                                                 ("cortex-m0plus", "speed", "portable")])
def test_generate_reports_each_layers_kernel(files, tmp_path, capsys, mcu, optimize, kind):
    """--optimize and --mcu pick the kernels; generate says which layer runs which, and
    tinyds.json records the fast layers."""
    import json
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "generate", files["tiny.pt"], "--calib", files["calib.npy"],
                          "--mcu", mcu, "--optimize", optimize, "-o", out)
    assert rc == 0, err
    report = stdout[stdout.index(f"kernels for {mcu} (--optimize {optimize})"):].splitlines()
    kinds = [line.split()[2].rstrip(":") for line in report[1:] if " conv2d " in line]
    # Tiny's first conv has 4 output channels (fast on a DSP core), its pointwise 6 (not in fours)
    assert kinds == (["fast", "portable"] if kind == "fast" else ["portable", "portable"]), report
    fast = json.loads((out / "tinyds.json").read_text())["fast_layers"]
    assert bool(fast) == (kind == "fast")
    rc, stdout, _ = run(capsys, "verify", out)
    assert rc == 0 and "mismatches: 0 -> OK" in stdout


def test_export_tflite_is_the_quantization_generate_uses(files, tmp_path, capsys):
    from tinyds import reference
    from tinyds.frontends.tflite import load_tflite
    from tinyds.bundle import load_graph
    out, tfl = tmp_path / "out", tmp_path / "tiny.tflite"
    assert run(capsys, "generate", files["tiny.pt"], "--calib", files["calib.npy"], "-o", out)[0] == 0
    rc, stdout, err = run(capsys, "export-tflite", files["tiny.pt"], "--calib", files["calib.npy"],
                          "-o", tfl)
    assert rc == 0, err
    x = np.random.default_rng(3).integers(-128, 128, (200, 8, 8, 1), dtype=np.int8)
    generated = reference.run_all(load_graph(out / "verify"), x)
    exported = reference.run_all(load_tflite(tfl), x)
    assert len(generated) == len(exported)
    for (_, a), (_, b) in zip(generated.items(), exported.items()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_verify_on_qemu_and_bench(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "generate", files["tiny.pt"], "--calib", files["calib.npy"], "-o", out)[0] == 0
    rc, stdout, err = run(capsys, "verify", out, "--target", "qemu", "--vectors", "50")
    assert rc == 0, err
    assert "mismatches: 0 vectors (0 bytes) -> OK" in stdout
    rc, stdout, err = run(capsys, "bench", out)
    assert rc == 0, err
    lines = {line.split()[1]: line.split() for line in stdout.splitlines()
             if line.strip()[:1].isdigit()}
    # conv: 8*8*4 outputs x 9 taps x 1 channel; pointwise 8*8*6 x 4
    assert lines["conv"][4] == str(8 * 8 * 4 * 9) and lines["pw"][4] == str(8 * 8 * 6 * 4)
    assert int(lines["conv"][5]) > 0 and "sample output: matches the reference" in stdout
    assert "TFLM arena for tinyds's .tflite export of the PyTorch model:" in stdout


@pytest.mark.parametrize("model, extra", [
    ("pickled.pt", ["--allow-pickle", "--input-shape", "1,1,8,8"]),
    ("scripted.pt", ["--input-shape", "1x1x8x8"]),
])
def test_models_that_need_an_input_shape(model, extra, files, tmp_path, capsys):
    """Without --input-shape the calibration batch's shape stands in; with neither (synthetic
    calibration) the error asks for it."""
    argv = ["generate", files[model], "-o", tmp_path / "out"]
    without = [a for a in extra if a != "--input-shape" and "8" not in a]
    rc, _, err = run(capsys, *argv, "--calib", "synthetic", *without)
    assert_one_line_error(rc, err, model, "--input-shape")
    assert not (tmp_path / "out").exists()
    for i, shape in enumerate((extra, without)):        # given, then taken from --calib
        out = tmp_path / f"out{i}"
        rc, _, err = run(capsys, *argv[:-1], out, "--calib", files["calib.npy"], *shape)
        assert rc == 0, err
        assert (out / "lib" / model[:-3] / f"{model[:-3]}.c").is_file()


def test_a_pickled_modules_class_is_found_in_the_current_folder(tmp_path):
    """The installed `tinyds` script does not put the current folder on sys.path, where a
    user's model class usually lives; --allow-pickle looks there."""
    (tmp_path / "mynet.py").write_text(
        "import torch.nn as nn\n"
        "class MyNet(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(72, 3)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.conv(x).flatten(1))\n")
    runner = tmp_path / "bin" / "tinyds_script.py"        # like the console script: elsewhere
    runner.parent.mkdir()
    runner.write_text("import sys\nfrom tinyds.cli import main\nsys.exit(main())\n")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", "import torch, mynet; "
                    "torch.save(mynet.MyNet(), 'net.pt')"], cwd=tmp_path, check=True, env={
                        **env, "PYTHONPATH": f"{REPO}:{tmp_path}"})
    res = subprocess.run([sys.executable, str(runner), "inspect", "net.pt", "--allow-pickle",
                          "--input-shape", "1,1,8,8"], cwd=tmp_path, capture_output=True,
                         text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "conv2d" in res.stdout and "fits" in res.stdout


def test_without_calib_is_refused(files, tmp_path, capsys):
    for cmd, out in (("generate", tmp_path / "out"), ("export-tflite", tmp_path / "m.tflite")):
        rc, stdout, err = run(capsys, cmd, files["tiny.pt"], "-o", out)
        assert_one_line_error(rc, err, "--calib", "--calib synthetic")
        assert stdout == "" and list(tmp_path.iterdir()) == []


def test_synthetic_calib_says_so_on_every_accuracy_line(files, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "generate", files["tiny.pt"], "--calib", "synthetic", "-o", out,
                          "--name", "smoke")
    assert rc == 0
    assert "WARNING" in err and "SYNTHETIC" in err
    lines = stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("layer") and "SNR dB" in ln)
    end = next(i for i, ln in enumerate(lines) if "top-1 agreement" in ln)
    measured = lines[head + 1:end + 1]          # each layer's SNR, then agreement and SNR
    assert len(measured) >= 6 and all("SYNTHETIC" in ln for ln in measured), stdout
    assert (out / "lib" / "smoke" / "smoke.c").is_file()


def test_the_installed_command_prints_no_traceback(files, tmp_path):
    res = subprocess.run([sys.executable, "-m", "tinyds", "generate", str(files["weights.pt"]),
                          "-o", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert_one_line_error(res.returncode, res.stderr, "architecture")
    assert res.stdout == "" and not (tmp_path / "out").exists()


def test_python_api_converts_a_module_in_hand(tmp_path, capsys):
    import tinyds
    from tinyds import verify
    calib = np.random.default_rng(2).standard_normal((32, *SHAPE[1:])).astype(np.float32)
    res = tinyds.convert(Tiny().eval(), calib, mcu="cortex-m4", out=tmp_path / "out")
    assert res.name == "Tiny" and res.report.agreement >= 90.0
    assert f"arena {res.arena_bytes} bytes" in capsys.readouterr().out
    v = verify.verify(res.out_dir, n_random=200)
    assert v.ok and v.calibration == 32
    with pytest.raises(TinydsError, match="input shape"):
        tinyds.convert(Tiny().eval(), out=tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    capsys.readouterr()
    with pytest.raises(TinydsError, match="--calib synthetic"):
        tinyds.convert(Tiny().eval(), input_shape=SHAPE, out=tmp_path / "out3")
    assert not (tmp_path / "out3").exists()
    res = tinyds.convert(Tiny().eval(), "synthetic", input_shape=SHAPE, out=tmp_path / "out3",
                         name="smoke")
    assert "SYNTHETIC" in capsys.readouterr().err and res.report.synthetic


KWS_TFLITE = REPO.parent / "shared" / "models" / "mlperf-tiny" / "kws_ref_model.tflite"


@pytest.mark.skipif(not KWS_TFLITE.exists(), reason="the MLPerf Tiny models live in ../shared")
def test_int8_tflite_calib_becomes_verify_vectors(tmp_path, capsys):
    good = tmp_path / "calib.npy"
    np.save(good, np.random.default_rng(3).standard_normal((12, 49, 10, 1)).astype(np.float32) * 20)
    bad = tmp_path / "calib_nchw.npy"
    np.save(bad, np.zeros((12, 1, 49, 10), np.float32))
    rc, _, err = run(capsys, "generate", KWS_TFLITE, "--calib", bad, "-o", tmp_path / "out")
    assert_one_line_error(rc, err, "(N, 49, 10, 1)")
    assert not (tmp_path / "out").exists()
    rc, _, err = run(capsys, "generate", KWS_TFLITE, "--calib", good, "-o", tmp_path / "out")
    assert rc == 0 and "SYNTHETIC" not in err
    rc, stdout, _ = run(capsys, "verify", tmp_path / "out", "--vectors", "20")
    assert rc == 0 and "12 quantized calibration" in stdout


ZOO = ["ds_stack", "dscnn", "mobilenet_v1", "mobilenet_v2", "opmix"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["traced", "pt2"])
@pytest.mark.parametrize("zoo_name", ZOO)
def test_zoo_models_generate_and_verify_bit_exact(zoo_name, fmt, tmp_path, capsys, zoo_files):
    """Every test-zoo net, from TorchScript and from torch.export, through the CLI:
    the generated C must match the reference on every byte (verify exits 0)."""
    import models
    paths = zoo_files(zoo_name)
    calib = tmp_path / "calib.npy"
    np.save(calib, models.sample_inputs(models.SHAPES[zoo_name], 64, seed=5).numpy())
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "generate", paths[fmt], "--calib", calib, "-o", out, "--name", "net")
    assert rc == 0, err
    assert "top-1 agreement" in stdout
    rc, stdout, _ = run(capsys, "verify", out, "--vectors", "1000" if fmt == "traced" else "200")
    assert rc == 0 and "mismatches: 0 -> OK" in stdout, stdout


@pytest.fixture(scope="module")
def generated(files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("generated") / "out"
    assert main(["generate", str(files["tiny.pt"]), "--calib", str(files["calib.npy"]),
                 "-o", str(out)]) == 0
    return out


def _copy(generated: Path, tmp_path: Path) -> Path:
    import shutil
    return Path(shutil.copytree(generated, tmp_path / "out"))


def test_output_name_too_long_for_the_file_system(files, tmp_path, capsys):
    rc, _, err = run(capsys, "generate", files["tiny.pt"], "-o", tmp_path / ("x" * 300))
    assert_one_line_error(rc, err, "cannot be the output folder", "too long")
    assert list(tmp_path.iterdir()) == []


def test_a_users_own_tinyds_json_does_not_make_the_folder_ours(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tinyds.json").write_text('{"my": "settings"}')
    rc, _, err = run(capsys, "generate", files["tiny.pt"], "-o", out)
    assert_one_line_error(rc, err, "not a tinyds output")
    assert (out / "tinyds.json").read_text() == '{"my": "settings"}'
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_output_folder_gets_the_users_umask(generated):
    import os
    mask = os.umask(0)
    os.umask(mask)
    assert generated.stat().st_mode & 0o777 == 0o777 & ~mask


def test_export_tflite_never_writes_over_its_input(files, tmp_path, capsys):
    model = tmp_path / "tiny.pt"
    model.write_bytes(files["tiny.pt"].read_bytes())
    rc, _, err = run(capsys, "export-tflite", model, "-o", tmp_path / "." / "tiny.pt")
    assert_one_line_error(rc, err, "never writes over its input")
    assert model.read_bytes() == files["tiny.pt"].read_bytes()


def test_sigterm_during_generate_leaves_no_temp_folder(files, tmp_path, monkeypatch, capsys):
    import os
    import signal
    from tinyds.outputs import firmware
    monkeypatch.setattr(firmware, "write",
                        lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as e:
        main(["generate", str(files["tiny.pt"]), "--calib", "synthetic", "-o",
              str(tmp_path / "out")])
    assert e.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before       # main restores the handler


def test_verify_times_out_on_a_run_that_never_returns(generated, tmp_path, monkeypatch, capsys):
    import tempfile
    from tinyds import verify
    out = _copy(generated, tmp_path)
    c = out / "lib" / "tiny" / "tiny.c"
    c.write_text(c.read_text().replace("int tiny_run(const int8_t *input, int8_t *output)\n{",
                                       "int tiny_run(const int8_t *input, int8_t *output)\n{\n"
                                       "    for (volatile int spin = 1; spin;) {}", 1))
    monkeypatch.setattr(verify, "RUN_TIMEOUT_S", 3)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    rc, _, err = run(capsys, "verify", out, "--vectors", "5")
    assert_one_line_error(rc, err, "did not finish", "3 s")
    assert list(temp.iterdir()) == []


def _damage(path: str, blob):
    def edit(out: Path):
        target = out / path
        target.write_bytes(blob(target) if callable(blob) else blob)
    return edit


BUNDLE_DAMAGE = [
    ("model.npz garbage", _damage("verify/model.npz", b"PK\x03\x04 not a zip"), ["model"]),
    ("vectors.npy garbage", _damage("verify/vectors.npy", b"\x93NUMPY garbage"), ["vectors.npy"]),
    ("vectors.npy wrong shape", lambda out: np.save(out / "verify" / "vectors.npy",
                                                    np.zeros((3, 7), np.int8)), ["vectors.npy"]),
    ("unknown op", _damage("verify/model.json", lambda p: p.read_bytes().replace(
        b'"type": "conv2d"', b'"type": "teleport"', 1)), ["unknown op", "teleport"]),
    ("vectors.npy missing", lambda out: (out / "verify" / "vectors.npy").unlink(),
     ["vectors.npy", "0 vectors", "says 64"]),
    ("vectors.npy empty", lambda out: np.save(out / "verify" / "vectors.npy",
                                              np.zeros((0, 8, 8, 1), np.int8)), ["vectors.npy"]),
    ("tinyds.json a list", _damage("tinyds.json", b"[1, 2]"), ["not a tinyds output"]),
    ("tinyds.json bad name", _damage("tinyds.json", lambda p: p.read_bytes().replace(
        b'"name": "tiny"', b'"name": "../../etc"')), ["tinyds.json", "identifier"]),
]


@pytest.mark.parametrize("case", [b[0] for b in BUNDLE_DAMAGE])
def test_damaged_bundle_is_one_line(case, generated, tmp_path, capsys):
    _, edit, words = next(b for b in BUNDLE_DAMAGE if b[0] == case)
    out = _copy(generated, tmp_path)
    edit(out)
    rc, _, err = run(capsys, "verify", out, "--vectors", "5")
    assert_one_line_error(rc, err, *words)


def test_verify_vectors_must_be_positive(generated, capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify", str(generated), "--vectors", "-1"])
    assert e.value.code == 2 and "positive number of vectors" in capsys.readouterr().err


CONST_ARRAY = r"(static const u?int(?:8|16|32)_t ({})\[\d+\] = \{{\s*)(0x[0-9a-f]+|-?\d+)"


def _plus_one(c_file: Path, array: str) -> None:
    """Change the first element of one const array by one unit: +1 (-1 at int8's top), or
    the low int16 lane of a packed hex word."""
    def bump(m):
        v = m.group(3)
        if v.startswith("0x"):
            return m.group(1) + f"0x{int(v, 16) ^ 1:0{len(v) - 2}x}"
        return m.group(1) + str(int(v) - 1 if int(v) >= 127 else int(v) + 1)
    c_file.write_text(re.sub(CONST_ARRAY.format(re.escape(array)), bump, c_file.read_text(),
                             count=1))


@pytest.mark.parametrize("mcu", ["cortex-m0plus", "stm32f4"])
def test_one_unit_in_any_bias_or_weight_fails_verify(mcu, files, tmp_path, capsys):
    src = tmp_path / "src"
    assert main(["generate", str(files["tiny.pt"]), "--calib", str(files["calib.npy"]),
                 "--mcu", mcu, "-o", str(src)]) == 0
    from tinyds import verify
    arrays = [m.group(2) for m in re.finditer(CONST_ARRAY.format(r"\w+"),
                                              (src / "lib/tiny/tiny.c").read_text())
              if m.group(2).endswith(("bias", "weights", "stream"))]
    assert len(arrays) >= 5, arrays
    for array in arrays:
        out = Path(shutil.copytree(src, tmp_path / array))
        _plus_one(out / "lib/tiny/tiny.c", array)
        v = verify.verify(out, n_random=50)
        assert not v.ok and v.edited == ["tiny.c"], array


def test_realistic_vectors_stay_off_the_rails(files, tmp_path, capsys):
    """Uniform int8 saturates a network; the realistic half sits near the calibration data
    and the input zero point."""
    from tinyds import verify
    out = tmp_path / "out"
    assert main(["generate", str(files["tiny.pt"]), "--calib", str(files["calib.npy"]),
                 "-o", str(out)]) == 0
    o = verify.load_output(out)
    x = verify.verify_inputs(o.qg, o.stored, 1000).reshape(-1, 64).astype(np.int32)
    n_cal, zp = len(o.stored), o.qg.input.qparams[1]
    noisy, normal = x[3 + n_cal:3 + n_cal + 500], x[3 + n_cal + 500:3 + n_cal + 1000]
    near = np.abs(noisy[:, None, :] - o.stored.reshape(1, -1, 64).astype(np.int32)).max(2).min(1)
    assert near.max() <= 3                      # each is a calibration vector plus <= 3 LSB
    assert abs(normal.mean() - zp) < 1 and 4 < normal.std() < 32
    rails = lambda v: np.isin(v, (-128, 127)).mean()       # noqa: E731
    assert rails(normal) < 0.02 and rails(x[-1000:]) > 0.005


@pytest.mark.parametrize("mcu", ["cortex-m0plus", "stm32f4"])
def test_verify_names_the_first_layer_that_differs(mcu, files, tmp_path, capsys):
    """A weight changed far enough to move bytes: verify's layer dump names that layer,
    even before the final output shows it, and the layers before it stay clean."""
    src = tmp_path / "out"
    assert main(["generate", str(files["tiny.pt"]), "--calib", str(files["calib.npy"]),
                 "--mcu", mcu, "-o", str(src)]) == 0
    from tinyds import verify
    c_file = src / "lib/tiny/tiny.c"
    clean = verify.verify(src, n_random=20)
    assert clean.ok and clean.layers.layers >= 5 and not clean.layers.first
    name = next(m.group(2) for m in re.finditer(CONST_ARRAY.format(r"\w+"), c_file.read_text())
                if "depthwise" in m.group(2) and m.group(2).endswith(("weights", "wtaps")))
    layer = int(re.search(r"_l(\d+)_", name).group(1))
    text = c_file.read_text()
    m = re.search(CONST_ARRAY.format(re.escape(name)), text)
    v = m.group(3)
    bumped = (f"0x{int(v, 16) ^ 0x3F:0{len(v) - 2}x}" if v.startswith("0x")
              else str(int(v) - 60 if int(v) > 0 else int(v) + 60))
    c_file.write_text(text[:m.start(3)] + bumped + text[m.end(3):])
    v = verify.verify(src, n_random=20)
    assert not v.ok and v.layers.first.startswith(f"layer {layer} "), v.layers.first
    assert "FIRST DIFFERENCE at layer" in v.text()
