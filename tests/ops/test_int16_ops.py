"""The 16x8 ops (int16 activations, int8 weights, int64 bias) one at a time: the integer
reference against PyTorch float within 2 LSB (the int64 requantization's Q15 multiplier
costs up to one), the generated C against the reference byte for byte (-O2 and
ASan+UBSan) over seeded sweeps with the int16 rails, and TFLite Micro against the
reference on each op's export-tflite."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinyds import reference
from tinyds.ir import Graph, Op, Tensor
from tinyds.requant import derive_int_params
from tinyds.window import output_size

sys.path.insert(0, str(Path(__file__).parents[1]))
from oputil import run_c, tflm  # noqa: E402

CASES = 6
WEIGHTED = ("conv2d", "depthwise_conv2d", "fully_connected")


def _act(name, shape, scale):
    return Tensor(name, tuple(shape), "int16", scale=np.array([scale], np.float32),
                  zero_point=np.zeros(1, np.int64))


def weighted(rng, op_type: str, narrow: bool = False) -> Graph:
    """A random 16x8 conv2d / depthwise_conv2d / fully_connected layer; narrow: an output
    scale so small next to the input's that the multiplier exceeds 1 (left shifts)."""
    act = str(rng.choice(["none", "relu", "relu6"]))
    s_in = np.float32(rng.uniform(2e-5, 4e-4))
    if op_type == "fully_connected":
        depth, out_c = int(rng.integers(1, 70)), int(rng.integers(1, 14))
        x_shape, w_shape, axis, attrs = (1, depth), (out_c, depth), 0, {"activation": act}
        y_shape, taps = (1, out_c), depth
    else:
        h, w_ = (int(v) for v in rng.integers(3, 11, 2))
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw = (int(v) for v in rng.integers(1, 3, 2))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2))
        pad = tuple(int(v) for v in rng.integers(0, 3, 4))
        c = int(rng.integers(1, 9))
        attrs = {"stride": (sh, sw), "dilation": (dh, dw), "padding": pad, "activation": act}
        if op_type == "conv2d":
            out_c = int(rng.integers(1, 9))
            w_shape, axis, taps = (out_c, kh, kw, c), 0, kh * kw * c
        else:
            m = int(rng.choice([1, 1, 2]))
            attrs["depth_multiplier"] = m
            out_c = c * m
            w_shape, axis, taps = (1, kh, kw, out_c), 3, kh * kw
        x_shape = (1, h, w_, c)
        y_shape = (1, output_size(h, kh, sh, dh, pad[0], pad[2]),
                   output_size(w_, kw, sw, dw, pad[1], pad[3]), out_c)
        if min(y_shape[1:3]) < 1:
            return weighted(rng, op_type, narrow)
    w = rng.integers(-127, 128, w_shape).astype(np.int8)
    s_w = rng.uniform(0.002, 0.02, out_c).astype(np.float32)
    # output scale: the accumulator's typical spread over 2**11..2**13 steps
    typical = float(s_in) * float(s_w.mean()) * 127 * 8000 * np.sqrt(taps)
    s_out = np.float32(typical / (2.0 ** 28 if narrow else rng.choice([2.0 ** 11, 2.0 ** 13])))
    b_scale = (s_in * s_w).astype(np.float32)
    # about the accumulator's spread; one layer in six beyond int32 (what the int64 bias is for)
    reach = 1 << 36 if rng.random() < 1 / 6 else 1 << 22
    bias = rng.integers(-reach, reach, out_c, dtype=np.int64)
    tensors = [_act("x", x_shape, s_in), _act("y", y_shape, s_out),
               Tensor("w", w_shape, "int8", data=w, scale=s_w,
                      zero_point=np.zeros(out_c, np.int64), axis=axis),
               Tensor("b", (out_c,), "int64", data=bias, scale=b_scale,
                      zero_point=np.zeros(out_c, np.int64), axis=0)]
    op = Op(op_type, "layer", ["x", "w", "b"], ["y"], attrs)
    return derive_int_params(Graph("t", {t.name: t for t in tensors}, [op], ["x"], ["y"]))


def avg_pool(rng, tflite: bool = False) -> Graph:
    """A random 16x8 average pool; tflite: with SAME or VALID padding (all TFLite can say)."""
    h, w_, c = (int(v) for v in rng.integers(2, 9, 3))
    kh, kw = int(rng.integers(1, h + 1)), int(rng.integers(1, w_ + 1))
    sh, sw = (int(v) for v in rng.integers(1, 3, 2))
    if tflite:
        pad = (0, 0, 0, 0)
        if rng.random() < 0.5:
            (pt, pb), (pl, pr) = (tflite_same(n, k, s) for n, k, s in ((h, kh, sh), (w_, kw, sw)))
            pad = (pt, pl, pb, pr)
    else:
        pt, pl = int(rng.integers(0, kh)), int(rng.integers(0, kw))
        pad = (pt, pl, min(pt, kh - 1), min(pl, kw - 1))
    y_shape = (1, output_size(h, kh, sh, 1, pad[0], pad[2]), output_size(w_, kw, sw, 1, pad[1], pad[3]), c)
    act = str(rng.choice(["none", "relu"]))
    s = np.float32(rng.uniform(1e-4, 1e-3))
    op = Op("avg_pool2d", "layer", ["x"], ["y"],
            {"kernel": (kh, kw), "stride": (sh, sw), "padding": pad, "activation": act})
    return derive_int_params(Graph("t", {"x": _act("x", (1, h, w_, c), s), "y": _act("y", y_shape, s)},
                                   [op], ["x"], ["y"]))


def pad(rng) -> Graph:
    h, w_, c = (int(v) for v in rng.integers(1, 7, 3))
    p = tuple(int(v) for v in rng.integers(0, 3, 4))
    s = np.float32(1e-3)
    y = _act("y", (1, h + p[0] + p[2], w_ + p[1] + p[3], c), s)
    op = Op("pad", "layer", ["x"], ["y"], {"padding": p})
    return Graph("t", {"x": _act("x", (1, h, w_, c), s), "y": y}, [op], ["x"], ["y"])


def tflite_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TFLite SAME: out = ceil(size / stride), the odd padding row after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def softmax(rng) -> Graph:
    """A random 16x8 softmax: rows of 2-40 classes, input scales from fine to coarse (the
    rescale multiplier above and below 1), beta 1 or not."""
    rows, depth = int(rng.integers(1, 4)), int(rng.integers(2, 41))
    s_in = np.float32(rng.choice([1e-5, 2e-4, 1e-3, 8e-3]))
    beta = float(rng.choice([1.0, 1.0, 0.5, 2.0]))
    shape = (1, depth) if rows == 1 else (1, 1, rows, depth)
    y = Tensor("y", shape, "int16", scale=np.array([1 / 32768], np.float32),
               zero_point=np.zeros(1, np.int64))
    op = Op("softmax", "layer", ["x"], ["y"], {"beta": beta})
    return derive_int_params(Graph("t", {"x": _act("x", shape, s_in), "y": y}, [op], ["x"], ["y"]))


BUILD = {"conv2d": lambda rng: weighted(rng, "conv2d"),
         "depthwise_conv2d": lambda rng: weighted(rng, "depthwise_conv2d"),
         "fully_connected": lambda rng: weighted(rng, "fully_connected"),
         "avg_pool2d": avg_pool, "pad": pad, "softmax": softmax}


def inputs(rng, g: Graph, n: int = 24) -> np.ndarray:
    """The rails (-32768, 32767, 0), then wide and narrow normal values, then uniform int16."""
    shape = g.input.shape[1:]
    rails = np.stack([np.full(shape, v, np.int16) for v in (-32768, 32767, 0)])
    normal = np.clip(np.rint(rng.standard_normal((n, *shape)) * rng.choice([300, 3000, 12000], (n, *[1] * len(shape)))),
                     -32768, 32767).astype(np.int16)
    return np.concatenate([rails, normal, rng.integers(-32768, 32768, (n, *shape), dtype=np.int16)])


def torch_float(g: Graph, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dequantize, the op in float64 with PyTorch, round to nearest, clamp; also whether
    each output fits int32 before the clamp (beyond, TFLite's cast wraps)."""
    op = g.ops[0]
    s_in, s_out = g.input.qparams[0], g.output.qparams[0]
    xf = torch.tensor(x.astype(np.float64) * s_in)
    wt, b = g.tensors["w"], g.tensors["b"]
    wf = torch.tensor(wt.data.astype(np.float64) * wt.scale.astype(np.float64).reshape(
        [-1 if i == wt.axis else 1 for i in range(wt.data.ndim)]))
    bf = torch.tensor(b.data.astype(np.float64) * np.float64(s_in) * wt.scale.astype(np.float64))
    if op.type == "fully_connected":
        y = F.linear(xf, wf, bf)
    else:
        t, l, bo, r = op.attrs["padding"]
        xf = F.pad(xf.permute(0, 3, 1, 2), (l, r, t, bo))
        if op.type == "conv2d":
            y = F.conv2d(xf, wf.permute(0, 3, 1, 2), bf, op.attrs["stride"], 0, op.attrs["dilation"])
        else:
            y = F.conv2d(xf, wf.permute(3, 0, 1, 2), bf, op.attrs["stride"], 0, op.attrs["dilation"],
                         groups=x.shape[3])
        y = y.permute(0, 2, 3, 1)
    q = np.round(y.numpy() / np.float64(s_out))
    return np.clip(q, op.attrs["act_min"], op.attrs["act_max"]).astype(np.int64), np.abs(q) < 2 ** 31 - 2


@pytest.mark.parametrize("op_type", ["conv2d", "depthwise_conv2d", "fully_connected"])
def test_reference_matches_torch_within_two_lsb(op_type):
    rng = np.random.default_rng(160 + len(op_type))
    exact = total = inside = 0
    for i in range(3 * CASES):
        g = BUILD[op_type](rng)
        x = inputs(rng, g)[3:27]                 # the normal ones: outputs off the rails
        want, fits = torch_float(g, x)
        got = reference.run(g, x).astype(np.int64)[fits]
        want = want[fits]
        assert np.abs(got - want).max(initial=0) <= 2, (i, g.ops[0].attrs)
        exact += int((got == want).sum())
        total += got.size
        op = g.ops[0]
        inside += int(((got > op.attrs["act_min"]) & (got < op.attrs["act_max"])).sum())
    assert exact / total > 0.9
    assert inside / total > 0.3                  # the comparison is not all clamped values


def test_avg_pool_reference_matches_the_rounded_mean():
    rng = np.random.default_rng(7)
    for _ in range(3 * CASES):
        g = avg_pool(rng)
        op = g.ops[0]
        x = inputs(rng, g)
        xf = torch.tensor(x.astype(np.float64)).permute(0, 3, 1, 2)
        t, l, b, r = op.attrs["padding"]

        def window_sums(v):              # exact: integers far below 2**53
            return F.avg_pool2d(F.pad(v, (l, r, t, b)), op.attrs["kernel"], op.attrs["stride"],
                                divisor_override=1).permute(0, 2, 3, 1).numpy().astype(np.int64)
        total, count = window_sums(xf), window_sums(torch.ones_like(xf[:1]))
        mean = np.sign(total) * ((2 * np.abs(total) + count) // (2 * count))   # half away from 0
        want = np.clip(mean, op.attrs["act_min"], op.attrs["act_max"])
        np.testing.assert_array_equal(reference.run(g, x), want)


def test_softmax_reference_matches_float():
    """Within 8 LSB of 1/32768 of the float softmax as TFLite defines it: its exp table
    spans [-10, 0], so a difference below -10 weighs as the table's first entry (2/32768,
    not exp(-10)); what remains is the table's input step (10/65535) and interpolation and
    the reciprocal's 15 bits. TFLM computes the same bytes (test_tflm_equals_reference).
    The outputs sum to 1 within the same order."""
    rng = np.random.default_rng(5)
    worst = 0
    for _ in range(4 * CASES):
        g = softmax(rng)
        op = g.ops[0]
        x = inputs(rng, g)
        s_in = g.input.qparams[0]
        got = reference.run(g, x).astype(np.int64)
        d = x.astype(np.float64) * s_in * op.attrs["beta"]
        d = torch.tensor(d - d.max(axis=-1, keepdims=True))
        e = torch.where(d > -10, torch.exp(d), torch.full_like(d, 2 / 32768))
        want = (e / e.sum(-1, keepdim=True)).numpy()
        err = np.abs(got - np.round(want * 32768).clip(0, 32767)).max()
        worst = max(worst, int(err))
        assert err <= 8, (err, s_in, op.attrs)
        assert np.abs(got.sum(axis=-1) - 32768).max() <= 8 * x.shape[-1]
    assert worst >= 1                      # the comparison is not vacuous


@pytest.mark.parametrize("op_type", sorted(BUILD))
def test_generated_c_equals_reference(op_type):
    rng = np.random.default_rng(1600 + len(op_type))
    left_shifts = 0
    for i in range(CASES):
        g = weighted(rng, op_type, i % 3 == 2) if op_type in WEIGHTED else BUILD[op_type](rng)
        x = inputs(rng, g)
        y = run_c(g, x)
        assert y.dtype == np.int16
        np.testing.assert_array_equal(y, reference.run(g, x))
        left_shifts += int(np.max(g.ops[0].attrs.get("shift", 0)) > 0)
    if op_type in WEIGHTED:
        assert left_shifts >= 1


@pytest.mark.parametrize("op_type", sorted(BUILD))
def test_tflm_equals_reference(op_type):
    pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                        reason="TFLM referee needs `pip install --pre tflite-micro`")
    rng = np.random.default_rng(16000 + len(op_type))
    for i in range(CASES):
        if op_type in WEIGHTED:
            g = weighted(rng, op_type, i % 3 == 2)
        else:
            g = avg_pool(rng, tflite=True) if op_type == "avg_pool2d" else BUILD[op_type](rng)
        x = inputs(rng, g, 12)
        want = reference.run(g, x)
        np.testing.assert_array_equal(tflm(g, x).reshape(want.shape), want)


def test_softmax_lookup_tables_equal_tflms():
    """Every entry of both tables, through TFLM: rows of 64 classes whose differences from
    the row maximum step through the whole exp table (input scale 10/65535: one input step
    per table step of 1/128), and rows of varying length and spread, whose sums land on
    every part of the 1/(1+x) table."""
    pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                        reason="TFLM referee needs `pip install --pre tflite-micro`")
    depth = 64
    x = Tensor("x", (1, depth), "int16", scale=np.array([10 / 65535], np.float32),
               zero_point=np.zeros(1, np.int64))
    y = Tensor("y", (1, depth), "int16", scale=np.array([1 / 32768], np.float32),
               zero_point=np.zeros(1, np.int64))
    g = derive_int_params(Graph("t", {"x": x, "y": y}, [Op("softmax", "l", ["x"], ["y"],
                                                              {"beta": 1.0})], ["x"], ["y"]))
    rng = np.random.default_rng(9)
    ramps = [32767 - (np.arange(depth) * 128 + k * 128 * depth + off) for k in range(8)
             for off in (0, 1, 37, 127)]
    spread = [np.where(np.arange(depth) < n, 32767, 32767 - rng.integers(0, 65536, depth))
              for n in range(1, depth + 1)]
    xs = np.clip(np.stack(ramps + spread), -32768, 32767).astype(np.int16)
    want = reference.run(g, xs)
    np.testing.assert_array_equal(tflm(g, xs).reshape(want.shape), want)
    np.testing.assert_array_equal(run_c(g, xs), want)


@pytest.mark.parametrize("op_type, shape", [("conv2d", (600, 1, 1, 300)),
                                            ("fully_connected", (5, 700)),
                                            ("depthwise_conv2d", (1, 17, 17, 3))])
def test_wide_layers_at_the_rails(op_type, shape):
    """Layers beyond one int32 block (300 input channels, 700 inputs, a 17x17 window):
    the C's int32 partial sums stay exact with every product at its largest."""
    w = np.full(shape, -128 if op_type == "fully_connected" else -127, np.int8)
    w.reshape(-1)[1::2] = 127
    axis = 3 if op_type == "depthwise_conv2d" else 0
    out_c = shape[axis]
    x_shape = {"conv2d": (1, 2, 2, 300), "fully_connected": (1, 700),
               "depthwise_conv2d": (1, 17, 17, 3)}[op_type]
    attrs = {"activation": "none"}
    if op_type != "fully_connected":
        attrs.update(stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0))
    if op_type == "depthwise_conv2d":
        attrs["depth_multiplier"] = 1
    y_shape = {"conv2d": (1, 2, 2, 600), "fully_connected": (1, 5),
               "depthwise_conv2d": (1, 1, 1, 3)}[op_type]
    s_w = np.full(out_c, 0.01, np.float32)
    tensors = [_act("x", x_shape, 1e-4), _act("y", y_shape, 0.5),
               Tensor("w", shape, "int8", data=w, scale=s_w, zero_point=np.zeros(out_c, np.int64),
                      axis=axis),
               Tensor("b", (out_c,), "int64", data=np.arange(out_c, dtype=np.int64) - (1 << 33),
                      scale=(s_w * np.float32(1e-4)).astype(np.float32),
                      zero_point=np.zeros(out_c, np.int64), axis=0)]
    g = derive_int_params(Graph("t", {t.name: t for t in tensors},
                                [Op(op_type, "layer", ["x", "w", "b"], ["y"], attrs)], ["x"], ["y"]))
    rng = np.random.default_rng(3)
    alternating = np.where(np.arange(int(np.prod(x_shape))) % 2, 32767, -32768).reshape(x_shape)
    xs = np.concatenate([np.stack([np.full(x_shape[1:], v, np.int16) for v in (-32768, 32767)]),
                         alternating.astype(np.int16),
                         rng.integers(-32768, 32768, (5, *x_shape[1:]), dtype=np.int16)])
    want = reference.run(g, xs)
    assert len(np.unique(want)) > 4                   # not all clamped
    np.testing.assert_array_equal(run_c(g, xs), want)
