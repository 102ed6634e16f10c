"""QUANTIZE inside a graph or at its edges (int8 -> int8, uint8 -> int8 at the input,
int8 -> uint8 at the output), as TFLM's reference_ops::Requantize: (x - zp_in)
rescaled by s_in / s_out (double-rounding MultiplyByQuantizedMultiplier; derive
computes it as TFLM's PrepareQuantizeReference) plus zp_out, clamped to the output
type. With equal scales and zero points 128 apart TFLM flips the top bit instead,
which the formula gives exactly (multiplier 2^30, shift 1 is the identity).

IR: requantization (TFLite QUANTIZE): int8 -> int8 inside a graph, and the only op
that touches a uint8 tensor: uint8 -> int8 from a uint8 model input, int8 -> uint8
to a uint8 model output; quantized: multiplier, shift. TFLite's QUANTIZE maps to it
both ways (the importer drops float QUANTIZE/DEQUANTIZE at the model's edges).
"""
from __future__ import annotations

import numpy as np

from ..fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from ..ir import C_TYPES, Graph, Op
from .spec import OpSpec, TFLite


def params(g: Graph, op: Op) -> dict:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    out_min, out_max = y.qrange
    return dict(size=x.size, input_zp=x.qparams[1], output_zp=y.qparams[1],
                multiplier=int(op.attrs["multiplier"]), shift=int(op.attrs["shift"]),
                out_min=out_min, out_max=out_max,
                in_t=C_TYPES[x.dtype], out_t=C_TYPES[y.dtype])


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    p = params(g, op)
    out = multiply_by_quantized_multiplier(x.astype(np.int64) - p["input_zp"], p["multiplier"],
                                           p["shift"]) + p["output_zp"]
    return np.clip(out, p["out_min"], p["out_max"]).astype(g.tensors[op.outputs[0]].dtype)


def c_params(g: Graph, op: Op) -> dict:
    p = params(g, op)
    p["flip"] = (p["multiplier"] == 1 << 30 and p["shift"] == 1 and p["in_t"] != p["out_t"]
                 and abs(p["input_zp"] - p["output_zp"]) == 128)
    return p


def macs(g: Graph, op: Op) -> int:
    """One multiply per element."""
    return g.tensors[op.outputs[0]].size


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return x                                      # a change of scale: the same real values


def derive(g: Graph, op: Op) -> None:
    """TFLM PrepareQuantizeReference: s_in / s_out in double."""
    s_in, s_out = (float(g.tensors[n].scale[0]) for n in (op.inputs[0], op.outputs[0]))
    op.attrs["multiplier"], op.attrs["shift"] = quantize_multiplier(s_in / s_out)


def from_tflite(r, operator, where: str) -> Op:
    """An int8 -> int8, uint8 -> int8 or int8 -> uint8 QUANTIZE (as TFLM), through the
    .tflite reader r; the importer checks that uint8 tensors are the model's edges."""
    x = r.tensor(operator.inputs[0], where)
    y = r.tensor(operator.outputs[0], where)
    r.check_output_shape(where, y, r.g.tensors[x].shape)
    kinds = (r.g.tensors[x].dtype, r.g.tensors[y].dtype)
    if kinds not in (("int8", "int8"), ("uint8", "int8"), ("int8", "uint8")):
        raise r.err(where, f"QUANTIZE {kinds[0]} -> {kinds[1]}",
                    "TFLM requantizes int8 -> int8, uint8 -> int8 and int8 -> uint8 only")
    return Op("quantize", where, [x], [y], {})


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a QUANTIZE operator, through the .tflite writer w."""
    w.op("quantize", [w.tensor(g.tensors[op.inputs[0]])], w.outputs(g, op))


SPEC = OpSpec("quantize", reference, c_params, macs, derive=derive,
              float_reference=float_reference,
              tflite=TFLite("QUANTIZE", 2, from_tflite, to_tflite))
