"""Model files and modules -> float IR (or quantized IR for an int8 .tflite).

`load` decides the format from the file's content, not its suffix: a zip with
code/ + constants.pkl is TorchScript, one with archive_format / models/ is a
torch.export program, one with only data.pkl is a torch.save pickle, and a
flatbuffer tagged TFL3 is a .tflite.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from ..errors import TinydsError
from ..ir import Graph
from .pt2_archive import check_sizes

EXPORT_HOWTO = ("export it instead with torch.jit.trace(model.eval(), example).save('model.pt') "
                "or torch.export.save(torch.export.export(model.eval(), (example,)), 'model.pt2')")


def load(path, *, allow_pickle: bool = False, input_shape=None, default_shape=None) -> Graph:
    """A model file -> Graph. input_shape (N,C,H,W) is needed only where the file does not
    record it (scripted TorchScript, pickled modules); traced .pt and .pt2 carry their own.
    default_shape (the calibration batch's, one sample) stands in where neither is given."""
    path = Path(path)
    kind = sniff(path)
    if kind == "torchscript":
        from . import torchscript
        return torchscript.load(path, input_shape, default_shape)
    if kind == "export":
        from . import torch_export
        return torch_export.load(path, allow_pickle=allow_pickle)
    if kind == "pickle":
        from . import torch_module
        return torch_module.load(path, allow_pickle=allow_pickle,
                                 input_shape=input_shape or default_shape)
    if kind == "tflite":
        from . import tflite
        return tflite.load_tflite(path)
    raise TinydsError(f"{path}: not a model file tinyds can read (corrupt or truncated?); expected a "
                      "TorchScript .pt, a torch.export .pt2, or an int8 .tflite")


def sniff(path: Path) -> str:
    """'torchscript' | 'export' | 'pickle' | 'tflite' | 'unknown', from the file's bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise TinydsError(f"{path}: cannot read the model file ({e.strerror})") from None
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:1] == b"\x80":                      # legacy (non-zip) torch.save pickle
        return "pickle"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            check_sizes(z, path)          # before testzip inflates anything
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return "unknown"
    if bad is not None:
        return "unknown"
    members = {n.split("/", 1)[1] for n in names if "/" in n}
    if "constants.pkl" in members and any(m.startswith("code/") for m in members):
        return "torchscript"
    if "archive_format" in members or any(m.startswith("models/") for m in members):
        return "export"
    if "data.pkl" in members:
        return "pickle"
    return "unknown"


def from_module(module, example_input) -> Graph:
    """An nn.Module in hand: trace it on example_input (N,C,H,W) and lower the trace."""
    from . import torch_module
    return torch_module.from_module(module, example_input)
