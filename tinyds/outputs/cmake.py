"""CMakeLists.txt and cmake/arm-none-eabi.cmake: add_subdirectory(out) for the library
target, or the firmware with the toolchain file."""
from __future__ import annotations

from pathlib import Path

from .. import project


def write(job, folder: Path) -> None:
    ctx = project.context(job.name, job.target)
    (folder / "CMakeLists.txt").write_text(project.render("CMakeLists.txt.j2", **ctx))
    (folder / "cmake").mkdir()
    (folder / "cmake" / "arm-none-eabi.cmake").write_text(
        project.render("arm-none-eabi.cmake.j2", **ctx))
