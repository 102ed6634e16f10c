"""Float-graph rewrites run before quantization: plain functions Graph -> Graph.

They remove the float-only ops (batch_norm, relu, relu6) the int8 kernels
cannot run: BN folds into the preceding conv/FC weights and bias, ReLU/ReLU6
become the producer's fused clamp. Each pass returns a new graph and leaves
its input untouched.
"""
from __future__ import annotations

import copy

import numpy as np

from . import ops
from .errors import TinydsError
from .ir import Graph, Op, Tensor


def _bypass(g: Graph, op: Op) -> None:
    """Drop a single-input op whose output equals its input: readers of the output read the input."""
    src, dst = op.inputs[0], op.outputs[0]
    g.ops.remove(op)
    for other in g.ops:
        other.inputs = [src if n == dst else n for n in other.inputs]
    g.outputs = [src if n == dst else n for n in g.outputs]


def _sole_producer(g: Graph, op: Op, accepts) -> Op | None:
    """The op producing op's input if its spec accepts it (accepts(spec) is true) and it
    feeds nothing else."""
    prod = g.producer(op.inputs[0])
    if prod is None or not accepts(ops.get(prod.type)) or op.inputs[0] in g.outputs:
        return None
    return prod if len(g.consumers(op.inputs[0])) == 1 else None


def fold_batchnorm(g: Graph) -> Graph:
    """y = (conv(x) + b - mean) * gamma / sqrt(var + eps) + beta, folded into conv's weights and bias."""
    g = copy.deepcopy(g)
    for bn in [op for op in g.ops if op.type == "batch_norm"]:
        prod = _sole_producer(g, bn, lambda spec: spec.weight_axis is not None)
        if prod is None or prod.attrs.get("activation", "none") != "none":
            raise TinydsError(f"{g.name}: layer {bn.name}: batch norm does not directly follow a conv or Linear "
                              "(whose output nothing else reads), so it cannot be folded; move it right "
                              "after a conv/Linear or fold it into the weights before exporting")
        mean, var, gamma, beta = (g.tensors[n].data.astype(np.float64) for n in bn.inputs[1:5])
        scale = gamma / np.sqrt(var + bn.attrs["eps"])
        w = g.tensors[prod.inputs[1]]
        axis_shape = [1] * w.data.ndim
        axis_shape[ops.get(prod.type).weight_axis] = -1         # scale each output channel
        w.data = (w.data.astype(np.float64) * scale.reshape(axis_shape)).astype(np.float32)
        bias_name = prod.inputs[2] if len(prod.inputs) > 2 else ""
        old = g.tensors[bias_name].data.astype(np.float64) if bias_name else 0.0
        bias = ((old - mean) * scale + beta).astype(np.float32)
        if bias_name:
            g.tensors[bias_name].data = bias
        else:
            bias_name = _fresh(g, prod.name + ".bias")
            g.add_tensor(Tensor(bias_name, bias.shape, data=bias))
            prod.inputs = prod.inputs[:2] + [bias_name]
        _bypass(g, bn)
    g.remove_unused_tensors()
    return g


def _fresh(g: Graph, base: str) -> str:
    name, i = base, 1
    while name in g.tensors:
        name, i = f"{base}_{i}", i + 1
    return name


def fuse_activations(g: Graph) -> Graph:
    """relu/relu6 become the producer's `activation` clamp (relu then relu6, either order, is relu6)."""
    g = copy.deepcopy(g)
    for act in [op for op in g.ops if op.type in ("relu", "relu6")]:
        prod = _sole_producer(g, act, lambda spec: spec.fuses_activation)
        if prod is None:
            raise TinydsError(f"{g.name}: layer {act.name}: {act.type} must directly follow a conv, Linear, add or "
                              "pooling layer whose output nothing else reads (int8 kernels apply it as a "
                              "fused clamp); restructure the model so the activation follows such a layer")
        prev = prod.attrs.get("activation", "none")
        prod.attrs["activation"] = "relu6" if "relu6" in (prev, act.type) else "relu"
        _bypass(g, act)
    g.remove_unused_tensors()
    return g


def remove_noop_reshapes(g: Graph) -> Graph:
    """Reshapes to the same shape vanish; a reshape of a reshape reads the original tensor."""
    g = copy.deepcopy(g)
    for op in [op for op in g.ops if op.type == "reshape"]:
        src = g.tensors[op.inputs[0]]
        prod = g.producer(op.inputs[0])
        if prod is not None and prod.type == "reshape" and src.name not in g.outputs:
            op.inputs = [prod.inputs[0]]
            if not g.consumers(src.name):
                g.ops.remove(prod)
            src = g.tensors[op.inputs[0]]
        out = g.tensors[op.outputs[0]]
        if tuple(src.shape) == tuple(out.shape) and not (src.name in g.inputs and out.name in g.outputs):
            _bypass(g, op)
    g.remove_unused_tensors()
    return g


def optimize(g: Graph) -> Graph:
    """The float graph ready for quantization: no batch_norm, relu or relu6 left."""
    return remove_noop_reshapes(fuse_activations(fold_batchnorm(g)))
