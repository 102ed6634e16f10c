"""What every writer reads: the rendered library and what generate was asked for."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .. import reference
from ..codegen import Library
from ..ir import Graph
from ..targets import Target

SAMPLE_SEED = 0


@dataclass
class Job:
    qg: Graph
    name: str
    target: Target
    files: dict          # the library's files as text (codegen.render_library)
    lib: Library
    source: str          # the model's file name (or graph name), as the files cite it
    optimize: str = "speed"
    vectors: np.ndarray | None = None   # quantized calibration inputs, replayed by verify
    quant_report: object = None         # tinyds.quantize.Report for report.html
    labels: list = field(default_factory=list)   # a class name per output byte
    tflite: bytes | None = None         # the original .tflite, kept for bench's TFLM figure
    micropython: tuple = ()             # set by the micropython writer: one line per arch

    @property
    def single(self) -> bool:
        return len(self.qg.inputs) == 1 and len(self.qg.outputs) == 1

    @cached_property
    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """The demo's sample: the first calibration vector (or a seeded random one) and the
        reference's output for it."""
        qg, vectors = self.qg, self.vectors
        if vectors is not None and len(vectors):
            x = np.asarray(vectors[:1], dtype=qg.input.dtype)
        elif len(qg.inputs) > 1:       # packed: every input's bytes in order
            x = np.random.default_rng(SAMPLE_SEED).integers(
                -128, 128, (1, sum(qg.tensors[n].size for n in qg.inputs)), dtype=np.int8)
        else:
            lo, hi = qg.input.qrange
            x = np.random.default_rng(SAMPLE_SEED).integers(
                lo, hi + 1, (1, *qg.input.shape[1:])).astype(qg.input.dtype)
        return x[0], reference.run_packed(qg, x)[0]
