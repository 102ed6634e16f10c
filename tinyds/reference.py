"""Integer-exact interpreter of a quantized graph: the spec the generated C must match.

It only sequences ops; each op's arithmetic lives in tinyds/ops/<type>.py.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .ir import Graph


def batches(g: Graph, x) -> list[np.ndarray]:
    """One batch per graph input: x is a batch (one-input graph), a list of batches in
    g.inputs order, or packed rows (N, every input's bytes in order), as verify's vectors
    and the C harness hold several inputs."""
    if isinstance(x, (list, tuple)):
        if len(x) != len(g.inputs):
            raise ValueError(f"{len(x)} input batches for {len(g.inputs)} graph inputs")
        return [np.asarray(b) for b in x]
    x = np.asarray(x)
    return [x] if len(g.inputs) == 1 else unpack(g, g.inputs, x)


def unpack(g: Graph, names, rows: np.ndarray) -> list[np.ndarray]:
    """Packed rows (N, sum of the tensors' sizes) -> a batch per tensor, shaped."""
    rows = np.asarray(rows).reshape(len(rows), -1)
    bounds = np.cumsum([0] + [g.tensors[n].size for n in names])
    if rows.shape[1] != bounds[-1]:
        raise ValueError(f"rows of {rows.shape[1]} values for tensors of {bounds[-1]}")
    return [rows[:, a:b].reshape(len(rows), *g.tensors[n].shape[1:])
            for n, a, b in zip(names, bounds, bounds[1:])]


def pack(arrays) -> np.ndarray:
    """Batches (N, ...) -> rows (N, every batch's values in order): the layout of verify's
    vectors and of the C harness's files."""
    return np.concatenate([np.asarray(a).reshape(len(a), -1) for a in arrays], axis=1)


def run_all(g: Graph, x) -> dict[str, np.ndarray]:
    """Run a batch of inputs (N, *input_shape[1:]; several inputs: see batches) of each
    graph input's integer type (int8, or uint8 before a leading QUANTIZE); returns every
    activation tensor."""
    xs = batches(g, x)
    for name, b in zip(g.inputs, xs):
        if b.dtype != np.dtype(g.tensors[name].dtype):
            raise TypeError(f"reference input must be {g.tensors[name].dtype}, got {b.dtype}")
    values = dict(zip(g.inputs, xs))
    for op in g.ops:
        args = [values[n] for n in op.inputs if n and not g.tensors[n].is_const]
        values[op.outputs[0]] = ops.get(op.type).reference(g, op, *args)
    return values


def run(g: Graph, x) -> np.ndarray:
    """Batched output of the graph's first output tensor."""
    return run_all(g, x)[g.outputs[0]]


def run_packed(g: Graph, x) -> np.ndarray:
    """Every output, packed: (N, all outputs' bytes in g.outputs order), as the C writes them."""
    values = run_all(g, x)
    return pack([values[n] for n in g.outputs])
