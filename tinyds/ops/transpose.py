"""TRANSPOSE int8, as TFLM's reference_ops::Transpose: a permutation of the bytes
(output dim i is input dim perm[i]); the output keeps the input's quantization.
Shapes are padded to 4-D on the left; the batch dim stays first.

IR: attrs perm (of the IR shape, batch first); output keeps the input's
quantization.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..ir import Graph, Op
from .spec import OpSpec


def perm4(g: Graph, op: Op) -> list[int]:
    """op's permutation over the 4-D padded shape, batch first."""
    rank = len(g.tensors[op.inputs[0]].shape)
    perm = [int(p) for p in op.attrs["perm"]]
    if rank > 4 or sorted(perm) != list(range(rank)) or perm[0] != 0:
        raise TinydsError(f"{g.name}: {op.name}: transpose {tuple(perm)} of a {rank}-D tensor is "
                          "not supported; permute the non-batch dims of a tensor of at most 4-D")
    pad = 4 - rank
    return list(range(pad)) + [p + pad for p in perm]


def params(g: Graph, op: Op) -> dict:
    x = g.tensors[op.inputs[0]]
    dims = (1,) * (4 - len(x.shape)) + tuple(int(d) for d in x.shape)
    perm = perm4(g, op)
    strides = [int(np.prod(dims[d + 1:])) for d in range(4)]
    return dict(loops=[dict(var="ijk"[i - 1], size=dims[perm[i]], stride=strides[perm[i]])
                       for i in range(1, 4)])


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    perm = [int(p) for p in op.attrs["perm"]]
    perm4(g, op)
    return np.transpose(x, perm)


def c_params(g: Graph, op: Op) -> dict:
    return params(g, op)


def macs(g: Graph, op: Op) -> int:
    """No arithmetic: the bytes move."""
    return 0


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, op.attrs["perm"])


SPEC = OpSpec("transpose", reference, c_params, macs,
              float_reference=float_reference,
              same_quant=True)
