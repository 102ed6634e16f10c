"""`tinyds inspect`: per-layer costs counted by hand, the plan generate will use, and a
model too big for the MCU refused by generate before any calibration runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from tinyds import analyze, frontends, passes, targets

from test_cli import assert_one_line_error, run

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits_dscnn.pt"
CALIB = REPO / "examples" / "digits_calib.npy"


class Small(nn.Module):
    """conv 3x3 (1->4, pad 1) + BN + ReLU, depthwise 3x3 stride 2, pointwise 4->6, pool, FC 6->3."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)
        self.pw = nn.Conv2d(4, 6, 1, bias=False)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.pw(self.dw(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_costs_counted_by_hand(tmp_path):
    path = tmp_path / "small.pt"
    torch.jit.save(torch.jit.trace(Small().eval(), torch.zeros(1, 1, 8, 8)), str(path))
    a = analyze.analyze(passes.optimize(frontends.load(path)), targets.get("cortex-m3"), "size",
                        "small")
    rows = [(layer.op, layer.inputs, layer.output, layer.macs, layer.params,
             layer.activation_bytes) for layer in a.layers]
    assert rows == [
        ("conv2d", [(1, 8, 8, 1)], (1, 8, 8, 4), 8 * 8 * 4 * 9, 4 * 9 + 4, 8 * 8 * 4),
        ("depthwise_conv2d", [(1, 8, 8, 4)], (1, 4, 4, 4), 4 * 4 * 4 * 9, 4 * 9 + 4, 4 * 4 * 4),
        # no bias in torch: bias correction adds one, as when generate quantizes
        ("conv2d", [(1, 4, 4, 4)], (1, 4, 4, 6), 4 * 4 * 6 * 4, 6 * 4 + 6, 4 * 4 * 6),
        ("mean", [(1, 4, 4, 6)], (1, 1, 1, 6), 4 * 4 * 6, 0, 6),   # global average pool
        ("reshape", [(1, 1, 1, 6)], (1, 6), 0, 0, 6),
        ("fully_connected", [(1, 6)], (1, 3), 6 * 3, 6 * 3 + 3, 3),
    ]
    # portable conv weights: int8 weights + int32 bias + int32 multiplier and shift per channel
    assert a.layers[0].weight_bytes == 4 * 9 + 4 * 4 + 2 * 4 * 4
    assert a.macs == 2304 + 576 + 384 + 96 + 18 and a.params == 40 + 40 + 30 + 21
    assert a.fits and "small on cortex-m3" in a.text() and a.text().endswith("fits")
    # the timeline lists, per layer, the arena buffers it needs: the conv's input and output
    assert len(a.timeline) == len(a.layers)
    assert max(off + size for step in a.timeline for _, off, size in step) <= a.arena_bytes


def test_inspect_agrees_with_generate(tmp_path, capsys):
    rc, stdout, err = run(capsys, "inspect", DIGITS, "--mcu", "stm32f4")
    assert rc == 0, err
    out = tmp_path / "out"
    assert run(capsys, "generate", DIGITS, "--calib", CALIB, "-o", out)[0] == 0
    meta = json.loads((out / "tinyds.json").read_text())
    assert f"arena: {meta['arena_bytes']} B planned" in stdout
    weights = sum(int(ln.split()[7]) for ln in stdout.splitlines()[1:9])
    assert weights == meta["weight_bytes"]
    assert stdout.strip().endswith("fits")


class Big(nn.Module):
    """3x96x96 in, 64 channels at full resolution: 590 KB of activations."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.pw = nn.Conv2d(64, 64, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.pw(torch.relu(self.dw(torch.relu(self.conv(x))))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("big")
    torch.jit.save(torch.jit.trace(Big().eval(), torch.zeros(1, 3, 96, 96)), str(d / "big.pt"))
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((64, 3, 96, 96))
            .astype(np.float32))
    return d


def test_a_model_that_cannot_fit_is_refused_before_calibration(big, tmp_path, capsys,
                                                               monkeypatch):
    from tinyds import float_ref, quantize

    def never(*a, **k):
        raise AssertionError("calibration ran for a model that cannot fit")
    monkeypatch.setattr(float_ref, "run", never)
    monkeypatch.setattr(quantize, "quantize", never)
    rc, _, err = run(capsys, "generate", big / "big.pt", "--calib", big / "calib.npy",
                     "--mcu", "stm32f4", "-o", tmp_path / "out")
    assert_one_line_error(rc, err, "big.pt", "does not fit stm32f4", "RAM")
    assert not (tmp_path / "out").exists()
    rc, stdout, _ = run(capsys, "inspect", big / "big.pt", "--mcu", "STM32F4")
    assert rc == 1 and "DOES NOT FIT: RAM" in stdout
    assert "1x96x96x64" in stdout and str(96 * 96 * 64 * 27) in stdout    # the first conv


@pytest.mark.parametrize("zoo_name", ["mobilenet_v2", "mobilenet_v3", "act_mix"])
def test_deep_and_activation_nets_inspect(zoo_name):
    """Stand-in ranges stay bounded through fifty layers (no float32 overflow) and keep
    sigmoid's and hardswish's input scales ordinary: inspect answers for every zoo net."""
    import models
    model, example = models.build(zoo_name)
    g = passes.optimize(frontends.from_module(model, example))
    ranges = analyze.standin_ranges(g)
    spread = analyze.STANDIN_SPREAD * analyze.STANDIN_RANGE[1]
    assert all(1 / spread <= hi <= spread for _, hi in ranges.values())
    a = analyze.analyze(g, targets.get("stm32f4"))
    assert a.fits and len(a.layers) == len(g.ops)
