"""Calibration (and evaluation) data from disk, never unpickled, never silently synthetic.

`--calib` takes a .npy batch, a .npz (its only array, or `file.npz:name`), a tensor
saved with torch.save (read by torch's weights_only loader: tensors and plain
containers only, no code), or a folder of .npy files (samples or batches, stacked
in file-name order). `--calib synthetic` asks for standard-normal inputs: a smoke
test, and every report line that measures accuracy says so.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .errors import TinydsError

SYNTHETIC = "synthetic"
FORMATS = ".npy, .npz (file.npz:name for one of several arrays), a torch.save()d tensor, " \
          "or a folder of .npy files"
SYNTHETIC_WARNING = (
    "WARNING: --calib synthetic: activation ranges come from SYNTHETIC random inputs, so int8 "
    "accuracy on real data is unknown; pass --calib with a batch of real model inputs for a "
    "usable model")
MISSING = ("--calib: no calibration data given; pass --calib with a batch of real model inputs "
           f"({FORMATS}), or --calib synthetic for a smoke test whose accuracy means nothing")


def is_synthetic(calib) -> bool:
    return isinstance(calib, str) and calib == SYNTHETIC


def _split_name(spec: str) -> tuple[Path, str | None]:
    """'data.npz:x' -> (data.npz, 'x'), unless the whole text is an existing path."""
    path = Path(spec)
    if path.exists() or ":" not in spec:
        return path, None
    head, name = spec.rsplit(":", 1)
    return Path(head), name or None


def _pick(arrays: dict, name: str | None, path: Path, what: str):
    """One array from a container: the named one, or the only one."""
    if name is not None:
        if name not in arrays:
            raise TinydsError(f"{path}: no {what} named {name!r}; it holds "
                              f"{', '.join(map(repr, arrays)) or 'nothing'}")
        return arrays[name]
    if len(arrays) != 1:
        raise TinydsError(f"{path}: holds {len(arrays)} {what}s ({', '.join(map(repr, arrays))}); "
                          f"name one as {path}:NAME")
    return next(iter(arrays.values()))


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise TinydsError(f"{path}: not a readable .npy array ({e}); save the batch with "
                          "numpy.save") from None


class Arrays(dict):
    """A .npz's arrays by name, kept whole until the model says which input each feeds."""

    def __init__(self, arrays: dict, path: Path):
        super().__init__(arrays)
        self.path = path


def _npz(path: Path, name: str | None, keep_names: bool = False):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise TinydsError(f"{path}: not a readable .npz archive ({e}); save it with "
                          "numpy.savez") from None
    if name is None and (len(arrays) > 1 or keep_names):
        return Arrays(arrays, path)        # one per input of a several-input model
    return _pick(arrays, name, path, "array")


def _torch(path: Path, name: str | None) -> np.ndarray:
    import pickle

    import torch
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError,
            zipfile.BadZipFile) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TinydsError(f"{path}: not a tensor file torch's weights_only loader accepts "
                          f"({first[:120]}); torch.save a plain tensor of inputs") from None
    if isinstance(obj, dict):
        obj = _pick(obj, name, path, "entry")
    if not isinstance(obj, torch.Tensor):
        raise TinydsError(f"{path}: holds a {type(obj).__name__}, not a tensor; torch.save a "
                          "tensor of model inputs")
    return obj.detach().to(torch.float32).numpy() if obj.is_floating_point() else obj.numpy()


def _folder(path: Path) -> np.ndarray:
    files = sorted(p for p in path.iterdir() if p.suffix == ".npy" and p.is_file())
    if not files:
        raise TinydsError(f"{path}: folder holds no .npy files; put one .npy per sample or batch")
    arrays = [_npy(p) for p in files]
    ndim = max(a.ndim for a in arrays)
    arrays = [a[None] if a.ndim == ndim - 1 else a for a in arrays]   # single samples
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) != 1 or any(a.ndim != ndim for a in arrays):
        bad = next(p for p, a in zip(files, arrays) if a.shape[1:] != arrays[0].shape[1:])
        raise TinydsError(f"{bad}: shape {_npy(bad).shape} differs from {files[0].name}'s "
                          f"{_npy(files[0]).shape}; every file must hold samples of one shape")
    return np.concatenate(arrays)


def load(spec, keep_names: bool = False):
    """A batch of float inputs from a path (see the module docstring). A .npz of several
    arrays (of any number, with keep_names) without `:name` stays whole (Arrays) until
    per_input matches its keys to the model's inputs."""
    path, name = _split_name(str(spec))
    if not path.exists():
        raise TinydsError(f"{path}: calibration file not found; pass {FORMATS}")
    if path.is_dir():
        x = _folder(path)
    elif path.suffix == ".npz":
        x = _npz(path, name, keep_names)
    elif path.suffix in (".pt", ".pth"):
        x = _torch(path, name)
    else:
        x = _npy(path)
    for a in (x.values() if isinstance(x, Arrays) else [x]):
        if a.dtype == object or a.dtype.names is not None:
            raise TinydsError(f"{path}: holds {a.dtype} data, not numbers; save a float32 batch")
    return x


def sample_shapes(x) -> list[tuple] | None:
    """One sample's shape per input, where the data alone says (a batch, a list of batches,
    or an .npz keyed input0, input1, ...): stands in for a file that records no shape."""
    if isinstance(x, dict):
        keys = [f"input{i}" for i in range(len(x))]
        if len(x) != 1 and set(x) != set(keys):
            return None
        x = list(x.values()) if len(x) == 1 else [x[k] for k in keys]
    batches = x if isinstance(x, (list, tuple)) else [x]
    return [(1, *np.shape(b)[1:]) for b in batches]


def per_input(g, x, where: str = "calibration data") -> list:
    """The user's data as one batch per graph input, in order, or one line saying how to
    fix it. x: a batch (one-input model), a list of batches, or arrays keyed by the
    model's input names or input0, input1, ..."""
    names = list(g.inputs)
    path = getattr(x, "path", None) or where
    if isinstance(x, dict):
        if len(names) == 1:
            _pick(x, None, path, "array")          # the one-input error: name one
        keys = [n if n in x else f"input{i}" for i, n in enumerate(names)]
        for i, (n, k) in enumerate(zip(names, keys)):
            if k not in x:
                raise TinydsError(f"{path}: no array for the model's input {i} {n!r} (holds "
                                  f"{', '.join(map(repr, x))}); save one array per input, keyed "
                                  f"by the input names or input0..input{len(names) - 1}: "
                                  f"numpy.savez(file, {', '.join(f'input{j}=...' for j in range(len(names)))})")
        extra = sorted(set(x) - set(keys))
        if extra:
            raise TinydsError(f"{path}: array {extra[0]!r} is none of the model's inputs "
                              f"({', '.join(map(repr, names))}, or input0..input{len(names) - 1}); "
                              "remove it or rename it")
        batches = [np.asarray(x[k]) for k in keys]
    elif isinstance(x, (list, tuple)):
        batches = [np.asarray(b) for b in x]
    else:
        batches = [np.asarray(x)]
    if len(batches) != len(names):
        raise TinydsError(f"{path}: {len(batches)} input batch(es) for a model with "
                          f"{len(names)} inputs ({', '.join(map(repr, names))}); pass an .npz "
                          "with one array per input, keyed by the input names or input0, "
                          "input1, ...")
    if len({len(b) if b.ndim else -1 for b in batches}) != 1:
        raise TinydsError(f"{path}: the inputs' batches have {', '.join(str(len(b)) for b in batches)} "
                          "samples; give every input the same number of samples")
    return batches


def to_nhwc(x: np.ndarray, layout: str, want_nhwc: tuple, where: str = "calibration data"
            ) -> np.ndarray:
    """The user's batch in the model's own layout -> NHWC, or one line saying how to fix it.

    want_nhwc: the model's input shape without the batch, (H, W, C) for a 4-D input."""
    x = np.asarray(x)
    if layout == "NCL" and x.ndim == 3:          # Conv1d: (N, C, L) -> (N, 1, L, C)
        return np.ascontiguousarray(x.transpose(0, 2, 1)[:, None])
    if len(want_nhwc) != 3 or x.ndim != 4:
        return x
    h, w, c = want_nhwc
    if layout == "NCHW":
        if tuple(x.shape[1:]) == (h, w, c) and (h, w, c) != (c, h, w):
            raise TinydsError(f"{where} has shape {x.shape}, NHWC; the PyTorch model takes "
                              f"(N, {c}, {h}, {w}) (NCHW): transpose to NCHW with "
                              "x.transpose(0, 3, 1, 2)")
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if tuple(x.shape[1:]) == (c, h, w) and (c, h, w) != (h, w, c):
        raise TinydsError(f"{where} has shape {x.shape}, NCHW; the .tflite model takes "
                          f"(N, {h}, {w}, {c}) (NHWC): transpose to NHWC with "
                          "x.transpose(0, 2, 3, 1)")
    return x


def for_graph(g, x, where: str = "calibration data"):
    """x, in the layout the user gave g's input in, as g's NHWC input; for a model with
    several inputs a list of NHWC batches, one per input (see per_input). where: the
    file x came from, for the error lines."""
    batches = per_input(g, x, where)
    nhwc = [to_nhwc(b, g.source_layout, tuple(g.tensors[n].shape[1:]),
                    "calibration data" if len(batches) == 1 else f"calibration input {n!r}")
            for b, n in zip(batches, g.inputs)]
    return nhwc[0] if len(nhwc) == 1 else nhwc
