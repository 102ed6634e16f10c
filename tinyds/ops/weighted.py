"""What the weighted layers (conv2d, depthwise_conv2d, fully_connected) share: their
operands, the per-channel requantization of the reference and its template literals
(8x8 and 16x8), folding the input offset into the bias, the window geometry of
the two convolutions and their TFLite reader and writer.
"""
from __future__ import annotations

import numpy as np

from ..errors import EXTREME_MODEL, TinydsError
from ..fixedpoint import (INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier,
                          multiply_by_quantized_multiplier_int64, q15_multiplier,
                          quantize_multipliers, wrap_int32)
from ..ir import Graph, Op, Tensor

INT16_MAX_SHIFT = 14            # the int64 MultiplyByQuantizedMultiplier shifts right by 15 - shift


def derive_weighted(g: Graph, op: Op, channel_axis: int) -> None:
    """One multiplier and shift per weight scale (s_in * s_w / s_out); then refuse what
    the kernels cannot run without overflow: an accumulator (bias plus every weight times
    the widest input step, 255) beyond int32; with int16 activations (16x8) an int64
    accumulator (steps of 32768) beyond the 2**47 the int64 MultiplyByQuantizedMultiplier
    takes, or a left shift above 14 (its 15 - shift >= 1)."""
    x, wt, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    s_in, s_out = float(x.scale[0]), float(y.scale[0])
    op.attrs["multiplier"], op.attrs["shift"] = quantize_multipliers(
        [s_in * float(s_w) / s_out for s_w in wt.scale])
    wide = y.dtype == "int16"
    w = wt.data.astype(np.int64)
    step, limit, kind = (1 << 15, (1 << 47) - 1, "int64") if wide else (255, INT32_MAX, "int32")
    acc = step * np.abs(np.moveaxis(w, channel_axis, 0).reshape(w.shape[channel_axis], -1)).sum(axis=1)
    b = g.tensor(op.inputs[2]) if len(op.inputs) > 2 else None
    if b is not None:
        acc = acc + np.abs(b.data.astype(np.int64))
    if acc.max() > limit:
        c = int(acc.argmax())
        bias = f" (bias {int(b.data[c])})" if b is not None else ""
        raise TinydsError(f"layer {op.name}: output channel {c}'s {kind} accumulator can "
                          f"reach {int(acc[c])}{bias}, beyond {limit}; {EXTREME_MODEL}")
    if wide and np.max(op.attrs["shift"]) > INT16_MAX_SHIFT:
        raise TinydsError(f"layer {op.name}: int16 requantization needs a left shift of "
                          f"{int(np.max(op.attrs['shift']))} (> {INT16_MAX_SHIFT}): the "
                          f"output scale is tiny next to the input's; {EXTREME_MODEL}")


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


def float_operands(g: Graph, op: Op):
    """(weights, bias) of a float layer as float64; a missing bias is 0.0."""
    w = g.tensors[op.inputs[1]].data.astype(np.float64)
    b = g.tensor(op.inputs[2]) if len(op.inputs) > 2 else None
    return w, (b.data.astype(np.float64) if b is not None else 0.0)


def conv_from_tflite(r, operator, where: str, depthwise: bool) -> Op:
    """A CONV_2D or DEPTHWISE_CONV_2D operator, through the .tflite reader r."""
    o = operator.builtinOptions
    for t in (operator.inputs[0], operator.inputs[1], operator.outputs[0]):
        r.check_shape(where, t, 4)
    inputs = r.weighted_inputs(operator, where, 3 if depthwise else 0)
    x, w = r.g.tensors[inputs[0]], r.g.tensors[inputs[1]]
    kh, kw = w.shape[1:3]
    stride, dilation = (o.strideH, o.strideW), (o.dilationHFactor, o.dilationWFactor)
    padding, out_hw = r.padding(o.padding, x.shape[1:3], (kh, kw), stride, dilation)
    attrs = {"stride": stride, "dilation": dilation, "padding": padding,
             "activation": r.activation(o.fusedActivationFunction, where)}
    if depthwise:
        mult, rem = divmod(w.shape[3], x.shape[3])
        if rem or (o.depthMultiplier not in (0, mult)):
            raise r.err(where, f"filter channels {w.shape[3]} are not input channels "
                        f"{x.shape[3]} x depth_multiplier {o.depthMultiplier}",
                        "re-convert the model")
        attrs["depth_multiplier"] = mult
    elif w.shape[3] != x.shape[3]:
        raise r.err(where, f"grouped convolution ({x.shape[3]} input channels, filter depth "
                    f"{w.shape[3]}) is not supported", "use a depthwise or a full convolution")
    y = r.tensor(operator.outputs[0], where)
    r.check_window_output(where, x.shape, r.g.tensors[y].shape, out_hw, w.shape[3 if depthwise else 0])
    if len(inputs[2]) and r.g.tensors[inputs[2]].shape != (r.g.tensors[y].shape[3],):
        raise r.err(where, f"bias shape {r.g.tensors[inputs[2]].shape} does not match "
                    f"{r.g.tensors[y].shape[3]} output channels", "re-convert the model")
    return Op("depthwise_conv2d" if depthwise else "conv2d", where, inputs, [y], attrs)


def conv_to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a CONV_2D or DEPTHWISE_CONV_2D operator, through the writer w. Padding
    TFLite cannot express as SAME/VALID becomes a PAD (with the input zero point, exact
    for convolutions) in front of a VALID convolution."""
    x, wt = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    kernel, stride = wt.shape[1:3], tuple(op.attrs["stride"])
    dilation = tuple(op.attrs.get("dilation", (1, 1)))
    code = w.padding_code(op, x.shape[1:3], kernel, stride, dilation)
    x_idx = w.tensor(x)
    if code is None:
        t, l, b, r = op.attrs["padding"]
        padded = Tensor(f"{op.name}/pad", (1, x.shape[1] + t + b, x.shape[2] + l + r, x.shape[3]),
                        x.dtype, scale=x.scale, zero_point=x.zero_point)
        pads = w.const_i32(f"{op.name}/paddings", [[0, 0], [t, b], [l, r], [0, 0]])
        p_idx = w.tensor(padded)
        w.op("pad", [x_idx, pads], [p_idx])
        x_idx, code = p_idx, 1
    ins = [x_idx, w.tensor(wt), w.tensor(g.tensors[op.inputs[2]]) if op.inputs[2] else -1]
    common = dict(padding=code, strideH=stride[0], strideW=stride[1],
                  dilationHFactor=dilation[0], dilationWFactor=dilation[1],
                  fusedActivationFunction=w.activation(op))
    if op.type == "conv2d":
        opts = w.options("Conv2DOptionsT", **common)
        w.op("conv2d", ins, [w.tensor(g.tensors[op.outputs[0]])], opts, "Conv2DOptions")
    else:
        opts = w.options("DepthwiseConv2DOptionsT", depthMultiplier=op.attrs["depth_multiplier"],
                         **common)
        w.op("depthwise_conv2d", ins, [w.tensor(g.tensors[op.outputs[0]])], opts,
             "DepthwiseConv2DOptions")
