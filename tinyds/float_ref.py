"""Float NumPy interpreter of the float IR (NHWC, batched).

Used for calibration (it returns every tensor, which the observers need) and
as the float side of the float-vs-int8 agreement report; tests check it
against PyTorch so frontend lowering errors surface here first. It only
sequences ops; each op's float arithmetic is its module's float_reference.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .ir import Graph


def run(g: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run a batch x (N, *input_shape[1:]) float (several inputs: a list of batches);
    returns every activation tensor by name."""
    from .reference import batches
    values = {n: np.asarray(b, dtype=np.float64) for n, b in zip(g.inputs, batches(g, x))}
    for op in g.ops:
        args = [values[n] for n in op.inputs if n and not g.tensors[n].is_const]
        values[op.outputs[0]] = ops.get(op.type).float_reference(g, op, *args)
    return values
