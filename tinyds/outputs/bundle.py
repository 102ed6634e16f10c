"""verify/: the quantized model and test vectors `tinyds verify` replays, and the
original .tflite (bench compares TFLM's arena with it)."""
from __future__ import annotations

from pathlib import Path

from .. import bundle


def write(job, folder: Path) -> None:
    bundle.save_bundle(folder / bundle.BUNDLE, job.qg, job.vectors)
    if job.tflite is not None:
        (folder / bundle.BUNDLE / bundle.SOURCE_TFLITE).write_bytes(job.tflite)
