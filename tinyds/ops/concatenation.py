"""CONCATENATION int8, as TFLM's: a byte copy (reference_ops::Concatenation), each
input's slice of every outer index in turn.

TFLM copies the int8 bytes without rescaling, so the quantizer gives every input
the output's scale and zero point (quantize.py ties their calibration ranges,
as TFLite's converter requires them to be equal).

IR: inputs the tensors in order, all with the output's quantization; attrs axis
(of the IR's NHWC / (1, N) shape). PyTorch's torch.cat and TFLite's CONCATENATION
map to it both ways.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from .spec import OpSpec, TFLite


def params(g: Graph, op: Op) -> dict:
    y = g.tensors[op.outputs[0]]
    axis = int(op.attrs["axis"]) % len(y.shape)
    outer = int(np.prod(y.shape[:axis]))
    inner = int(np.prod(y.shape[axis + 1:]))
    return dict(outer=outer, copies=[g.tensors[n].shape[axis] * inner for n in op.inputs])


def reference(g: Graph, op: Op, *xs: np.ndarray) -> np.ndarray:
    axis = int(op.attrs["axis"]) % len(g.tensors[op.outputs[0]].shape)
    return np.concatenate(xs, axis=axis)


def c_params(g: Graph, op: Op) -> dict:
    return params(g, op)


def macs(g: Graph, op: Op) -> int:
    """No arithmetic: the bytes are copied."""
    return 0


def float_reference(g: Graph, op: Op, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=op.attrs["axis"])


def from_aten(lo, a: dict, layer: str):
    """torch.cat of activations of one rank, through the ATen lowering lo: NCHW dim d is
    NHWC axis (0, 3, 1, 2)[d]."""
    xs = a["tensors"]
    if not xs or not all(lo.is_act(x) and x.perm is None for x in xs):
        raise lo.fail(layer, "cat is only supported of activation tensors (not of constants or "
                             "flattened feature maps)")
    rank = len(xs[0].shape)
    dim = a.get("dim", 0)
    if not -rank <= dim < rank or dim % rank == 0 or any(len(x.shape) != rank for x in xs):
        raise lo.fail(layer, f"cat of shapes {[x.shape for x in xs]} along dim {dim} is not "
                             "supported; concatenate along channels, H or W (not the batch)")
    dim %= rank
    if any(x.shape[:dim] + x.shape[dim + 1:] != xs[0].shape[:dim] + xs[0].shape[dim + 1:] for x in xs):
        raise lo.fail(layer, f"cat of shapes {[x.shape for x in xs]}: sizes differ off dim {dim}")
    shape = xs[0].shape[:dim] + (sum(x.shape[dim] for x in xs),) + xs[0].shape[dim + 1:]
    axis = (0, 3, 1, 2)[dim] if rank == 4 else (0, 3, 2)[dim] if rank == 3 else dim
    return lo.emit("concatenation", layer, [x.name for x in xs], shape, {"axis": axis})


def from_tflite(r, operator, where: str) -> Op:
    """A CONCATENATION of inputs of one rank, equal but along the axis, through the
    .tflite reader r; TFLM copies their int8 bytes as they are."""
    xs = [r.tensor(i, where) for i in operator.inputs]
    y = r.tensor(operator.outputs[0], where)
    shapes = [tuple(r.g.tensors[x].shape) for x in xs]
    rank = len(r.g.tensors[y].shape)
    o = operator.builtinOptions
    axis = int(o.axis) % rank if -rank <= o.axis < rank else None
    ok = (axis is not None and rank <= 4 and all(len(s) == rank for s in shapes)
          and all(s[:axis] + s[axis + 1:] == shapes[0][:axis] + shapes[0][axis + 1:] for s in shapes)
          and not any(r.g.tensors[x].is_const for x in xs))
    if not ok:
        raise r.err(where, f"concatenation of {shapes} along axis {o.axis}",
                    "inputs must be activations of one rank (<= 4), equal except along the axis")
    r.check_output_shape(where, y, shapes[0][:axis] + (sum(s[axis] for s in shapes),)
                         + shapes[0][axis + 1:])
    if o.fusedActivationFunction != 0:
        raise r.err(where, "concatenation with a fused activation", "TFLM refuses it; re-convert")
    return Op("concatenation", where, xs, [y], {"axis": axis})


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a CONCATENATION operator, through the .tflite writer w."""
    ins = [w.tensor(g.tensors[n]) for n in op.inputs]
    w.op("concatenation", ins, w.outputs(g, op),
         w.options("ConcatenationOptionsT", axis=int(op.attrs["axis"])), "ConcatenationOptions")


SPEC = OpSpec("concatenation", reference, c_params, macs,
              float_reference=float_reference, tied_quant=True,
              aten={"cat": from_aten, "concat": from_aten, "concatenate": from_aten},
              tflite=TFLite("CONCATENATION", 2, from_tflite, to_tflite,
                            options="ConcatenationOptions"))
