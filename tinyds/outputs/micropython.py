"""micropython/: the library as a MicroPython native module, built for every
architecture the tools here can build (--micropython)."""
from __future__ import annotations

from pathlib import Path

from .. import micropython as natmod


def write(job, folder: Path) -> None:
    qg, lib = job.qg, job.lib
    sources = natmod.render_sources(
        {f: t for f, t in job.files.items() if f != f"{job.name}_io.c"}, job.name, job.source,
        lib.input_size, lib.output_size, job.target, lib.weights,
        [qg.tensors[n].size for n in qg.inputs], [qg.tensors[n].size for n in qg.outputs],
        (qg.input.dtype, qg.output.dtype))
    job.micropython = tuple(natmod.write(folder / "micropython", sources, job.name, job.target))
