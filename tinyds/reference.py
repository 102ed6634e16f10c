"""Integer-exact interpreter of a quantized graph: the spec the generated C must match.

It only sequences ops; each op's arithmetic lives in tinyds/ops/<type>.py.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .ir import Graph


def run_all(g: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run a batch of int8 (int16) inputs (N, *input_shape[1:]); returns every activation tensor."""
    x = np.asarray(x)
    if x.dtype != np.dtype(g.input.dtype):
        raise TypeError(f"reference input must be {g.input.dtype}, got {x.dtype}")
    values = {g.inputs[0]: x}
    for op in g.ops:
        args = [values[n] for n in op.inputs if n and not g.tensors[n].is_const]
        values[op.outputs[0]] = ops.get(op.type).reference(g, op, *args)
    return values


def run(g: Graph, x: np.ndarray) -> np.ndarray:
    """Batched int8 (int16) output of the graph's (single) output tensor."""
    return run_all(g, x)[g.outputs[0]]
