"""MLPerf Tiny KWS, VWW and the IC ResNet-8 through tinyds beside CMSIS-NN v7: `python3 benchmarks/mlperf_tiny.py`.

Generates each model from ../shared/models/mlperf-tiny, runs `tinyds bench` on it (exact
instructions on QEMU, estimated cycles from tinyds.cycles) and prints one table. The
CMSIS-NN figures are constants measured with the same harness and estimator (issue 7 and
../shared/perf/README.md: CMSIS-NN 99f736a6, -O2). It measures; it asserts nothing.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))          # this checkout's tinyds, not an installed one

from tinyds import bench, bundle, convert  # noqa: E402

MODELS = REPO.parent / "shared" / "models" / "mlperf-tiny"

# (file, --mcu, CMSIS-NN instructions, CMSIS-NN estimated cycles or None)
RUNS = [
    ("kws_ref_model.tflite", "stm32f4", 7_693_228, 9_297_440),
    ("kws_ref_model.tflite", "cortex-m0plus", 28_988_677, None),
    ("vww_96_int8.tflite", "stm32f4", 24_093_813, 29_475_311),
    ("pretrainedResnet_quant.tflite", "stm32f4", None, None),     # not measured with CMSIS-NN
]


def _m(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M"


def _x(a: int | None, b: int | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def main() -> int:
    if not MODELS.is_dir():
        print(f"benchmarks: SKIPPED: {MODELS} is missing (the MLPerf Tiny models live in "
              "../shared beside this checkout)", file=sys.stderr)
        return 0
    rows, tflm = [], []
    with tempfile.TemporaryDirectory(prefix="tinyds-mlperf-") as tmp:
        for i, (file, mcu, cmsis_instr, cmsis_cycles) in enumerate(RUNS):
            out = Path(tmp) / str(i)
            convert(str(MODELS / file), mcu=mcu, out=out, log=lambda s: None)
            graph = bundle.load_graph(out / bundle.BUNDLE)
            b = bench.measure(out, graph)
            if not b.sample_ok:
                print(f"benchmarks: {file} on {mcu}: the firmware's output differs from the "
                      "reference", file=sys.stderr)
                return 1
            rows.append((f"{Path(file).stem} {mcu}", b, cmsis_instr, cmsis_cycles))
            if mcu == "stm32f4":
                tflm.append(f"{Path(file).stem}: {bench.tflm_arena_line(out, graph, b)}")
    head = (f"{'model':<28} {'tinyds instr':>12} {'est. cycles':>12} {'RAM (I/O+stack)':>16} "
            f"{'flash':>9} {'CMSIS-NN instr':>14} {'CMSIS-NN cycles':>15} {'instr ratio':>11} "
            f"{'cycle ratio':>11}")
    print("tinyds vs CMSIS-NN v7 (ratio = CMSIS-NN / tinyds: above 1 tinyds is ahead); cycles are "
          "estimates (Cortex-M4 TRM model, zero wait states); M0+ has no cycle model")
    print(head)
    print("-" * len(head))
    for name, b, ci, cc in rows:
        print(f"{name:<28} {_m(b.total_instructions):>12} {_m(b.cycles):>12} {b.ram:>14} B "
              f"{b.flash:>7} B {_m(ci):>14} {_m(cc):>15} {_x(ci, b.total_instructions):>11} "
              f"{_x(cc, b.cycles):>11}")
    print("RAM = library statics + input + output buffers + stack high-water. "
          "TFLM (host build of TFLM; its arena holds input and output too):")
    print("\n".join(tflm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
