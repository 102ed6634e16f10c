"""QUANTIZE int8 -> int8 inside a graph (a requantization between two scales), as
TFLM's reference_ops::Requantize: (x - zp_in) rescaled by s_in / s_out
(double-rounding MultiplyByQuantizedMultiplier, requant derives it as TFLM's
PrepareQuantizeReference) plus zp_out, clamped to int8."""
from __future__ import annotations

import numpy as np

from ..fixedpoint import multiply_by_quantized_multiplier
from ..ir import Graph, Op


def params(g: Graph, op: Op) -> dict:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    return dict(size=x.size, input_zp=x.qparams[1], output_zp=y.qparams[1],
                multiplier=int(op.attrs["multiplier"]), shift=int(op.attrs["shift"]))


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    p = params(g, op)
    out = multiply_by_quantized_multiplier(x.astype(np.int64) - p["input_zp"], p["multiplier"],
                                           p["shift"]) + p["output_zp"]
    return np.clip(out, -128, 127).astype(np.int8)


def c_params(g: Graph, op: Op) -> dict:
    return params(g, op)


def macs(g: Graph, op: Op) -> int:
    """One multiply per element."""
    return g.tensors[op.outputs[0]].size
