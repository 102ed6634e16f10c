"""SOFTMAX int8 -> int8 (output scale 1/256, zero point -128), as TFLM's
reference_ops::Softmax with gemmlowp fixed point; int16 -> int16 (16x8: output scale
1/32768, zero point 0) as its SoftmaxInt16, with two interpolated lookup tables.

Per row: d = x - max(x); entries with d < diff_min contribute nothing and
output -128. The others are rescaled to Q5.26 (input_multiplier,
input_left_shift), exponentiated in Q0.31 by gemmlowp's exp_on_negative_values,
summed in Q12.19; the sum's reciprocal comes from one_over_one_plus_x_for_x_in_0_1
and each output is exp * reciprocal shifted down to 8 bits.

The gemmlowp helpers below work on int64 arrays that hold int32 values; their
C twins are in templates/ops/softmax.c.j2.

IR: one input, one output of its shape, over the last axis; attrs beta; quantized:
input_multiplier, input_left_shift, diff_min (derive). PyTorch's aten::softmax over
dim 1 and TFLite's SOFTMAX map to it both ways.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import TinydsError
from ..fixedpoint import (INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier,
                          quantize_multiplier)
from ..fixedpoint import rounding_divide_by_pot as rdbpot
from ..fixedpoint import saturating_rounding_doubling_high_mul as mul
from ..ir import Graph, Op
from .spec import Kernel, OpSpec, TFLite

DIFF_INTEGER_BITS = 5    # exp input format Q5.26
ACCUM_INTEGER_BITS = 12  # sum of exps format Q12.19
MAX_DEPTH = 511          # TFLite checks the final shift <= 31: the Q12.19 sum stays < 512


def shift_left_saturating(x, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT for exponent > 0."""
    limit = (1 << (31 - exponent)) - 1
    return np.where(x > limit, INT32_MAX, np.where(x < -limit, INT32_MIN, x << exponent))


def exp_on_interval_between_negative_one_quarter_and_0_excl(a) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor series around -1/8."""
    exp_minus_one_eighth = 1895147668
    one_third = 715827883
    x = a + (1 << 28)
    x2 = mul(x, x)
    x3 = mul(x2, x)
    x4 = mul(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    tail = rdbpot(mul(x4_over_4 + x3, one_third) + x2, 1)
    return exp_minus_one_eighth + mul(exp_minus_one_eighth, x + tail)


# exp(-2**k) in Q0.31 for the bits k = -2 .. 4 of a Q5.26 magnitude
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits: int = DIFF_INTEGER_BITS) -> np.ndarray:
    """exp(a) for a <= 0 in Q(integer_bits).(31 - integer_bits), integer_bits <= 5,
    result in Q0.31 (gemmlowp; softmax uses Q5.26, logistic Q4.27)."""
    fractional_bits = 31 - integer_bits
    quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        shift_left_saturating(a_mod_quarter_minus_quarter, integer_bits))
    remainder = a_mod_quarter_minus_quarter - a
    for exponent, multiplier in _EXP_BARREL:
        if exponent < integer_bits:
            bit = (remainder >> (fractional_bits + exponent)) & 1
            result = np.where(bit == 1, mul(result, multiplier), result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """1 / (1 + a) for a in [0, 1) in Q0.31: three Newton-Raphson steps in Q2.29."""
    half_denominator = (a + INT32_MAX + 1) >> 1  # RoundingHalfSum(a, 1.0); a + 1.0 > 0 here
    one_q2 = 1 << 29
    x = 1515870810 + mul(half_denominator, -1010580540)  # 48/17 - 32/17 * d
    for _ in range(3):
        one_minus_dx = one_q2 - mul(half_denominator, x)
        x = x + shift_left_saturating(mul(x, one_minus_dx), 2)
    return shift_left_saturating(x, 1)


def get_reciprocal(total) -> tuple[np.ndarray, np.ndarray]:
    """TFLite GetReciprocal for a Q12.19 sum: (1/sum in Q0.31 scaled to [1/2, 1), bits over unit)."""
    total = np.asarray(total, np.int64)
    headroom_plus_one = 32 - np.frexp(total.astype(np.float64))[1]  # clz of a positive int32
    shifted_minus_one = (total << headroom_plus_one) - (1 << 31)
    return one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), ACCUM_INTEGER_BITS - headroom_plus_one


def params(g: Graph, op: Op) -> dict:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if x.dtype == "int16":
        return params_int16(g, op)
    if y.qparams != (1 / 256, -128):
        raise TinydsError(f"{g.name}: {op.name}: softmax output quantization {y.qparams} must be "
                          f"(1/256, -128) as TFLite requires; requantize the softmax output")
    depth = x.shape[-1]
    if depth > MAX_DEPTH:
        raise TinydsError(f"{g.name}: {op.name}: softmax over {depth} classes exceeds the "
                          f"{MAX_DEPTH} TFLite int8 softmax supports; apply softmax on the host instead")
    return dict(rows=x.size // depth, depth=depth,
                input_multiplier=int(op.attrs["input_multiplier"]),
                input_left_shift=int(op.attrs["input_left_shift"]),
                diff_min=int(op.attrs["diff_min"]))


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    if x.dtype == np.int16:
        return reference_int16(g, op, x)
    p = params(g, op)
    xi = x.astype(np.int64)
    diff = xi - xi.max(axis=-1, keepdims=True)
    live = diff >= p["diff_min"]
    scaled = mul(diff << p["input_left_shift"], p["input_multiplier"])
    exps = np.where(live, exp_on_negative_values(np.where(live, scaled, 0)), 0)
    total = rdbpot(exps, ACCUM_INTEGER_BITS).sum(axis=-1, keepdims=True)
    reciprocal, bits_over_unit = get_reciprocal(total)
    out = rdbpot(mul(reciprocal, exps), bits_over_unit + 31 - 8) - 128
    return np.where(live, np.clip(out, -128, 127), -128).astype(np.int8)


def c_params(g: Graph, op: Op) -> dict:
    return params(g, op)


# ------------------------------------------------ int16 (TFLite's SoftmaxInt16, 16x8)

LUT_STEPS = 512                # 513 entries: 512 bases and the last slope's end
INT16_OUTPUT = (1 / 32768, 0)  # TFLite's fixed int16 softmax output


def _lut(func, input_min: float, input_max: float) -> np.ndarray:
    """TFLite's int16 LUT generator (gen_lut / LUTPopulateInt16) in float32 for an output
    range of [-1, 1]: 512 samples, each lowered by half the error its linear interpolation
    makes at the midpoint, and a final entry at input_max."""
    f32 = np.float32
    lo, hi = f32(input_min), f32(input_max)
    step = (hi - lo) / f32(LUT_STEPS)
    half = step / f32(2)
    scale = f32(65536.0) / (f32(1.0) - f32(-1.0))
    i = np.arange(LUT_STEPS).astype(np.float32)
    x = lo + i * step
    val, mid, nxt = func(x), func(x + half), func(lo + (i + f32(1)) * step)

    def rnd(v):                                  # TfLiteRound on float32
        return np.sign(v) * np.floor(np.abs(v) + f32(0.5))
    sample = rnd(val * scale)
    interp = rnd((nxt * scale + sample) / f32(2))
    bias = rnd((interp - rnd(mid * scale)) / f32(2))
    last = rnd(func(np.array([hi], np.float32)) * scale)
    table = np.concatenate([sample - bias, last])
    return np.clip(table, -32768, 32767).astype(np.int16)


def _exp32(x: np.ndarray) -> np.ndarray:
    """std::exp on float32: the float64 exp rounded to float32 (what a correctly rounded
    expf gives)."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


def _one_over_one_plus_x(x: np.ndarray) -> np.ndarray:
    return (np.float32(1.0) / (np.float32(1.0) + x)).astype(np.float32)


def int16_luts() -> tuple[np.ndarray, np.ndarray]:
    """The exp LUT over [-10, 0] and the 1/(1+x) LUT over [0, 1], as TFLM's softmax
    Prepare builds them."""
    return _lut(_exp32, -10.0, 0.0), _lut(_one_over_one_plus_x, 0.0, 1.0)


def lut_lookup(value: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """TFLite LUTLookup for int16: 9 bits index, 7 bits interpolate."""
    value = np.asarray(value, np.int64)
    index = 256 + (value >> 7)
    offset = value & 0x7F
    base = lut.astype(np.int64)[index]
    slope = lut.astype(np.int64)[index + 1] - base
    return base + ((slope * offset + 64) >> 7)


def params_int16(g: Graph, op: Op) -> dict:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if y.qparams != INT16_OUTPUT:
        raise TinydsError(f"{g.name}: {op.name}: int16 softmax output quantization {y.qparams} "
                          f"must be (1/32768, 0) as TFLite requires; requantize the softmax output")
    depth = x.shape[-1]
    exp_lut, recip_lut = int16_luts()
    return dict(rows=x.size // depth, depth=depth,
                input_multiplier=int(op.attrs["input_multiplier"]),
                input_left_shift=int(op.attrs["input_left_shift"]),
                exp_lut=[int(v) for v in exp_lut], recip_lut=[int(v) for v in recip_lut])


def reference_int16(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    """TFLite reference_ops::SoftmaxInt16: exp of the rescaled differences from the row
    maximum through the exp LUT (Q0.15), their sum's reciprocal through the 1/(1+x) LUT
    after normalising the sum to [1, 2), and each exp times it, rounded to Q0.15."""
    p = params_int16(g, op)
    exp_lut, recip_lut = (np.array(p[k], np.int16) for k in ("exp_lut", "recip_lut"))
    xi = x.astype(np.int64)
    diff = xi - xi.max(axis=-1, keepdims=True)
    scaled = multiply_by_quantized_multiplier(diff, p["input_multiplier"], p["input_left_shift"])
    exps = lut_lookup(np.clip(scaled + 32767, -32768, 32767), exp_lut)
    total = exps.sum(axis=-1, keepdims=True)
    headroom_plus_one = 32 - np.frexp(total.astype(np.float64))[1]   # clz of a positive int32
    shifted = ((total << (headroom_plus_one - 1)) + (1 << 13)) >> 14
    reciprocal = lut_lookup(np.clip(shifted - (1 << 15) - (1 << 16), -32768, 32767), recip_lut)
    right = 31 - headroom_plus_one
    out = (exps * reciprocal + (np.int64(1) << (right - 1))) >> right
    return np.clip(out, 0, 32767).astype(np.int16)


def c_params_int16(g: Graph, op: Op) -> dict:
    return params_int16(g, op)


def macs(g: Graph, op: Op) -> int:
    """Element ops: max, exp and scale per input element."""
    return 3 * g.tensors[op.inputs[0]].size


def choose(g: Graph, op: Op, target) -> Kernel:
    """softmax_int16 (LUTs) for 16x8, else the portable kernel."""
    if g.tensors[op.outputs[0]].dtype == "int16":
        return Kernel("softmax_int16", c_params_int16(g, op))
    return Kernel("softmax", c_params(g, op))


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    z = (x - x.max(axis=-1, keepdims=True)) * op.attrs.get("beta", 1.0)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def derive(g: Graph, op: Op) -> None:
    """TFLite PreprocessSoftmaxScaling + CalculateInputRadius for int8 input; for int16,
    s_in * beta over 10 / 65535 (the exp LUT's input step) in double."""
    s_in = float(g.tensors[op.inputs[0]].scale[0])
    if g.tensors[op.inputs[0]].dtype == "int16":
        beta = float(np.float32(op.attrs.get("beta", 1.0)))
        op.attrs["input_multiplier"], op.attrs["input_left_shift"] = quantize_multiplier(
            s_in * beta / (10.0 / 65535.0))
        return
    bits = DIFF_INTEGER_BITS
    real = min(float(op.attrs.get("beta", 1.0)) * s_in * (1 << (31 - bits)), (1 << 31) - 1.0)
    multiplier, left_shift = quantize_multiplier(real)
    op.attrs["input_multiplier"], op.attrs["input_left_shift"] = multiplier, left_shift
    radius = ((1 << bits) - 1) * (1 << (31 - bits)) / (1 << left_shift)
    op.attrs["diff_min"] = -int(math.floor(radius))


def from_aten(lo, a: dict, layer: str):
    """aten::softmax / aten::_softmax(self, dim) over the classes (dim 1), through lo."""
    x = lo.expect_act(a["self"], layer)
    if x.perm is not None:
        raise lo.fail(layer, "softmax on a flattened NCHW feature map is not supported")
    if a["dim"] % len(x.shape) != 1:
        raise lo.fail(layer, f"softmax over dim {a['dim']} of shape {x.shape} is not supported; "
                             "use dim=1 (classes / channels)")
    return lo.emit("softmax", layer, [x.name], x.shape, {"beta": 1.0})


def from_tflite(r, operator, where: str) -> Op:
    """A SOFTMAX operator (TFLite's fixed output quantization), through the reader r."""
    x = r.tensor(operator.inputs[0], where)
    y = r.tensor(operator.outputs[0], where)
    r.check_output_shape(where, y, r.g.tensors[x].shape)
    want = INT16_OUTPUT if r.g.tensors[y].dtype == "int16" else (1 / 256, -128)
    if r.g.tensors[y].qparams != want:
        raise r.err(where, f"softmax output quantization {r.g.tensors[y].qparams}",
                    "TFLite softmax outputs scale 1/256, zero point -128 (int8) or scale "
                    "1/32768, zero point 0 (int16)")
    return Op("softmax", where, [x], [y], {"beta": float(operator.builtinOptions.beta)})


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a SOFTMAX operator, through the .tflite writer w."""
    w.op("softmax", [w.tensor(g.tensors[op.inputs[0]])], w.outputs(g, op),
         w.options("SoftmaxOptionsT", beta=float(op.attrs.get("beta", 1.0))), "SoftmaxOptions")


SPEC = OpSpec("softmax", reference, c_params, macs, derive=derive, choose=choose, int16=True,
              float_reference=float_reference,
              aten={"softmax": from_aten, "_softmax": from_aten},
              tflite=TFLite("SOFTMAX", 2, from_tflite, to_tflite, options="SoftmaxOptions"),
              fixed_output={"int8": (np.float32(1 / 256), -128), "int16": (np.float32(1 / 32768), 0)})
