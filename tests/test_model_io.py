"""The C API around the kernels for existing projects: NAME_quantize_input and
NAME_dequantize_output agree with the NumPy reference on edge values (+-inf, NaN,
exact halves and their neighbours, saturation), NAME_top_class and NAME_labels[],
and the caller's arena (NAME_run_with_arena, -DNAME_EXTERNAL_ARENA, the section
macro) give the reference's bytes. Compiled and run on the host."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyds import quantize, reference, verify
from tinyds.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_dscnn.pt"
CALIB = ROOT / "examples" / "digits_calib.npy"
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
          'nine "9" \\ ?']
HOST = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "digits_dscnn.h"

/* stdin: N float inputs; stdout: N int8 (quantize_input per chunk), the NaN count of
 * each chunk (int32), dequantize_output of 256 int8 chunks -> floats, top classes,
 * then one run per API variant on the first quantized input. */
static float x[1 << 16];
static int8_t q[1 << 16];
static union { int32_t align; int8_t bytes[DIGITS_DSCNN_ARENA_SIZE + 4]; } mine;

int main(int argc, char **argv)
{
    (void)argc;
    int n = atoi(argv[1]);
    if (fread(x, sizeof(float), (size_t)n, stdin) != (size_t)n) {
        return 3;
    }
    int chunks = n / DIGITS_DSCNN_INPUT_SIZE;
    int32_t nans[64];
    for (int c = 0; c < chunks; c++) {
        nans[c] = digits_dscnn_quantize_input(x + c * DIGITS_DSCNN_INPUT_SIZE,
                                              q + c * DIGITS_DSCNN_INPUT_SIZE);
    }
    fwrite(q, 1, (size_t)n, stdout);
    fwrite(nans, sizeof(int32_t), (size_t)chunks, stdout);
    int8_t all[256 + DIGITS_DSCNN_OUTPUT_SIZE];
    float y[256 + DIGITS_DSCNN_OUTPUT_SIZE];
    for (int i = 0; i < 256 + DIGITS_DSCNN_OUTPUT_SIZE; i++) {
        all[i] = (int8_t)(i - 128);
    }
    for (int i = 0; i < 256; i += DIGITS_DSCNN_OUTPUT_SIZE) {
        digits_dscnn_dequantize_output(all + i, y + i);
    }
    fwrite(y, sizeof(float), 256 + (DIGITS_DSCNN_OUTPUT_SIZE - 256 % DIGITS_DSCNN_OUTPUT_SIZE)
           % DIGITS_DSCNN_OUTPUT_SIZE, stdout);
    int8_t ties[DIGITS_DSCNN_OUTPUT_SIZE] = {0};
    ties[3] = ties[7] = 5;
    int32_t tops[2] = {digits_dscnn_top_class(ties), digits_dscnn_top_class(all)};
    fwrite(tops, sizeof(int32_t), 2, stdout);
    int8_t out[4][DIGITS_DSCNN_OUTPUT_SIZE];
    int32_t rc[4];
    rc[0] = digits_dscnn_run_with_arena(mine.bytes, q, out[0]);
    rc[1] = digits_dscnn_run_with_arena(mine.bytes + 1, q, out[1]);   /* misaligned: -1 */
#ifndef DIGITS_DSCNN_EXTERNAL_ARENA
    rc[2] = digits_dscnn_run(q, out[2]);
    for (int i = 0; i < DIGITS_DSCNN_INPUT_SIZE; i++) {
        digits_dscnn_input()[i] = q[i];
    }
    rc[3] = digits_dscnn_run(digits_dscnn_input(), digits_dscnn_output());
    for (int i = 0; i < DIGITS_DSCNN_OUTPUT_SIZE; i++) {
        out[3][i] = digits_dscnn_output()[i];
    }
#else
    rc[2] = rc[3] = digits_dscnn_run_with_arena(mine.bytes, q, out[2]);
    for (int i = 0; i < DIGITS_DSCNN_OUTPUT_SIZE; i++) {
        out[3][i] = out[2][i];
    }
#endif
    fwrite(rc, sizeof(int32_t), 4, stdout);
    fwrite(out, 1, sizeof out, stdout);
    for (int i = 0; i < DIGITS_DSCNN_OUTPUT_SIZE; i++) {
        printf("%s\n", digits_dscnn_labels[i]);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("io") / "out"
    labels = out.parent / "labels.txt"
    labels.write_text("\r\n".join(LABELS) + "\r\n")
    assert main(["generate", str(MODEL), "--calib", str(CALIB), "-o", str(out),
                 "--labels", str(labels)]) == 0
    return out


def halfway_inputs(s: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Floats whose float32 quotient by s is exactly k + 1/2 (each with its two float32
    neighbours), and the k of each."""
    found, ks = [], []
    for k in range(-300, 300):
        x = np.float32((k + 0.5) * float(s))
        for _ in range(8):
            v = np.float32(x / s)
            if v == np.float32(k + 0.5):
                found += [np.nextafter(x, np.float32(-np.inf)), x,
                          np.nextafter(x, np.float32(np.inf))]
                ks.append(k)
                break
            x = np.nextafter(x, np.float32(np.inf) if v < k + 0.5 else np.float32(-np.inf))
    return np.array(found, np.float32), np.array(ks)


def special_values(s=np.float32(1)) -> np.ndarray:
    f = np.finfo(np.float32)
    return np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0, f.max, -f.max, f.tiny,
                     -f.tiny, 1e-45, -1e-45, 256 * s, -256 * s, 127.5 * s, -128.5 * s,
                     1e30, -1e30], np.float32)


def edge_inputs(qg) -> np.ndarray:
    s = np.float32(qg.input.qparams[0])
    special = special_values(s)
    rng = np.random.default_rng(0)
    x = np.concatenate([special, halfway_inputs(s)[0], rng.normal(0, 60 * s, 2000).astype(np.float32)])
    n = qg.input.size
    pad = (-len(x)) % n
    return np.concatenate([x, np.zeros(pad, np.float32)])


def build_and_run(out: Path, tmp: Path, defines=(), x=None):
    lib = out / "lib" / "digits_dscnn"
    src = tmp / "harness.c"
    src.write_text(HARNESS)
    exe = tmp / "harness"
    subprocess.run([verify.compiler(), *HOST, *defines, "-I", str(lib), str(src),
                    str(lib / "digits_dscnn.c"), str(lib / "digits_dscnn_io.c"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    return subprocess.run([str(exe), str(len(x))], input=x.tobytes(), capture_output=True,
                          check=True).stdout


def parse(raw: bytes, qg, n: int):
    isz, osz = qg.input.size, qg.output.size
    chunks = n // isz
    ny = 256 + (osz - 256 % osz) % osz
    at = 0

    def take(count, dtype):
        nonlocal at
        a = np.frombuffer(raw, dtype, count, at)
        at += a.nbytes
        return a
    q, nans, y = take(n, np.int8), take(chunks, np.int32), take(ny, np.float32)
    tops, rc, outs = take(2, np.int32), take(4, np.int32), take(4 * osz, np.int8).reshape(4, osz)
    return q, nans, y, tops, rc, outs, raw[at:].decode()


@pytest.mark.parametrize("defines", [(), ("-DDIGITS_DSCNN_EXTERNAL_ARENA",)])
def test_c_helpers_match_the_reference_on_edge_values(generated, tmp_path, defines):
    o = verify.load_output(generated)
    qg = o.qg
    x = edge_inputs(qg)
    q, nans, y, tops, rc, outs, text = parse(build_and_run(generated, tmp_path, defines, x),
                                             qg, len(x))
    with np.errstate(invalid="ignore"):
        want = quantize.quantize_input(qg, x.reshape(-1, *qg.input.shape[1:])).reshape(-1)
    assert (q == want).all(), np.flatnonzero(q != want)[:10]
    zp = qg.input.qparams[1]
    assert q[0] == 127 and q[1] == -128 and q[2] == q[3] == zp      # +inf, -inf, NaN
    assert nans[0] == 2 and (nans[1:] == 0).all()
    halves, ks = halfway_inputs(np.float32(qg.input.qparams[0]))
    assert len(ks) > 300                      # most k + 1/2 are reachable, and tested
    at = len(special_values())
    got = q[at:at + len(halves)].astype(int).reshape(-1, 3)
    away = np.clip(np.where(ks >= 0, ks + 1, ks) + zp, -128, 127)   # exact half: away from 0
    assert (got[:, 1] == away).all()
    all_q = np.arange(-128, 128, dtype=np.int8)
    assert (y[:256].view(np.uint32) == quantize.dequantize_output(qg, all_q).view(np.uint32)).all()
    assert tops.tolist() == [3, qg.output.size - 1]   # the first of a tie; the largest
    first = q[:qg.input.size].reshape(1, *qg.input.shape[1:])
    ref = reference.run(qg, first)[0]
    assert rc.tolist() == [0, -1, 0, 0]
    for i in (0, 2, 3):
        assert (outs[i] == ref).all(), i
    assert text.splitlines() == LABELS


def test_quantize_reference_rounds_half_away_and_maps_nan_to_the_zero_point():
    from tinyds.ir import Graph, Tensor
    t = Tensor("x", (1, 6), "int8", scale=np.array([0.5], np.float32),
               zero_point=np.array([3]))
    g = Graph("g", {"x": t}, [], ["x"], ["x"])
    got = quantize.quantize_input(g, np.array([[0.25, -0.25, 0.75, np.nan, np.inf, -1e9]],
                                              np.float32))
    # 0.25/0.5 = 0.5 -> 1; -0.5 -> -1; 1.5 -> 2; NaN -> 0; then + 3, saturated
    assert got.tolist() == [[4, 2, 5, 3, 127, -128]]


def test_wrong_number_of_labels_is_one_line(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    rc = main(["generate", str(MODEL), "--calib", str(CALIB), "-o", str(tmp_path / "out"),
               "--labels", str(labels)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    assert str(labels) in err and "2 labels for 10 outputs" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
def test_arena_section_macro_places_the_arena(generated, tmp_path):
    from elftools.elf.elffile import ELFFile
    lib = generated / "lib" / "digits_dscnn"
    obj = tmp_path / "m.o"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", *HOST, "-c",
                    '-DDIGITS_DSCNN_ARENA_SECTION=".sram2"', str(lib / "digits_dscnn.c"),
                    "-o", str(obj)], check=True)
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        sym = elf.get_section_by_name(".symtab").get_symbol_by_name("digits_dscnn_arena")[0]
        section = elf.get_section(sym["st_shndx"])
        assert section.name == ".sram2" and sym["st_size"] == 1204
        assert section["sh_addralign"] >= 4
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", *HOST, "-c",
                    "-DDIGITS_DSCNN_EXTERNAL_ARENA", str(lib / "digits_dscnn.c"),
                    "-o", str(obj)], check=True)
    with open(obj, "rb") as f:
        assert not ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(
            "digits_dscnn_arena")
