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
from .avg_pool2d import check_same_qparams, geometry, pool_from_tflite, pool_to_tflite
from .spec import OpSpec, TFLite

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


def from_aten(lo, a: dict, layer: str):
    """aten::max_pool2d (no dilation), through the ATen lowering lo."""
    x = lo.expect_4d(lo.expect_act(a["self"], layer), layer, "max_pool2d")
    if lo.pair(a.get("dilation", 1)) != (1, 1):
        raise lo.fail(layer, "max_pool2d with dilation is not supported; use dilation=1")
    kernel, stride, padding, shape = lo.pool_geometry(layer, x, a, "max_pool2d")
    return lo.emit("max_pool2d", layer, [x.name], shape,
                   dict(kernel=kernel, stride=stride, padding=padding, activation="none"))


def from_max_pool1d(lo, a: dict, layer: str):
    return lo.pool1d(from_aten, a, layer, "max_pool1d")


def _without_indices(lower):
    """The *_with_indices form: the pooled output and no indices."""
    return lambda lo, a, layer: (lower(lo, a, layer), None)


def from_tflite(r, operator, where: str) -> Op:
    return pool_from_tflite(r, operator, where, "max_pool2d")


SPEC = OpSpec("max_pool2d", reference, c_params, macs,
              float_reference=float_reference,
              same_quant=True, fuses_activation=True,
              aten={"max_pool2d": from_aten, "max_pool2d_with_indices": _without_indices(from_aten),
                    "max_pool1d": from_max_pool1d,
                    "max_pool1d_with_indices": _without_indices(from_max_pool1d)},
              tflite=TFLite("MAX_POOL_2D", 2, from_tflite, pool_to_tflite,
                            options="Pool2DOptions"))
