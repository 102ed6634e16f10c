"""RESHAPE: NHWC bytes are already in the order of the new shape, so the C side
aliases the input buffer (the planner shares it) and no kernel is emitted.

IR: attrs shape (the new full shape); input and output share quant params.
PyTorch's view/reshape/flatten/squeeze/unsqueeze and TFLite's RESHAPE map to it (the
ATen lowering's reshape_to decides which PyTorch reshapes keep NHWC order).
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from .spec import OpSpec, TFLite


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return x.reshape((x.shape[0], *g.tensors[op.outputs[0]].shape[1:]))


def c_params(g: Graph, op: Op) -> dict:
    return {}


def macs(g: Graph, op: Op) -> int:
    return 0


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return x.reshape((x.shape[0],) + tuple(op.attrs["shape"][1:]))


def _resolve_shape(x, size) -> list[int]:
    """size with its -1 (if any) filled in from x's element count."""
    size = [int(s) for s in size]
    if size and -1 in size:
        known = int(np.prod([s for s in size if s != -1]))
        size[size.index(-1)] = int(np.prod(x.shape)) // max(known, 1)
    return size


def from_view(lo, a: dict, layer: str):
    """aten::view / reshape / _unsafe_view(self, size), through the ATen lowering lo."""
    x = lo.expect_act(a["self"], layer)
    return lo.reshape_to(layer, x, _resolve_shape(x, a.get("size", a.get("shape"))))


def from_flatten(lo, a: dict, layer: str):
    """aten::flatten(self, start_dim, end_dim)."""
    x = lo.expect_act(a["self"], layer)
    n = len(x.shape)
    s, e = a.get("start_dim", 0) % n, a.get("end_dim", -1) % n
    s = max(s, 1)      # batch is 1: flattening it in changes nothing but the leading dim
    shape = x.shape[:s] + (int(np.prod(x.shape[s:e + 1])),) + x.shape[e + 1:]
    return lo.reshape_to(layer, x, shape)


def from_squeeze(lo, a: dict, layer: str):
    """aten::squeeze(self, dim)."""
    x = lo.expect_act(a["self"], layer)
    dims = a.get("dim")
    dims = range(len(x.shape)) if dims is None else (dims if isinstance(dims, (list, tuple)) else [dims])
    dims = {d % len(x.shape) for d in dims if d % len(x.shape) != 0}
    return lo.reshape_to(layer, x, [s for i, s in enumerate(x.shape) if not (i in dims and s == 1)])


def from_unsqueeze(lo, a: dict, layer: str):
    """aten::unsqueeze(self, dim)."""
    x = lo.expect_act(a["self"], layer)
    d = a["dim"] % (len(x.shape) + 1)
    return lo.reshape_to(layer, x, x.shape[:d] + (1,) + x.shape[d:])


def from_tflite(r, operator, where: str) -> Op:
    """A RESHAPE operator, through the .tflite reader r."""
    x = r.tensor(operator.inputs[0], where)
    y = r.tensor(operator.outputs[0], where)
    r.same_quant(x, y, where)
    if r.g.tensors[x].size != r.g.tensors[y].size:
        raise r.err(where, f"reshapes {r.g.tensors[x].shape} to {r.g.tensors[y].shape}, a "
                    "different number of elements", "the file is damaged; re-convert the model")
    return Op("reshape", where, [x], [y], {"shape": r.g.tensors[y].shape})


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a RESHAPE operator (new shape as operand and option), through the writer w."""
    x = w.tensor(g.tensors[op.inputs[0]])
    shape = list(op.attrs["shape"])
    w.op("reshape", [x, w.const_i32(f"{op.name}/shape", shape)], w.outputs(g, op),
         w.options("ReshapeOptionsT", newShape=shape), "ReshapeOptions")


SPEC = OpSpec("reshape", reference, c_params, macs, int16=True,
              float_reference=float_reference,
              same_quant=True,
              aten={"view": from_view, "reshape": from_view, "_unsafe_view": from_view,
                    "flatten": from_flatten, "squeeze": from_squeeze, "unsqueeze": from_unsqueeze},
              tflite=TFLite("RESHAPE", 1, from_tflite, to_tflite))
