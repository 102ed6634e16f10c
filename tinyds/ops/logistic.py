"""LOGISTIC (sigmoid) int8 -> int8 (output scale 1/256, zero point -128), as
TFLM's reference_integer_ops::Logistic with gemmlowp fixed point.

x - zp_in beyond the input radius saturates to -128 / 127. Otherwise it is
rescaled to Q4.27 (input_multiplier, input_left_shift from derive, TFLM's
CalculateArithmeticOpDataLogistic), gemmlowp's logistic gives Q0.31
(1 / (1 + exp(-|x|)) from exp_on_negative_values and
one_over_one_plus_x_for_x_in_0_1, mirrored for negative x, exactly 1/2 at 0),
and that is shifted down to 8 bits.

IR: one input, one output of its shape (scale 1/256, zero point -128); quantized:
input_multiplier, input_left_shift, input_range_radius (derive). PyTorch's
aten::sigmoid and TFLite's LOGISTIC map to it both ways.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import TinydsError
from ..fixedpoint import INT32_MAX, multiply_by_quantized_multiplier
from ..fixedpoint import rounding_divide_by_pot as rdbpot
from ..ir import Graph, Op
from .softmax import exp_on_negative_values, one_over_one_plus_x_for_x_in_0_1
from .spec import OpSpec, TFLite

INPUT_INTEGER_BITS = 4   # Q4.27 input to gemmlowp::logistic
OUTPUT_PARAMS = (1 / 256, -128)


def params(g: Graph, op: Op) -> dict:
    x = g.tensors[op.inputs[0]]
    at = op.attrs
    return dict(size=x.size, input_zp=x.qparams[1],
                input_multiplier=int(at["input_multiplier"]),
                input_left_shift=int(at["input_left_shift"]),
                input_range_radius=int(at["input_range_radius"]))


def logistic_q4(a) -> np.ndarray:
    """gemmlowp::logistic: Q4.27 in, Q0.31 out."""
    a = np.asarray(a, np.int64)
    positive = one_over_one_plus_x_for_x_in_0_1(
        exp_on_negative_values(-np.abs(a), INPUT_INTEGER_BITS))
    return np.where(a == 0, 1 << 30, np.where(a > 0, positive, INT32_MAX - positive))


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    p = params(g, op)
    v = x.astype(np.int64) - p["input_zp"]
    radius = p["input_range_radius"]
    inside = np.abs(v) < radius
    q4 = multiply_by_quantized_multiplier(np.where(inside, v, 0), p["input_multiplier"],
                                          p["input_left_shift"])
    out = np.clip(rdbpot(logistic_q4(q4), 31 - 8) - 128, -128, 127)
    out = np.where(v <= -radius, -128, np.where(v >= radius, 127, out))
    return out.astype(np.int8)


def c_params(g: Graph, op: Op) -> dict:
    return params(g, op)


def macs(g: Graph, op: Op) -> int:
    """About twenty fixed-point multiplies per element (exp and reciprocal)."""
    return 20 * g.tensors[op.outputs[0]].size


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))     # 1 / (1 + exp(-x)) without overflow


def derive(g: Graph, op: Op) -> None:
    """TFLM CalculateArithmeticOpDataLogistic for int8 (Q4.27 input)."""
    s_in = float(g.tensors[op.inputs[0]].scale[0])
    q, left_shift = math.frexp(s_in * (1 << (31 - INPUT_INTEGER_BITS)))
    if left_shift < 0:
        raise TinydsError(f"layer {op.name}: sigmoid input scale {s_in:g} is too small; "
                          "recalibrate the layer's input")
    op.attrs["input_multiplier"] = int(math.floor(q * (1 << 31) + 0.5))
    op.attrs["input_left_shift"] = left_shift
    op.attrs["input_range_radius"] = int(math.floor(
        ((1 << INPUT_INTEGER_BITS) - 1) * (1 << (31 - INPUT_INTEGER_BITS))
        / (1 << left_shift)))


def from_aten(lo, a: dict, layer: str):
    """aten::sigmoid(self), through the ATen lowering lo."""
    x = lo.expect_act(a["self"], layer)
    return lo.emit("logistic", layer, [x.name], x.shape, perm=x.perm)


def from_tflite(r, operator, where: str) -> Op:
    """A LOGISTIC operator, through the .tflite reader r."""
    x = r.tensor(operator.inputs[0], where)
    y = r.tensor(operator.outputs[0], where)
    r.check_output_shape(where, y, r.g.tensors[x].shape)
    if r.g.tensors[y].qparams != OUTPUT_PARAMS:
        raise r.err(where, f"logistic output quantization {r.g.tensors[y].qparams}",
                    "TFLite int8 logistic outputs scale 1/256, zero point -128")
    return Op("logistic", where, [x], [y], {})


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a LOGISTIC operator, through the .tflite writer w."""
    w.op("logistic", [w.tensor(g.tensors[op.inputs[0]])], w.outputs(g, op))


SPEC = OpSpec("logistic", reference, c_params, macs, derive=derive,
              float_reference=float_reference,
              aten={"sigmoid": from_aten}, tflite=TFLite("LOGISTIC", 2, from_tflite, to_tflite),
              fixed_output={"int8": (np.float32(1 / 256), -128)})
