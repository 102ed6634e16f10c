"""Same bytes out: every file generate and export-tflite write for the golden set
(tests/golden/cases.py) hashes to the recorded digest. A restructuring of tinyds must keep
them; a deliberate change to generated output rewrites the digests and says why."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "golden"))
import cases  # noqa: E402

RECORDED = json.loads(cases.DIGESTS.read_text())


def test_the_golden_set_is_recorded_whole():
    assert sorted(RECORDED) == sorted(cases.cases())
    assert sum("error" not in d for d in RECORDED.values()) >= 70   # most cases generate


@pytest.mark.parametrize("case", sorted(cases.cases()))
def test_generated_bytes_are_the_recorded_ones(case):
    model = cases.cases()[case][0]
    if cases.needs_shared(model) and not cases.MLPERF.is_dir():
        pytest.skip(f"{cases.MLPERF} not found: the MLPerf golden cases need ../shared")
    got = cases.run(case)
    want = RECORDED[case]
    assert sorted(got) == sorted(want), "files added or missing"
    changed = [f for f in want if got[f] != want[f]]
    assert not changed, f"{case}: different bytes in {changed}"
