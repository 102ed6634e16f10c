"""The fused activations ("none", "relu", "relu6") of conv, fully-connected, pool and
add/sub/mul layers: the float clamp, the integer range the kernels clamp to, and the
PyTorch relu/relu6/clamp lowerings (a relu or relu6 op the passes fuse into its producer).
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import Op

INT8_MIN, INT8_MAX = -128, 127
_CLAMPS = {"none": (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}


def from_relu(lo, a: dict, layer: str):
    """aten::relu, through the ATen lowering lo."""
    x = lo.expect_act(a["self"], layer)
    return lo.emit("relu", layer, [x.name], x.shape, perm=x.perm)


def from_relu6(lo, a: dict, layer: str):
    """aten::relu6."""
    x = lo.expect_act(a["self"], layer)
    return lo.emit("relu6", layer, [x.name], x.shape, perm=x.perm)


def _clamp_to(lo, layer: str, x, low, high, kind: str):
    """A clamp to [0, inf) is a relu, to [0, 6] a relu6; no other clamp lowers."""
    if low == 0 and high is None:
        return from_relu(lo, {"self": x}, layer)
    if low == 0 and high == 6:
        return from_relu6(lo, {"self": x}, layer)
    raise lo.fail(layer, f"unsupported op aten::{kind}({low}, {high}); only clamps to [0, inf) "
                         "(ReLU) and [0, 6] (ReLU6) are supported")


def from_hardtanh(lo, a: dict, layer: str):
    return _clamp_to(lo, layer, lo.expect_act(a["self"], layer), a["min_val"], a["max_val"], "hardtanh")


def from_clamp(lo, a: dict, layer: str):
    return _clamp_to(lo, layer, lo.expect_act(a["self"], layer), a.get("min"), a.get("max"), "clamp")


def from_clamp_min(lo, a: dict, layer: str):
    return _clamp_to(lo, layer, lo.expect_act(a["self"], layer), a["min"], None, "clamp_min")


def float_clamp(y: np.ndarray, op: Op) -> np.ndarray:
    """y through op's fused activation (float graph)."""
    lo, hi = _CLAMPS[op.attrs.get("activation", "none")]
    return np.clip(y, lo, hi) if op.attrs.get("activation", "none") != "none" else y


def activation_range(activation: str, scale: float, zero_point: int,
                     qrange: tuple[int, int] = (INT8_MIN, INT8_MAX)) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized: f / scale in float32, std::round,
    within the output dtype's qrange."""
    def quantize(f: float) -> int:
        q = np.float32(f) / np.float32(scale)
        return zero_point + int(math.copysign(math.floor(abs(float(q)) + 0.5), float(q)))

    qmin, qmax = qrange
    if activation == "relu":
        return max(qmin, quantize(0.0)), qmax
    if activation == "relu6":
        return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))
    if activation == "none":
        return qmin, qmax
    raise ValueError(f"unknown activation {activation!r}")
