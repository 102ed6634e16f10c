"""MEAN over H and W int8, as current TFLM's reduce kernel (EvalIntegerMean ->
QuantizedMeanOrSum): the int32 sum minus zp_in * count, requantized by
s_in / s_out with 1/count folded into the multiplier, plus zp_out, clamped.

Current TFLM takes this path even when input and output share quantization
(older releases divided the raw sum with truncation there); the TFLite Micro
runtime in tests agrees with this module on both kinds of layers.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier, wrap_int32
from ..ir import Graph, Op


def folded_multiplier(s_in: float, s_out: float, count: int) -> tuple[int, int]:
    """Mirrors TFLM's PrepareMeanOrSum + the 1/count folding in QuantizedMeanOrSum.

    QuantizeMultiplier(s_in / s_out) in double, then shift the significand left
    by floor(log2(count)) (at most 32 and at most 31 + shift) and divide by count
    with integer truncation.
    """
    multiplier, shift = quantize_multiplier(s_in / s_out)
    bits = min(count.bit_length() - 1, 32, 31 + shift)
    return (multiplier << bits) // count, shift - bits


def params(g: Graph, op: Op) -> dict:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    axes = sorted(int(a) % 4 for a in op.attrs["axes"])
    if len(x.shape) != 4 or axes != [1, 2]:
        raise TinydsError(f"{g.name}: {op.name}: mean over axes {tuple(op.attrs['axes'])} of a "
                          f"{len(x.shape)}-D tensor is not supported; only the global average "
                          f"over H and W of NHWC (axes 1, 2) is")
    _, h, w, c = x.shape
    (s_in, zp_in), (s_out, zp_out) = x.qparams, y.qparams
    multiplier, shift = folded_multiplier(s_in, s_out, h * w)
    return dict(in_h=h, in_w=w, channels=c, count=h * w, input_zp=zp_in, output_zp=zp_out,
                multiplier=multiplier, shift=shift)


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    p = params(g, op)
    total = x.astype(np.int64).sum(axis=(1, 2))
    shifted = wrap_int32(total - p["input_zp"] * p["count"])
    out = multiply_by_quantized_multiplier(shifted, p["multiplier"], p["shift"]) + p["output_zp"]
    out = np.clip(out, -128, 127).astype(np.int8)
    return out.reshape((x.shape[0], *g.tensors[op.outputs[0]].shape[1:]))


def c_params(g: Graph, op: Op) -> dict:
    return params(g, op)


def macs(g: Graph, op: Op) -> int:
    """One add per input element."""
    return g.tensors[op.inputs[0]].size
