"""The fixed-point primitives: hand-checked values, the C twin, and a scalar restatement."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyds import fixedpoint as fp

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def test_quantize_multiplier_known_values():
    assert fp.quantize_multiplier(0.5) == (1 << 30, 0)
    assert fp.quantize_multiplier(1.0) == (1 << 30, 1)
    assert fp.quantize_multiplier(0.75) == (3 << 29, 0)
    assert fp.quantize_multiplier(0.0) == (0, 0)
    # q rounds up to 2**31 -> renormalised to 2**30 with shift + 1
    assert fp.quantize_multiplier(1.0 - 2.0 ** -40) == (1 << 30, 1)
    # below 2**-32 TFLite flushes to zero
    assert fp.quantize_multiplier(2.0 ** -40) == (0, 0)


def test_multiplier_reconstructs_real_value():
    rng = np.random.default_rng(0)
    for real in rng.uniform(1e-6, 50.0, 200):
        q, shift = fp.quantize_multiplier(real)
        assert (1 << 30) <= q < (1 << 31)
        assert abs(q * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -30


def test_srdhm_ties_follow_gemmlowp():
    # +1.5 rounds up, -1.5 rounds towards zero: gemmlowp's nudge is asymmetric.
    assert fp.saturating_rounding_doubling_high_mul(3, 1 << 30) == 2
    assert fp.saturating_rounding_doubling_high_mul(-3, 1 << 30) == -1
    assert fp.saturating_rounding_doubling_high_mul(1 << 30, 1 << 30) == 1 << 29
    assert fp.saturating_rounding_doubling_high_mul(fp.INT32_MIN, fp.INT32_MIN) == fp.INT32_MAX


def test_rounding_divide_by_pot_rounds_half_away_from_zero():
    got = fp.rounding_divide_by_pot(np.array([-7, -6, -5, -4, 4, 5, 6, 7]), 1)
    assert got.tolist() == [-4, -3, -3, -2, 2, 3, 3, 4]
    assert fp.rounding_divide_by_pot(np.array([-(1 << 20)]), 31).tolist() == [0]


def _scalar_requantize(x, m, shift):
    """The same spec restated with Python ints, one value at a time."""
    left, right = max(shift, 0), max(-shift, 0)
    x = ((x << left) + (1 << 31)) % (1 << 32) - (1 << 31)
    if x == m == fp.INT32_MIN:
        high = fp.INT32_MAX
    else:
        ab = x * m
        t = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
        high = abs(t) >> 31 if t >= 0 else -(abs(t) >> 31)
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if (high & mask) > threshold else 0)


def _random_cases(n, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.integers(-(1 << 31), 1 << 31, n, dtype=np.int64)
    x[: n // 4] = rng.integers(-100000, 100000, n // 4)
    m = rng.integers(1 << 30, 1 << 31, n, dtype=np.int64)
    shift = rng.integers(-31, 8, n, dtype=np.int64)
    return x, m, shift


def test_vectorised_matches_scalar_spec():
    x, m, shift = _random_cases(3000)
    got = fp.multiply_by_quantized_multiplier(x, m, shift)
    want = [_scalar_requantize(int(a), int(b), int(c)) for a, b, c in zip(x, m, shift)]
    assert got.tolist() == want


def _build(tmp_path, name: str, source: str, sanitize: str) -> Path:
    """Compile a one-file C test program against tinyds_common.h, warnings as errors."""
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / name
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
                    f"-fsanitize={sanitize}", "-fno-sanitize-recover=all",
                    f"-I{TEMPLATES}", str(src), "-o", str(exe)], check=True)
    return exe


def test_c_twin_matches_numpy(tmp_path):
    x, m, shift = _random_cases(5000, seed=2)
    exe = _build(tmp_path, "fp",
        '#include <stdio.h>\n#include "tinyds_common.h"\n'
        "int main(void) {\n  long long x, m, s;\n"
        "  while (scanf(\"%lld %lld %lld\", &x, &m, &s) == 3) {\n"
        "    const int32_t rs = s > 0 ? -s : (s < 0 ? s : -1);\n"
        "    printf(\"%d %d %d\\n\", (int)tinyds_requantize((int32_t)x, (int32_t)m, (int32_t)s),\n"
        "           (int)tinyds_requantize_lt1((int32_t)x, (int32_t)m, (int32_t)(s > 0 ? -s : s)),\n"
        "           (int)tinyds_requantize_rs((int32_t)x, (int32_t)m, rs));\n"
        "  }\n  return 0;\n}\n", "address,undefined")
    stdin = "\n".join(f"{a} {b} {c}" for a, b, c in zip(x, m, shift))
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, check=True).stdout
    got = np.array([list(map(int, line.split())) for line in out.splitlines()])
    assert got[:, 0].tolist() == fp.multiply_by_quantized_multiplier(x, m, shift).tolist()
    lt1_shift = np.where(shift > 0, -shift, shift)
    assert got[:, 1].tolist() == fp.multiply_by_quantized_multiplier_smaller_than_one_exp(
        x, m, lt1_shift).tolist()
    rs_shift = np.where(lt1_shift < 0, lt1_shift, -1)
    assert got[:, 2].tolist() == fp.multiply_by_quantized_multiplier(x, m, rs_shift).tolist()


def _narrow_cases(n, seed=3):
    """int32 a (uniform, small, and the extremes) x multipliers b >= 0 (Q31 range, 0,
    2^30, 2^31 - 1, and small values), every edge against every edge."""
    rng = np.random.default_rng(seed)
    edges_a = np.array([0, 1, -1, 2, -2, 0x7FFF, 0x8000, -0x8000, -0x8001, 0xFFFF, 0x10000,
                        -0x10000, -0x10001, fp.INT32_MAX, fp.INT32_MIN, fp.INT32_MIN + 1,
                        fp.INT32_MAX - 1, 1 << 30, -(1 << 30), 3, -3], np.int64)
    edges_b = np.array([0, 1, 2, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 1 << 30, (1 << 30) + 1,
                        fp.INT32_MAX, fp.INT32_MAX - 1, 0x7FFF0000, 0x4000FFFF], np.int64)
    ea, eb = np.meshgrid(edges_a, edges_b)
    a = rng.integers(fp.INT32_MIN, fp.INT32_MAX + 1, n, dtype=np.int64)
    a[: n // 4] = rng.integers(-(1 << 22), 1 << 22, n // 4)
    b = rng.integers(1 << 30, 1 << 31, n, dtype=np.int64)
    b[: n // 8] = rng.integers(0, 1 << 31, n // 8)
    # ties: a * b + 2^30 a multiple of 2^31 (b = 2^30 and a odd, either sign)
    a[n // 8: n // 4] |= 1
    b[n // 8: n // 4] = 1 << 30
    return np.concatenate([ea.ravel(), a]), np.concatenate([eb.ravel(), b])


def test_narrow_srdhm_matches_numpy(tmp_path):
    """The ARMv6-M multiply (16-bit partial products) equals gemmlowp's rounding
    doubling high multiply for any int32 a and any b >= 0, on the host; and the
    right-shift rounding of tinyds_requantize_rs applied to its results (every
    shift 1..31, so ties and INT32_MIN + 1 come round) equals RoundingDivideByPOT."""
    a, b = _narrow_cases(1 << 21)
    e = np.arange(len(a)) % 31 + 1
    exe = _build(tmp_path, "narrow",
        '#include <stdio.h>\n#include "tinyds_common.h"\n'
        "int main(void) {\n  int32_t abe[3];\n"
        "  while (fread(abe, sizeof abe, 1, stdin) == 1) {\n"
        "    const int32_t r = tinyds_srdhm_narrow(abe[0], abe[1]);\n"
        "    const int32_t q[2] = {r, tinyds_rdbpot_rs(r, -abe[2])};\n"
        "    fwrite(q, sizeof q, 1, stdout);\n  }\n  return 0;\n}\n", "undefined")
    stdin = np.stack([a, b, e], axis=1).astype(np.int32).tobytes()
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, check=True).stdout
    got = np.frombuffer(out, np.int32).reshape(-1, 2)
    high = fp.saturating_rounding_doubling_high_mul(a, b)
    np.testing.assert_array_equal(got[:, 0], high)
    np.testing.assert_array_equal(got[:, 1], fp.rounding_divide_by_pot(high, e))


SMALL_SRDHM_MAIN = r"""
#include "tinyds_board.h"
#include "tinyds_common.h"

/* Every (a, b) of cases.bin through tinyds_srdhm_small, results to out.bin. */
int main(void)
{
    tinyds_board_init();
    int in = tinyds_sh_open("cases.bin", 1), out = tinyds_sh_open("out.bin", 5);
    int32_t ab[2];
    uint32_t n = 0;
    while (in >= 0 && out >= 0 && tinyds_sh_read(in, ab, sizeof ab) == (int)sizeof ab) {
        const int32_t r = tinyds_srdhm_small(ab[0], ab[1]);
        if (tinyds_sh_write(out, &r, sizeof r) != 0) {
            return 2;
        }
        n++;
    }
    tinyds_puts("tinyds: cases ");
    tinyds_put_u32(n);
    tinyds_puts("\n");
    return 0;
}
"""


@pytest.mark.parametrize("mcu", ["stm32f4", "cortex-m0plus"])
def test_small_srdhm_on_the_core(tmp_path, mcu):
    """tinyds_srdhm_small (ADD's table kernel) equals gemmlowp's rounding doubling high
    multiply for |a| < 2^30 and b >= 0: SMMULR on the M4, the C product on the M0+,
    ties of either sign included."""
    from tinyds import targets
    from tinyds.firmware import build_elf, run_qemu

    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("needs arm-none-eabi-gcc and qemu-system-arm (make toolchain)")
    a, b = _narrow_cases(1 << 15, seed=4)
    keep = np.abs(a) < 1 << 30
    a, b = a[keep], b[keep]
    a[:64], b[:64] = (1 << 30) - np.arange(1, 65), fp.INT32_MAX   # the largest operands
    (tmp_path / "main.c").write_text(SMALL_SRDHM_MAIN)
    m = targets.get(mcu)
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(TEMPLATES / "tinyds_common.h", lib)
    elf = build_elf(tmp_path / "build", lib, "unused", m, tmp_path / "main.c",
                    machine=m.machine, defines=("TINYDS_CONSOLE_SEMIHOSTING",))
    (tmp_path / "cases.bin").write_bytes(np.stack([a, b], axis=1).astype(np.int32).tobytes())
    assert f"tinyds: cases {len(a)}" in run_qemu(elf, m.qemu, tmp_path)
    got = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.int32)
    np.testing.assert_array_equal(got, fp.saturating_rounding_doubling_high_mul(a, b))
