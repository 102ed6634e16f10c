"""The int16 GEMM core of the DSP (SMLAD) kernels, conv2d_dsp and depthwise_conv2d_dsp:
taps paired into words as tinyds_dsp.h reads them, the weight streams, and the
requantization forms the core can run exactly.
"""
from __future__ import annotations

import numpy as np

from .. import fixedpoint
from ..ir import Graph, Op
from .weighted import int_list


def pair_index(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Which taps form each int16-pair word of a run of k taps (-1: a zero half).

    The pairing of templates/tinyds_dsp.h: (t0, t2), (t1, t3) per group of four
    -- what SXTB16 and SXTB16 ROR #8 extract from one word -- then (t0, t1),
    (t2, -1) for a tail of up to three."""
    lo, hi = [], []
    i = 0
    while i + 4 <= k:
        lo += [i, i + 1]
        hi += [i + 2, i + 3]
        i += 4
    while i < k:
        lo.append(i)
        hi.append(i + 1 if i + 1 < k else -1)
        i += 2
    return np.array(lo, np.int64), np.array(hi, np.int64)


def gemm_steps(k: int) -> int:
    """Pair words per pixel in the GEMM core: a multiple of 4 (four steps per loop pass)."""
    return -(-k // 8) * 4


def pack_pairs(v: np.ndarray, steps: int) -> np.ndarray:
    """(rows, k) int16 values -> (rows, steps) uint32 pair words, zero-padded."""
    lo, hi = pair_index(v.shape[1])
    v = np.concatenate([v.astype(np.int64), np.zeros((len(v), 1), np.int64)], axis=1)
    words = (v[:, lo] & 0xFFFF) | ((v[:, hi] & 0xFFFF) << 16)
    out = np.zeros((len(v), steps), np.int64)
    out[:, :words.shape[1]] = words
    return out


def gemm_weights(w_rows: np.ndarray, steps: int) -> np.ndarray:
    """(out_c, k) int16 weights -> the stream tinyds_gemm_4x2 reads: per block of
    four channels, per step, the four channels' pair words."""
    words = pack_pairs(w_rows, steps)                   # (out_c, steps)
    return words.reshape(-1, 4, steps).transpose(0, 2, 1).ravel()


GEMM_UNROLL = 32   # MAC steps unrolled in tinyds_dsp.h's assembly core (TINYDS_GEMM_UNROLL)


def gemm_stream(w_rows: np.ndarray, bias: np.ndarray, mk: list[int], steps: int) -> np.ndarray:
    """The unclamped fast requantizations' single stream (tinyds_gemm_4x2_fast_*):
    per block of four channels, the four biases, the weight stream's block, then
    the four channels' (m, k) pairs or (m, k, e) triples."""
    blocks = gemm_weights(w_rows, steps).reshape(-1, 4 * steps)
    head = np.asarray(bias, dtype=np.int64).reshape(-1, 4)
    tail = np.asarray(mk, dtype=np.int64).reshape(len(head), -1)
    return np.concatenate([head, blocks, tail], axis=1).ravel()


def gemm_requant(g: Graph, op: Op, w_rows: np.ndarray, bias: np.ndarray, p: dict) -> dict:
    """Requantization of the fast kernels: the 2-instruction form when exact
    (weights and bias scaled by 2^s per channel; "fast", or "fast_clamp" when the
    fused activation range is narrower than int8), "fast_var" with a shift per
    channel when one layer-wide shift cannot serve, else "tflite" per channel.
    Returns the kind, the template's literals and the (scaled) int16 weights and bias."""
    w = w_rows.astype(np.int64)
    # the accumulator's range over all int8 inputs (the input offset is in the bias)
    acc_lo = bias + np.minimum(w * -128, w * 127).sum(axis=1)
    acc_hi = bias + np.maximum(w * -128, w * 127).sum(axis=1)
    args = (p["multiplier"], p["shift"], p["output_offset"], p["act_min"], np.abs(w).max(axis=1),
            acc_lo, acc_hi)
    fast = fixedpoint.fast_requant(*args)
    per_channel = fast is None
    if per_channel:
        fast = fixedpoint.fast_requant(*args, per_channel=True)
    if fast is None:
        return dict(kind="tflite", exponent=0, w=w_rows, b=bias, mult=p["multiplier"])
    s = fast["scale_bits"]
    w_scaled, b_scaled = w << s[:, None], bias << s
    if per_channel:
        mke = np.stack([fast["mult"], fast["k"], fast["exponent"]], axis=1).ravel()
        return dict(kind="fast_var", exponent=0, w=w_scaled, b=b_scaled, mult=int_list(mke))
    mk = np.stack([fast["mult"], fast["k"]], axis=1).ravel()
    full = p["act_min"] == -128 and p["act_max"] == 127
    return dict(kind="fast" if full else "fast_clamp", exponent=fast["exponent"],
                w=w_scaled, b=b_scaled, mult=int_list(mk))
