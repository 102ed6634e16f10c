"""Helpers for the op tests (the `opkit` fixture is this module).

`opkit.graph(...)` builds a one-op quantized graph from int8 weights and float
scales (requant.derive_int_params fills the integer params, as for real models).
`opkit.run_kernels(cases)` renders many single-op graphs' kernels into ONE C
file, compiles it once per build (optimised, and ASan+UBSan) with verify's flags
and streams every case's batch through it: a 40-case sweep costs two gcc calls.
`target` picks the kernels as generate would for a core (`DSP`: the fast int16
kernels, run here through their C twins); `inplace` runs each kernel that may
work in place with its output over its input, laid out as the planner does;
`cflags=DSP_PATH` compiles the portable kernels' TINYDS_DSP path, as a DSP core
does, through the same twins.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tinyds import codegen, data_dir, ops, templating, verify
from tinyds.kernels import KernelOptions, choose
from tinyds.ir import Graph, Op, Tensor
from tinyds.requant import derive_int_params
from tinyds.window import output_size

CACHE = Path(tempfile.gettempdir()) / f"tinyds-opkit-{os.getuid()}"
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2"]
DSP = KernelOptions(dsp=True)      # what generate picks for a Cortex-M4/M7
DSP_PATH = ("-DTINYDS_DSP=1",)     # the portable kernels' path on a DSP core, on the host


def _act(name, shape, scale, zp):
    return Tensor(name, tuple(shape), "int8", scale=np.array([scale], np.float32),
                  zero_point=np.array([zp], np.int64))


def graph(op_type, x_shape, w, bias, attrs, *, s_in, zp_in, s_w, s_out, zp_out, w_zp=0) -> Graph:
    """One conv2d / depthwise_conv2d / fully_connected layer as a quantized Graph."""
    w = np.asarray(w, np.int8)
    axis = 3 if op_type == "depthwise_conv2d" else 0
    s_w = np.broadcast_to(np.asarray(s_w, np.float32), (w.shape[axis],)).copy()
    if op_type == "fully_connected":
        y_shape = (1, w.shape[0])
    else:
        kh, kw = w.shape[1:3]
        (sh, sw), (dh, dw), (pt, pl, pb, pr) = attrs["stride"], attrs["dilation"], attrs["padding"]
        out_c = w.shape[3] if op_type == "depthwise_conv2d" else w.shape[0]
        y_shape = (1, output_size(x_shape[1], kh, sh, dh, pt, pb),
                   output_size(x_shape[2], kw, sw, dw, pl, pr), out_c)
    x = _act("x", x_shape, s_in, zp_in)
    y = _act("y", y_shape, s_out, zp_out)
    wt = Tensor("w", w.shape, "int8", data=w, scale=s_w,
                zero_point=np.full(w.shape[axis], w_zp, np.int64), axis=axis)
    tensors = [x, wt, y]
    if bias is not None:
        b_scale = (np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32)
        tensors.append(Tensor("b", (w.shape[axis],), "int32", data=np.asarray(bias, np.int32),
                              scale=b_scale, zero_point=np.zeros(w.shape[axis], np.int64),
                              axis=0))
    op = Op(op_type, "layer", ["x", "w", "b" if bias is not None else ""], ["y"], dict(attrs))
    return derive_int_params(Graph("t", {t.name: t for t in tensors}, [op], ["x"], ["y"]))


def same_padding(size, kernel, stride, dilation):
    """TFLite SAME: out = ceil(size / stride), extra padding goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def random_window(rng, *, pointwise=False, padding_style=None) -> tuple[tuple, dict]:
    """Random spatial geometry for conv/depthwise sweeps: ((h, w, kh, kw), attrs).

    Kernels 1-7 (non-square too), strides 1-3, dilations 1-2, odd sizes, and padding
    styles: none, PyTorch symmetric, TFLite SAME (extra row/column after), and
    "wide" borders where whole windows see only padding.
    """
    kh, kw = (1, 1) if pointwise else (int(k) for k in rng.integers(1, 8, 2))
    sh, sw = (1, 1) if pointwise else (int(s) for s in rng.integers(1, 4, 2))
    dh, dw = (1, 1) if pointwise else (int(d) for d in rng.integers(1, 3, 2))
    h = int(rng.integers((kh - 1) * dh + 1, (kh - 1) * dh + 9))
    w = int(rng.integers((kw - 1) * dw + 1, (kw - 1) * dw + 9))
    style = "valid" if pointwise else (padding_style or rng.choice(["valid", "torch", "same", "wide"]))
    if style == "valid":
        pad = (0, 0, 0, 0)
    elif style == "torch":
        ph = int(rng.integers(0, (kh - 1) * dh // 2 + 2))
        pw = int(rng.integers(0, (kw - 1) * dw // 2 + 2))
        pad = (ph, pw, ph, pw)
    elif style == "same":
        (pt, pb), (pl, pr) = same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw)
        pad = (pt, pl, pb, pr)
    else:
        pad = tuple(int(v) for v in rng.integers(0, 4, 4))
    attrs = dict(stride=(sh, sw), dilation=(dh, dw), padding=pad,
                 activation=str(rng.choice(["none", "relu", "relu6"])))
    return (h, w, kh, kw), attrs


def random_scales(rng, taps: int, channels: int, small: bool) -> dict:
    """Scales aimed so the accumulator's spread maps to ~40 output steps (x/÷ 3).

    small: the caller draws weights in [-2, 2] and inputs within 3 of the zero point,
    so the effective scale s_in*s_w/s_out exceeds 1 (the left-shift path) while the
    shifted accumulator still fits int32. Returns graph() keyword args + "spread".
    """
    spread = (3.0 if small else 75.0 * 73.0) * np.sqrt(taps)
    s_in = float(10 ** rng.uniform(-3, 0))
    s_w = 10 ** rng.uniform(-3, -1, channels)
    real = 40.0 / spread * 10 ** rng.uniform(-0.5, 0.5)
    return dict(s_in=s_in, zp_in=int(rng.integers(-128, 128)), s_w=s_w,
                s_out=s_in * float(np.mean(s_w)) / real, zp_out=int(rng.integers(-128, 128)),
                spread=spread)


def random_operands(rng, w_shape, x_shape, zp_in, small: bool):
    """int8 weights and an input batch; small: see random_scales."""
    if small:
        return (rng.integers(-2, 3, w_shape),
                np.clip(zp_in + rng.integers(-3, 4, x_shape), -128, 127).astype(np.int8))
    return rng.integers(-127, 128, w_shape), rng.integers(-128, 128, x_shape).astype(np.int8)


def _inplace_offsets(k, in_size: int, out_size: int) -> tuple[int, int]:
    """(input, output) offsets in one buffer, as planner.plan places an in-place layer."""
    align = lambda n: (n + 3) // 4 * 4                      # noqa: E731
    rel = {"pixels": -align(max(0, out_size - in_size)), "channels": 0,
           "window": -align(max(0, -k.inplace_offset)),
           "window_reverse": align(k.inplace_offset)}[k.inplace]
    in_off = max(0, -rel)
    return in_off, in_off + rel


def _render(cases, target: KernelOptions = KernelOptions(), inplace: bool = False) -> str:
    kernels, table = [], []
    scratch = max(choose(g, g.ops[0], target).scratch for g, _ in cases)
    for i, (g, _) in enumerate(cases):
        op = g.ops[0]
        k = choose(g, op, target)
        fn = f"case{i}_{op.type}"
        kernels.append(templating.render(f"ops/{k.template}.c.j2", fn=fn, prefix="t",
                                         **k.params))
        extra = ", scratch.bytes" if k.scratch else ""
        if inplace and k.inplace:
            in_off, out_off = _inplace_offsets(k, g.input.size, g.output.size)
            size = max(in_off + g.input.size, out_off + g.output.size)
            kernels.append("\n".join([
                f"static void {fn}_run(const int8_t *restrict in, int8_t *restrict out)",
                "{",
                f"    static union {{ int32_t align; int8_t bytes[{size}]; }} buf;",
                f"    memcpy(buf.bytes + {in_off}, in, {g.input.size});",
                f"    {fn}(buf.bytes + {in_off}, buf.bytes + {out_off}{extra});",
                f"    memcpy(out, buf.bytes + {out_off}, {g.output.size});",
                "}"]))
        else:
            kernels.append(f"static void {fn}_run(const int8_t *restrict in, int8_t *restrict out)"
                           f" {{ {fn}(in, out{extra}); }}")
        table.append(f"    {{{fn}_run, {g.input.size}, {g.output.size}}},")
    return "\n".join([
        "#include <stdint.h>", "#include <stdio.h>", "#include <stdlib.h>", "#include <string.h>",
        '#include "tinyds_common.h"', '#include "tinyds_dsp.h"', "",
        f"static union {{ int32_t align; int8_t bytes[{scratch}]; }} scratch;" if scratch else "",
        "",
        *kernels, "",
        "typedef void (*kernel_fn)(const int8_t *restrict, int8_t *restrict);",
        "static const struct { kernel_fn fn; size_t in_size, out_size; } cases[] = {",
        *table, "};", "",
        "/* stdin: per case, a uint32 vector count then the vectors; stdout: the outputs. */",
        "int main(void)",
        "{",
        "    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {",
        "        uint32_t n;",
        "        if (fread(&n, sizeof n, 1, stdin) != 1) return 1;",
        "        int8_t *in = malloc(cases[c].in_size), *out = malloc(cases[c].out_size);",
        "        if (!in || !out) return 1;",
        "        for (uint32_t v = 0; v < n; v++) {",
        "            if (fread(in, 1, cases[c].in_size, stdin) != cases[c].in_size) return 1;",
        "            cases[c].fn(in, out);",
        "            fwrite(out, 1, cases[c].out_size, stdout);",
        "        }",
        "        free(in);",
        "        free(out);",
        "    }",
        "    return 0;",
        "}", ""])


def _copy_headers(d: Path) -> None:
    for header in codegen.RUNTIME_HEADERS:
        shutil.copy(data_dir("templates") / header, d / header)


def _compile(src: str, build: str, cflags=()) -> Path:
    headers = "".join((data_dir("templates") / h).read_text() for h in codegen.RUNTIME_HEADERS)
    key = src + headers + build + repr(verify.BUILDS) + repr(tuple(cflags))
    d = CACHE / hashlib.sha256(key.encode()).hexdigest()[:24]
    exe = d / "kernels"
    if not exe.exists():
        d.mkdir(parents=True, exist_ok=True)
        (d / "kernels.c").write_text(src)
        _copy_headers(d)
        res = subprocess.run([verify.compiler(), *verify.CFLAGS, *verify.BUILDS[build],
                              *cflags, str(d / "kernels.c"), "-o", str(d / "tmp")],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[:4000]
        os.replace(d / "tmp", exe)
    return exe


def run_kernels(cases, sanitize=True, target: KernelOptions = KernelOptions(),
                inplace: bool = False, cflags=()) -> list[np.ndarray]:
    """cases: [(graph, x int8 batch)]; returns the C outputs shaped like reference.run.
    cflags: extra compiler flags (DSP_PATH)."""
    src = _render(cases, target, inplace)
    stdin = b"".join(np.uint32(len(x)).tobytes() + np.ascontiguousarray(x, np.int8).tobytes()
                     for _, x in cases)
    results = {}
    for build in (["release", "sanitize"] if sanitize else ["release"]):
        res = subprocess.run([str(_compile(src, build, cflags))], input=stdin, capture_output=True,
                             env={**os.environ, **verify.SANITIZER_ENV})
        assert res.returncode == 0, res.stderr.decode()[:4000]
        results[build] = np.frombuffer(res.stdout, np.int8)
    if sanitize:
        np.testing.assert_array_equal(results["sanitize"], results["release"])
    outs, pos = [], 0
    for g, x in cases:
        n = len(x) * g.output.size
        outs.append(results["release"][pos:pos + n].reshape(len(x), *g.output.shape[1:]))
        pos += n
    assert pos == results["release"].size
    return outs


def assert_c_matches_reference(cases, target: KernelOptions = KernelOptions(), inplace: bool = False,
                               cflags=()) -> None:
    """Every case's generated C output equals its op's integer reference, byte for byte."""
    for i, ((g, x), got) in enumerate(zip(cases, run_kernels(cases, target=target,
                                                            inplace=inplace, cflags=cflags))):
        op = g.ops[0]
        np.testing.assert_array_equal(got, ops.get(op.type).reference(g, op, x),
                                      err_msg=f"case {i}: {op.type} {op.attrs}")


# The fast kernels' inline assembly depends on GCC's register allocation at
# each optimisation level and core: compile them under every one users build with.
DSP_FLAGS = [[*ARM_FLAGS[:-1], opt] for opt in ("-O2", "-Os", "-Og", "-O0")] + [
    ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16", opt]
    for opt in ("-O2", "-Os")]


def arm_compiles(cases, target: KernelOptions = KernelOptions()) -> None:
    """Compile the kernels (no main) with arm-none-eabi-gcc, warning-free: for the
    Cortex-M4 at -O2, and with DSP kernels also at -Os/-Og/-O0 and for the M7."""
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    src = _render(cases, target)
    src = src[:src.index("/* stdin")].replace("static const struct", "const struct")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "k.c").write_text(src)
        _copy_headers(Path(tmp))
        for flags in DSP_FLAGS if target.dsp else [ARM_FLAGS]:
            res = subprocess.run(["arm-none-eabi-gcc", *verify.CFLAGS, *flags, "-c",
                                  str(Path(tmp, "k.c")), "-o", str(Path(tmp, "k.o"))],
                                 capture_output=True, text=True)
            assert res.returncode == 0, " ".join(flags) + "\n" + res.stderr[:4000]


def check_op(cases, *, tflm: bool = False, targets=(KernelOptions(),), inplace: bool = False,
             arm: bool = False) -> None:
    """An op's bit-exactness in one call, for [(one-layer graph, input batch)]: its integer
    reference (tinyds.reference) equals TensorFlow Lite Micro on the graph's export-tflite
    (tflm), and the generated C compiled on the host (-O2 and ASan+UBSan, every case in one
    program) equals the reference for each target's kernels (inplace: also over its input,
    laid out as the planner does), byte for byte; arm: the kernels also compile warning-free
    with arm-none-eabi-gcc. The QEMU half: mark the cases' function @oputil.qemu_cases(mcu)
    and compare the qemu_sweep fixture's outputs (assert_sweep_matches_reference)."""
    from tinyds import reference

    from oputil import tflm as run_tflm
    want = [reference.run(g, x) for g, x in cases]
    if tflm:
        for i, ((g, x), w) in enumerate(zip(cases, want)):
            np.testing.assert_array_equal(run_tflm(g, x), w, err_msg=f"case {i}: TFLM, "
                                          f"{g.ops[0].type} {g.ops[0].attrs}")
    for target in targets:
        for mode in (False, True) if inplace else (False,):
            got = run_kernels(cases, target=target, inplace=mode)
            for i, ((g, _), y, w) in enumerate(zip(cases, got, want)):
                np.testing.assert_array_equal(y, w, err_msg=f"case {i}: C for {target}"
                                              f"{' in place' if mode else ''}, "
                                              f"{g.ops[0].type} {g.ops[0].attrs}")
        if arm:
            arm_compiles(cases, target)


def assert_sweep_matches_reference(swept) -> None:
    """Every (graph, inputs, outputs) of a QEMU sweep equals its op's reference, byte for byte."""
    for i, (g, x, got) in enumerate(swept):
        op = g.ops[0]
        np.testing.assert_array_equal(got, ops.get(op.type).reference(g, op, x),
                                      err_msg=f"case {i}: {op.type} {op.attrs}")


def quantize(y_float, s_out, zp_out, act_min, act_max) -> np.ndarray:
    """Round-to-nearest float requantization: the independent check of the integer path."""
    return np.clip(np.round(y_float / np.float64(s_out)) + zp_out, act_min, act_max).astype(np.int64)
