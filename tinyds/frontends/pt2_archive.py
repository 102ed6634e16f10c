"""Opening a `.pt2` (torch.export.save) without running anything it carries.

torch.export.load unpickles example inputs with a `weights_only=False` fallback, unpickles
pickled weights and constants unrestricted, `sympify`s (evaluates) symbolic-shape strings
and loads AOTInductor shared libraries. So before torch sees the archive we read every
member ourselves, size-checked before it is inflated, and admit only what a static
tinyds model needs: raw tensor payloads, JSON, and example inputs that torch's restricted
(`weights_only`) unpickler accepts. torch then reads an in-memory copy of exactly the
bytes that were checked. `--allow-pickle` skips the content screening, never the sizes.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

from ..errors import TinydsError

# An MCU model has at most a few MB of weights; these bound memory long before the OS does.
MAX_MEMBER_BYTES = 64 << 20
MAX_JSON_BYTES = 16 << 20
MAX_ARCHIVE_BYTES = 256 << 20
CHUNK = 1 << 16

# Members (below the archive's top folder) a static torch.export program consists of.
_ALLOWED = re.compile(r"archive_format|archive_version|byteorder|\.data/version|"
                      r"\.data/serialization_id|models/\w+\.json|extra/[\w.]+|"
                      r"data/weights/(\w+_weights_config\.json|weight_\d+)|"
                      r"data/constants/(\w+_constants_config\.json|tensor_\d+)|"
                      r"data/(sample_inputs|weights|constants)/\w+\.pt")
# Of those, the pickles (example inputs; weights and constants as torch < 2.7 saved them):
# torch reads them with weights_only=True first, so bytes that pass it never fall back.
_PICKLED = re.compile(r"data/(sample_inputs|weights|constants)/\w+\.pt")
_OPS = re.compile(r"torch\.ops\.aten\.\w+\.\w+|_operator\.getitem")
_FIX = "re-export it with torch.export.save(torch.export.export(model.eval(), (example,)), path)"


def _err(path, problem: str, fix: str = _FIX) -> TinydsError:
    return TinydsError(f"{path}: {problem}; {fix}")


def check_sizes(z: zipfile.ZipFile, path) -> None:
    """Refuse a zip whose declared sizes are too large, before anything is inflated."""
    total = 0
    for info in z.infolist():
        limit = MAX_JSON_BYTES if info.filename.endswith(".json") else MAX_MEMBER_BYTES
        if info.file_size > limit:
            raise _err(path, f"archive member {info.filename} inflates to {info.file_size} bytes "
                       f"(limit {limit}); not a model for a microcontroller, or a zip bomb",
                       "pass the model file torch wrote")
        total += info.file_size
    if total > MAX_ARCHIVE_BYTES:
        raise _err(path, f"archive inflates to {total} bytes (limit {MAX_ARCHIVE_BYTES})",
                   "pass the model file torch wrote")


def _read(z: zipfile.ZipFile, info: zipfile.ZipInfo, path) -> bytes:
    """A member's bytes, inflated chunk by chunk so a lying header cannot allocate more."""
    parts, left = [], info.file_size
    try:
        with z.open(info) as f:
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                parts.append(chunk)
                left -= len(chunk)
            f.read(1)                   # reaching the end checks the CRC
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise _err(path, f"archive member {info.filename} is damaged ({e})") from None
    if left:
        raise _err(path, f"archive member {info.filename} is truncated")
    return b"".join(parts)


def _members(path) -> dict[str, bytes]:
    """Every member below the one top folder torch writes, size-checked and CRC-checked."""
    try:
        with zipfile.ZipFile(path) as z:
            check_sizes(z, path)
            infos = z.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise _err(path, "archive holds two members with the same name")
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) != 1 or any("/" not in n for n in names):
                raise _err(path, "archive members are not in one top folder")
            return {i.filename.split("/", 1)[1]: _read(z, i, path) for i in infos
                    if not i.is_dir()}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise _err(path, f"cannot read the archive ({e})") from None


def _json(path, name: str, data: bytes):
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _err(path, f"archive member {name} is not valid JSON ({e})") from None


def _restricted_load_ok(data: bytes) -> bool:
    """Whether torch's weights_only unpickler (tensors and plain containers only) accepts data."""
    import torch
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any refusal or damage means: not admissible
        return False
    return True


def _walk(doc):
    """Every (key, value) pair in a JSON document, depth first."""
    stack = [doc]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for k, e in v.items():
                yield k, e
                stack.append(e)
        elif isinstance(v, list):
            stack.extend(v)


def _screen_program(path, name: str, doc) -> None:
    """Refuse what torch would evaluate while deserializing: symbolic-shape strings (sympify
    runs eval) and operators outside ATen."""
    if not isinstance(doc, dict):
        raise _err(path, f"archive member {name} is not an exported program")
    if doc.get("range_constraints"):
        raise _err(path, f"{name} has dynamic shapes; tinyds needs static shapes",
                   "export without dynamic_shapes")
    for k, v in _walk(doc):
        if k in ("as_expr", "expr_str"):
            raise _err(path, f"{name} has symbolic shapes; tinyds needs static shapes",
                       "export without dynamic_shapes")
        if k == "target" and isinstance(v, str) and not _OPS.fullmatch(v):
            raise _err(path, f"{name} calls {v[:80]!r}, which is not an ATen operator",
                       "tinyds imports models exported from standard torch.nn layers")


def _screen_payloads(path, name: str, doc, members: dict[str, bytes], allow_pickle: bool) -> None:
    """Each weight or constant must be a raw tensor payload that exists and is large enough."""
    folder = name.rsplit("/", 1)[0] + "/"
    config = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        raise _err(path, f"archive member {name} is not a payload config")
    for fqn, meta in config.items():
        where = f"{name}: {fqn}"
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            raise _err(path, f"{where} has no payload file")
        member = folder + meta["path_name"]
        if meta.get("use_pickle"):
            if not allow_pickle:
                raise _err(path, f"{where} is a pickled tensor ({member}) and unpickling runs "
                           "code", f"{_FIX} from plain tensors, or pass --allow-pickle if you "
                           "trust the file")
            continue
        if member not in members or not _ALLOWED.fullmatch(member):
            raise _err(path, f"{where}: payload file {member} is missing from the archive")
        _check_extent(path, where, meta.get("tensor_meta"), len(members[member]))


def _check_extent(path, where: str, tm, nbytes: int) -> None:
    """The strided view torch will make must lie inside the payload's bytes."""
    import torch
    from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE
    try:
        sizes = [s["as_int"] for s in tm["sizes"]]
        strides = [s["as_int"] for s in tm["strides"]]
        offset = tm["storage_offset"]["as_int"]
        dtype = _SERIALIZE_TO_TORCH_DTYPE[tm["dtype"]]
        ok = (len(sizes) == len(strides) and all(type(v) is int for v in [*sizes, *strides, offset])
              and min([*sizes, *strides, offset, 0]) >= 0)
    except (KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        raise _err(path, f"{where} has a damaged shape, stride or dtype record")
    numel = 1
    for s in sizes:
        numel *= s
    elem = torch.empty(0, dtype=dtype).element_size()
    end = offset + sum((s - 1) * st for s, st in zip(sizes, strides)) + 1 if numel else 0
    if nbytes % elem or end * elem > nbytes or numel * elem > MAX_MEMBER_BYTES:
        raise _err(path, f"{where}: shape {sizes} needs {max(end, numel) * elem} bytes but its "
                   f"payload has {nbytes}")


def safe_archive(path, allow_pickle: bool = False) -> io.BytesIO:
    """The .pt2 at path, screened, re-packed in memory for torch.export.load."""
    path = Path(path)
    members = _members(path)
    if not allow_pickle:
        for name, data in members.items():
            if not _ALLOWED.fullmatch(name):
                raise _err(path, f"archive member {name} is not part of a static exported program "
                           "(AOTInductor code, a legacy pickle or a custom object); tinyds "
                           "never loads it", f"{_FIX}, or pass --allow-pickle if you trust the file")
            if _PICKLED.fullmatch(name) and not _restricted_load_ok(data):
                raise _err(path, f"archive member {name} holds more than tensors and plain "
                           "containers; unpickling it could run code",
                           f"{_FIX}, or pass --allow-pickle if you trust the file")
    for name, data in members.items():
        if name.startswith("models/"):
            _screen_program(path, name, _json(path, name, data))
        elif name.endswith("_config.json"):
            _screen_payloads(path, name, _json(path, name, data), members, allow_pickle)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(f"archive/{name}", data)
    buf.seek(0)
    return buf
