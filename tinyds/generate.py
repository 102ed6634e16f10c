"""`generate`: render the C library for a board, then run the selected writers of
tinyds/outputs/ over it into out/ (through tinyds.outdir, which owns out/'s files)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import __version__, bundle, codegen, outdir, outputs, targets
from .codegen import Library
from .errors import TinydsError
from .ir import Graph
from .micropython import NO_MICROPYTHON_INT16
from .names import check_labels
from .outputs.job import Job


@dataclass
class GenerateResult:
    out_dir: Path
    library: Library
    micropython: tuple = ()   # with --micropython: one line per natmod architecture
    kept: tuple = ()          # generated files the user edited, left as they were
    removed: tuple = ()       # files an earlier generate wrote that this one does not

    @property
    def name(self) -> str:
        return self.library.name

    @property
    def arena_bytes(self) -> int:
        return self.library.arena_bytes

    @property
    def weight_bytes(self) -> int:
        return self.library.weight_bytes


def generate(qg: Graph, out_dir, name: str, target: targets.Target, vectors=None,
             source: str = "", optimize: str = "speed", micropython: bool = False,
             quant_report=None, lib_only: bool = False, force: bool = False, labels=(),
             tflite: bytes | None = None) -> GenerateResult:
    """Write out_dir: lib/NAME/ (the C library), verify/ (quantized model and test
    vectors for `tinyds verify`), the firmware project, and the tinyds.json marker.

    target: the board (tinyds.targets.get(--mcu)); tinyds.json records its name.

    vectors: int8 NHWC inputs (quantized calibration data) that verify replays.
    micropython: also write micropython/, the library as a MicroPython native module.
    quant_report: the quantize.Report whose figures report.json/report.html show.
    lib_only: write lib/NAME/ and the marker only.
    labels: a class name per output byte, for NAME_labels[].
    tflite: the original .tflite's bytes, kept as verify/source.tflite for bench's TFLM figure.
    force: also replace generated files the user edited (never src/main.c nor a file
    tinyds did not write; see outdir.py).
    Nothing reaches out/ unless every writer succeeded (outdir.write_folder).
    """
    out = Path(out_dir).resolve()
    source = source or qg.name
    labels = check_labels(labels, qg.output.size, name)
    if micropython and qg.input.dtype != "int8":
        raise TinydsError(f"{source}: {NO_MICROPYTHON_INT16}")
    files, lib = codegen.render_for_mcu(qg, name, target, optimize, source, labels)
    targets.check_fits(target, codegen.flash_need(lib), lib.plan.ram, source)
    job = Job(qg, name, target, files, lib, source, optimize, vectors, quant_report, labels, tflite)
    writers = outputs.select(lib_only, micropython)
    meta = {
        "tool": "tinyds", "version": __version__, "name": name, "mcu": target.name,
        "source": source, "arena_bytes": lib.arena_bytes,
        "weight_bytes": lib.weight_bytes, "layers": lib.num_layers, "optimize": optimize,
        "fast_layers": [i for i, k in enumerate(lib.kernels) if k is not None and k.dsp],
        "vectors": len(bundle.stored_vectors(vectors)), "lib_only": lib_only,
        "labels": list(labels)}

    def fill(folder: Path) -> None:
        for writer in writers:
            writer.write(job, folder)

    kept, removed = outdir.write_folder(out, fill, meta, force)
    lib.lib_dir = out / "lib" / name
    return GenerateResult(out, lib, job.micropython, tuple(kept), tuple(removed))
