"""DEPTHWISE_CONV_2D, int8 per-channel: TFLM reference_integer_ops::DepthwiseConvPerChannel.

Output channel c*M + m (M = depth_multiplier) reads input channel c:
acc = bias + sum over in-bounds taps of w[0, ky, kx, c*M + m] * (x[c] + input_offset),
then the same requantization as conv2d.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from ..window import taps
from .conv2d import (fold_bias, int_list, operands, quant_params, requantize,
                     weight_zero_point, window_params, wrapped_fold)


MAX_UNROLLED_TAPS = 49     # 7x7: beyond that the interior path keeps its tap loops
MAX_PLANE_BYTES = 1024     # the plane path's stack buffer: one channel's window extent


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    xt, w, bias, _ = operands(g, op)
    weight_zero_point(g, op)
    m = int(op.attrs["depth_multiplier"])
    xs = x.astype(np.int32) - int(xt.zero_point[0])   # x + input_offset; padding is 0
    if m > 1:
        xs = np.repeat(xs, m, axis=-1)
    wk = w.astype(np.int32)
    acc = np.zeros(1, np.int64)
    for i, j, v in taps(xs, w.shape[1:3], op.attrs["stride"], op.attrs["dilation"],
                        op.attrs["padding"], 0):
        acc = acc + v * wk[0, i, j, :]
    if bias is not None:
        acc = acc + bias
    return requantize(acc, g, op)


def c_params(g: Graph, op: Op) -> dict:
    """Everything templates/ops/depthwise_conv2d.c.j2 needs, as literals.

    Pixels whose whole window is inside the input ("interior": all of them when
    the layer never touches padding) run unrolled taps with the input offset
    folded into `bias_folded`; border pixels run bounded loops on the raw bias.
    """
    x, w, bias, y = operands(g, op)
    weight_zero_point(g, op)
    p = window_params(x, y, w.shape[1:3], op)
    p.update(quant_params(g, op, p["out_c"]))
    p["depth_multiplier"] = int(op.attrs["depth_multiplier"])
    folded = fold_bias(bias, w.astype(np.int64).sum(axis=(0, 1, 2)), p["input_offset"])
    p["fold"] = folded is not None
    p["bias_folded"] = int_list(folded) if folded is not None else None
    p["bias"] = int_list(bias) if bias is not None else None
    p["weights"] = int_list(w)
    p["unroll"] = p["k_h"] * p["k_w"] <= MAX_UNROLLED_TAPS
    # plane: rows/columns of padded input that some window reads, and the input part of them
    p["plane_h"] = (p["out_h"] - 1) * p["stride_h"] + (p["k_h"] - 1) * p["dil_h"] + 1
    p["plane_w"] = (p["out_w"] - 1) * p["stride_w"] + (p["k_w"] - 1) * p["dil_w"] + 1
    p["gather_h"] = min(p["in_h"], p["plane_h"] - p["pad_top"])
    p["gather_w"] = min(p["in_w"], p["plane_w"] - p["pad_left"])
    p["plane"] = p["unroll"] and p["plane_h"] * p["plane_w"] <= MAX_PLANE_BYTES
    if p["plane"]:
        w_sums = w.astype(np.int64).sum(axis=(0, 1, 2))
        p["bias_plane"] = wrapped_fold(bias, w_sums, p["input_offset"] - 128)
        p["wtaps"] = int_list(w.reshape(-1, p["out_c"]).T)
    return p


def macs(g: Graph, op: Op) -> int:
    w, y = g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    return int(np.prod(y.shape[1:3])) * w.size
