"""Who owns which file in out/: tinyds regenerates its own files, never the user's.

tinyds.json records the SHA-256 of every file generate wrote ("files"). On a later
generate a file on disk whose hash is neither the recorded one nor the new one was
edited by the user: it is kept and reported unless force. Files tinyds never
recorded (anything the user added) are never touched, and USER_FILES (the demo
src/main.c) are written once and then belong to the user.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

USER_FILES = frozenset(["src/main.c"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, Path]:
    """Every file under folder by its '/'-separated relative path."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def merge(new: Path, out: Path, recorded: dict[str, str], force: bool) -> tuple[dict, list, list]:
    """Move the freshly generated files of folder `new` into the existing folder out.

    recorded: the hashes the previous generate wrote into tinyds.json.
    Returns (hash of each generated file, kept edited files, removed stale files).
    """
    files = tree(new)
    hashes = {rel: sha256(p) for rel, p in files.items() if rel not in USER_FILES}
    kept, removed = [], []
    for rel, src in files.items():
        dst = out / rel
        if rel in USER_FILES and (dst.exists() or dst.is_symlink()):
            continue
        if dst.is_file() and not force and _edited(dst, recorded, rel, hashes.get(rel)):
            kept.append(rel)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir() and not dst.is_symlink():
            kept.append(rel)                  # the user put a folder where tinyds writes a file
            continue
        os.replace(src, dst)
    for rel, digest in recorded.items():
        dst = out / rel
        if rel in files or rel in USER_FILES or not dst.is_file() or dst.is_symlink():
            continue
        if not force and sha256(dst) != digest:
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
