"""FULLY_CONNECTED, int8 and 16x8: TFLM reference_integer_ops::FullyConnected(PerChannel).

The input is flattened to (N, K). acc[o] = bias[o] + sum_k (w[o, k] + filter_offset)
* (x[k] + input_offset), filter_offset = -zp_w (0 for our symmetric weights, may be
set in imported .tflite files); multiplier/shift are per-channel or a single pair.

IR: inputs x, weight (O, I), optional bias (O,); attrs activation; quantized:
multiplier, shift (arrays, per-channel or len 1), act_min, act_max.
PyTorch's linear/addmm/matmul/mm and TFLite's FULLY_CONNECTED (version 4) map to it.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op, Tensor
from .activation import float_clamp
from .spec import Kernel, OpSpec, TFLite
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


def lower(lo, layer: str, x, w, b, wdata=None):
    """x @ w.T + b through the ATen lowering lo (wdata: w's data when it is stored
    transposed). A flattened NCHW input moves each weight column to its NHWC position."""
    if len(x.shape) != 2:
        raise lo.fail(layer, f"Linear needs a flat (N,F) input, got {x.shape}; add a flatten before it")
    lo.check_finite(layer, w, b)
    wd = np.asarray(w.data if wdata is None else wdata, dtype=np.float64)
    if wd.ndim != 2 or wd.shape[1] != x.shape[1]:
        raise lo.fail(layer, f"weight shape {wd.shape} does not match input features {x.shape[1]}")
    if x.perm is not None:
        wn = np.empty_like(wd)
        wn[:, x.perm] = wd
        wd = wn
    base = w.name.rsplit(".", 1)[0] if w.name.endswith(".weight") else layer
    inputs = [x.name, lo.const(base + ".weight", wd)]
    inputs.append(lo.const(base + ".bias", np.asarray(b.data).reshape(-1)) if lo.is_const(b) else "")
    return lo.emit("fully_connected", layer, inputs, (1, wd.shape[0]), {"activation": "none"})


def from_linear(lo, a: dict, layer: str):
    """aten::linear(input, weight, bias)."""
    return lower(lo, layer, lo.expect_act(a["input"], layer), a["weight"], a.get("bias"))


def from_addmm(lo, a: dict, layer: str):
    """aten::addmm(self, mat1, mat2): mat1 @ mat2 + self, mat2 a constant."""
    if a.get("beta", 1) != 1 or a.get("alpha", 1) != 1:
        raise lo.fail(layer, "addmm with beta or alpha != 1 is not supported")
    w = a["mat2"]
    if not lo.is_const(w):
        raise lo.fail(layer, "matrix product of two activations is not supported")
    return lower(lo, layer, lo.expect_act(a["mat1"], layer), w, a["self"], wdata=np.asarray(w.data).T)


def from_matmul(lo, a: dict, layer: str):
    """aten::matmul / mm(self, other), other a constant 2-D matrix."""
    w = a["other"]
    if not lo.is_const(w) or np.asarray(w.data).ndim != 2:
        raise lo.fail(layer, "matmul is only supported as activation @ constant 2-D matrix (a Linear)")
    return lower(lo, layer, lo.expect_act(a["self"], layer), w, None, wdata=np.asarray(w.data).T)


def from_tflite(r, operator, where: str) -> list[Op]:
    """A FULLY_CONNECTED operator, through the .tflite reader r; a RESHAPE in front
    flattens an input of more than 2 dims, as TFLM does."""
    o = operator.builtinOptions
    if o.weightsFormat != 0 or o.keepNumDims:
        raise r.err(where, "shuffled weights or keep_num_dims are not supported",
                    "re-convert with default FULLY_CONNECTED options")
    r.check_shape(where, operator.inputs[1], 2)
    inputs = r.weighted_inputs(operator, where, WEIGHT_AXIS)
    x, w = r.g.tensors[inputs[0]], r.g.tensors[inputs[1]]
    if r.check_shape(where, operator.outputs[0], 2) != (1, w.shape[0]):
        raise r.err(where, f"output shape {tuple(r.sg.tensors[operator.outputs[0]].shape)} is not "
                    f"(1, {w.shape[0]})", "re-convert the model with batch 1")
    layers = []
    if len(x.shape) != 2:
        if x.size != w.shape[1]:
            raise r.err(where, f"input {x.shape} does not flatten to depth {w.shape[1]}",
                        "batch must be 1")
        flat = r.g.add_tensor(Tensor(inputs[0] + "/flatten", (1, w.shape[1]), x.dtype,
                                     scale=x.scale, zero_point=x.zero_point))
        layers.append(Op("reshape", where + "_flatten", [inputs[0]], [flat.name],
                         {"shape": flat.shape}))
        inputs[0] = flat.name
    y = r.tensor(operator.outputs[0], where)
    return layers + [Op("fully_connected", where, inputs, [y],
                        {"activation": r.activation(o.fusedActivationFunction, where)})]


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a FULLY_CONNECTED operator (no bias: operand -1), through the writer w."""
    ins = [w.tensor(g.tensors[n]) if n else -1 for n in op.inputs]
    w.op("fully_connected", ins, w.outputs(g, op),
         w.options("FullyConnectedOptionsT", fusedActivationFunction=w.activation(op)),
         "FullyConnectedOptions")


SPEC = OpSpec("fully_connected", reference, c_params, macs, derive=derive, choose=choose, int16=True,
              float_reference=float_reference,
              weight_axis=WEIGHT_AXIS, fuses_activation=True,
              aten={"linear": from_linear, "addmm": from_addmm, "matmul": from_matmul,
                    "mm": from_matmul},
              tflite=TFLite("FULLY_CONNECTED", 4, from_tflite, to_tflite,
                            options="FullyConnectedOptions", min_inputs=2))
