"""DEPTHWISE_CONV_2D, int8 per-channel: TFLM reference_integer_ops::DepthwiseConvPerChannel.

Output channel c*M + m (M = depth_multiplier) reads input channel c:
acc = bias + sum over in-bounds taps of w[0, ky, kx, c*M + m] * (x[c] + input_offset),
then the same requantization as conv2d.

IR: inputs x, weight (1, KH, KW, C*M) (output channel c*M + m reads input channel
c), optional bias (C*M,); attrs stride, dilation, padding, activation,
depth_multiplier; quantized: multiplier, shift (one per output channel), act_min,
act_max.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from ..window import taps, windows
from .activation import float_clamp
from .dsp_gemm import gemm_requant
from .spec import Kernel, OpSpec, TFLite, dsp_ok
from .weighted import (INT16_BLOCK, conv_from_tflite, conv_to_tflite, derive_weighted,
                       float_operands, fold_bias, int16_params, int_list, operands, quant_params,
                       requantize, weight_zero_point, window_params, wrapped_fold)

MAX_UNROLLED_TAPS = 49     # 7x7: beyond that the interior path keeps its tap loops
MAX_PLANE_BYTES = 1024     # the plane path's stack buffer: one channel's window extent
WEIGHT_AXIS = 3            # the axis of the weights' output channels


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    """One einsum over every window (a view, no im2col copy), in float64: products and
    sums are integers far below 2**53, so the accumulator is exact."""
    xt, w, bias, _ = operands(g, op)
    weight_zero_point(g, op)
    m = int(op.attrs["depth_multiplier"])
    xs = x.astype(np.float64) - float(xt.zero_point[0])   # x + input_offset; padding is 0
    if m > 1:
        xs = np.repeat(xs, m, axis=-1)
    win = windows(xs, w.shape[1:3], op.attrs["stride"], op.attrs["dilation"],
                  op.attrs["padding"], 0.0)               # (N, OH, OW, C*M, KH, KW)
    acc = np.einsum("nhwckl,klc->nhwc", win, w[0].astype(np.float64)).astype(np.int64)
    if bias is not None:
        acc += bias
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


def c_params_int16(g: Graph, op: Op) -> dict:
    """Everything templates/ops/depthwise_conv2d_int16.c.j2 needs."""
    x, w, _, y = operands(g, op)
    weight_zero_point(g, op)
    p = window_params(x, y, w.shape[1:3], op)
    return {**p, **int16_params(g, op, p["out_c"]), "weights": int_list(w),
            "depth_multiplier": int(op.attrs["depth_multiplier"]), "block": INT16_BLOCK}


def macs(g: Graph, op: Op) -> int:
    w, y = g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    return int(np.prod(y.shape[1:3])) * w.size


def column_macs(wt: np.ndarray, pairs: bool, words: int):
    """The MAC instructions of one plane column and the weight words they read.

    wt: (C, KH, KW) int16 weights. Data word j of a column holds rows (2j, 2j+1)
    relative to the output's first row. The upper (or only) output needs tap
    pairs (w[2j], w[2j+1]), the lower one (w[2j-1], w[2j]). A pair with both
    taps is one SMLAD with a word of its own; a lone tap (the ends) borrows the
    half of a word that already holds it (SMLAxy picks halves), so a 3x3 column
    needs two weight words, not four. Returns ([(acc, instr, j, word)], stream
    (C, n_words, KW) int64)."""
    kh = wt.shape[1]
    need = [("upper", j, 2 * j, 2 * j + 1) for j in range(words)]
    if pairs:
        need += [("lower", j, 2 * j - 1, 2 * j) for j in range(words)]
    taps = lambda t: 0 <= t < kh                                  # noqa: E731
    full = [(lo, hi) for _, _, lo, hi in need if taps(lo) and taps(hi)]
    full = list(dict.fromkeys(full))
    singles = []
    macs = []
    for acc, j, lo, hi in need:
        if taps(lo) and taps(hi):
            macs.append((acc, "smlad", j, full.index((lo, hi))))
            continue
        t, data_half = (lo, "b") if taps(lo) else (hi, "t")
        if not taps(t):
            continue
        home = next(((i, "b" if a == t else "t") for i, (a, b) in enumerate(full) if t in (a, b)),
                    None)
        if home is None:
            if (t, -1) not in singles:
                singles.append((t, -1))
            home = (len(full) + singles.index((t, -1)), "b")
        macs.append((acc, f"smla{data_half}{home[1]}", j, home[0]))
    padded = np.concatenate([wt, np.zeros_like(wt[:, :1])], axis=1)   # index -1: zero
    stream = np.stack([(padded[:, lo] & 0xFFFF) | ((padded[:, hi] & 0xFFFF) << 16)
                       for lo, hi in full + singles], axis=1)
    return macs, stream


def _asm_fits(p: dict, pairs: bool, words: int, weight_words: int, rows: int, kind: str) -> bool:
    """Whether the template's assembly statement (two rows per step with stride 1,
    one with an even stride; weights in six registers, immediates for offsets,
    the row and column steps and the shift) can run this layer."""
    out_row = p["out_w"] * p["out_c"]
    return (words == 2 and weight_words <= 6 and kind == "fast"
            and (p["out_h"] >= 2 if pairs else 2 * p["stride_h"] <= 1020)
            and (p["k_w"] - 1) * p["dil_w"] * rows * 2 <= 1016
            and (2 if pairs else 1) * out_row <= 4095 and 2 * p["stride_w"] * rows <= 4095)


def fast_params(g: Graph, op: Op) -> dict | None:
    """Literals for templates/ops/depthwise_conv2d_dsp.c.j2, or None where it cannot run.

    One channel at a time is gathered into a column-major int16 plane whose
    border holds the input zero point (the folded input offset cancels it), so
    there is no border code and output channel c may overwrite input channel c
    (in place). Vertical taps pair up in 32-bit words of a column: with stride 1,
    rows (y, y+1) of two vertically adjacent outputs come from the same words
    (weights A_j = (w[2j], w[2j+1]) for the upper output, B_j = (w[2j-1], w[2j])
    for the lower); with an even stride, one output per step from word-aligned
    rows. Needs depth multiplier 1 and vertical dilation 1."""
    x, w, bias, y = operands(g, op)
    (sh, _), (dh, _) = op.attrs["stride"], op.attrs["dilation"]
    if weight_zero_point(g, op) or op.attrs["depth_multiplier"] != 1 or dh != 1:
        return None
    if sh != 1 and sh % 2:
        return None
    p = window_params(x, y, w.shape[1:3], op)
    p.update(quant_params(g, op, p["out_c"]))
    kh, kw, c = p["k_h"], p["k_w"], p["out_c"]
    taps = w[0].reshape(kh * kw, c).T.reshape(c, kh, kw).astype(np.int64)   # (C, KH, KW)
    folded = fold_bias(bias, taps.sum(axis=(1, 2)), p["input_offset"])
    if folded is None:
        return None
    w_rows = taps.reshape(c, -1)
    rq = gemm_requant(g, op, w_rows, folded, p)
    wt = rq["w"].reshape(c, kh, kw)
    pairs = sh == 1
    words = -(-(kh + 1) // 2) if pairs else -(-kh // 2)        # data words read per column
    macs, stream = column_macs(wt, pairs, words)
    last_row = ((p["out_h"] + 1) // 2 * 2 - 2 if pairs else (p["out_h"] - 1) * sh) + 2 * words
    rows = (last_row + 1) // 2 * 2
    cols = (p["out_w"] - 1) * p["stride_w"] + (kw - 1) * p["dil_w"] + 1
    p.update(pairs=pairs, words=words, rows=rows, cols=cols, requant=rq["kind"], macs=macs,
             exponent=rq["exponent"], mult=rq["mult"],
             bias=int_list(rq["b"]),
             stream=stream.transpose(0, 2, 1).reshape(c, -1).ravel().astype(np.uint32),
             words_per_column=stream.shape[1], words_per_channel=stream.shape[1] * kw,
             input_zero_point=-p["input_offset"],
             asm=_asm_fits(p, pairs, words, stream.shape[1] * kw, rows, rq["kind"]),
             scratch=2 * rows * cols)
    return p


def choose(g: Graph, op: Op, target) -> Kernel:
    """depthwise_conv2d_dsp (SMLAD plane by plane) where a DSP core runs the layer at
    speed and fast_params fits it; depthwise_conv2d_int16 for 16x8; else portable."""
    if g.tensors[op.outputs[0]].dtype == "int16":
        return Kernel("depthwise_conv2d_int16", c_params_int16(g, op))
    p = fast_params(g, op) if dsp_ok(g, op, target) else None
    if p is None:
        return Kernel("depthwise_conv2d", c_params(g, op))
    return Kernel("depthwise_conv2d_dsp", p, p["scratch"], "channels",
                  f"SMLAD int16 plane, requant {p['requant']}")


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    w, b = float_operands(g, op)
    m = op.attrs["depth_multiplier"]
    out = 0.0
    for i, j, v in taps(x, w.shape[1:3], op.attrs["stride"], op.attrs["dilation"], op.attrs["padding"]):
        out = out + np.repeat(v, m, axis=-1) * w[0, i, j, :]
    return float_clamp(out + b, op)


def derive(g: Graph, op: Op) -> None:
    """Per-channel multipliers; weights' output channels on axis 3."""
    derive_weighted(g, op, WEIGHT_AXIS)


def from_tflite(r, operator, where: str) -> Op:
    return conv_from_tflite(r, operator, where, depthwise=True)


# PyTorch's depthwise convolution (groups = in_channels) is lowered by conv2d.from_aten.
SPEC = OpSpec("depthwise_conv2d", reference, c_params, macs, derive=derive, choose=choose, int16=True,
              float_reference=float_reference,
              weight_axis=WEIGHT_AXIS, fuses_activation=True,
              tflite=TFLite("DEPTHWISE_CONV_2D", 3, from_tflite, conv_to_tflite,
                            options="DepthwiseConv2DOptions", min_inputs=2))
