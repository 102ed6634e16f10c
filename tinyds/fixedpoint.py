"""TFLite's integer requantization arithmetic, vectorised over NumPy arrays.

These are the primitives of tensorflow/lite/kernels/internal/common.h with
gemmlowp double rounding (TFLM's default). Every int8 kernel in the NumPy
reference and every generated C kernel is built from exactly these steps, so
their semantics (C's truncating division, arithmetic shifts, int32
wrap-around of the pre-shift) are reproduced here bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Split a positive real multiplier into a Q31 significand and a power-of-two shift.

    TFLite QuantizeMultiplier: real = q * 2**(shift - 31), q in [2**30, 2**31).
    Rounds half away from zero (std::round), as TFLite does.
    """
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.floor(abs(q) * (1 << 31) + 0.5))
    q_fixed = q_fixed if q >= 0 else -q_fixed
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return q_fixed, shift


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """`quantize_multiplier` over an array (per-channel multipliers)."""
    pairs = [quantize_multiplier(float(r)) for r in np.atleast_1d(reals)]
    return (np.array([p[0] for p in pairs], dtype=np.int32),
            np.array([p[1] for p in pairs], dtype=np.int32))


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 range (what the C does)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul: round(a * b / 2**31), saturating.

    Branch-free on int64, in place (it runs on every accumulator of every layer): the
    nudge is 2**30, or 1 - 2**30 for a negative product, and C's truncating int64
    division by 2**31 is an arithmetic shift after adding 2**31 - 1 to negatives."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    t = np.asarray(a * b)
    sign = np.asarray(t >> 63)                       # -1 for a negative product, else 0
    sign &= 1 - (1 << 31)
    t += sign
    t += 1 << 30                                     # t = a*b + nudge
    np.right_shift(t, 63, out=sign)
    sign &= (1 << 31) - 1
    t += sign
    t >>= 31
    if np.any(b == INT32_MIN):                       # only INT32_MIN * INT32_MIN saturates
        t = np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, t)
    return t


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2**exponent, rounding half away from zero.

    int32 x (exponent <= 31) stays int32, as in the C, at half the memory traffic;
    anything else is computed on int64."""
    x = np.asarray(x)
    dtype = np.int32 if x.dtype == np.int32 else np.int64
    x = x.astype(dtype, copy=False)
    exponent = np.asarray(exponent, dtype=dtype)
    mask = (dtype(1) << exponent) - dtype(1)         # 2**31 - 1 for 31: wraps as in C
    remainder = x & mask
    threshold = (mask >> 1) - (x >> (8 * x.itemsize - 1))   # one more for negatives
    out = x >> exponent
    out += remainder > threshold
    return out


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (double rounding); shift > 0 shifts left first."""
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = np.asarray(x, dtype=np.int64)
    if np.any(left) or x.size and (x.min() < INT32_MIN or x.max() > INT32_MAX):
        x = wrap_int32(x << left)                    # the C's int32 pre-shift wraps
    high = saturating_rounding_doubling_high_mul(x, multiplier)
    if right.max(initial=0) <= 31:                   # the high half fits int32 (gemmlowp's type)
        high = high.astype(np.int32)
    return rounding_divide_by_pot(high, right).astype(np.int64)


def multiply_by_quantized_multiplier_int64(x, multiplier, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier(int64_t x, ...) of the 16x8 kernels: the Q31
    multiplier rounded to Q15, one rounding shift by 15 - shift, the result cast to int32
    (wrapping, as the C cast does). Needs |x| < 2**47 and shift <= 14 (requant checks)."""
    reduced, total = q15_multiplier(multiplier, shift)
    y = np.asarray(x, dtype=np.int64) * reduced + (np.int64(1) << (total - 1))
    return wrap_int32(y >> total)


def q15_multiplier(multiplier, shift) -> tuple[np.ndarray, np.ndarray]:
    """The int64 MultiplyByQuantizedMultiplier's operands: the Q31 multiplier rounded to
    Q15 (saturating at 0x7FFF) and the total right shift 15 - shift."""
    m = np.asarray(multiplier, dtype=np.int64)
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    return reduced, 15 - np.asarray(shift, dtype=np.int64)


def multiply_by_quantized_multiplier_smaller_than_one_exp(x, multiplier, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplierSmallerThanOneExp (shift <= 0), used by ADD."""
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier),
                                  -np.asarray(shift, dtype=np.int64))


def fast_requant(multiplier, shift, zero_point: int, act_min: int, w_absmax, acc_lo, acc_hi,
                 per_channel: bool = False):
    """Constants that make SMMLA + SSAT equal TFLite's requantization, or None.

    TFLite computes t = floor((acc*m + 2^30) / 2^31), r = t / 2^e rounded half
    away from zero (e = -shift), out = clamp(r + zp). For t >= 0 that rounding
    is floor((t + 2^(e-1)) / 2^e); for t < 0 both roundings give r <= 0, which
    the clamp maps to act_min whenever act_min >= zp (a fused ReLU). Nesting the
    floors, out = floor((acc*m + 2^30 + 2^(30+e) + zp*2^(31+e)) / 2^(31+e)).
    Scaling the channel's weights and bias by 2^s with s = E + 1 - e turns the
    denominator into 2^(32+E): SMMLA gives floor(acc'*m / 2^32) + k with
    k = 2^(s-2) + 2^(E-1) + zp*2^E, and ASR #E floors the rest. One E serves
    the whole layer, so it is an immediate.

    acc_lo, acc_hi: per channel, the lowest and highest accumulator any int8
    input can produce. Conditions: act_min >= zp; every live channel shifts right
    (e >= 1); |w|*2^s fits int16 (SMLAD operands) and |acc|*2^s fits int32. A
    channel whose r is the same at both ends of its range (multiplier 0, or a
    tiny multiplier under a large bias: real layers have channels whose shift is
    20 beyond their neighbours') is a constant: m = 0, k = (r + zp)*2^E, and it
    takes no part in E. per_channel: every channel its own E = e + 1 (s = 2), for
    layers whose shifts spread too far for one E: one ASR by register more per
    output. Returns dict(scale_bits, exponent (per channel when per_channel), mult,
    k), or None.
    """
    m = np.asarray(multiplier, np.int64)
    e = -np.asarray(shift, np.int64)
    lo, hi = np.asarray(acc_lo, np.int64), np.asarray(acc_hi, np.int64)
    r_lo = multiply_by_quantized_multiplier(lo, m, -e)
    r_hi = multiply_by_quantized_multiplier(hi, m, -e)
    live = r_lo != r_hi
    if act_min < zero_point or (e[live] < 1).any():
        return None
    if per_channel:
        big_e = np.where(live, e + 1, 2)
        if (big_e > 24).any():          # zp * 2^E must fit int32
            return None
    else:
        big_e = int(e[live].max()) + 1 if live.any() else 2
    s = np.where(live, big_e + 1 - e, 0)
    if (s > 16).any():
        return None
    if ((np.asarray(w_absmax, np.int64) << s) > 32767).any():
        return None
    if ((np.maximum(np.abs(lo), np.abs(hi)) << s) > INT32_MAX).any():
        return None
    constant = np.clip(r_lo + zero_point, -129, 128) << big_e
    k = np.where(live, (1 << np.maximum(s - 2, 0)) + (1 << (big_e - 1)) + (zero_point << big_e),
                 constant)
    if k.min() < INT32_MIN or k.max() > INT32_MAX:
        return None
    return dict(scale_bits=s, exponent=big_e, mult=np.where(live, m, 0), k=k)


def fast_requantize(acc_scaled, mult, k, exponent) -> np.ndarray:
    """What SMMLA + ASR + SSAT #8 compute (before the act clamp), for checking fast_requant."""
    hi = (np.asarray(acc_scaled, np.int64) * np.asarray(mult, np.int64)) >> 32
    return np.clip((hi + np.asarray(k, np.int64)) >> exponent, -128, 127)
