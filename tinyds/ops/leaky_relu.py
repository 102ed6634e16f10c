"""LEAKY_RELU int8, as TFLM's reference_ops::QuantizeLeakyRelu.

x - zp_in is requantized to the output scale by one of two multipliers:
s_in / s_out where it is >= 0, s_in * alpha / s_out where it is negative
(double-rounding MultiplyByQuantizedMultiplier), plus zp_out, clamped to int8.
The multipliers come from requant (TFLM's CalculateOpDataLeakyRelu).
"""
from __future__ import annotations

import numpy as np

from ..fixedpoint import multiply_by_quantized_multiplier
from ..ir import Graph, Op
from .spec import OpSpec


def params(g: Graph, op: Op) -> dict:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    at = op.attrs
    return dict(size=x.size, input_zp=x.qparams[1], output_zp=y.qparams[1],
                identity_multiplier=int(at["identity_multiplier"]),
                identity_shift=int(at["identity_shift"]),
                alpha_multiplier=int(at["alpha_multiplier"]), alpha_shift=int(at["alpha_shift"]))


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    p = params(g, op)
    v = x.astype(np.int64) - p["input_zp"]
    pos = multiply_by_quantized_multiplier(v, p["identity_multiplier"], p["identity_shift"])
    neg = multiply_by_quantized_multiplier(v, p["alpha_multiplier"], p["alpha_shift"])
    out = np.where(v >= 0, pos, neg) + p["output_zp"]
    return np.clip(out, -128, 127).astype(np.int8)


def c_params(g: Graph, op: Op) -> dict:
    return params(g, op)


def macs(g: Graph, op: Op) -> int:
    """One multiply per element."""
    return g.tensors[op.outputs[0]].size


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, x * op.attrs["alpha"])


SPEC = OpSpec("leaky_relu", reference, c_params, macs,
              float_reference=float_reference)
