"""The weight blob (tinyds/weight_blob.py): the generated library built with
-DTINYDS_WEIGHTS_EXTERNAL and handed the blob computes the NumPy reference's
bytes, and only because it reads the blob; the layout is what the natmod glue
and the fast kernels' aligned loads rely on. Expected outputs come from the
reference, never from the C under test."""
from __future__ import annotations

import re
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinyds import api, codegen, targets, verify

REPO = Path(__file__).resolve().parent.parent
KWS = REPO.parent / "shared" / "models" / "mlperf-tiny" / "kws_ref_model.tflite"
DIGITS = REPO / "examples" / "digits_dscnn.pt"
CALIB = REPO / "examples" / "digits_calib.npy"

# Reads the blob into a heap (so aligned) buffer, hands it over, then streams
# int8 vectors from stdin through m_run to stdout.
DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "m.h"

int main(int argc, char **argv)
{
    FILE *f = fopen(argv[1], "rb");
    uint8_t *blob = malloc(M_WEIGHTS_SIZE);
    int8_t x[M_INPUT_SIZE], y[M_OUTPUT_SIZE];
    if (argc != 2 || f == NULL || blob == NULL || fread(blob, 1, M_WEIGHTS_SIZE, f) != M_WEIGHTS_SIZE) {
        return 2;
    }
    m_set_weights(blob);
    while (fread(x, 1, M_INPUT_SIZE, stdin) == M_INPUT_SIZE) {
        m_run(x, y);
        fwrite(y, 1, M_OUTPUT_SIZE, stdout);
    }
    return 0;
}
"""


def quantized(model):
    if model == "kws":
        if not KWS.is_file():
            pytest.skip(f"{KWS} not found")
        return api.quantize_model(KWS, log=lambda *a, **k: None).qg
    return api.quantize_model(DIGITS, calib=str(CALIB), log=lambda *a, **k: None).qg


def external_defines(c_text: str, name: str) -> dict[str, tuple[str, int]]:
    """array -> (C type, offset) for every array the natmod build reads from the blob."""
    return {m[0]: (m[1], int(m[2])) for m in re.findall(
        rf"^#define (\w+) {name.upper()}_W\((\w+), (\d+)\)$", c_text, flags=re.M)}


@pytest.mark.parametrize("model,mcu", [("digits", "stm32f4"), ("digits", "cortex-m0plus"),
                                       ("kws", "stm32f4")])
def test_layout(model, mcu):
    files, lib = codegen.render_for_mcu(quantized(model), "m", targets.get(mcu))
    blob = lib.weights
    magic, version, size, checksum = struct.unpack_from("<4sIII", blob)
    assert (magic, version, size) == (b"TDSW", 1, len(blob))
    assert checksum == zlib.adler32(blob[16:]) and len(blob) % 4 == 0
    header = files["m.h"]
    assert f"#define M_WEIGHTS_SIZE {len(blob)}\n" in header
    assert f"#define M_WEIGHTS_ADLER32 {checksum:#010x}u\n" in header
    arrays = external_defines(files["m.c"], "m")
    sizes = {a: int(n) for t, a, n in re.findall(r"^static const (\w+) (\w+)\[(\d+)\]",
                                                  files["m.c"], flags=re.M)}
    # Each array on a 4-byte boundary, inside the blob, none overlapping, and
    # together the blob's body (its only padding is what alignment needs).
    spans = sorted((off, off + sizes[a] * np.dtype(t.removesuffix("_t")).itemsize)
                   for a, (t, off) in arrays.items())
    assert spans and spans[0][0] == 16 and spans[-1][1] <= len(blob) < spans[-1][1] + 4
    for (a0, e0), (a1, _) in zip(spans, spans[1:]):
        assert a0 % 4 == 0 and a1 % 4 == 0 and e0 <= a1 < e0 + 4
    # every constant is in the blob
    assert len(blob) - 16 >= lib.weight_bytes
    # and holds the values the C declares for it (both come from the same arrays)
    declared = {m[1]: [int(v, 0) for v in m[2].split(",") if v.strip()] for m in re.finditer(
        r"^static const \w+ (\w+)\[\d+\] = \{\n(.*?)^\};$", files["m.c"], flags=re.M | re.S)}
    for a, (t, off) in arrays.items():
        held = np.frombuffer(blob, np.dtype(t.removesuffix("_t")).newbyteorder("<"),
                             len(declared[a]), off)
        assert held.tolist() == declared[a], a


@pytest.mark.parametrize("model,mcu", [("digits", "stm32f4"), ("digits", "cortex-m0plus"),
                                       ("kws", "stm32f4")])
def test_external_build_is_bit_exact(tmp_path, model, mcu):
    qg = quantized(model)
    files, lib = codegen.render_for_mcu(qg, "m", targets.get(mcu))
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    (tmp_path / "driver.c").write_text(DRIVER)
    subprocess.run([verify.compiler(), *verify.CFLAGS, "-O2", "-DTINYDS_WEIGHTS_EXTERNAL",
                    "-o", "run", "m.c", "driver.c"], cwd=tmp_path, check=True)
    x = verify.verify_inputs(qg, None, 300)
    want = verify.reference_outputs(qg, x)

    def run(blob: bytes) -> np.ndarray:
        (tmp_path / "w.bin").write_bytes(blob)
        out = subprocess.run(["./run", "w.bin"], cwd=tmp_path, input=x.tobytes(),
                             capture_output=True, check=True).stdout
        return np.frombuffer(out, np.int8).reshape(want.shape)

    assert np.array_equal(run(lib.weights), want)
    # The same build with the blob's body zeroed computes something else: it
    # reads its weights from the blob, not from arrays compiled in.
    zeroed = lib.weights[:16] + bytes(len(lib.weights) - 16)
    assert not np.array_equal(run(zeroed), want)


def test_normal_build_compiles_no_blob(tmp_path):
    """Without the macro the library has no blob pointer: firmware is unchanged."""
    files, _ = codegen.render_for_mcu(quantized("digits"), "m", targets.get("stm32f4"))
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    for flag, has in (("-UTINYDS_WEIGHTS_EXTERNAL", False), ("-DTINYDS_WEIGHTS_EXTERNAL", True)):
        subprocess.run([verify.compiler(), *verify.CFLAGS, "-O2", flag, "-c", "m.c"],
                       cwd=tmp_path, check=True)
        syms = subprocess.run(["nm", "m.o"], cwd=tmp_path, capture_output=True,
                              text=True, check=True).stdout
        assert ("m_set_weights" in syms) == has and ("m_weights" in syms) == has
