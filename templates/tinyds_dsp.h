/* tinyds fast-kernel core: int16-pair MACs (SMLAD), the 2-instruction
 * requantization (SMMLA + SSAT) and the 4-channel x 2-pixel GEMM block that
 * the fast conv2d kernels share.
 *
 * On cores with the DSP extension (__ARM_FEATURE_DSP: Cortex-M4/M7) the
 * primitives are the ACLE intrinsics and the GEMM inner loop is a small inline
 * assembly block; everywhere else (the host that `tinyds verify` compiles on,
 * Cortex-M0+/M3) each primitive has a portable C twin with the same result bit
 * for bit, so the host check runs the very algorithm the MCU runs: the same
 * packed weights, the same pairing of inputs, the same requantization. The
 * twins compute in uint32 where the instruction wraps, so no C overflow is UB.
 *
 * Layout contract with tinyds/ops/conv2d.py (pack_pairs / pack_weights):
 * a run of K int8 taps becomes ceil(K/2) int16-pair words, each group of four
 * taps t0..t3 as (t0, t2), (t1, t3) -- what SXTB16 and SXTB16 ROR #8 extract
 * from one little-endian word -- and a tail of 1-3 taps as (t0, t1), (t2, 0).
 */
#ifndef TINYDS_DSP_H
#define TINYDS_DSP_H

#include <stdint.h>
#include <string.h>

#include "tinyds_common.h"

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

/* TINYDS_DSP: whether the portable kernels (pointwise conv2d, fully_connected)
 * take their DSP path, four int8 MACs per word through the primitives below.
 * On by default where the core has the DSP extension; -DTINYDS_DSP=1 runs the
 * same path on any compiler through the C twins (the host tests check it bit
 * for bit that way), -DTINYDS_DSP=0 keeps the scalar loops. Each primitive
 * picks the instruction or its twin on __ARM_FEATURE_DSP alone. */
#if !defined(TINYDS_DSP)
#if defined(__ARM_FEATURE_DSP)
#define TINYDS_DSP 1
#else
#define TINYDS_DSP 0
#endif
#endif


/* acc + lo(x)*lo(y) + hi(x)*hi(y), the int16 halves signed. */
static inline int32_t tinyds_smlad(uint32_t x, uint32_t y, int32_t acc)
{
#if defined(__ARM_FEATURE_DSP)
    return __smlad(x, y, acc);
#else
    int32_t lo = (int32_t)(int16_t)(x & 0xFFFF) * (int16_t)(y & 0xFFFF);
    int32_t hi = (int32_t)(int16_t)(x >> 16) * (int16_t)(y >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)lo + (uint32_t)hi);
#endif
}

/* acc + one int16 half of x times one half of y (SMLAxy: b = bottom, t = top). */
#define TINYDS_HALF_B(v) ((int32_t)(int16_t)((v) & 0xFFFF))
#define TINYDS_HALF_T(v) ((int32_t)(int16_t)((v) >> 16))
#if defined(__ARM_FEATURE_DSP)
#define TINYDS_SMLAXY(xy, X, Y) \
    static inline int32_t tinyds_smla##xy(uint32_t x, uint32_t y, int32_t acc) \
    { return __smla##xy(x, y, acc); }
#else
#define TINYDS_SMLAXY(xy, X, Y) \
    static inline int32_t tinyds_smla##xy(uint32_t x, uint32_t y, int32_t acc) \
    { return (int32_t)((uint32_t)acc + (uint32_t)(TINYDS_HALF_##X(x) * TINYDS_HALF_##Y(y))); }
#endif
TINYDS_SMLAXY(bb, B, B)
TINYDS_SMLAXY(bt, B, T)
TINYDS_SMLAXY(tb, T, B)
TINYDS_SMLAXY(tt, T, T)

/* Bytes 0 and 2 of w, sign-extended into the two int16 halves. */
static inline uint32_t tinyds_sxtb16(uint32_t w)
{
#if defined(__ARM_FEATURE_DSP)
    return __sxtb16(w);
#else
    return (uint32_t)(uint16_t)(int16_t)(int8_t)(w & 0xFF)
         | (uint32_t)(uint16_t)(int16_t)(int8_t)((w >> 16) & 0xFF) << 16;
#endif
}

/* Bytes 1 and 3 of w. GCC does not fold __sxtb16(ror(w, 8)) into one
 * instruction, so the rotate form is written out. */
static inline uint32_t tinyds_sxtb16_ror8(uint32_t w)
{
#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__)
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(w));
    return r;
#else
    return tinyds_sxtb16(w >> 8);
#endif
}

/* acc + bytes 0 and 2 of w, each int16 half on its own (SXTAB16; the halves
 * wrap at 16 bits, as the instruction's do). */
static inline uint32_t tinyds_sxtab16(uint32_t acc, uint32_t w)
{
#if defined(__ARM_FEATURE_DSP)
    return __sxtab16(acc, w);
#else
    return (uint32_t)(uint16_t)(acc + (uint32_t)(int32_t)(int8_t)(w & 0xFF))
         | (uint32_t)(uint16_t)((acc >> 16) + (uint32_t)(int32_t)(int8_t)((w >> 16) & 0xFF)) << 16;
#endif
}

/* acc + bytes 1 and 3 of w (SXTAB16 with ROR #8, written out as for SXTB16). */
static inline uint32_t tinyds_sxtab16_ror8(uint32_t acc, uint32_t w)
{
#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__)
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(acc), "r"(w));
    return r;
#else
    return tinyds_sxtab16(acc, w >> 8);
#endif
}

/* k + high word of acc * m (SMMLA). */
static inline int32_t tinyds_smmla(int32_t acc, int32_t m, int32_t k)
{
#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__)
    int32_t r;
    __asm__("smmla %0, %1, %2, %3" : "=r"(r) : "r"(acc), "r"(m), "r"(k));
    return r;
#else
    return (int32_t)((uint32_t)k + (uint32_t)(int32_t)(((int64_t)acc * m) >> 32));
#endif
}

/* Saturate to int8 (SSAT #8). */
static inline int32_t tinyds_ssat8(int32_t x)
{
#if defined(__ARM_FEATURE_DSP)
    return __ssat(x, 8);
#else
    return x < -128 ? -128 : (x > 127 ? 127 : x);
#endif
}

/* A 32-bit word of int16 data written as int16_t: memcpy keeps the compiler's
 * type-based alias analysis from moving the load above those stores (one LDR). */
static inline uint32_t tinyds_read32(const int16_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint32_t tinyds_pack16(int32_t lo, int32_t hi)
{
    return (uint32_t)(uint16_t)lo | (uint32_t)(uint16_t)hi << 16;
}

/* k int8 taps of a and of b -> interleaved int16-pair words: x[2j] from a,
 * x[2j+1] from b, j < ceil(k/2), in the pairing described at the top; then
 * zero words up to `steps` pairs (their weights are zero). */
static inline void tinyds_expand2(const int8_t *a, const int8_t *b, int k, int steps, uint32_t *x)
{
    uint32_t *end = x + 2 * steps;
    int i = 0;
    for (; i + 4 <= k; i += 4) {
        uint32_t wa, wb;
        memcpy(&wa, a + i, 4);
        memcpy(&wb, b + i, 4);
        x[0] = tinyds_sxtb16(wa);
        x[1] = tinyds_sxtb16(wb);
        x[2] = tinyds_sxtb16_ror8(wa);
        x[3] = tinyds_sxtb16_ror8(wb);
        x += 4;
    }
    for (; i < k; i += 2) {
        int last = i + 1 == k;
        x[0] = tinyds_pack16(a[i], last ? 0 : a[i + 1]);
        x[1] = tinyds_pack16(b[i], last ? 0 : b[i + 1]);
        x += 2;
    }
    while (x < end) {
        *x++ = 0;
    }
}

/* The 2-instruction requantization: SSAT8((SMMLA(acc, m, k)) >> e). Exact
 * because the weights and bias were scaled by 2^s per channel at generation
 * time (tinyds/fixedpoint.py::fast_requant has the derivation and conditions). */
static inline int8_t tinyds_requant_fast(int32_t acc, int32_t m, int32_t k, int32_t e)
{
    return (int8_t)tinyds_ssat8(tinyds_smmla(acc, m, k) >> e);
}

/* The eight accumulators a0..a3 (pixel a), b0..b3 (pixel b) of the enclosing
 * scope += the pair words from xp to x_end times four channels' weight pairs
 * at w (advanced past them). Steps are a multiple of 4.
 * The assembly loop needs 14 free registers: GCC only (clang keeps r7 as its
 * frame pointer), optimising (at -O0 everything lives on the stack), and in
 * the functions that use it optimised as -O2 without frame pointer nor the
 * pre-allocation scheduler (on by default when tuning for Cortex-M7), so a
 * -Og debug build compiles too. Clang and -O0 compile the C loop below with
 * the same intrinsics: slower, the same bytes. */
#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__) && !defined(__clang__) \
    && defined(__OPTIMIZE__)
#define TINYDS_GEMM_ASM 1
#define TINYDS_GEMM_ATTR __attribute__((optimize("O2", "no-schedule-insns", "omit-frame-pointer")))
/* Per step one LDRD of the two pixels' pairs, two LDRD of the four channels'
 * weight pairs, eight SMLAD. Eight steps per loop pass, after one lone pass
 * of four when the step count is not a multiple of 8. Fourteen registers are
 * live in the loop, none left for the end pointer: it enters in w1 and waits
 * on the stack (pushed and popped inside the statement, so no operand is
 * addressed relative to sp meanwhile). */
#define TINYDS_MAC_STEP                                                     \
            "ldrd   %[xa], %[xb], [%[xp]], #8\n\t"                          \
            "ldrd   %[w0], %[w1], [%[wp]], #8\n\t"                          \
            "smlad  %[a0], %[xa], %[w0], %[a0]\n\t"                         \
            "smlad  %[b0], %[xb], %[w0], %[b0]\n\t"                         \
            "smlad  %[a1], %[xa], %[w1], %[a1]\n\t"                         \
            "smlad  %[b1], %[xb], %[w1], %[b1]\n\t"                         \
            "ldrd   %[w0], %[w1], [%[wp]], #8\n\t"                          \
            "smlad  %[a2], %[xa], %[w0], %[a2]\n\t"                         \
            "smlad  %[b2], %[xb], %[w0], %[b2]\n\t"                         \
            "smlad  %[a3], %[xa], %[w1], %[a3]\n\t"                         \
            "smlad  %[b3], %[xb], %[w1], %[b3]\n\t"
#define TINYDS_MAC_STEP4 TINYDS_MAC_STEP TINYDS_MAC_STEP TINYDS_MAC_STEP TINYDS_MAC_STEP
#define TINYDS_MAC_OPERANDS                                                 \
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),   \
              [b0] "+r"(b0), [b1] "+r"(b1), [b2] "+r"(b2), [b3] "+r"(b3),   \
              [xp] "+r"(xp), [wp] "+r"(w), [w1] "+r"(w1_),                  \
              [xa] "=&r"(xa_), [xb] "=&r"(xb_), [w0] "=&r"(w0_)             \
            :                                                               \
            : "cc", "memory"

#define TINYDS_MAC_4X2(xp, x_end, w) do {                                   \
        uint32_t xa_, xb_, w0_, w1_ = (uint32_t)(uintptr_t)(x_end);         \
        if ((((const uint32_t *)(uintptr_t)w1_ - (xp)) & 8) != 0) {         \
            __asm__ volatile(TINYDS_MAC_STEP4 TINYDS_MAC_OPERANDS);         \
            w1_ = (uint32_t)(uintptr_t)(x_end);                             \
        }                                                                   \
        if ((xp) != (x_end)) {                                              \
            __asm__ volatile(                                               \
                "push   {%[w1]}\n\t"                                        \
                "1:\n\t"                                                    \
                TINYDS_MAC_STEP4 TINYDS_MAC_STEP4                           \
                "ldr    %[w0], [sp]\n\t"                                    \
                "cmp    %[xp], %[w0]\n\t"                                   \
                "bne    1b\n\t"                                             \
                "add    sp, sp, #4\n\t"                                     \
                TINYDS_MAC_OPERANDS);                                       \
        }                                                                   \
    } while (0)
#else
#define TINYDS_GEMM_ATTR
#define TINYDS_MAC_4X2(xp, x_end, w) do {                                   \
        while ((xp) != (x_end)) {                                           \
            const uint32_t xa_ = (xp)[0], xb_ = (xp)[1];                    \
            a0 = tinyds_smlad(xa_, (w)[0], a0);                             \
            b0 = tinyds_smlad(xb_, (w)[0], b0);                             \
            a1 = tinyds_smlad(xa_, (w)[1], a1);                             \
            b1 = tinyds_smlad(xb_, (w)[1], b1);                             \
            a2 = tinyds_smlad(xa_, (w)[2], a2);                             \
            b2 = tinyds_smlad(xb_, (w)[2], b2);                             \
            a3 = tinyds_smlad(xa_, (w)[3], a3);                             \
            b3 = tinyds_smlad(xb_, (w)[3], b3);                             \
            (xp) += 2;                                                      \
            (w) += 4;                                                       \
        }                                                                   \
    } while (0)
#endif

/* Two pixels through out_c (a multiple of 4) output channels: x holds `steps`
 * (a multiple of 4) pair words per pixel, interleaved by tinyds_expand2; w holds, per
 * block of four channels and per step, the four channels' weight pairs.
 * Writes out_c bytes at oa and at ob (ob may equal oa: an odd last pixel).
 * Three variants, so that no requantization choice is made per output:
 *   fast: SMMLA + SSAT, act range [-128, 127] (a ReLU whose zero point is -128)
 *   fast_clamp: the same, then clamped to [lo, hi]
 *   fast_var: the same with a shift per channel ((m, k, e) triples), clamped
 *   tflite: MultiplyByQuantizedMultiplier per channel, + zp, clamped.
 */
#define TINYDS_GEMM_4X2_LOOP(STORE2)                                        \
    const uint32_t *x_end = x + 2 * steps;                                  \
    for (int c = 0; c < out_c; c += 4) {                                    \
        int32_t a0 = bias[c], a1 = bias[c + 1], a2 = bias[c + 2], a3 = bias[c + 3]; \
        int32_t b0 = a0, b1 = a1, b2 = a2, b3 = a3;                         \
        const uint32_t *xp = x;                                             \
        TINYDS_MAC_4X2(xp, x_end, w);                                       \
        STORE2(c, a0, b0); STORE2(c + 1, a1, b1);                           \
        STORE2(c + 2, a2, b2); STORE2(c + 3, a3, b3);                       \
    }

/* The unclamped "fast" requantizations' GEMM reads one stream per block of
 * four channels (conv2d.py::gemm_stream): the four biases, `steps` x the four
 * channels' weight pairs, then (m, k) per channel -- or (m, k, e) with a
 * shift per channel ("fast_var" over the whole int8 range) -- so a single
 * pointer walks the whole layer. With one exponent e for the layer it is the
 * SSAT's immediate shift: the model instantiates one core per exponent it
 * uses, TINYDS_GEMM_4X2_FAST(e), which defines
 * tinyds_gemm_4x2_fast_e<e>(x, steps, s, out_c, oa, ob); TINYDS_GEMM_4X2_FAST_VAR
 * defines tinyds_gemm_4x2_fast_var_s. The _SHORT forms (suffix _short) serve
 * layers of at most TINYDS_GEMM_UNROLL steps, whose MACs take one pass: no
 * end check. */
#if defined(TINYDS_GEMM_ASM)
/* The whole layer in one assembly statement, per block of four channels:
 * the biases open the first step through SMLAD's accumulate operand, the
 * other steps run as a jump into an unrolled body of TINYDS_GEMM_UNROLL steps
 * (entered so that its first pass runs the remainder: every step is eleven
 * 32-bit instructions, 44 bytes), then SMMLA + SSAT #8, asr #e (or ASR by
 * the channel's e, then SSAT) and eight STRB.
 * The 14 operand registers are all in use, so the loop's constants live in a
 * 24-byte frame the statement pushes and pops itself: [sp] x, [sp+4] the
 * entry address, [sp+8] x's end, [sp+12] the stream's end, [sp+16] oa,
 * [sp+20] ob. */
#define TINYDS_GEMM_UNROLL 32
#define TINYDS_STR(v) TINYDS_STR_(v)
#define TINYDS_STR_(v) #v
#define TINYDS_RQ2(a, b, E)                                                 \
            "ldrd   %[xa], %[xb], [%[wp]], #8\n\t"                          \
            "smmla  %[" #a "], %[" #a "], %[xa], %[xb]\n\t"                 \
            "smmla  %[" #b "], %[" #b "], %[xa], %[xb]\n\t"                 \
            "ssat   %[" #a "], #8, %[" #a "], asr #" #E "\n\t"              \
            "ssat   %[" #b "], #8, %[" #b "], asr #" #E "\n\t"
#define TINYDS_RQ2_VAR(a, b)                                                \
            "ldrd   %[xa], %[xb], [%[wp]], #8\n\t"                          \
            "ldr    %[w0], [%[wp]], #4\n\t"                                 \
            "smmla  %[" #a "], %[" #a "], %[xa], %[xb]\n\t"                 \
            "smmla  %[" #b "], %[" #b "], %[xa], %[xb]\n\t"                 \
            "asr    %[" #a "], %[" #a "], %[w0]\n\t"                        \
            "asr    %[" #b "], %[" #b "], %[w0]\n\t"                        \
            "ssat   %[" #a "], #8, %[" #a "]\n\t"                           \
            "ssat   %[" #b "], #8, %[" #b "]\n\t"
#define TINYDS_RQ8(E) TINYDS_RQ2(a0, b0, E) TINYDS_RQ2(a1, b1, E)           \
            TINYDS_RQ2(a2, b2, E) TINYDS_RQ2(a3, b3, E)
#define TINYDS_RQ8_VAR TINYDS_RQ2_VAR(a0, b0) TINYDS_RQ2_VAR(a1, b1)         \
            TINYDS_RQ2_VAR(a2, b2) TINYDS_RQ2_VAR(a3, b3)
#define TINYDS_GEMM_PASSES                                                  \
            "ldr    %[xa], [sp, #8]\n\t"                                    \
            "cmp    %[xp], %[xa]\n\t"                                       \
            "bne    3b\n\t"
#define TINYDS_GEMM_4X2_FAST(E) \
    TINYDS_GEMM_4X2_FAST_(e##E, TINYDS_GEMM_PASSES, TINYDS_RQ8(E), 8)
#define TINYDS_GEMM_4X2_FAST_SHORT(E) TINYDS_GEMM_4X2_FAST_(e##E##_short, "", TINYDS_RQ8(E), 8)
#define TINYDS_GEMM_4X2_FAST_VAR \
    TINYDS_GEMM_4X2_FAST_(var_s, TINYDS_GEMM_PASSES, TINYDS_RQ8_VAR, 12)
#define TINYDS_GEMM_4X2_FAST_VAR_SHORT TINYDS_GEMM_4X2_FAST_(var_s_short, "", TINYDS_RQ8_VAR, 12)
#define TINYDS_GEMM_4X2_FAST_(SUFFIX, PASSES, RQ8, TAIL)                     \
static TINYDS_OUTLINE TINYDS_GEMM_ATTR void tinyds_gemm_4x2_fast_##SUFFIX(  \
    const uint32_t *x, int steps, const uint32_t *s, int out_c, int8_t *oa, int8_t *ob) \
{                                                                           \
    uint32_t a0 = (uint32_t)(uintptr_t)(x + 2 * steps);                     \
    uint32_t a1 = (uint32_t)(uintptr_t)(s + out_c / 4 * (4 + TAIL + 4 * steps)); \
    uint32_t a2 = (uint32_t)(uintptr_t)oa, a3 = (uint32_t)(uintptr_t)ob;    \
    uint32_t b0 = (uint32_t)(TINYDS_GEMM_UNROLL - (steps - 1) % TINYDS_GEMM_UNROLL) * 44; \
    uint32_t b1, b2, b3, xa_, xb_, w0_, w1_;                                \
    const uint32_t *xp = x;                                                 \
    __asm__ volatile(                                                       \
            "sub    sp, sp, #24\n\t"                                        \
            "adr    %[xa], 3f\n\t"                                          \
            "add    %[xa], %[xa], %[b0]\n\t"                                \
            "str    %[xp], [sp]\n\t"                                        \
            "str    %[xa], [sp, #4]\n\t"                                    \
            "strd   %[a0], %[a1], [sp, #8]\n\t"                             \
            "strd   %[a2], %[a3], [sp, #16]\n\t"                            \
            "1:\n\t"                                                        \
            "ldr    %[xp], [sp]\n\t"                                        \
            "ldrd   %[b0], %[b1], [%[wp]], #8\n\t"                          \
            "ldrd   %[b2], %[b3], [%[wp]], #8\n\t"                          \
            "ldrd   %[xa], %[xb], [%[xp]], #8\n\t"                          \
            "ldrd   %[w0], %[w1], [%[wp]], #8\n\t"                          \
            "smlad  %[a0], %[xa], %[w0], %[b0]\n\t"                         \
            "smlad  %[b0], %[xb], %[w0], %[b0]\n\t"                         \
            "smlad  %[a1], %[xa], %[w1], %[b1]\n\t"                         \
            "smlad  %[b1], %[xb], %[w1], %[b1]\n\t"                         \
            "ldrd   %[w0], %[w1], [%[wp]], #8\n\t"                          \
            "smlad  %[a2], %[xa], %[w0], %[b2]\n\t"                         \
            "smlad  %[b2], %[xb], %[w0], %[b2]\n\t"                         \
            "smlad  %[a3], %[xa], %[w1], %[b3]\n\t"                         \
            "smlad  %[b3], %[xb], %[w1], %[b3]\n\t"                         \
            "ldr    %[xa], [sp, #4]\n\t"                                    \
            "mov    pc, %[xa]\n\t"                                          \
            "3:\n\t"                                                        \
            ".rept " TINYDS_STR(TINYDS_GEMM_UNROLL) "\n\t"                  \
            TINYDS_MAC_STEP                                                 \
            ".endr\n\t"                                                     \
            PASSES                                                          \
            RQ8                                                             \
            "ldrd   %[xa], %[xb], [sp, #16]\n\t"                            \
            "strb   %[a0], [%[xa]]\n\t"                                     \
            "strb   %[a1], [%[xa], #1]\n\t"                                 \
            "strb   %[a2], [%[xa], #2]\n\t"                                 \
            "strb   %[a3], [%[xa], #3]\n\t"                                 \
            "strb   %[b0], [%[xb]]\n\t"                                     \
            "strb   %[b1], [%[xb], #1]\n\t"                                 \
            "strb   %[b2], [%[xb], #2]\n\t"                                 \
            "strb   %[b3], [%[xb], #3]\n\t"                                 \
            "add    %[xa], %[xa], #4\n\t"                                   \
            "add    %[xb], %[xb], #4\n\t"                                   \
            "strd   %[xa], %[xb], [sp, #16]\n\t"                            \
            "ldr    %[xa], [sp, #12]\n\t"                                   \
            "cmp    %[wp], %[xa]\n\t"                                       \
            "bne    1b\n\t"                                                 \
            "add    sp, sp, #24\n\t"                                        \
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),   \
              [b0] "+r"(b0), [b1] "=&r"(b1), [b2] "=&r"(b2), [b3] "=&r"(b3), \
              [xp] "+r"(xp), [wp] "+r"(s), [xa] "=&r"(xa_), [xb] "=&r"(xb_), \
              [w0] "=&r"(w0_), [w1] "=&r"(w1_)                              \
            :                                                               \
            : "cc", "memory");                                              \
}
#else
/* e < 0: a shift per channel, (m, k, e) in the stream. */
static inline void tinyds_gemm_4x2_fast_c(const uint32_t *x, int steps, const uint32_t *s,
                                          int out_c, int32_t e, int8_t *oa, int8_t *ob)
{
    const uint32_t *x_end = x + 2 * steps;
    const int tail = e < 0 ? 3 : 2;
    for (int c = 0; c < out_c; c += 4, s += 4 * tail) {
        int32_t a0 = (int32_t)s[0], a1 = (int32_t)s[1], a2 = (int32_t)s[2], a3 = (int32_t)s[3];
        int32_t b0 = a0, b1 = a1, b2 = a2, b3 = a3;
        const uint32_t *xp = x;
        s += 4;
        TINYDS_MAC_4X2(xp, x_end, s);
#define TINYDS_RQ2_C(j, a, b) do {                                          \
            const int32_t m_ = (int32_t)s[tail * (j)], k_ = (int32_t)s[tail * (j) + 1]; \
            const int32_t e_ = e < 0 ? (int32_t)s[tail * (j) + 2] : e;      \
            oa[c + (j)] = tinyds_requant_fast(a, m_, k_, e_);               \
            ob[c + (j)] = tinyds_requant_fast(b, m_, k_, e_);               \
        } while (0)
        TINYDS_RQ2_C(0, a0, b0); TINYDS_RQ2_C(1, a1, b1);
        TINYDS_RQ2_C(2, a2, b2); TINYDS_RQ2_C(3, a3, b3);
#undef TINYDS_RQ2_C
    }
}

#define TINYDS_GEMM_4X2_FAST(E) TINYDS_GEMM_4X2_FAST_(E, e##E)
#define TINYDS_GEMM_4X2_FAST_SHORT(E) TINYDS_GEMM_4X2_FAST_(E, e##E##_short)
#define TINYDS_GEMM_4X2_FAST_VAR TINYDS_GEMM_4X2_FAST_(-1, var_s)
#define TINYDS_GEMM_4X2_FAST_VAR_SHORT TINYDS_GEMM_4X2_FAST_(-1, var_s_short)
#define TINYDS_GEMM_4X2_FAST_(E, SUFFIX)                                    \
static TINYDS_OUTLINE void tinyds_gemm_4x2_fast_##SUFFIX(                   \
    const uint32_t *x, int steps, const uint32_t *s, int out_c, int8_t *oa, int8_t *ob) \
{                                                                           \
    tinyds_gemm_4x2_fast_c(x, steps, s, out_c, E, oa, ob);                  \
}
#endif

/* Both pixels' outputs of channel ch through SMMLA + SSAT, clamped to [lo, hi]. */
#define TINYDS_OUT2_CLAMPED(ch, a, b, m, k, e) do {                         \
        const int32_t m_ = (m), k_ = (k), e_ = (e);                         \
        oa[ch] = (int8_t)TINYDS_MIN(TINYDS_MAX(tinyds_requant_fast(a, m_, k_, e_), lo), hi); \
        ob[ch] = (int8_t)TINYDS_MIN(TINYDS_MAX(tinyds_requant_fast(b, m_, k_, e_), lo), hi); \
    } while (0)

static TINYDS_OUTLINE TINYDS_GEMM_ATTR void tinyds_gemm_4x2_fast_clamp(
    const uint32_t *x, int steps, const uint32_t *w, int out_c, const int32_t *bias,
    const int32_t *mk, int32_t e, int32_t lo, int32_t hi, int8_t *oa, int8_t *ob)
{
#define TINYDS_STORE2_CLAMP(ch, a, b) \
    TINYDS_OUT2_CLAMPED(ch, a, b, mk[2 * (ch)], mk[2 * (ch) + 1], e)
    TINYDS_GEMM_4X2_LOOP(TINYDS_STORE2_CLAMP)
#undef TINYDS_STORE2_CLAMP
}

static TINYDS_OUTLINE TINYDS_GEMM_ATTR void tinyds_gemm_4x2_fast_var(
    const uint32_t *x, int steps, const uint32_t *w, int out_c, const int32_t *bias,
    const int32_t *mke, int32_t lo, int32_t hi, int8_t *oa, int8_t *ob)
{
#define TINYDS_STORE2_VAR(ch, a, b) \
    TINYDS_OUT2_CLAMPED(ch, a, b, mke[3 * (ch)], mke[3 * (ch) + 1], mke[3 * (ch) + 2])
    TINYDS_GEMM_4X2_LOOP(TINYDS_STORE2_VAR)
#undef TINYDS_STORE2_VAR
}

static TINYDS_OUTLINE TINYDS_GEMM_ATTR void tinyds_gemm_4x2_tflite(
    const uint32_t *x, int steps, const uint32_t *w, int out_c, const int32_t *bias,
    const int32_t *mult, const int32_t *shift, int32_t zp, int32_t lo, int32_t hi,
    int8_t *oa, int8_t *ob)
{
#define TINYDS_STORE2_TFLITE(ch, a, b) do {                                 \
        const int32_t m_ = mult[ch], s_ = shift[ch];                        \
        oa[ch] = tinyds_clamp_s8(tinyds_requantize(a, m_, s_) + zp, lo, hi); \
        ob[ch] = tinyds_clamp_s8(tinyds_requantize(b, m_, s_) + zp, lo, hi); \
    } while (0)
    TINYDS_GEMM_4X2_LOOP(TINYDS_STORE2_TFLITE)
#undef TINYDS_STORE2_TFLITE
}

#endif /* TINYDS_DSP_H */
