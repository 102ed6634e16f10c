"""Operands of the two-input element-wise ops (add, sub, mul, prelu): TFLite broadcasting
and constant operands, shared by their references and templates.

Shapes are aligned on the right and padded to 4-D (batch 1); each dimension of
the two inputs must be equal or 1, as TFLite's ProcessBroadcastShapes requires.
A constant operand (hardsigmoid's +3 and /6) is baked into the C as a const
array; an activation operand is a kernel argument. The C walks the output in
order and reads each input through strides that are 0 along broadcast dims.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..ir import Graph, Op


def shape4(shape) -> tuple:
    return (1,) * (4 - len(shape)) + tuple(int(d) for d in shape)


def check(g: Graph, op: Op) -> tuple:
    """The output's 4-D shape, or a TinydsError if the inputs do not broadcast to it."""
    a, b, y = (shape4(g.tensors[n].shape) for n in (*op.inputs[:2], op.outputs[0]))
    if len(g.tensors[op.outputs[0]].shape) > 4 or any(
            not (p == q or 1 in (p, q)) or max(p, q) != o for p, q, o in zip(a, b, y)):
        raise TinydsError(f"{g.name}: {op.name}: {op.type} of shapes {g.tensors[op.inputs[0]].shape} "
                          f"and {g.tensors[op.inputs[1]].shape} into "
                          f"{g.tensors[op.outputs[0]].shape} is not a broadcast TFLite supports; "
                          f"make the operands' shapes match or be 1 where they differ")
    return y


def operands(g: Graph, op: Op, args) -> list[np.ndarray]:
    """Both inputs as int64 batches (N, *4-D shape[1:]) that NumPy broadcasts like TFLite."""
    it = iter(args)
    out = []
    for name in op.inputs[:2]:
        t = g.tensors[name]
        v = t.data[None] if t.is_const else next(it)
        out.append(np.asarray(v).astype(np.int64).reshape((len(v), *shape4(t.shape)[1:])))
    return out


def float_operands(g: Graph, op: Op, args) -> list[np.ndarray]:
    """Both inputs of a float layer, constants included, shaped to broadcast over the batch."""
    it = iter(args)
    return [g.tensors[n].data.astype(np.float64)[None] if g.tensors[n].is_const else next(it)
            for n in op.inputs[:2]]


def finish(g: Graph, op: Op, out: np.ndarray) -> np.ndarray:
    y = g.tensors[op.outputs[0]]
    return out.astype(np.int8).reshape((len(out), *y.shape[1:]))


def c_operands(g: Graph, op: Op) -> dict:
    """Template params: dims (H, W, C) of the output, broadcast, and per input its
    name, strides (H, W, C) and its int8 values when constant."""
    y4 = check(g, op)
    inputs = []
    for k, name in enumerate(op.inputs[:2], 1):
        t = g.tensors[name]
        s = shape4(t.shape)
        strides = [int(np.prod(s[d + 1:])) if s[d] != 1 else 0 for d in range(1, 4)]
        inputs.append(dict(name=f"input{k}", strides=strides,
                           const=[int(v) for v in t.data.ravel()] if t.is_const else None))
    broadcast = any(shape4(g.tensors[n].shape) != y4 for n in op.inputs[:2])
    return dict(dims=list(y4[1:]), broadcast=broadcast, operands=inputs,
                size=g.tensors[op.outputs[0]].size)
