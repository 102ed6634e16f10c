"""MUL int8 (squeeze-excite gating, hardsigmoid's /6), as TFLM's
reference_integer_ops::MulElementwise / BroadcastMul4DSlow: the product of the
zero-point-corrected operands, requantized by s1 * s2 / s_out (double-rounding
MultiplyByQuantizedMultiplier; derive computes it as TFLM's CalculateOpDataMul),
plus zp_out, clamped to the fused activation's range.

IR: inputs a, b (broadcast as add's; either may be constant, e.g. hardsigmoid's
1/6); attrs activation; quantized: output_multiplier, output_shift, act_min, act_max.
"""
from __future__ import annotations

import numpy as np

from ..fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from ..ir import Graph, Op
from . import elementwise
from .activation import float_clamp
from .spec import OpSpec, TFLite


def params(g: Graph, op: Op) -> dict:
    a, b, y = (g.tensors[n] for n in (*op.inputs[:2], op.outputs[0]))
    at = op.attrs
    return dict(input1_offset=-a.qparams[1], input2_offset=-b.qparams[1],
                output_offset=y.qparams[1], output_multiplier=int(at["output_multiplier"]),
                output_shift=int(at["output_shift"]),
                act_min=int(at.get("act_min", -128)), act_max=int(at.get("act_max", 127)))


def reference(g: Graph, op: Op, *args: np.ndarray) -> np.ndarray:
    p = params(g, op)
    elementwise.check(g, op)
    a, b = elementwise.operands(g, op, args)
    prod = (a + p["input1_offset"]) * (b + p["input2_offset"])
    out = multiply_by_quantized_multiplier(prod, p["output_multiplier"], p["output_shift"])
    return elementwise.finish(g, op, np.clip(out + p["output_offset"], p["act_min"], p["act_max"]))


def c_params(g: Graph, op: Op) -> dict:
    return {**params(g, op), **elementwise.c_operands(g, op)}


def macs(g: Graph, op: Op) -> int:
    """One multiply per output element."""
    return g.tensors[op.outputs[0]].size


def float_reference(g: Graph, op: Op, *args: np.ndarray) -> np.ndarray:
    a, b = elementwise.float_operands(g, op, args)
    return float_clamp(a * b, op)


def derive(g: Graph, op: Op) -> None:
    """TFLM CalculateOpDataMul: s1 * s2 / s_out in double."""
    s1, s2, s_out = (float(g.tensors[n].scale[0]) for n in (*op.inputs[:2], op.outputs[0]))
    op.attrs["output_multiplier"], op.attrs["output_shift"] = quantize_multiplier(s1 * s2 / s_out)


def from_aten(lo, a: dict, layer: str):
    """aten::mul(self, other), through the ATen lowering lo (a scalar on either side)."""
    x, y = a["self"], a["other"]
    return lo.binary(layer, "mul", *((x, y) if lo.is_act(x) else (y, x)))


def from_tflite(r, operator, where: str) -> Op:
    return elementwise.from_tflite(r, operator, where, "mul")


def to_tflite(w, g: Graph, op: Op) -> None:
    elementwise.to_tflite(w, g, op, "MulOptions")


SPEC = OpSpec("mul", reference, c_params, macs, derive=derive,
              float_reference=float_reference,
              const_operands=True, aten={"mul": from_aten},
              tflite=TFLite("MUL", 2, from_tflite, to_tflite, options="MulOptions", min_inputs=2))
