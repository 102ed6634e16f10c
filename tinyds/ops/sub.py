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
from .spec import OpSpec


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


SPEC = OpSpec("sub", reference, c_params, macs, derive=add.derive,
              float_reference=float_reference,
              const_operands=True)
