"""lib/NAME/: the C library's files and its CMake target (also for --lib-only)."""
from __future__ import annotations

from pathlib import Path

from .. import project


def write(job, folder: Path) -> None:
    lib_dir = folder / "lib" / job.name
    lib_dir.mkdir(parents=True)
    for fname, text in job.files.items():
        (lib_dir / fname).write_text(text)
    (lib_dir / "CMakeLists.txt").write_text(project.library_cmake(job.name))
