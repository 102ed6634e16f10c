/* tinyds 16x8 helpers (int16 activations, int8 weights): TFLite's int64
 * requantization, the C twin of fixedpoint.multiply_by_quantized_multiplier_int64.
 * Written only beside 16x8 models; header-only, static inline. No float. */
#ifndef TINYDS_INT16_H
#define TINYDS_INT16_H

#include <stdint.h>

static inline int16_t tinyds_clamp_s16(int32_t x, int32_t lo, int32_t hi)
{
    return (int16_t)(x < lo ? lo : (x > hi ? hi : x));
}

/* TFLite MultiplyByQuantizedMultiplier(int64_t x, ...) with the Q15 multiplier
 * (the Q31 one rounded) and total_shift = 15 - shift (1..63), both computed by
 * the generator: one rounding shift of the int64 product; the cast to int32
 * wraps as TFLite's does. */
static inline int32_t tinyds_requantize64(int64_t x, int32_t reduced, int32_t total_shift)
{
    return (int32_t)((x * reduced + ((int64_t)1 << (total_shift - 1))) >> total_shift);
}

#endif /* TINYDS_INT16_H */
