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
from .spec import Kernel, OpSpec, TFLite, dsp_ok


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


def quantized_as(g: Graph, op: Op) -> Op | None:
    """An average over the whole H x W is TFLite MEAN (what Keras' GlobalAveragePooling2D
    converts to): it gets its own output scale instead of the input's wider one."""
    if op.attrs.get("activation", "none") != "none":
        return None
    _, h, w, _ = g.tensors[op.inputs[0]].shape
    if tuple(op.attrs["kernel"]) != (h, w) or any(op.attrs["padding"]):
        return None
    return Op("mean", op.name, list(op.inputs), list(op.outputs), {"axes": (1, 2), "keepdims": True})


def from_aten(lo, a: dict, layer: str):
    """aten::avg_pool2d, through the ATen lowering lo. PyTorch's default counts the zero
    padding in the average, TFLite only in-bounds taps: such padding becomes a PAD."""
    x = lo.expect_4d(lo.expect_act(a["self"], layer), layer, "avg_pool2d")
    if a.get("divisor_override") is not None:
        raise lo.fail(layer, "avg_pool2d with divisor_override is not supported; remove it")
    kernel, stride, padding, shape = lo.pool_geometry(layer, x, a, "avg_pool2d")
    if any(padding) and a.get("count_include_pad", True):
        n, c, h, w = x.shape
        x = lo.emit("pad", layer + ".pad", [x.name], (n, c, h + 2 * padding[0], w + 2 * padding[1]),
                    {"padding": padding})
        padding = (0, 0, 0, 0)
    return lo.emit("avg_pool2d", layer, [x.name], shape,
                   dict(kernel=kernel, stride=stride, padding=padding, activation="none"))


def from_avg_pool1d(lo, a: dict, layer: str):
    return lo.pool1d(from_aten, a, layer, "avg_pool1d")


def from_adaptive(lo, a: dict, layer: str):
    """aten::adaptive_avg_pool2d to 1x1 (a global average) or to a divisor of the input size."""
    x = lo.expect_4d(lo.expect_act(a["self"], layer), layer, "adaptive_avg_pool2d")
    oh, ow = lo.pair(a["output_size"])
    h, w = x.shape[2], x.shape[3]
    oh, ow = oh or h, ow or w
    if (oh, ow) == (1, 1):
        return lo.global_avg(layer, x)
    if (oh, ow) == (h, w):
        return x
    if h % oh or w % ow:
        raise lo.fail(layer, f"adaptive_avg_pool2d from {h}x{w} to {oh}x{ow} has uneven windows; "
                             "use output size 1 or a divisor of the input size")
    k = (h // oh, w // ow)
    return lo.emit("avg_pool2d", layer, [x.name], (1, x.shape[1], oh, ow),
                   dict(kernel=k, stride=k, padding=(0, 0, 0, 0), activation="none"))


def from_adaptive1d(lo, a: dict, layer: str):
    """aten::adaptive_avg_pool1d on (N, C, L): the 2-D one to 1 x output_size."""
    x = lo.expect_act(a["self"], layer)
    if len(x.shape) != 3:
        raise lo.fail(layer, f"adaptive_avg_pool1d needs an (N,C,L) input, got shape {x.shape}")
    size = a["output_size"]
    size = size[0] if isinstance(size, (list, tuple)) else size
    return lo.as3d(from_adaptive(lo, {"self": lo.as4d(x), "output_size": [1, size]}, layer))


def pool_from_tflite(r, operator, where: str, kind: str) -> Op:
    """An AVERAGE_POOL_2D or MAX_POOL_2D operator (kind: the IR op), through the reader r."""
    o = operator.builtinOptions
    r.check_shape(where, operator.inputs[0], 4)
    x = r.tensor(operator.inputs[0], where)
    y = r.tensor(operator.outputs[0], where)
    r.same_quant(x, y, where)
    kernel, stride = (o.filterHeight, o.filterWidth), (o.strideH, o.strideW)
    xs = r.g.tensors[x].shape
    padding, out_hw = r.padding(o.padding, xs[1:3], kernel, stride, (1, 1))
    r.check_window_output(where, xs, r.g.tensors[y].shape, out_hw, xs[3])
    return Op(kind, where, [x], [y], {"kernel": kernel, "stride": stride, "padding": padding,
                                      "activation": r.activation(o.fusedActivationFunction, where)})


def pool_to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as its pooling operator, through the writer w; its padding must be SAME
    or VALID."""
    x = g.tensors[op.inputs[0]]
    kernel, stride = tuple(op.attrs["kernel"]), tuple(op.attrs["stride"])
    code = w.padding_code(op, x.shape[1:3], kernel, stride, (1, 1))
    if code is None:
        raise TinydsError(f"{g.name}: {op.name}: pool padding {op.attrs['padding']} is neither "
                          "SAME nor VALID; TFLite cannot express it (use SAME/VALID-equivalent "
                          "padding)")
    opts = w.options("Pool2DOptionsT", padding=code, strideH=stride[0], strideW=stride[1],
                     filterHeight=kernel[0], filterWidth=kernel[1],
                     fusedActivationFunction=w.activation(op))
    w.op(op.type, [w.tensor(x)], [w.tensor(g.tensors[op.outputs[0]])], opts, "Pool2DOptions")


def from_tflite(r, operator, where: str) -> Op:
    return pool_from_tflite(r, operator, where, "avg_pool2d")


SPEC = OpSpec("avg_pool2d", reference, c_params, macs, choose=choose, int16=True,
              float_reference=float_reference,
              same_quant=True, fuses_activation=True, quantized_as=quantized_as,
              aten={"avg_pool2d": from_aten, "avg_pool1d": from_avg_pool1d,
                    "adaptive_avg_pool2d": from_adaptive, "adaptive_avg_pool1d": from_adaptive1d},
              tflite=TFLite("AVERAGE_POOL_2D", 2, from_tflite, pool_to_tflite,
                            options="Pool2DOptions"))
