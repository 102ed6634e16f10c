"""ADD int8 (residual connections, hardsigmoid's +3), as TFLM's
reference_integer_ops::AddFunc, broadcasting like BroadcastAdd6DSlow.

Each input is offset by its zero point, shifted left by 20 bits of headroom,
rescaled to the common scale 2*max(s1, s2), summed, rescaled to the output
scale and clamped. Params come from derive (TFLM's add Prepare); operands
and broadcasting from elementwise.

IR: inputs a, b (broadcast as TFLite does: shapes aligned on the right, dims equal
or 1; either may be a constant int8 tensor, e.g. hardsigmoid's 3, stored with its own
per-tensor quantization); attrs activation; quantized: left_shift,
input1_multiplier, input1_shift, input2_multiplier, input2_shift,
output_multiplier, output_shift, act_min, act_max.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..fixedpoint import multiply_by_quantized_multiplier_smaller_than_one_exp as scale_lt1
from ..fixedpoint import quantize_multiplier
from ..ir import Graph, Op
from . import elementwise
from .activation import float_clamp
from .spec import Kernel, OpSpec, TFLite, at_speed

LEFT_SHIFT = 20             # TFLite's headroom for int8 ADD


def params(g: Graph, op: Op) -> dict:
    a, b, y = (g.tensors[n] for n in (*op.inputs[:2], op.outputs[0]))
    at = op.attrs
    p = dict(input1_offset=-a.qparams[1], input2_offset=-b.qparams[1],
             output_offset=y.qparams[1], left_shift=int(at["left_shift"]),
             input1_multiplier=int(at["input1_multiplier"]), input1_shift=int(at["input1_shift"]),
             input2_multiplier=int(at["input2_multiplier"]), input2_shift=int(at["input2_shift"]),
             output_multiplier=int(at["output_multiplier"]), output_shift=int(at["output_shift"]),
             act_min=int(at.get("act_min", -128)), act_max=int(at.get("act_max", 127)))
    if max(p["input1_shift"], p["input2_shift"], p["output_shift"]) > 0:
        raise TinydsError(f"{g.name}: {op.name}: {op.type} output scale {y.qparams[0]:g} is too "
                          f"small for the input scales (multiplier > 1); recalibrate the "
                          f"{op.type}'s output")
    return p


def scaled_operands(p: dict, a: np.ndarray, b: np.ndarray):
    """Both operands on the common scale with left_shift bits of headroom (ADD and SUB)."""
    x1 = (a + p["input1_offset"]) << p["left_shift"]
    x2 = (b + p["input2_offset"]) << p["left_shift"]
    return (scale_lt1(x1, p["input1_multiplier"], p["input1_shift"]),
            scale_lt1(x2, p["input2_multiplier"], p["input2_shift"]))


def reference(g: Graph, op: Op, *args: np.ndarray) -> np.ndarray:
    p = params(g, op)
    elementwise.check(g, op)
    s1, s2 = scaled_operands(p, *elementwise.operands(g, op, args))
    out = scale_lt1(s1 + s2, p["output_multiplier"], p["output_shift"]) + p["output_offset"]
    return elementwise.finish(g, op, np.clip(out, p["act_min"], p["act_max"]))


def c_params(g: Graph, op: Op) -> dict:
    return {**params(g, op), **elementwise.c_operands(g, op)}


def table_params(g: Graph, op: Op) -> dict:
    """c_params plus each operand's rescale as a table over its 256 int8 values (the fast
    kernel: two loads replace two of the three requantizations; 2 KB of flash)."""
    p = c_params(g, op)
    v = np.arange(-128, 128, dtype=np.int64)
    t1, t2 = scaled_operands(p, v, v)
    # the template's one-instruction SMMULR needs |t1 + t2| < 2^30 (ADD's 20-bit headroom)
    assert np.abs(t1).max() + np.abs(t2).max() < 1 << 30, (g.name, op.name)
    return {**p, "table1": [int(t) for t in t1], "table2": [int(t) for t in t2]}


def macs(g: Graph, op: Op) -> int:
    """One add per output element."""
    return g.tensors[op.outputs[0]].size


def choose(g: Graph, op: Op, target) -> Kernel:
    """At speed, on any core, the operands' rescales come from tables (table_params)."""
    if at_speed(g, op, target):
        return Kernel("add", table_params(g, op),
                      note="operand rescales from two 256-entry tables (2 KB)")
    return Kernel("add", c_params(g, op))


def float_reference(g: Graph, op: Op, *args: np.ndarray) -> np.ndarray:
    a, b = elementwise.float_operands(g, op, args)
    return float_clamp(a + b, op)


def derive(g: Graph, op: Op) -> None:
    """TFLM's add Prepare (and sub's): both inputs onto 2 * max(s1, s2) with LEFT_SHIFT
    bits of headroom, then onto the output scale."""
    s1 = float(g.tensors[op.inputs[0]].scale[0])
    s2 = float(g.tensors[op.inputs[1]].scale[0])
    s_out = float(g.tensors[op.outputs[0]].scale[0])
    twice_max = 2.0 * max(s1, s2)
    op.attrs["left_shift"] = LEFT_SHIFT
    op.attrs["input1_multiplier"], op.attrs["input1_shift"] = quantize_multiplier(s1 / twice_max)
    op.attrs["input2_multiplier"], op.attrs["input2_shift"] = quantize_multiplier(s2 / twice_max)
    op.attrs["output_multiplier"], op.attrs["output_shift"] = quantize_multiplier(
        twice_max / ((1 << LEFT_SHIFT) * s_out))


def from_aten(lo, a: dict, layer: str):
    """aten::add(self, other, alpha), through the ATen lowering lo. A constant added to a
    fresh matmul's output becomes that fully_connected's bias."""
    x, y = a["self"], a["other"]
    if a.get("alpha", 1) != 1:
        raise lo.fail(layer, "add with alpha != 1 is not supported")
    act, c = (x, y) if lo.is_act(x) else (y, x)
    prod = lo.g.ops[-1] if lo.g.ops else None
    if (lo.is_act(act) and lo.is_const(c) and prod is not None
            and prod.outputs == [act.name]
            and prod.type == "fully_connected" and prod.inputs[2] == ""
            and np.asarray(c.data).size == act.shape[1] and len(lo.g.consumers(act.name)) == 0):
        lo.check_finite(layer, c)
        prod.inputs[2] = lo.const(prod.name + ".bias", np.asarray(c.data).reshape(-1))
        return act
    return lo.binary(layer, "add", act, c)


def from_tflite(r, operator, where: str) -> Op:
    return elementwise.from_tflite(r, operator, where, "add")


def to_tflite(w, g: Graph, op: Op) -> None:
    elementwise.to_tflite(w, g, op, "AddOptions")


SPEC = OpSpec("add", reference, c_params, macs, derive=derive, choose=choose,
              float_reference=float_reference,
              const_operands=True, fuses_activation=True, aten={"add": from_aten},
              tflite=TFLite("ADD", 2, from_tflite, to_tflite, options="AddOptions", min_inputs=2))
