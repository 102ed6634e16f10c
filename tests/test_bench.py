"""`tinyds bench` and its cycle estimator: the Cortex-M4 cost model on a
hand-counted instruction sequence, the trace parser on a hand-written QEMU log,
then on real firmware: instruction counts equal TIM2's exactly, cycles agree
with ../shared/perf/m4cycles.py, RAM counts input, output and stack, and TFLM
is measured on the user's original .tflite."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import files, run  # noqa: F401  (files is a fixture)
from test_project import toy_project
from tinyds import bench, cycles, targets
from tinyds.errors import TinydsError
from tinyds.firmware import build_elf, run_qemu

# Thumb-2 at address 0 (arm-none-eabi-as -mcpu=cortex-m4):
#  0 profile: bx lr
#  2 start:   ldr r0,[r1]; ldr r2,[r1,#4]; ldr r3,[r2]; str r3,[r1,#8]; str r3,[r1,r4]
#  c          ldr r5,[r1]; str r5,[r1,r4]; smlad r6,r0,r2,r6; ldrd r0,r2,[r1]
# 18          push {r4,r5,r6,lr}; pop {r4,r5,r6}; sdiv r0,r0,r2; bne start
# 22          bl profile; adds r0,#1; b start
CODE = bytes.fromhex("704708684a6813688b600b510d680d5120fb0266d1e9000270b570bc90fbf2f0efd1"
                     "fff7edff0130ebe7")
LOOP = list(range(0x02, 0x10, 2)) + [0x10, 0x14, 0x18, 0x1a, 0x1c, 0x20]
# Cortex-M4 TRM, by hand: ldr 2 | ldr 1 (pipelined: r0 is not its address) | ldr 2 (its
# address is r2, just loaded) | str #imm 1 | str [reg] 2 (after a store) | ldr 2 (after a
# store) | str [reg] 1 (pipelined after ldr r5) | smlad 1 | ldrd 3 | push 1+4 | pop 1+3 |
# sdiv 7 (the model's DIV_CYCLES) | bne 1 (+P=2 when taken, which the trace tells)
LOOP_M4_CYCLES = 2 + 1 + 2 + 1 + 2 + 2 + 1 + 1 + 3 + 5 + 4 + 7 + 1
# The M7 approximation, by hand: the seven loads/stores one per cycle (7), smlad issues
# beside the str (0), ldrd 1, push 2 and pop 2 (64-bit), sdiv 7, bne 1.
LOOP_M7_CYCLES = 7 + 0 + 1 + 2 + 2 + 7 + 1


def decoder() -> cycles.Decoder:
    return cycles.Decoder([(0, CODE)], {"profile": 0, "start": 2})


def test_m4_model_on_a_hand_counted_sequence():
    d = decoder()
    insns = tuple(d[a] for a in LOOP)
    assert [i.name for i in insns] == ["ldr", "ldr", "ldr", "str", "str", "ldr", "str", "smlad",
                                       "ldrd", "push", "pop", "sdiv", "b"]
    assert cycles.M4Model().block(insns, None) == (LOOP_M4_CYCLES, None)
    # entered right after a load into r1 (its address register): the first ldr cannot pipeline
    assert cycles.M4Model().block(insns[:1], "r1")[0] == 2
    assert cycles.M4Model().block(insns[:1], "r7")[0] == 1


def test_m7_model_on_a_hand_counted_sequence():
    d = decoder()
    assert cycles.M7Model().block(tuple(d[a] for a in LOOP), None)[0] == LOOP_M7_CYCLES


def _log(*blocks_and_runs) -> list[str]:
    """A QEMU `-d in_asm,exec,nochain` log: ("IN", [addrs]) lists a block,
    (host, pc) executes one."""
    lines = []
    for item in blocks_and_runs:
        if item[0] == "IN":
            lines += ["----------------\n", "IN: start\n"]
            lines += [f"0x{a:08x}:  0000       insn\n" for a in item[1]] + ["\n"]
        else:
            lines.append(f"Trace 0: {item[0]} [00000000/{item[1]:08x}/00000110/ff000200] start\n")
    return lines


def test_trace_segments_refills_and_instruction_counts():
    cost = cycles.TraceCost(decoder(), cycles.M4Model(), marker="profile")
    cost.feed(_log(("IN", LOOP), ("0x7f01", 0x02),
                   ("0x7f01", 0x02),                  # bne taken: one refill
                   ("IN", [0x22]), ("0x7f02", 0x22),  # bne falls through: none
                   ("IN", [0x00]), ("0x7f03", 0x00),  # bl taken, into the marker: segment 1
                   ("IN", [0x26, 0x28]), ("0x7f04", 0x26)))   # bx lr returns: a refill
    seg0, seg1 = cost.segments()
    assert (seg0.instructions, seg0.refills) == (13 + 13 + 1, 2)
    assert seg0.cycles == 2 * LOOP_M4_CYCLES + 1 + 2 * cycles.M4_REFILL
    assert (seg1.instructions, seg1.refills, seg1.cycles) == (3, 1, 1 + 2 + cycles.M4_REFILL)


def test_trace_that_runs_an_unlisted_block_is_refused():
    cost = cycles.TraceCost(decoder(), cycles.M4Model(), marker="profile")
    with pytest.raises(TinydsError, match="before listing it"):
        cost.feed(_log(("0x7f09", 0x02)))
    with pytest.raises(TinydsError, match="has no function tinyds_profile"):
        cycles.TraceCost(decoder(), cycles.M4Model())


def test_cycle_models_per_core():
    assert isinstance(cycles.model_for(targets.get("stm32f4").core.cycle_model), cycles.M4Model)
    assert isinstance(cycles.model_for(targets.get("stm32h7").core.cycle_model), cycles.M7Model)
    assert all(cycles.model_for(targets.get(m).core.cycle_model) is None
               for m in ("cortex-m0plus", "cortex-m3", "rp2040"))
    assert {m: targets.get(m).max_mhz for m in ("stm32f4", "stm32f7", "stm32h7", "stm32l4",
                                                  "nrf52840", "rp2040")} == {
        "stm32f4": 100, "stm32f7": 216, "stm32h7": 480, "stm32l4": 80, "nrf52840": 64,
        "rp2040": 133}


def test_bad_clock_is_one_line_exit_2(tmp_path, capsys):
    rc, _, err = run(capsys, "bench", tmp_path, "--clock-mhz", "0")
    assert rc == 2 and err.strip() == "tinyds: error: --clock-mhz 0: must be a positive clock in MHz"


# ---- on QEMU

PROFILE_DEFINES = ("TINYDS_PROFILE", "TINYDS_COUNTER_TIM2", "TINYDS_CONSOLE_SEMIHOSTING")
M4CYCLES = Path(__file__).resolve().parents[1].parent / "shared" / "perf" / "m4cycles.py"


def bench_elf(out: Path, tmp: Path) -> Path:
    name, mcu = bench.project_info(out)
    return build_elf(tmp, out / "lib" / name, name, mcu, out / "src" / "main.c",
                     machine=targets.MACHINES[bench.BENCH_MACHINE], defines=PROFILE_DEFINES)


@pytest.fixture(scope="module")
def kws(mlperf_out, tmp_path_factory):
    out = mlperf_out("kws_ref_model", "stm32f4")
    elf = bench_elf(out, tmp_path_factory.mktemp("kws_elf"))
    segments, _ = cycles.estimate(elf, cycles.M4Model())
    return out, elf, segments


@pytest.mark.slow
def test_traced_instructions_equal_tim2_exactly(kws):
    out, elf, segments = kws
    layers = bench.parse_output(run_qemu(elf, bench.BENCH_MACHINE, elf.parent, icount=True))[0]
    assert len(layers) == 13 and len(segments) == 15   # before, 13 layers, after
    assert [s.instructions for s in segments[1:14]] == [la.instructions for la in layers]
    assert all(s.cycles >= s.instructions for s in segments)   # nothing is free on an M4


@pytest.mark.slow
def test_cycles_agree_with_the_reference_estimator(kws, tmp_path):
    out, elf, segments = kws
    if not M4CYCLES.exists():
        pytest.skip(f"{M4CYCLES} is missing: the reference estimator lives in ../shared/perf")
    res = subprocess.run([sys.executable, str(M4CYCLES), str(elf), "--marker", "tinyds_profile",
                          "--top", "0", "--json", str(tmp_path / "m4.json")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    # the layers only: without -icount TIM2 runs in real time, so the printing after them
    # (its digits) differs from run to run
    ref = json.loads((tmp_path / "m4.json").read_text())["segments"][1:14]
    assert [r["instructions"] for r in ref] == [s.instructions for s in segments[1:14]]
    assert [r["refills"] for r in ref] == [s.refills for s in segments[1:14]]
    for r, s in zip(ref, segments[1:14]):
        # m4cycles charges a register-offset STR after a load into its address register 1
        # cycle, the TRM 2 (the profiling hook has one): a few cycles per layer at most.
        assert abs(s.cycles - r["cycles"]) <= max(8, s.cycles // 1000), (s, r)


@pytest.mark.slow
def test_bench_reports_cycles_ms_and_honest_ram(kws):
    from tinyds import bundle
    out = kws[0]
    b = bench.measure(out, bundle.load_graph(out / bundle.BUNDLE))
    assert b.cycle_model == "Cortex-M4, P=2"
    assert [la.cycles for la in b.layers] == [s.cycles for s in kws[2][1:14]]
    # the first conv runs over its input, so KWS's input lives in the arena (NAME_input());
    # its 12 output bytes fit where dead activations were (NAME_output())
    assert (b.input_bytes, b.output_bytes, b.library_ram) == (0, 0, b.arena)
    assert b.ram == b.arena + b.stack
    text = bench.report(b, clock_mhz=50)
    conv = next(line for line in text.splitlines() if "conv_2d_0" in line).split()
    assert conv[6] == str(b.layers[0].cycles)
    assert conv[7] == f"{320000 / b.layers[0].cycles:.3f}"
    assert conv[8] == f"{b.layers[0].cycles / 50e3:.3f}"        # ms at 50 MHz
    assert "zero-wait-state memory assumed" in text and "ms at 50 MHz" in text
    assert f"RAM: {b.ram} B of 131072 = library static {b.arena} (arena {b.arena}) + input " \
           f"buffer 0 (input in the arena) + output buffer 0 (output in the arena) + stack " \
           f"high-water {b.stack}" in text


@pytest.mark.slow
@pytest.mark.parametrize("mcu, model", [("stm32f7", "Cortex-M7"), ("cortex-m0plus", None)])
def test_bench_cycles_per_core(tmp_path, mcu, model):
    toy_project(tmp_path, mcu)
    b = bench.measure(tmp_path)
    if model is None:
        assert b.cycles is None and "no timing model for cortex-m0plus" in b.cycle_note
        assert "cycles: no timing model" in bench.report(b)
        assert b.machine == "microbit"
    else:
        assert b.cycle_model.startswith(model)
        # dual issue: at most two instructions a cycle
        assert all(2 * la.cycles >= la.instructions > 0 for la in b.layers)


@pytest.mark.slow
def test_tflm_measured_on_the_original_tflite(files, tmp_path, capsys):  # noqa: F811
    pytest.importorskip("tflite_micro")
    from tinyds.export_tflite import tflm_arena_size
    tfl = tmp_path / "tiny.tflite"
    assert run(capsys, "export-tflite", files["tiny.pt"], "--calib", files["calib.npy"],
               "-o", tfl)[0] == 0
    out = tmp_path / "out"
    assert run(capsys, "generate", tfl, "-o", out)[0] == 0
    rc, stdout, err = run(capsys, "bench", out, "--no-cycles")
    assert rc == 0, err
    head = tflm_arena_size(tfl.read_bytes())["head"]
    assert f"TFLM arena for the original tiny.tflite: {head} B of tensors" in stdout
    assert "cycles: not estimated (--no-cycles)" in stdout
    report = json.loads((out / "report.json").read_text())["bench"]   # bench joins the report
    assert f"per-layer figures added to {out / 'report.html'}" in stdout
    assert report["cycles"] is None and report["total_instructions"] > 0
    assert all(la["instructions"] > 0 for la in report["layers"])
    shutil.move(tfl, tmp_path / "moved.tflite")
    rc, stdout, err = run(capsys, "bench", out, "--no-cycles")
    assert rc == 0, err
    assert f"TFLM arena for the original tiny.tflite: {head} B of tensors" in stdout
    (out / "verify" / "source.tflite").unlink()
    rc, stdout, err = run(capsys, "bench", out, "--no-cycles")
    assert rc == 0, err
    assert "TFLM arena: not measured: " in stdout and "run tinyds generate again" in stdout


def test_io_sizes_count_the_input_only_outside_the_arena(tmp_path):
    lib = tmp_path / "lib" / "m"
    lib.mkdir(parents=True)
    for in_arena, want in ((0, (490, 12)), (1, (0, 12))):
        (lib / "m.h").write_text(f"#define M_INPUT_SIZE 490\n#define M_OUTPUT_SIZE 12\n"
                                 f"#define M_INPUT_IN_ARENA {in_arena}\n")
        assert bench.io_sizes(tmp_path, "m") == want
    # several inputs and outputs: every one's bytes (TOTAL_SIZE); the first's alone are not
    (lib / "m.h").write_text("#define M_INPUT_COUNT 2\n#define M_INPUT0_SIZE 490\n"
                             "#define M_INPUT_TOTAL_SIZE 494\n#define M_OUTPUT0_SIZE 12\n"
                             "#define M_OUTPUT_TOTAL_SIZE 20\n#define M_INPUT_IN_ARENA 0\n")
    assert bench.io_sizes(tmp_path, "m") == (494, 20)


# ---- ARMv6-M on QEMU microbit

def test_v6m_shortfall_names_what_keeps_a_model_off_microbit():
    def shortfall(data, bss, stack, flash=1000):
        b = bench.Bench("m", targets.get("cortex-m0plus"), [], 0,
                        {".text": flash, ".data": data, ".bss": bss}, {}, 0, stack, True)
        return bench.v6m_shortfall(b)
    assert shortfall(100, 12188, 300) == []                       # 12288 + 4096 reserved
    assert shortfall(100, 12189, 300) == ["RAM 16385 B (statics and stack) > 16384 B"]
    assert shortfall(0, 8000, 9000) == ["RAM 17000 B (statics and stack) > 16384 B"]
    assert shortfall(0, 0, 0, flash=300_000) == ["flash 300000 B > 262144 B"]


@pytest.mark.slow
@pytest.mark.parametrize("mcu", ["cortex-m0plus", "rp2040"])
def test_armv6m_bench_runs_on_microbit_with_tim2s_counts(tmp_path, mcu):
    toy_project(tmp_path / "out", mcu)
    b = bench.measure(tmp_path / "out", cycles=False)
    assert b.machine == "microbit" and b.sample_ok and not b.machine_note
    # the same ARMv6-M code on the M4 machine, counted by TIM2
    elf = bench_elf(tmp_path / "out", tmp_path / "tim2")
    layers, total, _, stack, ok = bench.parse_output(
        run_qemu(elf, bench.BENCH_MACHINE, elf.parent, icount=True))
    assert ok and len(layers) == 3 and layers[1].instructions > 0
    assert [la.instructions for la in b.layers] == [la.instructions for la in layers]
    assert b.total_instructions == total > sum(la.instructions for la in layers)
    assert b.stack == stack
    assert bench.report(b).startswith(
        f"tinyds bench: toy for {mcu} (cortex-m0plus), QEMU microbit (Cortex-M0, 16384 B RAM): "
        "counts are executed instructions from QEMU's execution trace")


@pytest.mark.slow
def test_microbit_catches_an_unaligned_access(tmp_path):
    """The M4 machine lets an unaligned LDR through; a Cortex-M0 faults, and so does bench."""
    toy_project(tmp_path, "cortex-m0plus")
    toy_c = tmp_path / "lib" / "toy" / "toy.c"
    toy_c.write_text(toy_c.read_text().replace("    DONE(1);\n", (
        "    {\n        static volatile uintptr_t odd = 1;\n"
        "        (void)*(const volatile uint32_t *)(const void *)((uintptr_t)arena + odd);\n"
        "    }\n    DONE(1);\n")))
    with pytest.raises(TinydsError, match="faulted on QEMU microbit, a real Cortex-M0") as e:
        bench.measure(tmp_path, cycles=False)
    assert len(str(e.value).splitlines()) == 1


@pytest.mark.slow
def test_kws_on_armv6m(mlperf_out):
    # generated for cortex-m0plus, the portable kernels need a 16000 B arena: netduinoplus2
    out = mlperf_out("kws_ref_model", "cortex-m0plus")
    b = bench.measure(out, cycles=False)
    assert (b.machine, b.arena, b.sample_ok) == ("netduinoplus2", 16000, True)
    assert b.machine_note.startswith("not on QEMU microbit (Cortex-M0, 16384 B RAM): RAM ")
    assert b.machine_note in bench.report(b).splitlines()[0]
    # the stm32f4 library (fast kernels' C twins, input and output in an 8392 B arena) fits
    out = mlperf_out("kws_ref_model", "stm32f4")
    b = bench.measure(out, cycles=False, target=targets.get("cortex-m0plus"))
    assert (b.machine, b.arena, b.sample_ok) == ("microbit", 8392, True)
    assert len(b.layers) == 13 and b.total_instructions > 20_000_000


def test_armv6m_bench_without_capstone_stays_on_netduinoplus2(tmp_path, monkeypatch):
    toy_project(tmp_path, "cortex-m0plus")
    monkeypatch.setitem(sys.modules, "capstone", None)             # import capstone fails
    b = bench.measure(tmp_path, cycles=False)
    assert b.machine == "netduinoplus2" and b.sample_ok
    assert b.machine_note == ("not on QEMU microbit: counting its execution trace needs "
                              "capstone (pip install 'tinyds[firmware]')")
    assert b.machine_note in bench.report(b).splitlines()[0]
