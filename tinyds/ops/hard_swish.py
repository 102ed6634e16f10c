"""HARD_SWISH int8, x * relu6(x + 3) / 6, as TFLM's reference_ops::HardSwish.

TFLite computes it in 16-bit fixed point: x - zp_in moves to a "hires" scale
(<< 7), is rescaled once to the output scale (before the final shift) and
once to a scale where 3.0 is 32768 (the "reluish" value, saturating), which is
mapped from [-1, 1] to [0, 1] and multiplied in with a truncating doubling
high multiply (TFLite's choice: it cancels the rounding bias of the others).
The int16 multipliers come from derive (TFLM's HardSwishPrepare).

IR: one input, one output of its shape; quantized: output_multiplier, output_shift,
reluish_multiplier, reluish_shift (int16 multipliers, TFLite's HardSwishParams).
PyTorch's aten::hardswish and TFLite's HARD_SWISH map to it both ways.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..fixedpoint import INT32_MAX, quantize_multiplier, rounding_divide_by_pot
from ..ir import Graph, Op
from .spec import OpSpec, TFLite

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1


def wrap_int16(x) -> np.ndarray:
    return ((np.asarray(x, np.int64) + (1 << 15)) & 0xFFFF) - (1 << 15)


def _trunc_div_2_15(x) -> np.ndarray:
    """C's x / 32768 (truncates towards zero)."""
    return np.where(x >= 0, x >> 15, -((-x) >> 15))


def srdhm16(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul for int16."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    high = _trunc_div_2_15(ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14)))
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, high)


def sdhm16(a, b) -> np.ndarray:
    """TFLite SaturatingDoublingHighMul: like srdhm16 but truncating (SQDMULH)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    high = _trunc_div_2_15(a * b)
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, high)


def saturating_left_shift16(x, amount: int) -> np.ndarray:
    return np.clip(np.asarray(x, np.int64) << amount, INT16_MIN, INT16_MAX)


def params(g: Graph, op: Op) -> dict:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    at = op.attrs
    return dict(size=x.size, input_zp=x.qparams[1], output_zp=y.qparams[1],
                output_multiplier=int(at["output_multiplier"]), output_shift=int(at["output_shift"]),
                reluish_multiplier=int(at["reluish_multiplier"]),
                reluish_shift=int(at["reluish_shift"]))


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    p = params(g, op)
    hires = (x.astype(np.int64) - p["input_zp"]) * 128
    preshift_output = srdhm16(hires, p["output_multiplier"])
    reluish = hires
    e = p["reluish_shift"]
    if e > 0:
        reluish = saturating_left_shift16(reluish, e - 1)
    reluish = srdhm16(reluish, p["reluish_multiplier"])
    if e > 0:
        reluish = saturating_left_shift16(reluish, 1)
    if e < 0:
        reluish = rounding_divide_by_pot(reluish, -e)
    reluish = (reluish + (1 << 15)) >> 1
    out = rounding_divide_by_pot(sdhm16(reluish, preshift_output), -p["output_shift"])
    out = wrap_int16(out + p["output_zp"])
    return np.clip(out, -128, 127).astype(np.int8)


def c_params(g: Graph, op: Op) -> dict:
    return params(g, op)


def macs(g: Graph, op: Op) -> int:
    """Three 16-bit multiplies per element."""
    return 3 * g.tensors[op.outputs[0]].size


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _int16_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier, then TFLite DownScaleInt32ToInt16Multiplier."""
    m, shift = quantize_multiplier(real)
    return (INT16_MAX if m >= INT32_MAX - (1 << 15) else (m + (1 << 15)) >> 16), shift


def derive(g: Graph, op: Op) -> None:
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


def from_aten(lo, a: dict, layer: str):
    """aten::hardswish(self), through the ATen lowering lo."""
    x = lo.expect_act(a["self"], layer)
    return lo.emit("hard_swish", layer, [x.name], x.shape, perm=x.perm)


def from_tflite(r, operator, where: str) -> Op:
    """A HARD_SWISH operator, through the .tflite reader r."""
    x = r.tensor(operator.inputs[0], where)
    y = r.tensor(operator.outputs[0], where)
    r.check_output_shape(where, y, r.g.tensors[x].shape)
    return Op("hard_swish", where, [x], [y], {})


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a HARD_SWISH operator, through the .tflite writer w."""
    w.op("hard_swish", [w.tensor(g.tensors[op.inputs[0]])], w.outputs(g, op))


SPEC = OpSpec("hard_swish", reference, c_params, macs, derive=derive,
              float_reference=float_reference,
              aten={"hardswish": from_aten}, tflite=TFLite("HARD_SWISH", 1, from_tflite, to_tflite))
