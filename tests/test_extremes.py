"""Extreme values and shapes: each model generates C that verifies bit-exactly, or is refused
with one line naming the layer and the value, before any large allocation."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn as nn

import tinyds
from test_cli import assert_one_line_error, run
from tinyds import verify
from tinyds.errors import TinydsError

SHAPE = (1, 1, 8, 8)


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 4, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def _set(index: int, attr: str, value: float, where=(0,)):
    def edit(m, calib):
        getattr(m[index], attr).data[where] = value
        return calib
    return edit


def _scale_layer(index: int, factor: float):
    def edit(m, calib):
        m[index].weight.data *= factor
        m[index].bias.data *= factor
        return calib
    return edit


def _calib(value: float):
    def edit(m, calib):
        calib = calib.copy()
        calib[0, 0, 0, 0] = value
        return calib
    return edit


# (case, edit of (model, calib), None if it must verify, else words the refusal names)
CASES = [
    ("conv weight 1e30", _set(0, "weight", 1e30, (0, 0, 0, 0)), None),
    ("pointwise weight 3e38", _set(4, "weight", 3e38, (0, 0, 0, 0)), None),
    ("linear weight 3e38", _set(7, "weight", 3e38, (0, 0)), None),
    ("BatchNorm mean 2e15", _set(1, "running_mean", 2e15), None),
    ("BatchNorm gammas 1e-37", _set(1, "weight", 1e-37, slice(None)), ["layer 0", "shift"]),
    ("calibration 3e38", _calib(3e38), None),
    ("calibration NaN", _calib(float("nan")), ["calibration", "NaN"]),
    ("activations near 1e-30", _scale_layer(4, 1e-30), None),
    ("inputs near 1e-30", lambda m, calib: calib * np.float32(1e-30), None),
]


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_extreme_values_verify_or_refuse(case, tmp_path, capsys):
    _, edit, words = next(c for c in CASES if c[0] == case)
    m = net()
    calib = edit(m, np.random.default_rng(0).standard_normal((16, *SHAPE[1:])).astype(np.float32))
    out = tmp_path / "out"
    if words is not None:
        with pytest.raises(TinydsError) as e:
            tinyds.convert(m, calib, mcu="cortex-m4", out=out, log=lambda *a: None)
        for w in words:
            assert w.lower() in str(e.value).lower(), (w, str(e.value))
        assert not out.exists()
        return
    res = tinyds.convert(m, calib, mcu="cortex-m4", out=out, log=lambda *a: None)
    v = verify.verify(res.out_dir, n_random=100)
    assert v.ok, v.text()
    assert "Warning" not in capsys.readouterr().err


@pytest.fixture
def scripted(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(net()).save(str(path))
    return path


def test_huge_input_shape_is_refused_by_the_parser(scripted, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(capsys, "generate", scripted, "--input-shape", "1,1,100000,100000", "-o", tmp_path / "o")
    assert e.value.code == 2 and "elements" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_input_beyond_the_mcu_ram_is_refused_before_quantizing(scripted, tmp_path, capsys):
    t0 = time.perf_counter()
    rc, _, err = run(capsys, "generate", scripted, "--input-shape", "1,1,1000,1000", "-o",
                     tmp_path / "o")
    assert time.perf_counter() - t0 < 5.0
    assert_one_line_error(rc, err, "scripted.pt", "RAM")
    assert not (tmp_path / "o").exists()
