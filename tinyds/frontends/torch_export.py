"""torch.export programs (`.pt2`, torch.export.save) -> float IR.

The exported ATen FX graph already has parameters lifted to placeholders and
static shapes on every node; we bind each call's arguments to its schema
names and hand it to the shared lowering in aten.py.
"""
from __future__ import annotations

import logging
import operator
import re
from pathlib import Path

import torch

from ..errors import TinydsError
from ..ir import Graph
from .aten import Const, Lowering, is_act
from .pt2_archive import safe_archive


def load(path, allow_pickle: bool = False) -> Graph:
    """torch reads only the archive's screened in-memory copy (see pt2_archive); its loader
    logs failures with a traceback, which the one-line error replaces."""
    path = Path(path)
    archive = safe_archive(path, allow_pickle)
    logger = logging.getLogger("torch.export")
    disabled, logger.disabled = logger.disabled, True
    try:
        ep = torch.export.load(archive)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad archive
        raise TinydsError(f"{path}: cannot read the torch.export archive ({str(e).splitlines()[0]}); "
                          "re-export it with torch.export.save(torch.export.export(model, (example,)), path)") from None
    finally:
        logger.disabled = disabled
    return lower(ep, source=str(path), name=path.stem)


def _layer_name(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def lower(ep, source: str, name: str) -> Graph:
    sig = ep.graph_signature
    params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    single = len(sig.user_inputs) == 1
    lo = Lowering(source, re.sub(r"\W", "_", name))
    env = {}
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            if node.name in params:
                fqn = params[node.name]
                value = ep.state_dict[fqn] if fqn in ep.state_dict else ep.constants[fqn]
                env[node] = Const(value.detach().cpu().numpy(), fqn)
            else:
                env[node] = lo.input("input" if single else node.name, tuple(node.meta["val"].shape))
        elif node.op == "call_function":
            env[node] = _call(node, env, lo)
        elif node.op == "output":
            return lo.finish([env[n] for n in node.args[0]])
        else:
            raise lo.fail(node.name, f"unsupported graph node {node.op}")
    raise TinydsError(f"{source}: the exported graph has no output")


def _value(a, env):
    if isinstance(a, torch.fx.Node):
        return env[a]
    if isinstance(a, (list, tuple)):
        return [_value(x, env) for x in a]
    return a


def _call(node, env, lo: Lowering):
    target = node.target
    layer = _layer_name(node)
    if target is operator.getitem:
        return env[node.args[0]][node.args[1]]
    if not isinstance(target, torch._ops.OpOverload):
        raise lo.fail(layer or node.name, f"unsupported op {target}")
    schema = target._schema
    bound = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            bound[arg.name] = _value(node.args[i], env)
        elif arg.name in node.kwargs:
            bound[arg.name] = _value(node.kwargs[arg.name], env)
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
    if not is_act(list(bound.values())):
        return _const_eval(target, bound, lo, layer or node.name)
    ns, op = schema.name.split("::", 1)
    if ns != "aten":
        raise lo.fail(layer or node.name, f"unsupported op {schema.name}")
    return lo.call(op[:-1] if op.endswith("_") and not op.startswith("_") else op, bound, layer)


def _const_eval(target, bound, lo, layer):
    """Ops on constants only (e.g. a permuted weight after decompositions): run them with torch."""
    args = {k: torch.from_numpy(v.data.copy()) if isinstance(v, Const) else v for k, v in bound.items()}
    try:
        out = target(**args)
    except Exception as e:  # noqa: BLE001
        raise lo.fail(layer, f"cannot evaluate constant op {target}: {e}") from None
    src = next((v.name for v in bound.values() if isinstance(v, Const)), str(target))
    return Const(out.detach().numpy(), src) if isinstance(out, torch.Tensor) else out
