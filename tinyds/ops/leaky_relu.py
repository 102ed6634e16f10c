"""LEAKY_RELU int8, as TFLM's reference_ops::QuantizeLeakyRelu.

IR: one input, one output of its shape; attrs alpha (the negative slope, > 0);
quantized: identity_multiplier, identity_shift, alpha_multiplier, alpha_shift
(derive, TFLM's CalculateOpDataLeakyRelu).

x - zp_in is requantized to the output scale by one of two multipliers:
s_in / s_out where it is >= 0, s_in * alpha / s_out where it is negative
(double-rounding MultiplyByQuantizedMultiplier), plus zp_out, clamped to int8.
PyTorch's aten::leaky_relu and TFLite's LEAKY_RELU (version 2) map to it both ways.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from ..ir import Graph, Op
from .spec import OpSpec, TFLite


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


def derive(g: Graph, op: Op) -> None:
    """TFLM CalculateOpDataLeakyRelu: both ratios in float32, then QuantizeMultiplier."""
    alpha = float(op.attrs["alpha"])
    if not alpha > 0:
        raise TinydsError(f"layer {op.name}: leaky ReLU slope {alpha:g} is not positive; "
                          "use a positive negative_slope (0 is a ReLU)")
    s_in = np.float32(g.tensors[op.inputs[0]].scale[0])
    s_out = np.float32(g.tensors[op.outputs[0]].scale[0])
    op.attrs["alpha_multiplier"], op.attrs["alpha_shift"] = quantize_multiplier(
        float(s_in * np.float32(alpha) / s_out))
    op.attrs["identity_multiplier"], op.attrs["identity_shift"] = quantize_multiplier(
        float(s_in / s_out))


def from_aten(lo, a: dict, layer: str):
    """aten::leaky_relu(self, negative_slope), through the ATen lowering lo."""
    x = lo.expect_act(a["self"], layer)
    return lo.emit("leaky_relu", layer, [x.name], x.shape, {"alpha": float(a["negative_slope"])},
                   perm=x.perm)


def from_tflite(r, operator, where: str) -> Op:
    """A LEAKY_RELU operator, through the .tflite reader r."""
    x = r.tensor(operator.inputs[0], where)
    y = r.tensor(operator.outputs[0], where)
    r.check_output_shape(where, y, r.g.tensors[x].shape)
    return Op("leaky_relu", where, [x], [y], {"alpha": float(operator.builtinOptions.alpha)})


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a LEAKY_RELU operator, through the .tflite writer w."""
    x = w.tensor(g.tensors[op.inputs[0]])
    w.op("leaky_relu", [x], w.outputs(g, op),
         w.options("LeakyReluOptionsT", alpha=float(op.attrs["alpha"])), "LeakyReluOptions")


SPEC = OpSpec("leaky_relu", reference, c_params, macs, derive=derive,
              float_reference=float_reference, aten={"leaky_relu": from_aten},
              tflite=TFLite("LEAKY_RELU", 2, from_tflite, to_tflite, options="LeakyReluOptions"))
