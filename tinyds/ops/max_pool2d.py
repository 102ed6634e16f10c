"""MAX_POOL_2D int8, as TFLM's reference_integer_ops::MaxPool: the largest raw
int8 value among the in-bounds taps (padding never wins), then the clamp.

IR: attrs kernel (kh, kw), stride, padding, activation; input and output share
quant params; quantized: act_min, act_max.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from ..window import taps
from .activation import float_clamp
from .avg_pool2d import check_same_qparams, geometry
from .spec import OpSpec

_BELOW_INT8 = -129  # pad value no int8 input can lose to


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    check_same_qparams(g, op)
    p = geometry(g, op)
    out = None
    for _, _, v in taps(x.astype(np.int16), op.attrs["kernel"], op.attrs["stride"], (1, 1),
                        op.attrs["padding"], _BELOW_INT8):
        out = v if out is None else np.maximum(out, v)
    return np.clip(out, p["act_min"], p["act_max"]).astype(np.int8)


def c_params(g: Graph, op: Op) -> dict:
    check_same_qparams(g, op)
    return geometry(g, op)


def macs(g: Graph, op: Op) -> int:
    """One compare per tap of every output element."""
    p = geometry(g, op)
    return p["out_h"] * p["out_w"] * p["channels"] * p["kernel_h"] * p["kernel_w"]


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    out = None
    for _, _, v in taps(x, op.attrs["kernel"], op.attrs["stride"], (1, 1), op.attrs["padding"], -np.inf):
        out = v if out is None else np.maximum(out, v)
    return float_clamp(out, op)


SPEC = OpSpec("max_pool2d", reference, c_params, macs,
              float_reference=float_reference,
              same_quant=True)
