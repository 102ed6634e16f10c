"""Operands of the two-input element-wise ops (add, sub, mul, prelu): TFLite broadcasting
and constant operands, shared by their references and templates.

Shapes are aligned on the right and padded to 4-D (batch 1); each dimension of
the two inputs must be equal or 1, as TFLite's ProcessBroadcastShapes requires.
A constant operand (hardsigmoid's +3 and /6) is baked into the C as a const
array; an activation operand is a kernel argument. The C walks the output in
order and reads each input through strides that are 0 along broadcast dims.
ADD, SUB and MUL share their TFLite reader and writer here too.
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


def from_tflite(r, operator, where: str, kind: str) -> Op:
    """An ADD, SUB or MUL operator, through the .tflite reader r: two per-tensor int8
    operands (one may be constant) that broadcast like TFLite into the output."""
    name = kind.upper()
    a, b = (r.tensor(i, where) for i in operator.inputs[:2])
    ta, tb = r.g.tensors[a], r.g.tensors[b]
    if ta.is_const and tb.is_const:
        raise r.err(where, f"{name} of two constants", "fold it into a constant; re-convert")
    for t in (ta, tb):
        if t.dtype != "int8" or t.scale is None or len(t.scale) != 1:
            raise r.err(where, f"{name} operand {t.name} is {t.dtype} with "
                        f"{0 if t.scale is None else len(t.scale)} scales",
                        "only per-tensor int8 operands are supported")
    y = r.tensor(operator.outputs[0], where)
    shapes = [tuple(ta.shape), tuple(tb.shape), tuple(r.g.tensors[y].shape)]
    try:
        ok = max(map(len, shapes)) <= 4 and np.broadcast_shapes(*shapes[:2]) == shapes[2]
    except ValueError:
        ok = False
    if not ok:
        raise r.err(where, f"{name} of shapes {shapes[0]} and {shapes[1]} into {shapes[2]}",
                    "operands must broadcast (dims equal or 1, at most 4-D) to the output shape")
    return Op(kind, where, [a, b], [y],
              {"activation": r.activation(operator.builtinOptions.fusedActivationFunction, where)})


def to_tflite(w, g: Graph, op: Op, options: str) -> None:
    """The layer as its ADD, SUB or MUL operator (options: its BuiltinOptions table)."""
    ins = [w.tensor(g.tensors[n]) for n in op.inputs]
    w.op(op.type, ins, w.outputs(g, op),
         w.options(options + "T", fusedActivationFunction=w.activation(op)), options)
