"""The ARMv6-M demo counter: SysTick extended past 24 bits (firmware/board.c), run on
QEMU microbit for more than two wraps against the nRF51's TIMER0 on the same 16 MHz
clock (tests/fixtures/systick/main.c).

Why a plain reading steps backwards under QEMU: SysTick pends its wrap when VAL reaches
0 and reloads one tick later (QEMU's ptimer for SysTick: WRAP_AFTER_ONE_PERIOD), so VAL
0 comes with a wrap that may already be counted; QEMU also reads 0 from the end of the
period until its timer callback pends the wrap; and a wrap can be pending, not yet
counted, while interrupts are masked. With -icount shift=2 a tick is 15.6 instructions,
long enough for the fixture to read inside the VAL-0 tick; dropping either the retry on
VAL 0 or the PENDSTSET check from board.c makes this test fail."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tinyds import targets
from tinyds.firmware import build_elf, qemu_command

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "systick" / "main.c"
WRAP = 1 << 24


@pytest.mark.slow
def test_extended_systick_is_monotonic_and_counts_the_clock(tmp_path):
    lib = tmp_path / "lib"                 # no model: the fixture is the whole main
    lib.mkdir()
    elf = build_elf(tmp_path, lib, "none", targets.get("cortex-m0plus"), FIXTURE,
                    machine=targets.MACHINES["microbit"],
                    defines=("TINYDS_CONSOLE_SEMIHOSTING",))
    res = subprocess.run(qemu_command(elf, "microbit") + ["-icount", "shift=2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    printed = res.stdout + res.stderr      # semihosting: one line
    got = {k: int(v) for k, v in re.findall(r"([a-z0-9-]+) (\d+)", printed)}
    assert got["backwards"] == 0 and got["reads"] > 1_000_000
    assert got["zero-vals"] >= 1           # it did read at VAL 0, next to a wrap
    assert got["masked"] > 0               # and across a wrap with interrupts masked
    assert got["systick"] > 2 * WRAP
    # the two clocks are read a few instructions apart (< 2 ticks each way)
    assert abs(got["systick"] - got["timer0"]) <= 4, got
