"""The bare-metal project: Makefile, PlatformIO files, link.ld and src/ with the demo."""
from __future__ import annotations

from pathlib import Path

from .. import project


def write(job, folder: Path) -> None:
    project.write_firmware(folder, job.name, job.target, *job.sample)
