"""nn.Modules: in memory (`from_module`) or pickled with torch.save (opt-in only).

A module is traced with torch.jit.trace and lowered by the TorchScript
frontend, so there is one lowering for every PyTorch path.
"""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import TinydsError
from ..ir import Graph
from . import EXPORT_HOWTO, torchscript


def load(path, *, allow_pickle: bool = False, input_shape=None) -> Graph:
    path = Path(path)
    try:    # the weights-only unpickler runs no code: tells a state_dict from a pickled module safely
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = None                     # holds classes: a pickled module (or something else)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a broken archive
        raise TinydsError(f"{path}: cannot read the torch.save file ({str(e).splitlines()[0]}); "
                          "the file is corrupt or truncated") from None
    if obj is not None:
        if isinstance(obj, dict):
            raise TinydsError(f"{path}: holds only a state_dict (weights without the architecture); "
                              "tinyds needs the model itself: build it, load_state_dict, then " + EXPORT_HOWTO)
        raise TinydsError(f"{path}: holds a {type(obj).__name__}, not a model; " + EXPORT_HOWTO)
    if not allow_pickle:
        raise TinydsError(f"{path}: is a pickled nn.Module and unpickling runs arbitrary code; "
                          f"{EXPORT_HOWTO}, or pass --allow-pickle if you trust the file")
    sys.path.insert(0, os.getcwd())      # the module's class, as `python -m` would find it
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - unpickling can fail in any way (missing class, ...)
        raise TinydsError(f"{path}: cannot unpickle the module ({str(e).splitlines()[0]}); make its class "
                          f"importable (run from the folder of its .py file), or {EXPORT_HOWTO}") from None
    finally:
        sys.path.remove(os.getcwd())
    if not isinstance(obj, torch.nn.Module):
        raise TinydsError(f"{path}: holds a {type(obj).__name__}, not an nn.Module; " + EXPORT_HOWTO)
    if input_shape is None:
        raise TinydsError(f"{path}: a pickled module does not record its input shape; pass it, "
                          "e.g. --input-shape 1,C,H,W")
    zeros = [torch.zeros(s) for s in torchscript.input_shapes(input_shape)]
    return from_module(obj, zeros, source=str(path), name=path.stem)


def from_module(module, example_input, source: str | None = None, name: str | None = None) -> Graph:
    """Trace `module` on one example (batch 1) in memory and lower the trace; a model
    whose forward takes several tensors gets a tuple or list of examples, in order."""
    name = name or type(module).__name__
    source = source or name
    examples = example_input if isinstance(example_input, (tuple, list)) else [example_input]
    xs = tuple(torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor)
                               else x)[:1].float() for x in examples)
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    shapes = ", ".join(str(tuple(x.shape)) for x in xs)
    try:
        with torch.no_grad():
            traced = torch.jit.trace(module, xs, check_trace=False)
    except Exception as e:  # noqa: BLE001 - tracing runs user code
        raise TinydsError(f"{source}: tracing the module on an input of shape {shapes} failed "
                          f"({str(e).splitlines()[0]}); check the example input's shape") from None
    finally:
        for m, training in modes:        # the caller's module as it was, submodule by submodule
            m.training = training
    return torchscript.lower(traced, [tuple(x.shape) for x in xs], source=source, name=name)
