"""Each op's integer parameters, derived from tensor scales exactly as TFLM's Prepare does.

Both the PyTorch quantizer and the .tflite importer end here, so one function
decides multipliers, shifts and clamps; the reference and the code generator
only read the attrs this writes.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import TinydsError
from .fixedpoint import INT32_MAX, quantize_multiplier, quantize_multipliers
from .ir import Graph, Op
from .ops.activation import activation_range

MAX_SHIFT = 31                  # the C requantization shifts a uint32 left by at most this
WEIGHT_AXES = {"conv2d": 0, "depthwise_conv2d": 3, "fully_connected": 0}   # output channels
ADD_LEFT_SHIFT = 20             # TFLite's headroom for int8 ADD
SOFTMAX_DIFF_INTEGER_BITS = 5   # kScaledDiffIntegerBits in TFLite's int8 softmax
LOGISTIC_INPUT_INTEGER_BITS = 4  # kInputIntegerBits in TFLite's int8 logistic
INT16_MAX = (1 << 15) - 1
INT16_MAX_SHIFT = 14            # the int64 MultiplyByQuantizedMultiplier shifts right by 15 - shift


def _weighted(g: Graph, op: Op) -> None:
    x, w, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    s_in, s_out = float(x.scale[0]), float(y.scale[0])
    reals = [s_in * float(s_w) / s_out for s_w in w.scale]
    op.attrs["multiplier"], op.attrs["shift"] = quantize_multipliers(reals)


def _add(g: Graph, op: Op) -> None:
    s1 = float(g.tensors[op.inputs[0]].scale[0])
    s2 = float(g.tensors[op.inputs[1]].scale[0])
    s_out = float(g.tensors[op.outputs[0]].scale[0])
    twice_max = 2.0 * max(s1, s2)
    op.attrs["left_shift"] = ADD_LEFT_SHIFT
    op.attrs["input1_multiplier"], op.attrs["input1_shift"] = quantize_multiplier(s1 / twice_max)
    op.attrs["input2_multiplier"], op.attrs["input2_shift"] = quantize_multiplier(s2 / twice_max)
    op.attrs["output_multiplier"], op.attrs["output_shift"] = quantize_multiplier(
        twice_max / ((1 << ADD_LEFT_SHIFT) * s_out))


def _mul(g: Graph, op: Op) -> None:
    """TFLM CalculateOpDataMul: s1 * s2 / s_out in double."""
    s1, s2, s_out = (float(g.tensors[n].scale[0]) for n in (*op.inputs[:2], op.outputs[0]))
    op.attrs["output_multiplier"], op.attrs["output_shift"] = quantize_multiplier(s1 * s2 / s_out)


def _softmax(g: Graph, op: Op) -> None:
    """TFLite PreprocessSoftmaxScaling + CalculateInputRadius for int8 input; for int16,
    s_in * beta over 10 / 65535 (the exp LUT's input step) in double."""
    s_in = float(g.tensors[op.inputs[0]].scale[0])
    if g.tensors[op.inputs[0]].dtype == "int16":
        beta = float(np.float32(op.attrs.get("beta", 1.0)))
        op.attrs["input_multiplier"], op.attrs["input_left_shift"] = quantize_multiplier(
            s_in * beta / (10.0 / 65535.0))
        return
    bits = SOFTMAX_DIFF_INTEGER_BITS
    real = min(float(op.attrs.get("beta", 1.0)) * s_in * (1 << (31 - bits)), (1 << 31) - 1.0)
    multiplier, left_shift = quantize_multiplier(real)
    op.attrs["input_multiplier"], op.attrs["input_left_shift"] = multiplier, left_shift
    radius = ((1 << bits) - 1) * (1 << (31 - bits)) / (1 << left_shift)
    op.attrs["diff_min"] = -int(math.floor(radius))


def _leaky_relu(g: Graph, op: Op) -> None:
    """TFLM CalculateOpDataLeakyRelu: both ratios in float32, then QuantizeMultiplier."""
    alpha = float(op.attrs["alpha"])
    if not alpha > 0:
        raise TinydsError(f"layer {op.name}: leaky ReLU slope {alpha:g} is not positive; "
                          "use a positive negative_slope (0 is a ReLU)")
    s_in = np.float32(g.tensors[op.inputs[0]].scale[0])
    s_out = np.float32(g.tensors[op.outputs[0]].scale[0])
    op.attrs["alpha_multiplier"], op.attrs["alpha_shift"] = quantize_multiplier(
        float(s_in * np.float32(alpha) / s_out))
    op.attrs["identity_multiplier"], op.attrs["identity_shift"] = quantize_multiplier(
        float(s_in / s_out))


def _requantize(g: Graph, op: Op) -> None:
    """TFLM PrepareQuantizeReference: s_in / s_out in double."""
    s_in, s_out = (float(g.tensors[n].scale[0]) for n in (op.inputs[0], op.outputs[0]))
    op.attrs["multiplier"], op.attrs["shift"] = quantize_multiplier(s_in / s_out)


def _prelu(g: Graph, op: Op) -> None:
    """TFLM CalculatePreluParams: s_in / s_out and s_in * s_alpha / s_out in double."""
    s_in, s_alpha, s_out = (float(g.tensors[n].scale[0]) for n in (*op.inputs[:2], op.outputs[0]))
    op.attrs["identity_multiplier"], op.attrs["identity_shift"] = quantize_multiplier(s_in / s_out)
    op.attrs["alpha_multiplier"], op.attrs["alpha_shift"] = quantize_multiplier(
        s_in * s_alpha / s_out)


def _int16_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier, then TFLite DownScaleInt32ToInt16Multiplier."""
    m, shift = quantize_multiplier(real)
    return (INT16_MAX if m >= INT32_MAX - (1 << 15) else (m + (1 << 15)) >> 16), shift


def _hard_swish(g: Graph, op: Op) -> None:
    """TFLM HardSwishPrepare: float32 scales, int16 multipliers."""
    s_in = np.float32(g.tensors[op.inputs[0]].scale[0])
    s_out = np.float32(g.tensors[op.outputs[0]].scale[0])
    hires = np.float32(1.0 / 128.0) * s_in
    m, shift = _int16_multiplier(float(hires / s_out))
    if not -15 <= shift <= 0:
        raise TinydsError(f"layer {op.name}: hardswish output scale {float(s_out):g} is too "
                          f"{'small' if shift > 0 else 'large'} for its input scale "
                          f"{float(s_in):g}; recalibrate the layer's output")
    op.attrs["output_multiplier"], op.attrs["output_shift"] = m, shift
    m, shift = _int16_multiplier(float(hires / np.float32(3.0 / 32768.0)))
    if shift < -15:
        raise TinydsError(f"layer {op.name}: hardswish input scale {float(s_in):g} is too small; "
                          "recalibrate the layer's input")
    op.attrs["reluish_multiplier"], op.attrs["reluish_shift"] = m, shift


def _logistic(g: Graph, op: Op) -> None:
    """TFLM CalculateArithmeticOpDataLogistic for int8 (Q4.27 input)."""
    s_in = float(g.tensors[op.inputs[0]].scale[0])
    q, left_shift = math.frexp(s_in * (1 << (31 - LOGISTIC_INPUT_INTEGER_BITS)))
    if left_shift < 0:
        raise TinydsError(f"layer {op.name}: sigmoid input scale {s_in:g} is too small; "
                          "recalibrate the layer's input")
    op.attrs["input_multiplier"] = int(math.floor(q * (1 << 31) + 0.5))
    op.attrs["input_left_shift"] = left_shift
    op.attrs["input_range_radius"] = int(math.floor(
        ((1 << LOGISTIC_INPUT_INTEGER_BITS) - 1) * (1 << (31 - LOGISTIC_INPUT_INTEGER_BITS))
        / (1 << left_shift)))


def _check_ranges(g: Graph, op: Op) -> None:
    """Refuse params the kernels cannot run without overflow: an accumulator (bias plus every
    weight times the widest input step, 255) beyond int32, or a left shift above 31. With
    int16 activations (16x8): an int64 accumulator (steps of 32768) beyond the 2**47 the
    int64 MultiplyByQuantizedMultiplier takes, or a shift above 14 (its 15 - shift >= 1)."""
    fix = ("the model's weights, BatchNorm statistics or activation ranges are extreme; "
           "fix or retrain the model")
    wide = g.tensors[op.outputs[0]].dtype == "int16"
    if op.type in WEIGHT_AXES:
        w = g.tensors[op.inputs[1]].data.astype(np.int64)
        axis = WEIGHT_AXES[op.type]
        step, limit, kind = (1 << 15, (1 << 47) - 1, "int64") if wide else (255, INT32_MAX, "int32")
        acc = step * np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).sum(axis=1)
        b = g.tensor(op.inputs[2]) if len(op.inputs) > 2 else None
        if b is not None:
            acc = acc + np.abs(b.data.astype(np.int64))
        if acc.max() > limit:
            c = int(acc.argmax())
            bias = f" (bias {int(b.data[c])})" if b is not None else ""
            raise TinydsError(f"layer {op.name}: output channel {c}'s {kind} accumulator can "
                              f"reach {int(acc[c])}{bias}, beyond {limit}; {fix}")
        if wide and np.max(op.attrs["shift"]) > INT16_MAX_SHIFT:
            raise TinydsError(f"layer {op.name}: int16 requantization needs a left shift of "
                              f"{int(np.max(op.attrs['shift']))} (> {INT16_MAX_SHIFT}): the "
                              f"output scale is tiny next to the input's; {fix}")
    for key, v in op.attrs.items():
        if key.endswith("shift") and np.max(v) > MAX_SHIFT:
            raise TinydsError(f"layer {op.name}: requantization needs a left shift of "
                              f"{int(np.max(v))} (> {MAX_SHIFT}): the output scale is tiny "
                              f"next to the input's; {fix}")


DERIVE = {"leaky_relu": _leaky_relu, "prelu": _prelu, "quantize": _requantize, "hard_swish": _hard_swish, "logistic": _logistic}


def derive_int_params(g: Graph) -> Graph:
    """Fill op.attrs with the integer params listed in ir.py; returns g for chaining."""
    for op in g.ops:
        if op.type in ("conv2d", "depthwise_conv2d", "fully_connected"):
            _weighted(g, op)
        elif op.type in ("add", "sub"):
            _add(g, op)
        elif op.type == "mul":
            _mul(g, op)
        elif op.type == "softmax":
            _softmax(g, op)
        elif op.type in DERIVE:
            DERIVE[op.type](g, op)
        if "activation" in op.attrs:
            y = g.tensors[op.outputs[0]]
            op.attrs["act_min"], op.attrs["act_max"] = activation_range(
                op.attrs["activation"], *y.qparams, y.qrange)
        _check_ranges(g, op)
    return g
