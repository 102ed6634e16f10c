"""The vectorized integer references (im2col matmul, one einsum over every window, the
in-place requantization) against TFLM's loops written out literally: per output pixel,
channel and tap, skipping out-of-bounds taps, an int accumulator, and the requantization
of the previous (np.where) formulation. Random shapes, strides, dilations, paddings and
channel multipliers; every byte must be equal."""
from __future__ import annotations

import numpy as np
import pytest

from tinyds.ops import conv2d, depthwise_conv2d

from test_conv2d import random_case as conv_case
from test_depthwise_conv2d import random_case as depthwise_case

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _srdhm(a, b):
    ab = a * b
    t = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(t >= 0, t >> 31, -((-t) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def _requantize(acc, g, op):
    shift = np.asarray(op.attrs["shift"], np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    pre = ((acc << left) + (1 << 31) & 0xFFFFFFFF) - (1 << 31)
    x = _srdhm(pre, np.asarray(op.attrs["multiplier"], np.int64))
    mask = (np.int64(1) << right) - 1
    y = (x >> right) + ((x & mask) > ((mask >> 1) + (x < 0)))
    y = y + int(g.output.zero_point[0])
    return np.clip(y, op.attrs["act_min"], op.attrs["act_max"]).astype(np.int8)


def _loops(g, op, x, depthwise: bool):
    """TFLM ConvPerChannel / DepthwiseConvPerChannel, loop for loop."""
    w = g.tensors[op.inputs[1]].data.astype(np.int64)
    b = g.tensors[op.inputs[2]].data.astype(np.int64) if len(op.inputs) > 2 and op.inputs[2] \
        else None
    off = -int(g.input.zero_point[0])
    (sh, sw), (dh, dw) = op.attrs["stride"], op.attrs["dilation"]
    pt, pl = op.attrs["padding"][:2]
    n, ih, iw, ic = x.shape
    _, oh, ow, oc = g.output.shape
    kh, kw = w.shape[1:3]
    m = op.attrs.get("depth_multiplier", 1)
    acc = np.zeros((n, oh, ow, oc), np.int64)
    for oy in range(oh):
        for ox in range(ow):
            for o in range(oc):
                total = np.zeros(n, np.int64)
                for ky in range(kh):
                    for kx in range(kw):
                        iy, ix = oy * sh - pt + ky * dh, ox * sw - pl + kx * dw
                        if not (0 <= iy < ih and 0 <= ix < iw):
                            continue
                        if depthwise:
                            total += w[0, ky, kx, o] * (x[:, iy, ix, o // m].astype(np.int64) + off)
                        else:
                            total += (x[:, iy, ix, :].astype(np.int64) + off) @ w[o, ky, kx, :]
                acc[:, oy, ox, o] = total + (b[o] if b is not None else 0)
    return _requantize(acc, g, op)


@pytest.mark.parametrize("seed", range(6))
def test_conv2d_reference_equals_the_loops(opkit, seed):
    rng = np.random.default_rng(100 + seed)
    for i in range(8):
        g, x = conv_case(opkit, rng, small=i % 3 == 1, pointwise=i % 4 == 3,
                         wide_shifts=i % 5 == 2)
        op = g.ops[0]
        np.testing.assert_array_equal(conv2d.reference(g, op, x), _loops(g, op, x, False),
                                      err_msg=f"seed {seed} case {i}: {op.attrs}")


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_reference_equals_the_loops(opkit, seed):
    rng = np.random.default_rng(200 + seed)
    for i in range(8):
        g, x = depthwise_case(opkit, rng, small=i % 3 == 1)
        op = g.ops[0]
        np.testing.assert_array_equal(depthwise_conv2d.reference(g, op, x),
                                      _loops(g, op, x, True),
                                      err_msg=f"seed {seed} case {i}: {op.attrs}")


def test_im2col_slices_cover_the_batch(opkit, monkeypatch):
    """A batch whose im2col matrix is split into slices gives the same bytes."""
    g, x = conv_case(opkit, np.random.default_rng(7))
    x = np.concatenate([x] * 5)
    whole = conv2d.reference(g, g.ops[0], x)
    monkeypatch.setattr(conv2d, "IM2COL_BYTES", 1)          # one sample per slice
    np.testing.assert_array_equal(conv2d.reference(g, g.ops[0], x), whole)
    np.testing.assert_array_equal(whole, _loops(g, g.ops[0], x, False))
