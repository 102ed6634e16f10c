"""What a user may name: the model's C symbol prefix (--name, or the file stem made one)
and its class labels (--labels). Checked at the edge, before any slow work; never
renamed silently."""
from __future__ import annotations

import re
from pathlib import Path

from .errors import TinydsError
from .project import FIRMWARE_SOURCES

C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern
float for goto if inline int long register restrict return short signed sizeof static struct
switch typedef union unsigned void volatile while _Bool _Complex _Imaginary""".split())
# NAME.h must not shadow a C standard header (C99/C11), nor NAME.c build beside a firmware
# file of the same stem; compared case-insensitively for case-insensitive file systems.
C_HEADERS = frozenset("""assert complex ctype errno fenv float inttypes iso646 limits locale math
setjmp signal stdalign stdarg stdatomic stdbool stddef stdint stdio stdlib stdnoreturn string
tgmath threads time uchar wchar wctype""".split())
FIRMWARE_FILES = frozenset(["main", "vector_runner", "harness",
                            *(Path(f).stem for f in FIRMWARE_SOURCES)])
MAX_NAME = 64            # file names, and symbols every toolchain keeps distinct


def sanitize_name(text: str) -> str:
    """A model file stem -> a C identifier usable as a symbol prefix."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_")[:MAX_NAME - 2].rstrip("_")
    if not name:
        return "model"
    if name[0].isdigit() or name in C_KEYWORDS or _clash(name):
        name = "m_" + name
    return name


def _clash(name: str) -> str:
    """What a name would collide with, or "" when it is free."""
    low = name.lower()
    if low.startswith("tinyds"):
        return "names starting with 'tinyds' are reserved for the runtime's own files and symbols"
    if low in C_HEADERS:
        return f"{name}.h would shadow the C library's <{low}.h>"
    if low in FIRMWARE_FILES:
        return f"{name}.c would clash with the firmware's own {low}.c"
    return ""


def check_name(name: str) -> str:
    """A user-chosen --name must already be a C identifier: we never rename silently."""
    if not re.fullmatch(r"[A-Za-z][0-9A-Za-z_]*", name) or name in C_KEYWORDS:
        raise TinydsError(f"--name {name[:MAX_NAME]}: not a C identifier; use letters, digits "
                          f"and '_', starting with a letter (e.g. {sanitize_name(name)})")
    if len(name) > MAX_NAME:
        raise TinydsError(f"--name {name[:MAX_NAME]}...: {len(name)} characters, more than "
                          f"{MAX_NAME}; use e.g. {sanitize_name(name)}")
    if _clash(name):
        raise TinydsError(f"--name {name}: {_clash(name)}; use e.g. {sanitize_name(name)}")
    return name


def check_labels(labels, output_size: int, where: str) -> list[str]:
    """One class name per output byte, each one line of printable text."""
    labels = list(labels or ())
    if labels and len(labels) != output_size:
        raise TinydsError(f"{where}: --labels gives {len(labels)} labels for {output_size} "
                          "outputs; write one label per line, one per output")
    return labels


def read_labels(path) -> list[str]:
    """--labels FILE: one label per line, blank lines at the end ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TinydsError(f"{path}: cannot read the labels ({e}); give a UTF-8 text file "
                          "with one label per line") from None
    return text.rstrip("\r\n").splitlines() if text.strip() else []
