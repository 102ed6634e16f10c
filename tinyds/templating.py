"""The one Jinja environment every renderer uses (library, project, MicroPython,
report).

Settings every template is written for: undefined names are errors, a block tag's
line leaves no trace (trim_blocks, lstrip_blocks; `+%}` keeps a newline where the
output needs one), a template's last newline is kept, and only HTML templates
(*.html.j2) autoescape.
"""
from __future__ import annotations

import jinja2

from . import data_dir

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False))


def render(template: str, **ctx) -> str:
    """templates/<template> rendered with ctx."""
    return ENV.get_template(template).render(**ctx)
