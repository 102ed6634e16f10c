"""BatchNorm (inference), float graph only: inputs x, mean, var, gamma, beta (constants,
one per channel); attrs eps. Passes fold it into the convolution before it, so it has
no integer reference or kernel. aten::batch_norm in eval mode maps to it."""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from .spec import OpSpec


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    mean, var, gamma, beta = (g.tensors[n].data.astype(np.float64) for n in op.inputs[1:5])
    return (x - mean) / np.sqrt(var + op.attrs["eps"]) * gamma + beta


def from_aten(lo, a: dict, layer: str):
    """aten::batch_norm with running statistics, through the ATen lowering lo; a missing
    weight or bias is 1 or 0."""
    x = lo.expect_act(a["input"], layer)
    if x.perm is not None:
        raise lo.fail(layer, "batch norm on a flattened NCHW feature map is not supported")
    if a.get("training", False):
        raise lo.fail(layer, "batch norm in training mode; call model.eval() before exporting")
    c = x.shape[1]
    mean, var = a["running_mean"], a["running_var"]
    if not lo.is_const(mean) or not lo.is_const(var):
        raise lo.fail(layer, "batch norm without running statistics (track_running_stats=False) "
                             "cannot be folded; export with track_running_stats=True")
    weight, bias = a.get("weight"), a.get("bias")
    lo.check_finite(layer, mean, var, weight, bias)
    gamma = np.asarray(weight.data) if lo.is_const(weight) else np.ones(c)
    beta = np.asarray(bias.data) if lo.is_const(bias) else np.zeros(c)
    names = [lo.const(f"{layer}.{k}", np.asarray(v))
             for k, v in (("mean", mean.data), ("var", var.data), ("gamma", gamma), ("beta", beta))]
    return lo.emit("batch_norm", layer, [x.name] + names, x.shape, {"eps": float(a["eps"])})


def from_native(lo, a: dict, layer: str):
    """_native_batch_norm_legit_no_training returns (out, save_mean, save_invstd)."""
    return (from_aten(lo, dict(a, training=False), layer), None, None)


SPEC = OpSpec("batch_norm", None, None, None, float_reference=float_reference,
              aten={"batch_norm": from_aten, "_native_batch_norm_legit_no_training": from_native})
