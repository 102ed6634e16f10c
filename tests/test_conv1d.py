"""Conv1d keyword spotting end to end: an (N, C, L) model is a 1xL conv2d graph on
(N, 1, L, C); `tinyds generate` takes (N, C, L) calibration data, `verify` finds the C
bit-exact on the host, and TFLite Micro running the `export-tflite` file gives the
same output bytes (test_tflm_referee compares every tensor of the same net)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import models
from tinyds import api, verify
from tinyds.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from oputil import run_c, tflm  # noqa: E402


def test_generate_verify_and_tflm(tmp_path, capsys):
    pytest.importorskip("tflite_micro")
    model, x = models.build("conv1d_kws")
    pt = models.save_torchscript(model, x, tmp_path / "kws1d.pt")
    calib = models.inputs("conv1d_kws", 64).numpy()                 # (N, 10, 49)
    np.save(tmp_path / "calib.npy", calib)
    assert main(["generate", str(pt), "--calib", str(tmp_path / "calib.npy"),
                 "-o", str(tmp_path / "out")]) == 0
    assert verify.verify(tmp_path / "out", n_random=200).ok
    qg = api.quantize_model(pt, calib, log=lambda *a: None).qg
    assert qg.input.shape == (1, 1, 49, 10)
    assert [op.type for op in qg.ops][:3] == ["conv2d", "depthwise_conv2d", "conv2d"]
    assert qg.ops[0].attrs["stride"] == (1, 2) and qg.ops[0].attrs["padding"] == (0, 2, 0, 2)
    xs = np.random.default_rng(3).integers(-128, 128, (200, 1, 49, 10), dtype=np.int8)
    got = run_c(qg, xs, sanitize=False)
    np.testing.assert_array_equal(got, tflm(qg, xs))
    assert len(np.unique(got.argmax(axis=1))) > 1


def test_wrong_calibration_length_names_the_ncl_shape(tmp_path, capsys):
    model, x = models.build("conv1d_kws")
    pt = models.save_torchscript(model, x, tmp_path / "kws1d.pt")
    np.save(tmp_path / "bad.npy", models.inputs("conv1d_kws", 8).numpy()[:, :, :40])
    assert main(["generate", str(pt), "--calib", str(tmp_path / "bad.npy"),
                 "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("calibration data has shape (8, 10, 40), expected (N, 10, 49) (NCL); "
                        "pass a float32 batch of model inputs") and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("via", ["traced", "scripted", "pt2"])
def test_conv1d_pools_and_sequence_output(tmp_path, via):
    """Dilated 'same' Conv1d, avg/max/adaptive pools, keepdim mean and cat over time."""
    from test_frontends import _lower, assert_close

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv1d(3, 6, 3, padding="same", dilation=2)
            self.b = nn.Conv1d(6, 6, 4, stride=2, groups=6)
            self.bn = nn.BatchNorm1d(6)

        def forward(self, x):
            y = torch.relu(self.bn(self.b(nn.functional.avg_pool1d(self.a(x), 3, 1, 1))))
            y = nn.functional.max_pool1d(y, 2)
            z = nn.functional.adaptive_avg_pool1d(y, 1) + y.mean(2, keepdim=True)
            return torch.cat([y, z], dim=2)

    m = M()
    m.bn.running_mean.uniform_(-1, 1)
    g, m, x = _lower(m, (1, 3, 21), tmp_path, via)
    assert g.tensors[g.outputs[0]].shape == (1, 1, 5, 6)
    assert_close(g, m, x)
