"""The NumPy integer reference on verify's vectors: `python3 benchmarks/reference_speed.py`.

For the MLPerf Tiny KWS and VWW .tflite models, the seconds `tinyds verify` spends in the
reference alone (its default 2003 vectors for KWS, 503 for VWW), and the share of each op
type. Best of three runs, on this machine as it is (other work shares its two cores).
It measures; it asserts nothing.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))          # this checkout's tinyds, not an installed one

from tinyds import frontends, ops, verify  # noqa: E402

MODELS = REPO.parent / "shared" / "models" / "mlperf-tiny"
RUNS = [("kws_ref_model.tflite", 1000), ("vww_96_int8.tflite", 250)]


def timed_ops(g, x) -> tuple[float, Counter]:
    """Seconds of verify.reference_outputs(g, x), and per op type."""
    spent: Counter = Counter()
    originals = {t: ops.get(t).reference for t in {op.type for op in g.ops}}

    def wrap(t, f):
        def run(*a):
            t0 = time.perf_counter()
            y = f(*a)
            spent[t] += time.perf_counter() - t0
            return y
        return run
    for t, f in originals.items():
        ops.get(t).reference = wrap(t, f)
    try:
        t0 = time.perf_counter()
        verify.reference_outputs(g, x)
        return time.perf_counter() - t0, spent
    finally:
        for t, f in originals.items():
            ops.get(t).reference = f


def main() -> None:
    print(f"{'model':<22} {'vectors':>7} {'seconds':>8}  per op type")
    for file, n_random in RUNS:
        g = frontends.load(MODELS / file)
        x = verify.verify_inputs(g, None, n_random)
        total, spent = min((timed_ops(g, x) for _ in range(3)), key=lambda r: r[0])
        shares = ", ".join(f"{t} {s:.2f}" for t, s in spent.most_common() if s >= 0.01)
        print(f"{Path(file).stem:<22} {len(x):>7} {total:>8.2f}  {shares}")


if __name__ == "__main__":
    main()
