"""zephyr/: module.yml, CMakeLists.txt and Kconfig, the model as a Zephyr module."""
from __future__ import annotations

from pathlib import Path

from .. import project


def write(job, folder: Path) -> None:
    ctx = project.context(job.name, job.target)
    (folder / "zephyr").mkdir()
    (folder / "zephyr" / "module.yml").write_text(
        project.render("zephyr/module.yml.j2", **ctx))
    for f in ("CMakeLists.txt", "Kconfig"):
        (folder / "zephyr" / f).write_text(project.render(f"zephyr/{f}.j2", **ctx))
