"""SUB int8, as TFLM's reference SubElementwise / BroadcastSubSlow: ADD's
arithmetic (common scale, 20 bits of headroom, add.derive gives the same
params) with the second operand's scaled value subtracted.

IR: as add (inputs a, b broadcast, either may be constant; attrs activation; the
same quantized params).
"""
from __future__ import annotations

import numpy as np

from ..fixedpoint import multiply_by_quantized_multiplier_smaller_than_one_exp as scale_lt1
from ..ir import Graph, Op
from . import add, elementwise
from .activation import float_clamp
from .spec import OpSpec, TFLite


def reference(g: Graph, op: Op, *args: np.ndarray) -> np.ndarray:
    p = add.params(g, op)
    elementwise.check(g, op)
    s1, s2 = add.scaled_operands(p, *elementwise.operands(g, op, args))
    out = scale_lt1(s1 - s2, p["output_multiplier"], p["output_shift"]) + p["output_offset"]
    return elementwise.finish(g, op, np.clip(out, p["act_min"], p["act_max"]))


def c_params(g: Graph, op: Op) -> dict:
    return add.c_params(g, op)


def macs(g: Graph, op: Op) -> int:
    """One subtraction per output element."""
    return g.tensors[op.outputs[0]].size


def float_reference(g: Graph, op: Op, *args: np.ndarray) -> np.ndarray:
    a, b = elementwise.float_operands(g, op, args)
    return float_clamp(a - b, op)


def from_aten(lo, a: dict, layer: str):
    """aten::sub(self, other, alpha), through the ATen lowering lo."""
    if a.get("alpha", 1) != 1:
        raise lo.fail(layer, "sub with alpha != 1 is not supported")
    return lo.binary(layer, "sub", a["self"], a["other"])


def from_tflite(r, operator, where: str) -> Op:
    return elementwise.from_tflite(r, operator, where, "sub")


def to_tflite(w, g: Graph, op: Op) -> None:
    elementwise.to_tflite(w, g, op, "SubOptions")


SPEC = OpSpec("sub", reference, c_params, macs, derive=add.derive,
              float_reference=float_reference,
              const_operands=True, aten={"sub": from_aten},
              tflite=TFLite("SUB", 2, from_tflite, to_tflite, options="SubOptions", min_inputs=2))
