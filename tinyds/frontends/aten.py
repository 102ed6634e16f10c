"""ATen ops -> float IR, shared by the TorchScript and torch.export frontends.

Both frontends walk their own graph format, bind each op's arguments to the
ATen schema names and call `Lowering.call`; everything about PyTorch semantics
(NCHW -> NHWC, weight layouts, padding rules, flatten order) lives here once.
Activations are tracked with their PyTorch (NCHW) shape; the IR tensor is NHWC.
Ops whose module declares its lowerings (OpSpec.aten) are lowered there, with this
module's Lowering as the argument (its public methods are the rules several ops share:
reshape_to, binary, pool_geometry, ...); HANDLERS merges them with the ones below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import ops
from ..errors import TinydsError
from ..ir import MAX_ELEMENTS, Graph, Op, Tensor, too_large
from ..window import output_size


@dataclass
class Act:
    """An activation: IR tensor `name`, PyTorch shape `shape` (batch 1).

    A flattened NCHW map is stored in NHWC order; `perm[i]` is the IR index of
    PyTorch flat index i (None when the orders agree)."""
    name: str
    shape: tuple
    perm: np.ndarray | None = None


@dataclass
class Const:
    """A parameter, buffer or constant tensor; `name` is its PyTorch path."""
    data: np.ndarray
    name: str


def is_act(v) -> bool:
    if isinstance(v, Act):
        return True
    if isinstance(v, (list, tuple)):
        return any(is_act(x) for x in v)
    return False


def _nhwc(shape):
    """The IR shape of a PyTorch activation: NCHW -> NHWC, (N, C, L) -> (N, 1, L, C)."""
    if len(shape) == 3:
        return (1, 1, shape[2], shape[1])
    return (1, shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


class Lowering:
    def __init__(self, source: str, graph_name: str):
        self.source = source
        self.g = Graph(graph_name, {}, [], [], [], source_layout="NCHW")
        self._names: set[str] = set()

    # ---- graph building -------------------------------------------------
    def fail(self, layer: str, problem: str) -> TinydsError:
        return TinydsError(f"{self.source}: layer {layer}: {problem}")

    def _unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def _act(self, base: str, shape, perm=None) -> Act:
        name = self._unique(base)
        self.g.add_tensor(Tensor(name, _nhwc(shape)))
        return Act(name, tuple(shape), perm)

    def const(self, base: str, data: np.ndarray) -> str:
        """A float constant tensor named after base; returns its IR name."""
        name = self._unique(base)
        self.g.add_tensor(Tensor(name, tuple(data.shape), data=np.ascontiguousarray(data, dtype=np.float32)))
        return name

    def emit(self, type_: str, layer: str, inputs, shape, attrs=None, perm=None) -> Act:
        """Append an op of kind type_ whose output has PyTorch shape `shape`; returns it."""
        out = self._act(layer, shape, perm)
        self.g.ops.append(Op(type_, self._unique_op(layer), list(inputs), [out.name], dict(attrs or {})))
        return out

    def _unique_op(self, layer: str) -> str:
        used = {op.name for op in self.g.ops}
        name, i = layer, 1
        while name in used:
            name, i = f"{layer}_{i}", i + 1
        return name

    def input(self, name: str, shape) -> Act:
        shape = (1,) + tuple(int(s) for s in shape[1:])
        if len(shape) not in (2, 3, 4):
            raise TinydsError(f"{self.source}: input {name}: shape {shape} is not (N,C,H,W), (N,C,L) "
                              "or (N,F); tinyds supports image-like 4-D inputs, 1-D sequences "
                              "(Conv1d) and flat 2-D inputs")
        if len(shape) == 3:
            self.g.source_layout = "NCL"
        if too_large(shape):
            raise TinydsError(f"{self.source}: input {name}: shape {shape} has more than "
                              f"{MAX_ELEMENTS} elements, far beyond a microcontroller's RAM; "
                              "pass the input shape the model was trained on")
        act = self._act(name, shape)
        self.g.inputs.append(act.name)
        return act

    def finish(self, outputs) -> Graph:
        for out in outputs:
            if not isinstance(out, Act):
                raise TinydsError(f"{self.source}: the model output is not a tensor computed from the input")
            if out.perm is not None:
                raise TinydsError(f"{self.source}: the model output is a flattened NCHW feature map, whose "
                                  "element order differs in NHWC; end the model with a Linear or pooling layer")
            if out.name in self.g.inputs:
                raise TinydsError(f"{self.source}: the model output is its input; nothing to compute")
            if out.name in self.g.outputs:
                raise TinydsError(f"{self.source}: the model returns the tensor {out.name} twice; "
                                  "return each output once")
            self.g.outputs.append(out.name)
        return self.g

    def is_act(self, v) -> bool:
        """Whether an argument is an activation (computed from the model's input)."""
        return isinstance(v, Act)

    def is_const(self, v) -> bool:
        """Whether an argument is a parameter, buffer or constant (not an activation)."""
        return isinstance(v, Const)

    def check_finite(self, layer: str, *consts) -> None:
        for c in consts:
            if isinstance(c, Const) and not np.all(np.isfinite(c.data)):
                raise self.fail(layer, f"{c.name} contains NaN or Inf; retrain or fix the weights before converting")

    def as4d(self, x: Act) -> Act:
        """An (N, C, L) activation seen as (N, C, 1, L): the same IR tensor (Conv1d is a
        1xL conv2d)."""
        return Act(x.name, (x.shape[0], x.shape[1], 1, x.shape[2]), x.perm) if len(x.shape) == 3 else x

    def as3d(self, x: Act) -> Act:
        """as4d undone: (N, C, 1, L) back to (N, C, L)."""
        return Act(x.name, (x.shape[0], x.shape[1], x.shape[3]), x.perm)

    def global_avg(self, layer, x: Act) -> Act:
        """An average over all of H and W of an (N,C,H,W) activation (the quantizer makes it a MEAN)."""
        h, w = x.shape[2], x.shape[3]
        return self.emit("avg_pool2d", layer, [x.name], (1, x.shape[1], 1, 1),
                         dict(kernel=(h, w), stride=(1, 1), padding=(0, 0, 0, 0), activation="none"))

    def args_2d(self, a: dict, keys: dict) -> dict:
        """A 1-D op's window args as the 2-D op's: each key gets `keys[key]` along H."""
        out = dict(a)
        for key, h in keys.items():
            v = a.get(key)
            if v is None or isinstance(v, str) or v == []:
                continue
            out[key] = [h, v[0] if isinstance(v, (list, tuple)) else v]
        return out

    def pair(self, v, n=2) -> tuple:
        """A PyTorch int-or-list size argument as an n-tuple."""
        if isinstance(v, (list, tuple)):
            v = list(v)
            return tuple(v * n) if len(v) == 1 else tuple(v)
        return (v,) * n

    def pool_geometry(self, layer, x: Act, a: dict, kind: str):
        """(kernel, stride, padding, output shape) of a 2-D pooling's kernel_size, stride,
        padding and ceil_mode arguments."""
        kernel = self.pair(a["kernel_size"])
        stride = self.pair(a["stride"]) if a.get("stride") not in (None, []) else kernel
        ph, pw = self.pair(a.get("padding", 0))
        h, w = x.shape[2], x.shape[3]
        oh, ow = (output_size(h, kernel[0], stride[0], 1, ph, ph),
                  output_size(w, kernel[1], stride[1], 1, pw, pw))
        if a.get("ceil_mode", False):
            ceil = tuple(min(math.ceil((n + 2 * p - k) / s) + 1, (n + p - 1) // s + 1)
                         for n, k, s, p in ((h, kernel[0], stride[0], ph), (w, kernel[1], stride[1], pw)))
            if ceil != (oh, ow):
                raise self.fail(layer, f"{kind} with ceil_mode=True changes the output size here; "
                                       "use ceil_mode=False (or pad the input explicitly)")
        return kernel, stride, (ph, pw, ph, pw), (1, x.shape[1], oh, ow)

    def pool1d(self, lower, a: dict, layer, kind: str) -> Act:
        """A 1-D pooling on (N, C, L) through `lower`, its 2-D form, with a 1xk window."""
        x = self.expect_act(a["self"], layer)
        if len(x.shape) != 3:
            raise self.fail(layer, f"{kind} needs an (N,C,L) input, got shape {x.shape}")
        a = self.args_2d(a, {"kernel_size": 1, "stride": 1, "padding": 0, "dilation": 1})
        return self.as3d(lower(self, {**a, "self": self.as4d(x)}, layer))

    def reshape_to(self, layer, x: Act, shape) -> Act:
        """View/reshape/flatten to `shape` (a full PyTorch shape, batch 1)."""
        shape = tuple(int(s) for s in shape)
        if shape == x.shape:
            return x
        if 3 in (len(x.shape), len(shape)):                 # (N, C, L) is (N, C, 1, L)
            y = self.reshape_to(layer, self.as4d(x),
                                shape[:2] + (1,) + shape[2:] if len(shape) == 3 else shape)
            return self.as3d(y) if len(shape) == 3 else y
        if int(np.prod(shape)) != int(np.prod(x.shape)) or shape[0] != 1:
            raise self.fail(layer, f"cannot reshape {x.shape} to {shape}; "
                                   "only batch-1 reshapes are supported")
        spatial = lambda s: len(s) == 4 and (s[1] == 1 or s[2] * s[3] == 1)  # noqa: E731 NCHW == NHWC order
        if len(x.shape) == 4 and len(shape) == 2:
            perm = None
            if not spatial(x.shape):
                _, c, h, w = x.shape
                perm = np.arange(c * h * w).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
            return self.emit("reshape", layer, [x.name], shape, {"shape": shape}, perm=perm)
        if len(x.shape) == 2 and x.perm is None and (len(shape) == 2 or spatial(shape)):
            return self.emit("reshape", layer, [x.name], shape, {"shape": _nhwc(shape)})
        if len(x.shape) == 4 and len(shape) == 4 and spatial(x.shape) and spatial(shape):
            return self.emit("reshape", layer, [x.name], shape, {"shape": _nhwc(shape)})
        raise self.fail(layer, f"reshape {x.shape} -> {shape} is not supported; supported: flatten "
                               "of (N,C,H,W) to (N,C*H*W) and reshapes that keep NCHW and NHWC "
                               "element order the same")

    def binary(self, layer, type_, x, y) -> Act:
        """add/sub/mul of two activations (broadcasting dims of size 1, same rank) or of an
        activation and a scalar (a one-element constant operand)."""
        if isinstance(x, Act) and isinstance(y, Act):
            same = x.shape == y.shape and (x.perm is None) == (y.perm is None)
            broadcast = (len(x.shape) == len(y.shape) and x.perm is None and y.perm is None
                         and all(p == q or 1 in (p, q) for p, q in zip(x.shape, y.shape)))
            if not (same or broadcast):
                raise self.fail(layer, f"{type_} of shapes {x.shape} and {y.shape} is not supported; "
                                       "operands must have the same rank and dims equal or 1")
            shape = tuple(max(p, q) for p, q in zip(x.shape, y.shape))
            return self.emit(type_, layer, [x.name, y.name], shape, {"activation": "none"}, perm=x.perm)
        value = _scalar(y)
        if not isinstance(x, Act) or value is None:
            raise self.fail(layer, f"{type_} of a constant is only supported as activation {type_} scalar"
                            + (" or as the bias after a matmul" if type_ == "add" else ""))
        self.check_finite(layer, Const(np.array([value]), layer))
        c = self.const(f"{layer}.const", np.array([value], np.float32))
        return self.emit(type_, layer, [x.name, c], x.shape, {"activation": "none"}, perm=x.perm)

    # ---- dispatch -------------------------------------------------------
    def call(self, kind: str, args: dict, layer: str):
        """Lower one ATen op (`kind` without namespace/overload, in-place '_' stripped)."""
        handler = HANDLERS.get(kind)
        if handler is None:
            raise self.unsupported(layer or kind, kind)
        return handler(self, args, layer or kind)

    def unsupported(self, layer: str, kind: str) -> TinydsError:
        return self.fail(layer, f"unsupported op aten::{kind}; supported: {', '.join(SUPPORTED)}")

    def expect_act(self, v, layer, what="input"):
        """v, refused unless it is an activation."""
        if not isinstance(v, Act):
            raise self.fail(layer, f"{what} must be an activation tensor, got a constant; "
                                   "constant-only branches are not supported")
        return v

    def expect_4d(self, x: Act, layer: str, kind: str) -> Act:
        """x, refused unless it is an (N,C,H,W) activation."""
        if len(x.shape) != 4:
            raise self.fail(layer, f"{kind} needs an (N,C,H,W) input, got shape {x.shape}")
        return x


# ---- handlers: one per ATen op family --------------------------------------

def _scalar(v):
    """v as a float if it is a number or a one-element constant, else None."""
    if isinstance(v, Const):
        v = v.data
    if isinstance(v, (Act, bool, str, list, tuple)) or v is None:
        return None
    a = np.asarray(v)                     # a number, or a 0-d tensor (TorchScript's scalars)
    return float(a.reshape(-1)[0]) if a.size == 1 and a.dtype.kind in "iuf" else None


def _hardsigmoid(lo: Lowering, a, layer):
    """relu6(x + 3) / 6 as TFLite's converter lowers it: ADD of 3 with a fused ReLU6, MUL by 1/6."""
    x = lo.expect_act(a["self"], layer)
    three = lo.const(f"{layer}.three", np.array([3.0], np.float32))
    y = lo.emit("add", f"{layer}.add", [x.name, three], x.shape, {"activation": "relu6"},
                perm=x.perm)
    sixth = lo.const(f"{layer}.sixth", np.array([1.0 / 6.0], np.float32))
    return lo.emit("mul", layer, [y.name, sixth], x.shape, {"activation": "none"}, perm=x.perm)


def _identity(lo, a, layer):
    return a.get("input", a.get("self"))


HANDLERS = {
    "hardsigmoid": _hardsigmoid,
    "dropout": _identity, "feature_dropout": _identity, "alpha_dropout": _identity,
    "contiguous": _identity, "clone": _identity, "detach": _identity, "alias": _identity,
    # and each op module's own (OpSpec.aten)
    **{name: lower for spec in ops.REGISTRY.values() for name, lower in spec.aten.items()},
}
SUPPORTED = ("hardsigmoid", "dropout") + tuple(
    name for spec in ops.REGISTRY.values() for name in spec.aten if not name.startswith("_"))
