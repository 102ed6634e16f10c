/* tinyds fixed-point helpers: TFLite's integer requantization (gemmlowp double
 * rounding), the C twin of tinyds/fixedpoint.py. Header-only, static inline,
 * so several tinyds models can share one firmware. No float anywhere. */
#ifndef TINYDS_COMMON_H
#define TINYDS_COMMON_H

#include <stdint.h>

#define TINYDS_MAX(a, b) ((a) > (b) ? (a) : (b))
#define TINYDS_MIN(a, b) ((a) < (b) ? (a) : (b))

/* round(a * b / 2^31), saturating the one overflowing case (INT32_MIN^2). */
static inline int32_t tinyds_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    return (int32_t)((ab + nudge) / (1LL << 31)); /* C division truncates, as TFLite's */
}

/* x / 2^exponent, rounding half away from zero. */
static inline int32_t tinyds_rdbpot(int32_t x, int32_t exponent)
{
    int32_t mask = (int32_t)((1LL << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* Wrapping left shift: defined behaviour for any x, matching fixedpoint.wrap_int32. */
static inline int32_t tinyds_shl(int32_t x, int32_t shift)
{
    return (int32_t)((uint32_t)x << shift);
}

/* TFLite MultiplyByQuantizedMultiplier: shift > 0 shifts left first. */
static inline int32_t tinyds_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    int32_t left = shift > 0 ? shift : 0;
    int32_t right = shift > 0 ? 0 : -shift;
    return tinyds_rdbpot(tinyds_srdhm(tinyds_shl(x, left), multiplier), right);
}

/* TFLite MultiplyByQuantizedMultiplierSmallerThanOneExp (shift <= 0), used by ADD. */
static inline int32_t tinyds_requantize_lt1(int32_t x, int32_t multiplier, int32_t shift)
{
    return tinyds_rdbpot(tinyds_srdhm(x, multiplier), -shift);
}

static inline int8_t tinyds_clamp_s8(int32_t x, int32_t lo, int32_t hi)
{
    return (int8_t)(x < lo ? lo : (x > hi ? hi : x));
}

#endif /* TINYDS_COMMON_H */
