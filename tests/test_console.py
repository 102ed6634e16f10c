"""What the command line shows besides results: progress bars on a terminal only (never
when piped, never with --quiet), --version, and one-line errors for a missing optional
dependency and a model traced in training mode."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch

from tinyds import __version__
from tinyds.cli import main

from test_cli import SHAPE, Tiny, assert_one_line_error, run

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits_dscnn.pt"
CALIB = REPO / "examples" / "digits_calib.npy"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def on_a_terminal(argv) -> tuple[int, str]:
    """Run `python -m tinyds argv` with stdout and stderr on a 100x24 pseudo-terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "tinyds", *map(str, argv)], stdin=slave,
                         stdout=slave, stderr=slave, cwd=REPO, env=ENV)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:                  # the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(master)
    return p.wait(timeout=600), out.decode(errors="replace")


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("console") / "out"
    assert main(["-q", "generate", str(DIGITS), "--calib", str(CALIB), "-o", str(out)]) == 0
    return out


def test_progress_on_a_terminal_only(generated):
    rc, shown = on_a_terminal(["verify", generated, "--vectors", "300"])
    assert rc == 0 and "tinyds: NumPy reference, 859 vectors" in shown
    assert "tinyds: C builds and runs" in shown and "mismatches: 0 -> OK" in shown
    rc, quiet = on_a_terminal(["verify", generated, "--vectors", "300", "--quiet"])
    assert rc == 0 and "mismatches: 0 -> OK" in quiet and "tinyds: NumPy" not in quiet
    piped = subprocess.run([sys.executable, "-m", "tinyds", "verify", str(generated),
                            "--vectors", "300"], capture_output=True, text=True, cwd=REPO,
                           env=ENV)
    assert piped.returncode == 0 and piped.stderr == "" and "\r" not in piped.stdout


def test_calibration_progress_and_quiet_generate(tmp_path):
    rc, shown = on_a_terminal(["generate", DIGITS, "--calib", CALIB, "-o", tmp_path / "a"])
    assert rc == 0 and "tinyds: calibrating (float ranges)" in shown
    assert "top-1 agreement" in shown                   # the report as before
    rc, quiet = on_a_terminal(["generate", DIGITS, "--calib", CALIB, "-o", tmp_path / "b", "-q"])
    assert rc == 0 and quiet.strip().splitlines() == [
        f"digits_dscnn: wrote {tmp_path / 'b'} (arena 1204 B, weights 6712 B)"]


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"tinyds {__version__}"


def test_bench_without_pyelftools_names_the_extra(generated, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "elftools", None)          # import elftools fails
    monkeypatch.setitem(sys.modules, "elftools.elf.elffile", None)
    monkeypatch.delitem(sys.modules, "tinyds.bench", raising=False)
    rc, _, err = run(capsys, "bench", generated)
    assert_one_line_error(rc, err, "elftools", "pip install 'tinyds[firmware]'")


def test_export_without_flatbuffers_names_the_extra(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "flatbuffers", None)       # import flatbuffers fails
    rc, _, err = run(capsys, "export-tflite", DIGITS, "--calib", CALIB, "-o", tmp_path / "m.tflite")
    assert_one_line_error(rc, err, "tinyds export-tflite needs", "flatbuffers",
                          "pip install 'tinyds[tflite]'")
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize("tool, package", [
    ("arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"),
    ("qemu-system-arm", "apt-get install qemu-system-arm")])
def test_run_without_a_firmware_tool_says_what_to_install(generated, capsys, monkeypatch,
                                                          tool, package):
    import shutil
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda t, *a, **k: None if t == tool else which(t))
    rc, _, err = run(capsys, "run", generated)
    assert_one_line_error(rc, err, f"{tool}: not found", package)


def test_mcu_is_case_insensitive_and_listed(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "stm32f4, stm32f7, stm32h7, stm32l4, nrf52840, rp2040, cortex-m0plus" in text
    rc, stdout, _ = run(capsys, "inspect", DIGITS, "--mcu", "Cortex-M0PLUS")
    assert rc == 0 and "on cortex-m0plus" in stdout


def test_a_model_traced_in_training_mode_is_refused(tmp_path, capsys):
    path = tmp_path / "train.pt"
    model = Tiny().train()
    torch.jit.save(torch.jit.trace(model, torch.zeros(2, *SHAPE[1:])), str(path))
    rc, _, err = run(capsys, "inspect", path)
    assert_one_line_error(rc, err, "train.pt", "training mode", "model.eval()")


def test_convert_restores_the_modules_training_mode(tmp_path, capsys):
    import numpy as np
    import tinyds
    model = Tiny().train()
    model.bn.eval()                                       # one submodule differs
    calib = np.random.default_rng(0).standard_normal((8, *SHAPE[1:])).astype(np.float32)
    tinyds.convert(model, calib, mcu="cortex-m4", out=tmp_path / "out", log=lambda s: None)
    assert model.training and model.conv.training and not model.bn.training
