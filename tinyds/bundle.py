"""The quantized model as generate saves it for verify, eval and bench: out/verify/.

JSON for structure, one .npz for arrays, loaded with allow_pickle=False: a verify
folder from someone else can never run code. Its own module so that codegen (which
writes it) and verify (which reads it) each depend on it, not on each other.
"""
from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np

from . import ops
from .errors import TinydsError
from .ir import Graph, Op, Tensor

BUNDLE = "verify"            # out/verify/: model.json + model.npz + vectors.npy
SOURCE_TFLITE = "source.tflite"   # and the user's .tflite, when the model was one
MAX_STORED_VECTORS = 1000


def _encode(v, key: str, arrays: dict):
    if isinstance(v, np.ndarray):
        arrays[key] = v
        return {"array": key}
    if isinstance(v, np.generic):
        return {"scalar": v.item(), "dtype": v.dtype.str}
    if isinstance(v, tuple):
        return {"tuple": [_encode(e, f"{key}.{i}", arrays) for i, e in enumerate(v)]}
    if isinstance(v, list):
        return [_encode(e, f"{key}.{i}", arrays) for i, e in enumerate(v)]
    if isinstance(v, dict):
        return {"dict": {k: _encode(e, f"{key}.{k}", arrays) for k, e in v.items()}}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot save {key} of type {type(v).__name__}")


def _decode(v, arrays):
    if isinstance(v, list):
        return [_decode(e, arrays) for e in v]
    if isinstance(v, dict):
        if "array" in v:
            return arrays[v["array"]]
        if "scalar" in v:
            return np.dtype(v["dtype"]).type(v["scalar"])
        if "tuple" in v:
            return tuple(_decode(e, arrays) for e in v["tuple"])
        return {k: _decode(e, arrays) for k, e in v["dict"].items()}
    return v


def _fields(obj, key: str, arrays: dict) -> dict:
    return {f.name: _encode(getattr(obj, f.name), f"{key}.{f.name}", arrays)
            for f in dataclasses.fields(obj)}


def save_graph(g: Graph, folder: Path) -> None:
    arrays: dict = {}
    doc = {"name": g.name, "inputs": g.inputs, "outputs": g.outputs,
           "source_layout": g.source_layout,
           "tensors": [_fields(t, f"t{i}", arrays) for i, t in enumerate(g.tensors.values())],
           "ops": [_fields(op, f"op{i}", arrays) for i, op in enumerate(g.ops)]}
    (folder / "model.json").write_text(json.dumps(doc, indent=1) + "\n")
    np.savez(folder / "model.npz", **arrays)


def load_graph(folder: Path) -> Graph:
    try:
        doc = json.loads((folder / "model.json").read_text())
        with np.load(folder / "model.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        tensors = [Tensor(**{k: _decode(v, arrays) for k, v in t.items()}) for t in doc["tensors"]]
        layers = [Op(**{k: _decode(v, arrays) for k, v in op.items()}) for op in doc["ops"]]
        unknown = [op.type for op in layers if op.type not in ops.REGISTRY]
        if unknown:
            raise ValueError(f"unknown op {unknown[0]!r}")
        return Graph(doc["name"], {t.name: t for t in tensors}, layers, doc["inputs"],
                     doc["outputs"], doc["source_layout"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError,
            zipfile.BadZipFile) as e:
        raise TinydsError(f"{folder}: saved quantized model is missing or damaged ({e}); "
                          "run tinyds generate again") from None


def save_bundle(folder: Path, qg: Graph, vectors=None) -> None:
    """What `tinyds verify` needs besides the C: the quantized model and calibration vectors."""
    folder.mkdir(parents=True, exist_ok=True)
    save_graph(qg, folder)
    v = stored_vectors(vectors)
    if len(v):
        np.save(folder / "vectors.npy", v, allow_pickle=False)


def stored_vectors(vectors) -> np.ndarray:
    """The calibration vectors the bundle keeps (generate records how many): int8, uint8
    (a uint8 input) or int16 (a 16x8 model)."""
    return np.zeros(0, np.int8) if vectors is None else np.asarray(vectors)[:MAX_STORED_VECTORS]
