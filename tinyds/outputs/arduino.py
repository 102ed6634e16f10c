"""arduino/NAME/: the model as an Arduino library (1.5 format): library.properties,
src/ (the model library), examples/NAME/NAME.ino with the sample in sample.h. Models
with one input and one output only (the sketch's single buffers)."""
from __future__ import annotations

from pathlib import Path

from .. import __version__, project


def write(job, folder: Path) -> None:
    if not job.single:
        return
    name = job.name
    folder = folder / "arduino" / name
    ctx = dict(name=name, NAME=name.upper(), version=__version__, **project.samples(*job.sample),
               input_in_arena=job.lib.plan.input_in_arena,
               output_in_arena=job.lib.plan.output_in_arena, labels=bool(job.labels))
    (folder / "src").mkdir(parents=True)
    for f, text in job.files.items():
        (folder / "src" / f).write_text(text)
    (folder / "library.properties").write_text(
        project.render("arduino/library.properties.j2", **ctx))
    example = folder / "examples" / name
    example.mkdir(parents=True)
    (example / f"{name}.ino").write_text(project.render("arduino/example.ino.j2", **ctx))
    (example / "sample.h").write_text(project.render("arduino/sample.h.j2", **ctx))
