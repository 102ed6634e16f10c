"""CONV_2D, int8 per-channel: TFLM reference_integer_ops::ConvPerChannel.

acc[c] = bias[c] + sum over in-bounds taps of w[c, ky, kx, i] * (x + input_offset),
input_offset = -zp_in; padded taps contribute nothing. Then
MultiplyByQuantizedMultiplier(acc, multiplier[c], shift[c]) + zp_out, clamped.
With int16 activations (TFLite 16x8) the same loop has no offsets, an int64
accumulator and bias, and the int64 MultiplyByQuantizedMultiplier.

The helpers below (operand extraction, requantization, bias folding) are shared
with depthwise_conv2d and fully_connected.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from .. import fixedpoint
from ..fixedpoint import (INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier,
                          multiply_by_quantized_multiplier_int64, q15_multiplier, wrap_int32)
from ..ir import Graph, Op
from ..window import windows
from .spec import Kernel, OpSpec, dsp_ok

IM2COL_BYTES = 64 << 20       # the reference's im2col matrix per slice of the batch


def operands(g: Graph, op: Op):
    """(x tensor, int8 weight data, int64 bias or None, y tensor)."""
    x, w, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    b = g.tensor(op.inputs[2]) if len(op.inputs) > 2 else None
    return x, w.data, (b.data.astype(np.int64) if b is not None else None), y


def weight_zero_point(g: Graph, op: Op) -> int:
    """The filter's zero point: 0 for symmetric weights; one shared value otherwise."""
    zp = g.tensors[op.inputs[1]].zero_point
    if zp is None or not np.any(zp):
        return 0
    if op.type != "fully_connected" or np.any(zp != zp.flat[0]):
        raise TinydsError(f"{g.name}: {op.name}: {op.type} weights have a non-zero zero point; "
                          "quantize weights symmetrically (zero point 0)")
    return int(zp.flat[0])


def requantize(acc: np.ndarray, g: Graph, op: Op) -> np.ndarray:
    """int32/64 accumulators (channels last) -> int8 outputs, or int16 ones (16x8)."""
    y_t = g.tensors[op.outputs[0]]
    rescale = (multiply_by_quantized_multiplier_int64 if y_t.dtype == "int16"
               else multiply_by_quantized_multiplier)
    y = rescale(acc, op.attrs["multiplier"], op.attrs["shift"]) + int(y_t.zero_point[0])
    return np.clip(y, op.attrs["act_min"], op.attrs["act_max"]).astype(y_t.dtype)


def fold_bias(bias, w_sums: np.ndarray, input_offset: int):
    """bias + input_offset * sum(w) per channel, or None when it would leave int32.

    Exact when every tap is read from the input (no padding is ever touched):
    sum w*(x+off) + b == sum w*x + (b + off*sum w).
    """
    folded = (bias if bias is not None else 0) + input_offset * w_sums.astype(np.int64)
    if folded.min() < INT32_MIN or folded.max() > INT32_MAX:
        return None
    return folded


def wrapped_fold(bias, w_sums: np.ndarray, input_offset: int) -> list[int]:
    """bias + input_offset * sum(w) per channel modulo 2^32, as int32: the start of
    an accumulator that wraps like the reference's (exact even when the folded
    value leaves int32), for kernels that never read padding."""
    return int_list(wrap_int32((bias if bias is not None else 0)
                               + input_offset * w_sums.astype(np.int64)))


def blocked_weights(w2d: np.ndarray) -> list[int]:
    """(rows, depth) int8 weights -> tinyds_dot4's order: uint8 (w + 128), four rows
    interleaved per block ([block][n][row]), the last block padded with zero weights."""
    rows, depth = w2d.shape
    w = np.concatenate([w2d.astype(np.int64), np.zeros((-rows % 4, depth), np.int64)]) + 128
    return int_list(w.reshape(-1, 4, depth).transpose(0, 2, 1))


def int_list(a) -> list[int]:
    return [int(v) for v in np.asarray(a).ravel()]


def touches_padding(in_size, out_size, kernel, stride, dilation, pad_lo) -> bool:
    """True when some tap of some output falls outside the input along one axis."""
    last = (out_size - 1) * stride - pad_lo + (kernel - 1) * dilation
    return pad_lo > 0 or last > in_size - 1


def window_params(x, y, kernel, op: Op) -> dict:
    """Geometry shared by the conv2d and depthwise templates."""
    (_, ih, iw, ic), (_, oh, ow, oc) = x.shape, y.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, op.attrs["stride"], op.attrs["dilation"]
    pt, pl = op.attrs["padding"][:2]
    return dict(in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, out_c=oc, k_h=kh, k_w=kw,
                stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw, pad_top=pt, pad_left=pl,
                clip_h=touches_padding(ih, oh, kh, sh, dh, pt),
                clip_w=touches_padding(iw, ow, kw, sw, dw, pl))


def quant_params(g: Graph, op: Op, channels: int) -> dict:
    """Offsets, clamps and one multiplier/shift per output channel (a per-tensor pair
    is repeated, so kernels always index by channel)."""
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    mult = np.broadcast_to(op.attrs["multiplier"], (channels,))
    shift = np.broadcast_to(op.attrs["shift"], (channels,))
    left_shift = bool((shift > 0).any())
    live = mult != 0
    if not left_shift and ((shift[live] <= -1) & (shift[live] >= -31)).all():
        # every live channel shifts right by 1..31: the cheapest rounding; a dead channel's
        # result is 0 whatever its shift, so it gets one in range
        requantize, shift = "tinyds_requantize_rs", np.where(live, shift, -1)
    else:
        requantize = "tinyds_requantize" if left_shift else "tinyds_requantize_lt1"
    return dict(input_offset=-int(x.zero_point[0]), output_offset=int(y.zero_point[0]),
                act_min=int(op.attrs["act_min"]), act_max=int(op.attrs["act_max"]),
                multiplier=int_list(mult), shift=int_list(shift),
                left_shift=left_shift, requantize=requantize)


# int16 x int8 products are at most 2^22 in magnitude: 256 of them sum exactly in int32
INT16_BLOCK = 256


def int16_params(g: Graph, op: Op, channels: int) -> dict:
    """The 16x8 templates' requantization literals: clamps, and per output channel the
    Q15 multiplier and total right shift of tinyds_requantize64; the int64 bias."""
    mult15, total = q15_multiplier(np.broadcast_to(op.attrs["multiplier"], (channels,)),
                                   np.broadcast_to(op.attrs["shift"], (channels,)))
    b = operands(g, op)[2]
    return dict(act_min=int(op.attrs["act_min"]), act_max=int(op.attrs["act_max"]),
                mult15=int_list(mult15), total_shift=int_list(total),
                bias=int_list(b) if b is not None else None)


def c_params_int16(g: Graph, op: Op) -> dict:
    """Everything templates/ops/conv2d_int16.c.j2 needs."""
    x, w, _, y = operands(g, op)
    weight_zero_point(g, op)
    p = window_params(x, y, w.shape[1:3], op)
    if w.shape[3] != p["in_c"]:
        raise TinydsError(f"{g.name}: {op.name}: grouped conv2d (weight has {w.shape[3]} of "
                          f"{p['in_c']} input channels) is not supported; use groups=1 or "
                          "groups=in_channels")
    return {**p, **int16_params(g, op, p["out_c"]), "weights": int_list(w),
            "block": min(p["in_c"], INT16_BLOCK)}


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    """Integer conv as one im2col matmul in float64: every product (|x + offset| <= 255,
    or |x| <= 32768 for int16, |w| <= 127) and every partial sum is an integer far below
    2**53, so BLAS computes the accumulator exactly, and fast. Padded taps read
    x + offset == 0."""
    xt, w, bias, _ = operands(g, op)
    weight_zero_point(g, op)
    xs = x.astype(np.float64) - float(xt.zero_point[0])   # x + input_offset; padding is 0
    win = windows(xs, w.shape[1:3], op.attrs["stride"], op.attrs["dilation"],
                  op.attrs["padding"], 0.0)               # (N, OH, OW, C, KH, KW)
    wmat = w.transpose(0, 3, 1, 2).reshape(len(w), -1).astype(np.float64).T
    acc = np.empty((*win.shape[:3], len(w)), np.int64)
    step = max(1, IM2COL_BYTES // max(1, 8 * int(np.prod(win.shape[1:]))))
    for i in range(0, len(x), step):                      # bounded im2col copies
        cols = win[i:i + step].reshape(-1, wmat.shape[0])
        acc[i:i + step] = (cols @ wmat).reshape(acc[i:i + step].shape)
    if bias is not None:
        acc += bias
    return requantize(acc, g, op)


def c_params(g: Graph, op: Op) -> dict:
    """Everything templates/ops/conv2d.c.j2 needs, as literals.

    pointwise (1x1, stride 1, no padding) gets a plain matrix-multiply loop; the
    input offset is folded into the bias whenever no tap ever reads padding.
    """
    x, w, bias, y = operands(g, op)
    weight_zero_point(g, op)
    p = window_params(x, y, w.shape[1:3], op)
    p.update(quant_params(g, op, p["out_c"]))
    if w.shape[3] != p["in_c"]:
        raise TinydsError(f"{g.name}: {op.name}: grouped conv2d (weight has {w.shape[3]} of "
                          f"{p['in_c']} input channels) is not supported; use groups=1 or "
                          "groups=in_channels")
    w_sums = w.astype(np.int64).sum(axis=(1, 2, 3))
    folded = None
    if not (p["clip_h"] or p["clip_w"]):
        folded = fold_bias(bias, w_sums, p["input_offset"])
    p["fold"] = folded is not None
    b = folded if folded is not None else bias
    p["bias"] = int_list(b) if b is not None else None
    p["weights"] = int_list(w)
    p["pointwise"] = (w.shape[1:3] == (1, 1) and tuple(op.attrs["stride"]) == (1, 1)
                      and not any(op.attrs["padding"]))
    if p["pointwise"]:
        # the portable path always folds (modulo 2^32); the DSP path needs fold
        p["bias"] = wrapped_fold(bias, w_sums, p["input_offset"])
        p["wblocks"] = blocked_weights(w.reshape(len(w), -1))
    return p


def macs(g: Graph, op: Op) -> int:
    w, y = g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    return int(np.prod(y.shape[1:3])) * w.size


def pair_index(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Which taps form each int16-pair word of a run of k taps (-1: a zero half).

    The pairing of templates/tinyds_dsp.h: (t0, t2), (t1, t3) per group of four
    -- what SXTB16 and SXTB16 ROR #8 extract from one word -- then (t0, t1),
    (t2, -1) for a tail of up to three."""
    lo, hi = [], []
    i = 0
    while i + 4 <= k:
        lo += [i, i + 1]
        hi += [i + 2, i + 3]
        i += 4
    while i < k:
        lo.append(i)
        hi.append(i + 1 if i + 1 < k else -1)
        i += 2
    return np.array(lo, np.int64), np.array(hi, np.int64)


def gemm_steps(k: int) -> int:
    """Pair words per pixel in the GEMM core: a multiple of 4 (four steps per loop pass)."""
    return -(-k // 8) * 4


def pack_pairs(v: np.ndarray, steps: int) -> np.ndarray:
    """(rows, k) int16 values -> (rows, steps) uint32 pair words, zero-padded."""
    lo, hi = pair_index(v.shape[1])
    v = np.concatenate([v.astype(np.int64), np.zeros((len(v), 1), np.int64)], axis=1)
    words = (v[:, lo] & 0xFFFF) | ((v[:, hi] & 0xFFFF) << 16)
    out = np.zeros((len(v), steps), np.int64)
    out[:, :words.shape[1]] = words
    return out


def gemm_weights(w_rows: np.ndarray, steps: int) -> np.ndarray:
    """(out_c, k) int16 weights -> the stream tinyds_gemm_4x2 reads: per block of
    four channels, per step, the four channels' pair words."""
    words = pack_pairs(w_rows, steps)                   # (out_c, steps)
    return words.reshape(-1, 4, steps).transpose(0, 2, 1).ravel()


GEMM_UNROLL = 32   # MAC steps unrolled in tinyds_dsp.h's assembly core (TINYDS_GEMM_UNROLL)


def gemm_stream(w_rows: np.ndarray, bias: np.ndarray, mk: list[int], steps: int) -> np.ndarray:
    """The unclamped fast requantizations' single stream (tinyds_gemm_4x2_fast_*):
    per block of four channels, the four biases, the weight stream's block, then
    the four channels' (m, k) pairs or (m, k, e) triples."""
    blocks = gemm_weights(w_rows, steps).reshape(-1, 4 * steps)
    head = np.asarray(bias, dtype=np.int64).reshape(-1, 4)
    tail = np.asarray(mk, dtype=np.int64).reshape(len(head), -1)
    return np.concatenate([head, blocks, tail], axis=1).ravel()


def gemm_requant(g: Graph, op: Op, w_rows: np.ndarray, bias: np.ndarray, p: dict) -> dict:
    """Requantization of the fast kernels: the 2-instruction form when exact
    (weights and bias scaled by 2^s per channel; "fast", or "fast_clamp" when the
    fused activation range is narrower than int8), "fast_var" with a shift per
    channel when one layer-wide shift cannot serve, else "tflite" per channel.
    Returns the kind, the template's literals and the (scaled) int16 weights and bias."""
    w = w_rows.astype(np.int64)
    # the accumulator's range over all int8 inputs (the input offset is in the bias)
    acc_lo = bias + np.minimum(w * -128, w * 127).sum(axis=1)
    acc_hi = bias + np.maximum(w * -128, w * 127).sum(axis=1)
    args = (p["multiplier"], p["shift"], p["output_offset"], p["act_min"], np.abs(w).max(axis=1),
            acc_lo, acc_hi)
    fast = fixedpoint.fast_requant(*args)
    per_channel = fast is None
    if per_channel:
        fast = fixedpoint.fast_requant(*args, per_channel=True)
    if fast is None:
        return dict(kind="tflite", exponent=0, w=w_rows, b=bias, mult=p["multiplier"])
    s = fast["scale_bits"]
    w_scaled, b_scaled = w << s[:, None], bias << s
    if per_channel:
        mke = np.stack([fast["mult"], fast["k"], fast["exponent"]], axis=1).ravel()
        return dict(kind="fast_var", exponent=0, w=w_scaled, b=b_scaled, mult=int_list(mke))
    mk = np.stack([fast["mult"], fast["k"]], axis=1).ravel()
    full = p["act_min"] == -128 and p["act_max"] == 127
    return dict(kind="fast" if full else "fast_clamp", exponent=fast["exponent"],
                w=w_scaled, b=b_scaled, mult=int_list(mk))


def fast_params(g: Graph, op: Op) -> dict | None:
    """Literals for templates/ops/conv2d_s16.c.j2, or None where it cannot run.

    Any conv2d whose output channels come in fours and whose input offset folds
    into the bias: pixels go in pairs, through im2col (padding taps hold the
    input zero point, which the folded offset cancels) unless pointwise, then
    through the shared int16 GEMM core."""
    x, w, bias, y = operands(g, op)
    if weight_zero_point(g, op) or w.shape[0] % 4 or w.shape[3] != x.shape[3]:
        return None
    p = window_params(x, y, w.shape[1:3], op)
    p.update(quant_params(g, op, p["out_c"]))
    w_rows = w.reshape(w.shape[0], -1).astype(np.int64)
    folded = fold_bias(bias, w_rows.sum(axis=1), p["input_offset"])
    if folded is None:
        return None
    taps = w_rows.shape[1]
    steps = gemm_steps(taps)
    rq = gemm_requant(g, op, w_rows, folded, p)
    packed = rq["kind"] == "fast" or (rq["kind"] == "fast_var" and p["act_min"] == -128
                                      and p["act_max"] == 127)
    if packed:                     # bias and (m, k[, e]) travel inside the stream
        words, bias_list, mult = gemm_stream(rq["w"], rq["b"], rq["mult"], steps), [], []
    else:
        words, bias_list, mult = gemm_weights(rq["w"], steps), int_list(rq["b"]), rq["mult"]
    p.update(
        pointwise=(w.shape[1:3] == (1, 1) and tuple(op.attrs["stride"]) == (1, 1)
                   and not any(op.attrs["padding"])),
        taps=taps, steps=steps, pixels=p["out_h"] * p["out_w"], requant=rq["kind"],
        one_pass=steps <= GEMM_UNROLL, packed=packed,
        exponent=rq["exponent"], mult=mult, bias=bias_list,
        stream=[f"0x{v & 0xFFFFFFFF:08x}" for v in words],
        input_zero_point=-p["input_offset"])
    rows = 0 if p["pointwise"] else 2 * (-(-taps // 4) * 4)
    p["scratch"] = 8 * steps + rows
    p["reverse"], p["inplace_offset"] = (False, 0) if p["pointwise"] else window_inplace(p)
    return p


def window_inplace(p: dict) -> tuple[bool, int]:
    """How the im2col kernel may run in place: (reverse, offset), the output's start
    relative to the input's start in bytes.

    Pixels go in pairs whose windows are both staged before their outputs are
    written. Forward, the outputs of pixels up to q must end before the first
    input byte any later pixel reads: offset is the highest start allowed.
    Reverse (last pair first), the outputs of pixels from p on must start after
    the last input byte any earlier pixel reads: offset is the lowest start
    allowed. Reverse when the output is smaller than the input, so that it ends
    near the input's end, where a widening next layer can grow down."""
    oy, ox = np.divmod(np.arange(p["out_h"] * p["out_w"]), p["out_w"])
    first = np.full(oy.shape, np.iinfo(np.int64).max)
    last = np.full(oy.shape, -1)
    for ky in range(p["k_h"]):
        iy = oy * p["stride_h"] - p["pad_top"] + ky * p["dil_h"]
        for kx in range(p["k_w"]):
            ix = ox * p["stride_w"] - p["pad_left"] + kx * p["dil_w"]
            ok = (iy >= 0) & (iy < p["in_h"]) & (ix >= 0) & (ix < p["in_w"])
            at = (iy * p["in_w"] + ix) * p["in_c"]
            first = np.where(ok, np.minimum(first, at), first)
            last = np.where(ok, np.maximum(last, at + p["in_c"] - 1), last)
    starts = np.arange(2, len(first), 2)      # pair starts after the first pair
    oc = p["out_c"]
    if len(oy) * oc < p["in_h"] * p["in_w"] * p["in_c"]:
        before = np.maximum.accumulate(last)                    # last byte read by pixel <= r
        return True, int((before[starts - 1] + 1 - starts * oc).max()) if len(starts) else 0
    after = np.minimum.accumulate(first[::-1])[::-1]            # first byte read by pixel >= r
    return False, int((after[starts] - starts * oc).min()) if len(starts) else 0


def choose(g: Graph, op: Op, target) -> Kernel:
    """conv2d_s16 (SMLAD on int16 weight streams) where a DSP core runs the layer at
    speed and fast_params fits it; conv2d_int16 for 16x8; else portable conv2d."""
    if g.tensors[op.outputs[0]].dtype == "int16":
        return Kernel("conv2d_int16", c_params_int16(g, op))
    p = fast_params(g, op) if dsp_ok(g, op, target) else None
    if p is None:
        return Kernel("conv2d", c_params(g, op))
    mode = "pixels" if p["pointwise"] else ("window_reverse" if p["reverse"] else "window")
    return Kernel("conv2d_s16", p, p["scratch"], mode, f"SMLAD int16, requant {p['requant']}",
                  p["inplace_offset"])


SPEC = OpSpec("conv2d", reference, c_params, macs, choose=choose, int16=True)
