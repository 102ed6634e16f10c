"""FULLY_CONNECTED, int8 and 16x8: TFLM reference_integer_ops::FullyConnected(PerChannel).

The input is flattened to (N, K). acc[o] = bias[o] + sum_k (w[o, k] + filter_offset)
* (x[k] + input_offset), filter_offset = -zp_w (0 for our symmetric weights, may be
set in imported .tflite files); multiplier/shift are per-channel or a single pair.

IR: inputs x, weight (O, I), optional bias (O,); attrs activation; quantized:
multiplier, shift (arrays, per-channel or len 1), act_min, act_max.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from .activation import float_clamp
from .spec import Kernel, OpSpec
from .weighted import (INT16_BLOCK, derive_weighted, float_operands, fold_bias, int16_params,
                       int_list, operands, quant_params, requantize, weight_zero_point)

WEIGHT_AXIS = 0            # the axis of the weights' output channels


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    """float64 matmul is exact here: products and sums are integers below 2**53."""
    xt, w, bias, _ = operands(g, op)
    xs = x.reshape(x.shape[0], -1).astype(np.float64) - float(xt.zero_point[0])
    wf = w.astype(np.float64) - weight_zero_point(g, op)
    acc = (xs @ wf.T).astype(np.int64)
    if bias is not None:
        acc = acc + bias
    return requantize(acc, g, op)


def c_params(g: Graph, op: Op) -> dict:
    """Everything templates/ops/fully_connected.c.j2 needs. The input offset is always
    folded into the bias when it fits int32 (an FC reads no padding)."""
    _, w, bias, _ = operands(g, op)
    p = quant_params(g, op, w.shape[0])
    p["filter_offset"] = -weight_zero_point(g, op)
    p["out_c"], p["depth"] = w.shape
    w_sums = w.astype(np.int64).sum(axis=1) + p["filter_offset"] * w.shape[1]
    folded = fold_bias(bias, w_sums, p["input_offset"])
    p["fold"] = folded is not None
    b = folded if folded is not None else bias
    p["bias"] = int_list(b) if b is not None else None
    p["weights"] = int_list(w)
    return p


def c_params_int16(g: Graph, op: Op) -> dict:
    """Everything templates/ops/fully_connected_int16.c.j2 needs."""
    w = operands(g, op)[1]
    return {**int16_params(g, op, w.shape[0]), "weights": int_list(w),
            "filter_offset": -weight_zero_point(g, op), "out_c": w.shape[0], "depth": w.shape[1],
            "block": min(w.shape[1], INT16_BLOCK // 2)}


def macs(g: Graph, op: Op) -> int:
    return g.tensors[op.inputs[1]].size


def choose(g: Graph, op: Op, target) -> Kernel:
    """fully_connected_int16 for 16x8, else the portable kernel."""
    if g.tensors[op.outputs[0]].dtype == "int16":
        return Kernel("fully_connected_int16", c_params_int16(g, op))
    return Kernel("fully_connected", c_params(g, op))


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    w, b = float_operands(g, op)
    return float_clamp(x.reshape(x.shape[0], -1) @ w.T + b, op)


def derive(g: Graph, op: Op) -> None:
    """Per-channel (or per-tensor) multipliers; weights' output channels on axis 0."""
    derive_weighted(g, op, WEIGHT_AXIS)


SPEC = OpSpec("fully_connected", reference, c_params, macs, derive=derive, choose=choose, int16=True,
              float_reference=float_reference,
              weight_axis=WEIGHT_AXIS)
