"""Fixtures shared by every test file (pytest puts tests/ on sys.path for the helper
modules: models, oputil, opkit).

Expensive things are built once per session: the QEMU sweep per core (`qemu_sweep`),
the MLPerf Tiny models generated per core (`mlperf_out`).
"""
from __future__ import annotations

import pytest

import oputil


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
