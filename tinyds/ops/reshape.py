"""RESHAPE: NHWC bytes are already in the order of the new shape, so the C side
aliases the input buffer (the planner shares it) and no kernel is emitted.

IR: attrs shape (the new full shape); input and output share quant params.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from .spec import OpSpec


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return x.reshape((x.shape[0], *g.tensors[op.outputs[0]].shape[1:]))


def c_params(g: Graph, op: Op) -> dict:
    return {}


def macs(g: Graph, op: Op) -> int:
    return 0


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return x.reshape((x.shape[0],) + tuple(op.attrs["shape"][1:]))


SPEC = OpSpec("reshape", reference, c_params, macs, int16=True,
              float_reference=float_reference,
              same_quant=True)
