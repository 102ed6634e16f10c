"""CONCATENATION int8, as TFLM's: a byte copy (reference_ops::Concatenation), each
input's slice of every outer index in turn.

TFLM copies the int8 bytes without rescaling, so the quantizer gives every input
the output's scale and zero point (quantize.py ties their calibration ranges,
as TFLite's converter requires them to be equal).

IR: inputs the tensors in order, all with the output's quantization; attrs axis
(of the IR's NHWC / (1, N) shape).
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from .spec import OpSpec


def params(g: Graph, op: Op) -> dict:
    y = g.tensors[op.outputs[0]]
    axis = int(op.attrs["axis"]) % len(y.shape)
    outer = int(np.prod(y.shape[:axis]))
    inner = int(np.prod(y.shape[axis + 1:]))
    return dict(outer=outer, copies=[g.tensors[n].shape[axis] * inner for n in op.inputs])


def reference(g: Graph, op: Op, *xs: np.ndarray) -> np.ndarray:
    axis = int(op.attrs["axis"]) % len(g.tensors[op.outputs[0]].shape)
    return np.concatenate(xs, axis=axis)


def c_params(g: Graph, op: Op) -> dict:
    return params(g, op)


def macs(g: Graph, op: Op) -> int:
    """No arithmetic: the bytes are copied."""
    return 0


def float_reference(g: Graph, op: Op, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=op.attrs["axis"])


SPEC = OpSpec("concatenation", reference, c_params, macs,
              float_reference=float_reference)
