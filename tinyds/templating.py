"""The one Jinja environment every renderer uses (library, project, MicroPython,
report), and the Python half of templates/array.j2, through which every constant
array of the library becomes C text.

Settings every template is written for: undefined names are errors, a block tag's
line leaves no trace (trim_blocks, lstrip_blocks; `+%}` keeps a newline where the
output needs one), a template's last newline is kept, and only HTML templates
(*.html.j2) autoescape.
"""
from __future__ import annotations

import jinja2
import numpy as np

from . import data_dir


def c_array(values, ctype: str) -> np.ndarray:
    """values (a list or NumPy array of integers) as a flat array of C type ctype. A
    value ctype cannot hold is a bug in the op that computed it, never user input."""
    a = np.asarray(values).ravel()
    dtype = np.dtype(ctype.removesuffix("_t"))          # int8_t -> int8, uint32_t -> uint32
    info = np.iinfo(dtype)
    assert a.size == 0 or (np.issubdtype(a.dtype, np.integer)
                           and info.min <= a.min() and a.max() <= info.max), ctype
    return a.astype(dtype)


def c_literals(a: np.ndarray) -> list[str]:
    """An array's values as C literals: uint32 words (the fast kernels' packed int16
    streams) in hex, everything else in decimal."""
    if a.dtype == np.uint32:
        return [f"0x{v:08x}" for v in a.tolist()]
    return [str(v) for v in a.tolist()]


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False))
ENV.filters.update(c_array=c_array, c_literals=c_literals)


def render(template: str, **ctx) -> str:
    """templates/<template> rendered with ctx."""
    return ENV.get_template(template).render(**ctx)
