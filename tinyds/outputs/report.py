"""report.json and report.html: the layers, kernels, memory and quantization figures."""
from __future__ import annotations

from pathlib import Path

from .. import report


def write(job, folder: Path) -> None:
    report.write(folder, report.document(job.qg, job.lib, job.target, job.optimize, job.name,
                                         job.source, job.quant_report))
