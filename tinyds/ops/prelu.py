"""PRELU int8, as TFLM's reference_ops::BroadcastPrelu4DSlow: x - zp_in >= 0 is
requantized by s_in / s_out; below zero it is multiplied by the (constant,
broadcast) alpha minus its zero point and requantized by s_in * s_alpha / s_out
(double-rounding MultiplyByQuantizedMultiplier), plus zp_out, clamped to int8.
Multipliers come from requant (TFLM's CalculatePreluParams)."""
from __future__ import annotations

import numpy as np

from ..fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from ..ir import Graph, Op
from . import elementwise
from .spec import OpSpec


def params(g: Graph, op: Op) -> dict:
    x, alpha, y = (g.tensors[n] for n in (*op.inputs[:2], op.outputs[0]))
    at = op.attrs
    return dict(input_offset=-x.qparams[1], alpha_offset=-alpha.qparams[1],
                output_offset=y.qparams[1],
                identity_multiplier=int(at["identity_multiplier"]),
                identity_shift=int(at["identity_shift"]),
                alpha_multiplier=int(at["alpha_multiplier"]), alpha_shift=int(at["alpha_shift"]))


def reference(g: Graph, op: Op, *args: np.ndarray) -> np.ndarray:
    p = params(g, op)
    elementwise.check(g, op)
    x, alpha = elementwise.operands(g, op, args)
    v = x + p["input_offset"]
    pos = multiply_by_quantized_multiplier(v, p["identity_multiplier"], p["identity_shift"])
    neg = multiply_by_quantized_multiplier(v * (alpha + p["alpha_offset"]),
                                           p["alpha_multiplier"], p["alpha_shift"])
    out = np.where(v >= 0, pos, neg) + p["output_offset"]
    return elementwise.finish(g, op, np.clip(out, -128, 127))


def c_params(g: Graph, op: Op) -> dict:
    return {**params(g, op), **elementwise.c_operands(g, op)}


def macs(g: Graph, op: Op) -> int:
    """At most one multiply per element."""
    return g.tensors[op.outputs[0]].size


def float_reference(g: Graph, op: Op, *args: np.ndarray) -> np.ndarray:
    x, alpha = elementwise.float_operands(g, op, args)
    return np.where(x >= 0, x, x * alpha)


def derive(g: Graph, op: Op) -> None:
    """TFLM CalculatePreluParams: s_in / s_out and s_in * s_alpha / s_out in double."""
    s_in, s_alpha, s_out = (float(g.tensors[n].scale[0]) for n in (*op.inputs[:2], op.outputs[0]))
    op.attrs["identity_multiplier"], op.attrs["identity_shift"] = quantize_multiplier(s_in / s_out)
    op.attrs["alpha_multiplier"], op.attrs["alpha_shift"] = quantize_multiplier(
        s_in * s_alpha / s_out)


SPEC = OpSpec("prelu", reference, c_params, macs, derive=derive,
              float_reference=float_reference)
