"""Progress bars (tqdm) for the slow steps: calibration, reference runs, builds, QEMU.

Shown on a terminal only, on stderr, and gone when the step ends; nothing when stderr
is piped or a file, or after `--quiet` (quiet()), so logs and tests see plain output.
"""
from __future__ import annotations

import sys

from tqdm import tqdm

_quiet = False


def quiet(on: bool = True) -> None:
    global _quiet
    _quiet = on


def shown() -> bool:
    return not _quiet and sys.stderr.isatty()


def bar(iterable=None, desc: str = "", total: int | None = None, unit: str = "it") -> tqdm:
    """tqdm over iterable (or a bar to update() by hand), disabled unless shown()."""
    return tqdm(iterable, desc=f"tinyds: {desc}", total=total, unit=unit, leave=False,
                file=sys.stderr, disable=not shown(), dynamic_ncols=True)
