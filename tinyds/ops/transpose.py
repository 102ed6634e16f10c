"""TRANSPOSE int8, as TFLM's reference_ops::Transpose: a permutation of the bytes
(output dim i is input dim perm[i]); the output keeps the input's quantization.
Shapes are padded to 4-D on the left; the batch dim stays first.

IR: attrs perm (of the IR shape, batch first); output keeps the input's
quantization. PyTorch's permute/transpose and TFLite's TRANSPOSE map to it both ways.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..ir import Graph, Op
from .spec import OpSpec, TFLite


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


def _permuted(lo, layer: str, x, p):
    """PyTorch permute p of a 4-D (or (N, C, L)) activation x as an IR transpose, through
    the ATen lowering lo: IR axis i of the output holds PyTorch dim p[(0, 2, 3, 1)[i]] of
    x, IR axis (0, 3, 1, 2)[that]. (N, C, L) is (N, C, 1, L) with H in place."""
    rank = len(x.shape)
    p = [int(d) % rank for d in p]
    if x.perm is not None or rank not in (3, 4) or sorted(p) != list(range(rank)) or p[0] != 0:
        raise lo.fail(layer, f"permute {tuple(p)} of shape {x.shape} is not supported; permute "
                             "the non-batch dims of an (N,C,H,W) or (N,C,L) tensor")
    shape4 = x.shape
    if rank == 3:
        m = (0, 1, 3)
        shape4, p = (x.shape[0], x.shape[1], 1, x.shape[2]), [m[p[0]], m[p[1]], 2, m[p[2]]]
    if p == [0, 1, 2, 3]:
        return x
    shape = tuple(shape4[d] for d in p)
    perm = tuple((0, 3, 1, 2)[p[(0, 2, 3, 1)[i]]] for i in range(4))
    return lo.emit("transpose", layer, [x.name], shape if rank == 4 else shape[:2] + shape[3:],
                   {"perm": perm})


def permute_from_aten(lo, a: dict, layer: str):
    """aten::permute(self, dims), through the ATen lowering lo."""
    return _permuted(lo, layer, lo.expect_act(a["self"], layer), a["dims"])


def transpose_from_aten(lo, a: dict, layer: str):
    """aten::transpose(self, dim0, dim1), through the ATen lowering lo."""
    x = lo.expect_act(a["self"], layer)
    p = list(range(len(x.shape)))
    d0, d1 = a["dim0"] % len(p), a["dim1"] % len(p)
    p[d0], p[d1] = p[d1], p[d0]
    return _permuted(lo, layer, x, p)


def from_tflite(r, operator, where: str) -> Op:
    """A TRANSPOSE of the non-batch dims of a tensor of at most 4-D (bytes move as they
    are), through the .tflite reader r."""
    x = r.tensor(operator.inputs[0], where)
    shape = tuple(r.g.tensors[x].shape)
    perm = [int(p) for p in r.const_ints(operator.inputs[1], where).ravel()]
    if len(shape) > 4 or sorted(perm) != list(range(len(shape))) or perm[0] != 0:
        raise r.err(where, f"TRANSPOSE {tuple(perm)} of shape {shape}",
                    "only permutations of the non-batch dims of a tensor of at most 4-D import")
    y = r.tensor(operator.outputs[0], where)
    r.check_output_shape(where, y, tuple(shape[p] for p in perm))
    return Op("transpose", where, [x], [y], {"perm": tuple(perm)})


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a TRANSPOSE operator with its perm constant, through the writer w."""
    x = w.tensor(g.tensors[op.inputs[0]])
    w.op("transpose", [x, w.const_i32(f"{op.name}/perm", list(op.attrs["perm"]))],
         w.outputs(g, op), w.options("TransposeOptionsT"), "TransposeOptions")


SPEC = OpSpec("transpose", reference, c_params, macs,
              float_reference=float_reference,
              same_quant=True,
              aten={"permute": permute_from_aten, "transpose": transpose_from_aten},
              tflite=TFLite("TRANSPOSE", 2, from_tflite, to_tflite, min_inputs=2))
