"""CONV_2D, int8 per-channel: TFLM reference_integer_ops::ConvPerChannel.

acc[c] = bias[c] + sum over in-bounds taps of w[c, ky, kx, i] * (x + input_offset),
input_offset = -zp_in; padded taps contribute nothing. Then
MultiplyByQuantizedMultiplier(acc, multiplier[c], shift[c]) + zp_out, clamped.
With int16 activations (TFLite 16x8) the same loop has no offsets, an int64
accumulator and bias, and the int64 MultiplyByQuantizedMultiplier.

IR: inputs x, weight (O, KH, KW, I), optional bias (O,); attrs stride (sh, sw),
dilation (dh, dw), padding (top, left, bottom, right), activation "none" | "relu" |
"relu6"; quantized: multiplier, shift (int32 arrays, one per output channel),
act_min, act_max (int).
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..ir import Graph, Op
from ..window import taps, windows
from .activation import float_clamp
from .dsp_gemm import GEMM_UNROLL, gemm_requant, gemm_steps, gemm_stream, gemm_weights
from ..window import output_size
from .spec import Kernel, OpSpec, TFLite, dsp_ok
from .weighted import (INT16_BLOCK, conv_from_tflite, conv_to_tflite, derive_weighted,
                       float_operands, fold_bias, int16_params, int_list, operands, quant_params,
                       requantize, weight_zero_point, window_params, wrapped_fold)

IM2COL_BYTES = 64 << 20       # the reference's im2col matrix per slice of the batch
WEIGHT_AXIS = 0               # the axis of the weights' output channels


def blocked_weights(w2d: np.ndarray) -> list[int]:
    """(rows, depth) int8 weights -> tinyds_dot4's order: uint8 (w + 128), four rows
    interleaved per block ([block][n][row]), the last block padded with zero weights."""
    rows, depth = w2d.shape
    w = np.concatenate([w2d.astype(np.int64), np.zeros((-rows % 4, depth), np.int64)]) + 128
    return int_list(w.reshape(-1, 4, depth).transpose(0, 2, 1))


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


def fast_params(g: Graph, op: Op) -> dict | None:
    """Literals for templates/ops/conv2d_dsp.c.j2, or None where it cannot run.

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
        stream=(np.asarray(words, np.int64) & 0xFFFFFFFF).astype(np.uint32),
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
    """conv2d_dsp (SMLAD on int16 weight streams) where a DSP core runs the layer at
    speed and fast_params fits it; conv2d_int16 for 16x8; else portable conv2d."""
    if g.tensors[op.outputs[0]].dtype == "int16":
        return Kernel("conv2d_int16", c_params_int16(g, op))
    p = fast_params(g, op) if dsp_ok(g, op, target) else None
    if p is None:
        return Kernel("conv2d", c_params(g, op))
    mode = "pixels" if p["pointwise"] else ("window_reverse" if p["reverse"] else "window")
    return Kernel("conv2d_dsp", p, p["scratch"], mode, f"SMLAD int16, requant {p['requant']}",
                  p["inplace_offset"])


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    w, b = float_operands(g, op)
    out = 0.0
    for i, j, v in taps(x, w.shape[1:3], op.attrs["stride"], op.attrs["dilation"], op.attrs["padding"]):
        out = out + v @ w[:, i, j, :].T
    return float_clamp(out + b, op)


def derive(g: Graph, op: Op) -> None:
    """Per-channel multipliers; weights' output channels on axis 0."""
    derive_weighted(g, op, WEIGHT_AXIS)


def from_aten(lo, a: dict, layer: str):
    """aten::conv2d / convolution / conv1d, through the ATen lowering lo: groups=1 is a
    conv2d, groups=in_channels a depthwise_conv2d, a Conv1d a 1xL conv2d on (N,C,1,L)."""
    x = lo.expect_act(a["input"], layer)
    w, b = a["weight"], a.get("bias")
    if a.get("transposed", False):
        raise lo.unsupported(layer, "conv_transpose2d")
    lo.check_finite(layer, w, b)
    wd = np.asarray(w.data, dtype=np.float64)
    if wd.ndim == 3 and len(x.shape) == 3 and x.perm is None:
        a = lo.args_2d(a, {"stride": 1, "dilation": 1, "padding": 0})
        return lo.as3d(_lower(lo, layer, lo.as4d(x), wd[:, :, None, :], w.name, b, a))
    return _lower(lo, layer, x, wd, w.name, b, a)


def _lower(lo, layer: str, x, wd: np.ndarray, wname: str, b, a: dict):
    """The 2-D convolution of x by PyTorch weights wd (O, I/groups, KH, KW)."""
    x = lo.expect_4d(x, layer, "conv2d")
    if wd.ndim != 4:
        raise lo.fail(layer, f"only 2-D convolutions are supported (weight shape {wd.shape})")
    o, ipg, kh, kw = wd.shape
    groups = int(a.get("groups", 1))
    stride, dilation = lo.pair(a["stride"]), lo.pair(a["dilation"])
    c = x.shape[1]
    if ipg * groups != c:
        raise lo.fail(layer, f"expects {ipg * groups} input channels but gets {c}; check the input shape")
    pad = a["padding"]
    if isinstance(pad, str):
        if pad == "valid":
            padding = (0, 0, 0, 0)
        else:   # 'same' (stride 1): PyTorch puts the odd extra pixel at the bottom/right
            th, tw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
            padding = (th // 2, tw // 2, th - th // 2, tw - tw // 2)
    else:
        ph, pw = lo.pair(pad)
        padding = (ph, pw, ph, pw)
    oh = output_size(x.shape[2], kh, stride[0], dilation[0], padding[0], padding[2])
    ow = output_size(x.shape[3], kw, stride[1], dilation[1], padding[1], padding[3])
    attrs = dict(stride=stride, dilation=dilation, padding=padding, activation="none")
    if groups == 1:
        kind, wt = "conv2d", wd.transpose(0, 2, 3, 1)                 # (O,KH,KW,I)
    elif groups == c and o % c == 0:
        kind, wt = "depthwise_conv2d", wd.transpose(1, 2, 3, 0)       # (1,KH,KW,C*M)
        attrs["depth_multiplier"] = o // c
    else:
        raise lo.fail(layer, f"grouped convolution (groups={groups}, in_channels={c}) is not supported; "
                             "use groups=1 or groups=in_channels (depthwise)")
    base = wname.rsplit(".", 1)[0] if wname.endswith(".weight") else layer
    inputs = [x.name, lo.const(base + ".weight", wt)]
    inputs.append(lo.const(base + ".bias", np.asarray(b.data)) if lo.is_const(b) else "")
    return lo.emit(kind, layer, inputs, (1, o, oh, ow), attrs)


def from_tflite(r, operator, where: str) -> Op:
    return conv_from_tflite(r, operator, where, depthwise=False)


SPEC = OpSpec("conv2d", reference, c_params, macs, derive=derive, choose=choose, int16=True,
              float_reference=float_reference,
              weight_axis=WEIGHT_AXIS, fuses_activation=True,
              aten={"conv2d": from_aten, "_convolution": from_aten, "convolution": from_aten,
                    "_convolution_mode": from_aten, "conv1d": from_aten},
              tflite=TFLite("CONV_2D", 3, from_tflite, conv_to_tflite, options="Conv2DOptions",
                            min_inputs=2))
