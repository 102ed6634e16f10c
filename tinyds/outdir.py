"""Who owns which file in out/: tinyds regenerates its own files, never the user's.
Every writer of tinyds/outputs/ fills a temporary folder; only this module moves files
into out/ (`write_folder`).

tinyds.json records the SHA-256 of every file generate wrote ("files"). On a later
generate a file on disk whose hash is neither the recorded one nor the new one was
edited by the user: it is kept and reported unless force. Files tinyds never
recorded (anything the user added) are never touched, and USER_FILES (the demo
src/main.c) are written once and then belong to the user.

out/ is a jail: an out/ folder may come from someone else, so every path its record
names must be a plain relative path below out/, no folder on the way may be a symbolic
link, a link where tinyds writes a file is the user's (kept, never written through),
and a recorded file is deleted only while its content is still what tinyds wrote.
Everything is checked before the first file moves: a bad record touches nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from .errors import TinydsError

USER_FILES = frozenset(["src/main.c"])
MARKER = "tinyds.json"      # marks a folder as tinyds output, which generate may replace


def check_out_dir(out: Path) -> None:
    """Only an empty folder or an earlier tinyds output may be replaced."""
    try:
        _check_out_dir(out)
    except OSError as e:                  # a name too long for the file system, no permission
        raise TinydsError(f"{str(out)[:80]}: cannot be the output folder ({e.strerror}); "
                          "choose another -o") from None


def _check_out_dir(out: Path) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise TinydsError(f"{out}: exists and is not a folder; choose another -o")
    if any(out.iterdir()) and not is_marker(out / MARKER):
        raise TinydsError(f"{out}: folder exists and is not a tinyds output (no {MARKER} "
                          "written by tinyds); refusing to overwrite it; choose another -o or "
                          "empty it")


def is_marker(path: Path) -> bool:
    """Whether path is a marker tinyds wrote (its content, not just its name: a user's own
    tinyds.json does not make their folder replaceable; nor does a link to one)."""
    if path.is_symlink():
        return False
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("tool") == "tinyds" and isinstance(
        meta.get("name"), str) and isinstance(meta.get("mcu"), str)


def recorded(out: Path) -> dict[str, str]:
    """The file hashes the previous generate recorded in out/tinyds.json ({} if none)."""
    if not is_marker(out / MARKER):
        return {}
    files = json.loads((out / MARKER).read_text()).get("files", {})
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(files, dict) else {}


def write_folder(out: Path, fill, meta: dict, force: bool) -> tuple[list, list]:
    """Make out/ what `fill(folder)` writes into an empty folder, plus the MARKER (meta
    with the hash of every file tinyds owns). Returns (kept edited files, removed stale
    files).

    Everything is written into a temporary sibling folder first, so a failure never
    leaves a half-written output; a new folder is renamed into place, an existing one
    takes the files one atomic rename each (`merge`), the marker last.
    force: also replace generated files the user edited (never USER_FILES nor a file
    tinyds did not write)."""
    check_out_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        tmp.chmod(0o777 & ~_umask())          # mkdtemp's 0700 would become out/'s mode
    except OSError as e:
        raise TinydsError(f"{out}: cannot create the output folder ({e.strerror}); "
                          "choose another -o") from None
    try:
        fill(tmp)
        meta = dict(meta)
        kept, removed = [], []
        if out.exists():
            meta["files"], kept, removed = merge(tmp, out, recorded(out), force)
            shutil.rmtree(tmp, ignore_errors=True)
            write_atomic(out / MARKER, json.dumps(meta, indent=2) + "\n")
        else:
            meta["files"] = {rel: sha256(p) for rel, p in tree(tmp).items()
                             if rel not in USER_FILES}
            (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TinydsError(f"{out}: cannot write the output ({e}); check the disk and "
                          "permissions, or choose another -o") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return kept, removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, Path]:
    """Every file under folder by its '/'-separated relative path."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def jailed(out: Path, rel: str, what: str) -> Path:
    """out/rel, refused unless rel is a plain relative path and no folder between out/
    and it is a symbolic link (git's rule for a work tree: never follow a link out)."""
    parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
    if (not parts or "\0" in rel or "\\" in rel or rel.startswith("/")
            or PurePosixPath(rel).as_posix() != rel or any(p in (".", "..") for p in parts)):
        raise TinydsError(f"{out / 'tinyds.json'}: {what} {rel!r} is not a path inside the "
                          "output folder; nothing was changed; delete that entry or the folder")
    folder = out
    for part in parts[:-1]:
        folder = folder / part
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise TinydsError(f"{folder}: is a link or a file where tinyds keeps a folder of "
                              "generated files; tinyds never writes through it; nothing was "
                              "changed; remove it or choose another -o")
    return out / rel


def write_atomic(path: Path, text: str) -> None:
    """Write path by renaming a new file over it: mkstemp's O_EXCL never opens a link an
    out/ folder from elsewhere may hold, and rename replaces a link, never its target."""
    fd, part = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(part, path)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise


def merge(new: Path, out: Path, recorded: dict[str, str], force: bool) -> tuple[dict, list, list]:
    """Move the freshly generated files of folder `new` into the existing folder out.

    recorded: the hashes the previous generate wrote into tinyds.json.
    Returns (hash of each generated file, kept edited files, removed stale files).
    """
    files = tree(new)
    targets = {rel: jailed(out, rel, "generated file") for rel in files}
    stale = {rel: jailed(out, rel, "the record of file") for rel in recorded if rel not in files}
    hashes = {rel: sha256(p) for rel, p in files.items() if rel not in USER_FILES}
    kept, removed = [], []
    for rel, src in files.items():
        dst = targets[rel]
        if rel in USER_FILES and (dst.exists() or dst.is_symlink()):
            continue
        if dst.is_symlink():                  # the user's link: never replaced nor followed
            kept.append(rel)
            continue
        if dst.is_file() and not force and _edited(dst, recorded, rel, hashes.get(rel)):
            kept.append(rel)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir() and not dst.is_symlink():
            kept.append(rel)                  # the user put a folder where tinyds writes a file
            continue
        os.replace(src, dst)
    for rel, dst in stale.items():
        if rel in USER_FILES or dst.is_symlink() or not dst.is_file():
            continue
        if sha256(dst) != recorded[rel]:      # not what tinyds wrote: never deleted, not even by force
            kept.append(rel)
            continue
        dst.unlink()
        removed.append(rel)
        _prune(dst.parent, out)
    return hashes, sorted(kept), removed


def _edited(path: Path, recorded: dict[str, str], rel: str, new: str | None) -> bool:
    """A file is the user's when it is neither what tinyds wrote last time nor now (a
    file tinyds never recorded is the user's own). An output from before the record
    existed has none: its files are tinyds's."""
    if not recorded:
        return False
    digest = sha256(path)
    return digest != recorded.get(rel) and digest != new


def _prune(folder: Path, top: Path) -> None:
    """Remove folders emptied by a stale file's removal, up to top."""
    while folder != top and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
