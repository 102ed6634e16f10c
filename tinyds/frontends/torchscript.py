"""TorchScript (`torch.jit.save` of a traced or scripted model) -> float IR.

We walk the inlined graph of the loaded module: prim ops (constants, attribute
reads, lists, `if self.training` branches, size arithmetic) are evaluated here
in Python; every op that touches an activation goes to the shared ATen
lowering in aten.py.
"""
from __future__ import annotations

import io
import operator
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import TinydsError
from ..ir import Graph
from .aten import Act, Const, Lowering, is_act

_SCALAR_OPS = {
    "aten::add": operator.add, "aten::sub": operator.sub, "aten::mul": operator.mul,
    "aten::floordiv": operator.floordiv, "aten::eq": operator.eq, "aten::ne": operator.ne,
    "aten::lt": operator.lt, "aten::le": operator.le, "aten::gt": operator.gt, "aten::ge": operator.ge,
    "aten::__getitem__": operator.getitem, "aten::__is__": operator.is_, "aten::__isnot__": operator.is_not,
    "aten::__not__": operator.not_, "aten::len": len, "aten::neg": operator.neg,
}
_PASS_THROUGH = ("prim::NumToTensor", "aten::Int", "aten::Float", "aten::ScalarImplicit",
                 "prim::unchecked_cast", "aten::IntImplicit", "aten::FloatImplicit")


class _ModuleRef:
    def __init__(self, module, path):
        self.module, self.path = module, path


def load(path, input_shape=None, default_shape=None) -> Graph:
    path = Path(path)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad archive
        raise TinydsError(f"{path}: cannot read the TorchScript archive ({str(e).splitlines()[0]}); "
                          "re-export it with torch.jit.trace(model, example).save(path)") from None
    if any(m.training for m in module.modules()):
        raise TinydsError(f"{path}: the model was traced in training mode (BatchNorm would use "
                          "batch statistics, dropout would drop); call model.eval() before "
                          "torch.jit.trace and save it again")
    shape = input_shape or traced_input_shapes(path) or default_shape
    return lower(module, shape, source=str(path), name=path.stem)


def traced_input_shapes(path) -> list[tuple] | None:
    """The example inputs' shapes that torch.jit.trace stored next to the code (traced_inputs.pkl).

    Read with a stub unpickler that only understands tensor-rebuild records, so no code runs."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/traced_inputs.pkl")]
            if not names:
                return None
            data = z.read(names[0])
    except (OSError, zipfile.BadZipFile):
        return None

    class _Shape(tuple):
        pass

    def rebuild(storage, offset, size, *rest):
        return _Shape(size)

    stubs = {("torch.jit._pickle", "restore_type_tag"): lambda v, tag: v,
             ("torch._utils", "_rebuild_tensor_v2"): rebuild,
             ("collections", "OrderedDict"): dict}

    class _Stub(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in stubs:
                return stubs[module, name]
            if module == "torch" and name.endswith("Storage"):
                return None
            raise pickle.UnpicklingError(f"{module}.{name} not allowed")

        def persistent_load(self, pid):
            return None

    try:
        inputs = _Stub(io.BytesIO(data)).load().get("forward")
    except Exception:  # noqa: BLE001 - any oddity means "no stored shape"
        return None
    shapes = [tuple(v) for v in (inputs or ()) if isinstance(v, _Shape)]
    return shapes if shapes and len(shapes) == len(inputs) else None


def _layer_name(node) -> str:
    """'features(Sequential).3(B).conv(Conv2d).SELF(Conv2d)' -> 'features.3.conv'."""
    parts = []
    for seg in node.getModuleHierarchy().split("."):
        name = seg.split("(", 1)[0]
        if name in ("SELF", "UNKNOWN_INSTANCE", "__module") or not name:
            continue
        parts.append(name)
    return ".".join(parts)


def lower(module, input_shape, source: str, name: str) -> Graph:
    """Lower a (loaded or in-memory) ScriptModule; input_shape is one (N,C,H,W) shape, or a
    list of shapes, one per tensor forward takes (in order). A tuple or list of returned
    tensors becomes the graph's outputs, in order."""
    module.eval()
    graph = module.inlined_graph
    ins = list(graph.inputs())[1:]
    lo = Lowering(source, re.sub(r"\W", "_", name))
    if input_shape is None:
        raise TinydsError(f"{source}: the input shape is unknown (scripted TorchScript does not record it); "
                          f"pass it, e.g. --input-shape 1,C,H,W{_channel_hint(module)}"
                          + (f" (once per input: forward takes {len(ins)})" if len(ins) > 1 else ""))
    shapes = input_shapes(input_shape)
    if len(shapes) != len(ins):
        raise TinydsError(f"{source}: forward takes {len(ins)} input tensors but {len(shapes)} "
                          "input shapes were given; pass --input-shape once per input, in "
                          "forward's order")
    env = {list(graph.inputs())[0].unique(): _ModuleRef(module, "")}
    names = ["input"] if len(ins) == 1 else [_arg_name(v, i) for i, v in enumerate(ins)]
    for v, arg, shape in zip(ins, names, shapes):
        env[v.unique()] = lo.input(arg, shape)
    _walk(graph.nodes(), env, lo)
    outs = [env[v.unique()] for v in graph.outputs()]
    if len(outs) == 1 and isinstance(outs[0], (list, tuple)):
        outs = list(outs[0])
    return lo.finish(outs)


def input_shapes(spec) -> list[tuple]:
    """One shape (a sequence of ints) or a list of shapes -> a list of shapes."""
    spec = list(spec)
    if spec and all(isinstance(d, (int, np.integer)) for d in spec):
        return [tuple(int(d) for d in spec)]
    return [tuple(int(d) for d in s) for s in spec]


def _arg_name(value, i: int) -> str:
    """forward's argument name ('x.1' -> 'x'), the key of its calibration array."""
    name = re.sub(r"\.\d+$", "", value.debugName())
    return name if name.isidentifier() and not name.isdigit() else f"input{i}"


def _channel_hint(module) -> str:
    for n, p in module.named_parameters():
        if p.dim() == 4:
            return f" (the first conv {n.rsplit('.', 1)[0]} expects C={p.shape[1]})"
    return ""


def _walk(nodes, env, lo: Lowering):
    for node in nodes:
        outs = _eval(node, env, lo)
        for v, val in zip(node.outputs(), outs):
            env[v.unique()] = val


def _eval(node, env, lo: Lowering) -> list:
    kind = node.kind()
    args = [env.get(v.unique()) for v in node.inputs()]
    n_out = node.outputsSize()
    if kind == "prim::Constant":
        return [node.output().toIValue()] if n_out else []
    if kind == "prim::GetAttr":
        return [_get_attr(args[0], node.s("name"))]
    if kind in ("prim::ListConstruct", "prim::TupleConstruct"):
        return [list(args)]
    if kind in ("prim::ListUnpack", "prim::TupleUnpack"):
        return list(args[0])
    if kind in _PASS_THROUGH:
        return [args[0]]
    if kind == "prim::If":
        if not isinstance(args[0], bool):
            raise lo.fail(_layer_name(node) or "if", "data-dependent control flow is not supported")
        block = list(node.blocks())[0 if args[0] else 1]
        _walk(block.nodes(), env, lo)
        return [env.get(v.unique()) for v in block.outputs()]
    if kind == "prim::RaiseException":
        raise lo.fail(_layer_name(node) or "forward", "the model raises an exception for this input shape")
    if kind in ("prim::Uninitialized", "aten::warn"):
        return [None] * n_out
    if kind == "prim::Loop":
        raise lo.fail(_layer_name(node) or "loop", "loops are not supported; trace the model instead")
    if kind in ("aten::size", "aten::dim") and isinstance(args[0], Act):
        shape = list(args[0].shape)
        return [len(shape) if kind == "aten::dim" else (shape[args[1]] if len(args) > 1 else shape)]
    if not is_act(args):
        if kind in _SCALAR_OPS and not any(isinstance(a, (Const, torch.Tensor)) for a in args):
            return [_SCALAR_OPS[kind](*args)]
        return [_const_eval(node, kind, args, lo)]
    if not kind.startswith("aten::"):
        raise lo.fail(_layer_name(node) or kind, f"unsupported op {kind}")
    op = kind[len("aten::"):]
    names = [a.name for a in torch._C.parse_schema(node.schema()).arguments]
    bound = dict(zip(names, args))
    layer = _layer_name(node) or _param_layer(args)
    inplace = op.endswith("_") and not op.startswith("_")
    out = lo.call(op[:-1] if inplace else op, bound, layer)
    if inplace:     # later readers of the mutated value must see the result
        env[node.inputsAt(0).unique()] = out
    return list(out) if isinstance(out, tuple) else [out]


def _param_layer(args) -> str:
    for a in args:
        if isinstance(a, Const) and "." in a.name:
            return a.name.rsplit(".", 1)[0]
    return ""


def _get_attr(obj, name):
    if not isinstance(obj, _ModuleRef):
        raise TinydsError(f"attribute {name} of a non-module value")
    value = getattr(obj.module, name)
    path = f"{obj.path}.{name}" if obj.path else name
    if isinstance(value, torch.jit.ScriptModule):
        return _ModuleRef(value, path)
    if isinstance(value, torch.Tensor):
        return Const(value.detach().cpu().numpy(), path)
    return value


def _const_eval(node, kind, args, lo):
    """Ops on constants only (e.g. weight.t() before addmm): run them with torch."""
    ns, op = kind.split("::", 1)
    fn = getattr(getattr(torch.ops, ns, None), op, None)
    if fn is None:
        raise lo.fail(_layer_name(node) or kind, f"unsupported op {kind}")
    targs = [torch.from_numpy(np.array(a.data)) if isinstance(a, Const) else a for a in args]
    try:
        out = fn(*targs)
    except Exception as e:  # noqa: BLE001
        raise lo.fail(_layer_name(node) or kind, f"cannot evaluate constant op {kind}: {e}") from None
    if isinstance(out, torch.Tensor):
        src = next((a.name for a in args if isinstance(a, Const)), kind)
        return Const(out.detach().numpy(), src)
    return out
