"""The fused activations ("none", "relu", "relu6") of conv, fully-connected, pool and
add/sub/mul layers: the float clamp, and the integer range the kernels clamp to.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import Op

INT8_MIN, INT8_MAX = -128, 127
_CLAMPS = {"none": (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}


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
