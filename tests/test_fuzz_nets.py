"""Random architectures through generate + verify on the host and on the emulated Cortex-M4
(the fast kernels' assembly): each is bit-exact with the reference, or generate refuses it
with a TinydsError; nothing else may happen.

Profiles: "ci" (default: 60 nets, under a minute) and "long" (TINYDS_FUZZ=long, for local runs).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, example, given, settings, strategies as st

import tinyds
from tinyds import verify
from tinyds.errors import TinydsError

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
PROFILE = os.environ.get("TINYDS_FUZZ", "ci")


class Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


@st.composite
def conv_block(draw, channels: int, size: int):
    """(layers, channels, size) after one conv or depthwise conv with its BN and clamp."""
    k = draw(st.integers(1, min(7, size + 2)))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.integers(0, (k - 1) * dilation // 2 + 1))
    out = (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    if out < 1:
        k, stride, dilation, padding, out = 1, 1, 1, 0, size
    if draw(st.booleans()):
        mult = draw(st.integers(1, 2))
        conv = nn.Conv2d(channels, channels * mult, k, stride, padding, dilation, groups=channels)
        cout = channels * mult
    else:
        cout = draw(st.integers(1, 8))
        conv = nn.Conv2d(channels, cout, k, stride, padding, dilation)
    layers = [conv]
    if draw(st.booleans()):
        layers.append(nn.BatchNorm2d(cout))
    layers.append(draw(st.sampled_from([nn.ReLU(), nn.ReLU6(), nn.Identity(), nn.Hardswish(),
                                        nn.LeakyReLU(0.1), nn.Sigmoid(), nn.Hardsigmoid(),
                                        nn.PReLU(cout)])))
    return layers, cout, out


@st.composite
def network(draw):
    torch.manual_seed(draw(st.integers(0, 2 ** 16)))
    channels, size = draw(st.integers(1, 3)), draw(st.integers(3, 12))
    shape = (1, channels, size, size)
    layers = []
    for _ in range(draw(st.integers(1, 4))):
        block, cout, out = draw(conv_block(channels, size))
        if draw(st.booleans()) and cout == channels and out == size:
            layers.append(Residual(nn.Sequential(*block)))
        else:
            layers.extend(block)
        channels, size = cout, out
        if size >= 2 and draw(st.booleans()):
            layers.append(draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2)])))
            size //= 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, draw(st.integers(2, 5)))]
    model = nn.Sequential(*layers).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model, shape, draw(st.sampled_from(["traced", "pt2"]))


def _padding_only_depthwise():
    """Found by this test: a depthwise whose every window lies in the padding left `input`
    unused, and -Werror refused the C."""
    torch.manual_seed(0)
    return (nn.Sequential(nn.Conv2d(2, 2, 1, groups=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(2, 2, 1, stride=3, padding=1, groups=2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).eval(),
            (1, 2, 3, 3), "traced")


def _deleted_layer_call():
    """Found by this test on QEMU: GCC 12 -O2 for ARMv7-M deleted the call of the 1->2
    pointwise layer (arena addresses propagated into it, then mod/ref thought it
    did nothing); layers are noipa since."""
    torch.manual_seed(0)
    return (nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Conv2d(1, 2, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).eval(),
            (1, 1, 4, 4), "traced")


@pytest.mark.slow
@settings(settings.get_profile(PROFILE))
@given(net=network())
@example(net=_padding_only_depthwise())
@example(net=_deleted_layer_call())
def test_random_nets_are_bit_exact_or_refused(net, tmp_path_factory):
    model, shape, fmt = net
    d = tmp_path_factory.mktemp("fuzz")
    x = torch.randn(shape)
    path = d / f"net.{'pt' if fmt == 'traced' else 'pt2'}"
    if fmt == "traced":
        torch.jit.save(torch.jit.trace(model, x), str(path))
    else:
        torch.export.save(torch.export.export(model, (x,)), str(path))
    calib = np.random.default_rng(0).standard_normal((32, *shape[1:])).astype(np.float32)
    try:
        res = tinyds.convert(path, calib, mcu="cortex-m4", out=d / "out", log=lambda *a: None)
    except TinydsError:
        assert not (d / "out").exists()
        return
    v = verify.verify(res.out_dir, n_random=100)   # a TinydsError here is a failure
    assert v.ok, v.text()
    from tinyds.firmware import verify_qemu
    q = verify_qemu(res.out_dir, n_random=10)
    assert q.ok, q.text()
