"""PRELU int8, as TFLM's reference_ops::BroadcastPrelu4DSlow: x - zp_in >= 0 is
requantized by s_in / s_out; below zero it is multiplied by the (constant,
broadcast) alpha minus its zero point and requantized by s_in * s_alpha / s_out
(double-rounding MultiplyByQuantizedMultiplier), plus zp_out, clamped to int8.
Multipliers come from derive (TFLM's CalculatePreluParams).

IR: inputs x and a constant alpha that broadcasts to x (per channel: shape (C,));
quantized: identity_multiplier, identity_shift, alpha_multiplier, alpha_shift.
PyTorch's aten::prelu and TFLite's PRELU map to it both ways.
"""
from __future__ import annotations

import numpy as np

from ..fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from ..ir import Graph, Op
from . import elementwise
from .spec import OpSpec, TFLite


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


def from_aten(lo, a: dict, layer: str):
    """aten::prelu(self, weight), through the ATen lowering lo: the weight (one slope,
    or one per channel) becomes a constant alpha that broadcasts over the IR's last
    (channel) axis."""
    x, w = lo.expect_act(a["self"], layer), a["weight"]
    c = x.shape[1] if len(x.shape) > 1 else 1
    if not lo.is_const(w) or np.asarray(w.data).size not in (1, c) or x.perm is not None:
        raise lo.fail(layer, f"prelu with weight {getattr(w, 'data', w)!r} on shape {x.shape} is "
                             "not supported; use one slope or one per channel")
    lo.check_finite(layer, w)
    alpha = lo.const(f"{layer}.alpha", np.asarray(w.data, np.float32).reshape(-1))
    return lo.emit("prelu", layer, [x.name, alpha], x.shape, {}, perm=x.perm)


def from_tflite(r, operator, where: str) -> Op:
    """A PRELU operator, x and a constant per-tensor int8 alpha that broadcasts to it,
    through the .tflite reader r."""
    x, alpha = (r.tensor(i, where) for i in operator.inputs[:2])
    tx, ta = r.g.tensors[x], r.g.tensors[alpha]
    y = r.tensor(operator.outputs[0], where)
    try:
        ok = np.broadcast_shapes(tuple(tx.shape), tuple(ta.shape)) == tuple(tx.shape)
    except ValueError:
        ok = False
    if tx.is_const or not ta.is_const or ta.dtype != "int8" or len(ta.scale) != 1 or not ok:
        raise r.err(where, f"PRELU of {tx.shape} with alpha {ta.shape} ({ta.dtype}, "
                    f"{'constant' if ta.is_const else 'computed'})",
                    "alpha must be a per-tensor int8 constant that broadcasts to the input")
    r.check_output_shape(where, y, tx.shape)
    return Op("prelu", where, [x, alpha], [y], {})


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a PRELU operator, through the .tflite writer w."""
    w.op("prelu", [w.tensor(g.tensors[n]) for n in op.inputs], w.outputs(g, op))


SPEC = OpSpec("prelu", reference, c_params, macs, derive=derive,
              float_reference=float_reference,
              aten={"prelu": from_aten, "_prelu_kernel": from_aten},
              tflite=TFLite("PRELU", 1, from_tflite, to_tflite, min_inputs=2),
              const_operands=True)
