"""Fixtures shared by every test file (pytest puts tests/ on sys.path for the helper
modules: models, oputil, opkit).

Expensive things are built once per session: the QEMU sweep per core (`qemu_sweep`),
the MLPerf Tiny models generated per core (`mlperf_out`), the zoo nets saved in every
format (`zoo_files`).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import oputil

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MLPERF = SHARED / "models" / "mlperf-tiny"


def kws_sample() -> np.ndarray:
    """The real quantized utterance in MLPerf Tiny's kws_input_data.cc."""
    text = (MLPERF / "kws_input_data.cc").read_text()
    body = text[text.index("g_kws_inputs"):]
    body = body[body.index("{") + 1:body.index("}")]
    return np.array([int(v) for v in re.findall(r"-?\d+", body)], np.int8).reshape(1, 49, 10, 1)


def pytest_collection_modifyitems(items):
    """Under pytest-xdist (make test), every test of the QEMU op sweeps runs on one worker:
    the first one to ask for a core's sweep runs every case set registered for it."""
    for item in items:
        if "qemu_sweep" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("qemu_sweep"))


@pytest.fixture(scope="session")
def mlperf_out(tmp_path_factory):
    """out(model, mcu, sample=False) -> the out/ folder `generate` writes for an MLPerf Tiny
    .tflite (sample: the real KWS utterance as verify's stored vectors), generated once
    per session for every test file that asks; skipped without ../shared."""
    made: dict = {}

    def out(model: str, mcu: str, sample: bool = False) -> Path:
        from tinyds import targets
        from tinyds.generate import generate
        from tinyds.frontends.tflite import load_tflite
        path = MLPERF / f"{model}.tflite"
        if not path.exists():
            pytest.skip(f"{path} is missing: the MLPerf Tiny models live in ../shared")
        if (model, mcu, sample) not in made:
            d = tmp_path_factory.mktemp(f"{model}-{mcu}") / "out"
            generate(load_tflite(path), d, model.split("_")[0], targets.get(mcu),
                     vectors=kws_sample() if sample else None, source=path.name)
            made[model, mcu, sample] = d
        return made[model, mcu, sample]
    return out


@pytest.fixture(scope="session")
def qemu_sweep():
    """sweep(case_set) -> [(graph, inputs, outputs on QEMU)] for a function marked
    @oputil.qemu_cases(mcu). The first call for a core runs every case set registered
    for it in the collected test files: one firmware build and one boot per core
    (split in chunks of 40 libraries)."""
    results: dict = {}

    def sweep(case_set):
        if case_set not in results:
            sets = [f for f in oputil.QEMU_CASES[case_set.mcu] if f not in results]
            cases = {f: f() for f in sets}
            try:
                outs = iter(oputil.run_qemu_cases([c for f in sets for c in cases[f]],
                                                  case_set.mcu))
            except Exception as e:                      # every set of this core fails alike
                for f in sets:
                    results[f] = e
            else:
                for f in sets:
                    results[f] = [(g, x, next(outs)) for g, x in cases[f]]
        got = results[case_set]
        if isinstance(got, Exception):
            raise got
        return got
    return sweep


@pytest.fixture(scope="session")
def zoo_files(tmp_path_factory):
    """files(name) -> models.save_all's dict for a zoo net (traced and scripted .pt, .pt2,
    the model and its example input), saved once per session; treat them as read-only."""
    import models
    saved: dict = {}

    def files(name: str) -> dict:
        if name not in saved:
            saved[name] = models.save_all(name, tmp_path_factory.mktemp(name))
        return saved[name]
    return files
