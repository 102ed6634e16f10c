"""`tinyds run out/`: the project's own firmware (the user's main.c and added files
included) boots on the MCU's QEMU machine and its console reaches the terminal."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tinyds import bench
from tinyds.cli import main
from test_integrations import sample

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_dscnn.pt"
CALIB = ROOT / "examples" / "digits_calib.npy"


def generate(out: Path, mcu: str, capfd, *extra) -> None:
    assert main(["generate", str(MODEL), "--calib", str(CALIB), "--mcu", mcu, "-o", str(out),
                 *extra]) == 0
    capfd.readouterr()


def run(capfd, *argv) -> tuple[int, str, str]:
    rc = main(["run", *map(str, argv)])
    o = capfd.readouterr()
    return rc, o.out.replace("\r\n", "\n"), o.err


def test_run_boots_the_demo_with_its_uart_on_the_terminal(tmp_path, capfd):
    out = tmp_path / "out"
    generate(out, "stm32f4", capfd)
    x, y = sample(out)
    rc, text, err = run(capfd, out)
    assert rc == 0, err
    assert text.startswith(f"tinyds run: {out} (stm32f4) on QEMU netduinoplus2; counts are "
                           "executed instructions")
    assert re.search(r"^output (.*)$", text, re.M).group(1).split() == [str(v) for v in y]
    assert f"top class {int(np.argmax(y))}" in text and "sample match" in text
    counts = [int(c) for c in re.findall(r"^layer \d+ \S+ instructions (\d+)$", text, re.M)]
    assert len(counts) == 8 and all(c > 0 for c in counts[:6])
    total = int(re.search(r"^total instructions (\d+)$", text, re.M).group(1))
    assert total >= sum(counts)


def test_run_builds_the_users_code(tmp_path, capfd):
    out = tmp_path / "out"
    generate(out, "cortex-m0plus", capfd)
    main_c = out / "src" / "main.c"
    main_c.write_text(main_c.read_text()
                      .replace('    tinyds_board_init();\n',
                               '    tinyds_board_init();\n    tinyds_puts(app_banner());\n')
                      .replace('#include "tinyds_sample.h"\n',
                               '#include "tinyds_sample.h"\nconst char *app_banner(void);\n'))
    (out / "src" / "app.c").write_text('const char *app_banner(void) { return "my app\\n"; }\n')
    rc, text, err = run(capfd, out)
    assert rc == 0, err
    assert "my app\n" in text and "sample match" in text
    # ARMv6-M boots on microbit, whose SysTick the demo reads: QEMU's 16 MHz clock under
    # -icount shift=0, one tick per 62.5 instructions, labelled as such
    assert text.startswith(f"tinyds run: {out} (cortex-m0plus) on QEMU microbit; a Cortex-M0")
    assert "counts are SysTick ticks" in text.splitlines()[0]
    ticks = int(re.search(r"^total SysTick ticks (\d+)$", text, re.M).group(1))
    instructions = bench.measure(out, cycles=False).total_instructions
    # bench's TIM2 read is 3 instructions, the extended SysTick reading about 20: its ten
    # readings in one run add some 250 instructions, 4 ticks
    assert 0 <= ticks - instructions / 62.5 <= 8, (ticks, instructions)
    # a firmware too big for its 16 KB RAM runs on the MPS2 machine, which has no counter:
    # labelled, not passed off as cycles
    (out / "src" / "app.c").write_text(
        "volatile char big_buffer[20000];\n"
        'const char *app_banner(void) { big_buffer[0] = 1; return "my app\\n"; }\n')
    rc, text, err = run(capfd, out)
    assert rc == 0, err
    first = text.splitlines()[0]
    assert "on QEMU mps2-an385; the firmware does not fit QEMU microbit's 16 KB RAM" in first
    assert "has no cycle or instruction counter" in first
    assert re.search(r"^total cycles \(not counted\) 0$", text, re.M)
    # the firmware's exit status is run's
    main_c.write_text(main_c.read_text().replace("    return status;\n}", "    return 7;\n}"))
    assert run(capfd, out)[0] == 1


def test_run_stops_a_firmware_that_never_returns(tmp_path, capfd):
    out = tmp_path / "out"
    generate(out, "cortex-m3", capfd)
    main_c = out / "src" / "main.c"
    main_c.write_text(main_c.read_text().replace("    return status;\n}",
                                                 "    for (;;) {\n    }\n    return status;\n}"))
    rc, text, err = run(capfd, out, "--timeout", "3")
    assert rc == 2 and len(err.splitlines()) == 1
    assert "still ran after 3 s" in err and "--timeout" in err
    assert "sample match" in text                       # its output came through first


@pytest.mark.parametrize("case", ["lib-only", "not-output"])
def test_run_without_a_project_is_one_line(case, tmp_path, capfd):
    out = tmp_path / "out"
    if case == "lib-only":
        generate(out, "stm32f4", capfd, "--lib-only")
    else:
        out.mkdir()
    rc, _, err = run(capfd, out)
    assert rc == 2 and len(err.splitlines()) == 1
    assert ("--lib-only" if case == "lib-only" else "not a tinyds output") in err
