"""AVERAGE_POOL_2D int8 and int16, as TFLM's reference_integer_ops::AveragePool.

Raw int8 values are summed over the taps that fall inside the input (padding
taps are skipped, not counted as zeros) and divided by that count with
TFLite's round-half-away-from-zero integer division. Input and output share
scale and zero point, so no requantization happens.

IR: attrs kernel (kh, kw), stride, padding, activation; input and output share
quant params; quantized: act_min, act_max.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..ir import Graph, Op
from ..window import in_bounds_count, output_size, taps
from .activation import float_clamp
from .spec import Kernel, OpSpec, dsp_ok


def check_same_qparams(g: Graph, op: Op) -> None:
    """Pools copy raw int8 values, so input and output quantization must match."""
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if x.qparams != y.qparams:
        raise TinydsError(f"{g.name}: {op.name}: {op.type} input {x.qparams} and output "
                          f"{y.qparams} (scale, zero point) differ; quantize the pool's "
                          f"output with its input's parameters")


def geometry(g: Graph, op: Op) -> dict:
    """Shapes, kernel, stride and padding as the C template and the reference need them."""
    _, ih, iw, c = g.tensors[op.inputs[0]].shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = op.attrs["kernel"], op.attrs["stride"], op.attrs["padding"]
    oh, ow = output_size(ih, kh, sh, 1, pt, pb), output_size(iw, kw, sw, 1, pl, pr)
    if min(oh, ow) < 1 or in_bounds_count((ih, iw), (kh, kw), (sh, sw), (pt, pl, pb, pr)).min() == 0:
        raise TinydsError(f"{g.name}: {op.name}: {op.type} kernel {kh}x{kw} with padding "
                          f"{op.attrs['padding']} on a {ih}x{iw} input leaves a window with no "
                          f"input pixel; use padding smaller than the kernel")
    return dict(in_h=ih, in_w=iw, channels=c, out_h=oh, out_w=ow, kernel_h=kh, kernel_w=kw,
                stride_h=sh, stride_w=sw, pad_top=pt, pad_left=pl,
                act_min=int(op.attrs.get("act_min", -128)), act_max=int(op.attrs.get("act_max", 127)))


def rounded_divide(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """TFLite: total > 0 ? (total + count/2) / count : (total - count/2) / count, C truncation."""
    half = count // 2
    return np.where(total > 0, (total + half) // count, -((half - total) // count))


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    check_same_qparams(g, op)
    p = geometry(g, op)
    kernel, stride, padding = op.attrs["kernel"], op.attrs["stride"], op.attrs["padding"]
    total = np.zeros((x.shape[0], p["out_h"], p["out_w"], p["channels"]), np.int64)
    for _, _, v in taps(x.astype(np.int64), kernel, stride, (1, 1), padding, 0):
        total += v
    count = in_bounds_count(x.shape[1:3], kernel, stride, padding)
    out = rounded_divide(total, count)
    return np.clip(out, p["act_min"], p["act_max"]).astype(x.dtype)


def c_params(g: Graph, op: Op) -> dict:
    check_same_qparams(g, op)
    return {**geometry(g, op), "simd": False, "ctype": f"{g.tensors[op.inputs[0]].dtype}_t"}


def macs(g: Graph, op: Op) -> int:
    """One add per tap of every output element."""
    p = geometry(g, op)
    return p["out_h"] * p["out_w"] * p["channels"] * p["kernel_h"] * p["kernel_w"]


def choose(g: Graph, op: Op, target) -> Kernel:
    """SXTAB16 on a DSP core at speed when channels come in fours and a window's
    sum fits 16 bits (at most 256 taps); else the portable loop."""
    p = c_params(g, op)
    if dsp_ok(g, op, target) and p["channels"] % 4 == 0 and p["kernel_h"] * p["kernel_w"] <= 256:
        return Kernel("avg_pool2d", {**p, "simd": True}, note="SXTAB16 four channels per word")
    return Kernel("avg_pool2d", p)


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    kernel, stride, padding = op.attrs["kernel"], op.attrs["stride"], op.attrs["padding"]
    out = 0.0
    for _, _, v in taps(x, kernel, stride, (1, 1), padding, 0.0):
        out = out + v
    return float_clamp(out / in_bounds_count(x.shape[1:3], kernel, stride, padding), op)


SPEC = OpSpec("avg_pool2d", reference, c_params, macs, choose=choose, int16=True,
              float_reference=float_reference,
              same_quant=True)
