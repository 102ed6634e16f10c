"""A MobileNetV3-small-style net (hardswish, squeeze-excite: global mean -> 1x1 conv ->
ReLU -> 1x1 conv -> hardsigmoid -> broadcast MUL) end to end: TFLite Micro runs tinyds's
`export-tflite` of it and agrees with the generated C (host) on every output byte, and the
exported .tflite imports back to a graph whose reference gives the same bytes.
(test_tflm_referee compares every intermediate tensor of the same export.)"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from tinyds import frontends, passes, quantize, reference, targets
from tinyds.export_tflite import export_tflite
from tinyds.frontends.tflite import load_tflite

sys.path.insert(0, str(Path(__file__).parent))
from oputil import in_parallel, run_c, tflm  # noqa: E402

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                              reason="TFLM referee needs `pip install --pre tflite-micro`")


@pytest.fixture(scope="module")
def mnv3(tmp_path_factory):
    model, x = models.build("mobilenet_v3")
    path = models.save_pt2(model, x, tmp_path_factory.mktemp("mnv3") / "mnv3.pt2")
    calib = models.inputs("mobilenet_v3", 64).permute(0, 2, 3, 1).numpy()
    qg, _ = quantize.quantize(passes.optimize(frontends.load(path)), calib)
    rng = np.random.default_rng(5)
    xs = np.concatenate([quantize.quantize_input(qg, calib),
                         rng.integers(-128, 128, (100, *qg.input.shape[1:]), dtype=np.int8)])
    return qg, xs


def test_has_the_mobilenet_v3_ops(mnv3):
    qg, _ = mnv3
    types = [op.type for op in qg.ops]
    assert types.count("hard_swish") == 7 and types.count("mean") == 4
    gates = [op for op in qg.ops if op.type == "mul" and not any(
        qg.tensors[n].is_const for n in op.inputs)]
    assert len(gates) == 3                                  # one per SE block
    for op in gates:                                        # [1,H,W,C] x [1,1,1,C]
        a, b = (qg.tensors[n].shape for n in op.inputs)
        assert a[3] == b[3] and b[1:3] == (1, 1) and a[1:3] != (1, 1)
    hardsigmoid_adds = [op for op in qg.ops if op.type == "add" and op.attrs["activation"] == "relu6"]
    assert len(hardsigmoid_adds) == 3


def test_generated_c_equals_tflm(mnv3):
    qg, xs = mnv3
    got = run_c(qg, xs, sanitize=False)
    np.testing.assert_array_equal(got, tflm(qg, xs))
    np.testing.assert_array_equal(got, reference.run(qg, xs))
    assert len(np.unique(got.argmax(axis=1))) > 1           # outputs depend on the input


def test_exported_tflite_imports_back(mnv3, tmp_path):
    qg, xs = mnv3
    path = tmp_path / "mnv3.tflite"
    path.write_bytes(export_tflite(qg))
    np.testing.assert_array_equal(reference.run(load_tflite(path), xs), reference.run(qg, xs))


QEMU_CORES = ["stm32f4", "rp2040"]


@pytest.fixture(scope="module")
def qemu_runs(zoo_files, tmp_path_factory):
    """generate from the .pt2 for each core, then verify_qemu on it; the verifications run
    side by side (they wait on the compiler and QEMU)."""
    import tinyds
    from tinyds.firmware import verify_qemu

    calib = models.inputs("mobilenet_v3", 32).numpy()
    outs = {mcu: tinyds.convert(zoo_files("mobilenet_v3")["pt2"], calib, mcu=mcu,
                                out=tmp_path_factory.mktemp(mcu) / "out",
                                log=lambda *a: None).out_dir for mcu in QEMU_CORES}
    return in_parallel({mcu: lambda mcu=mcu: verify_qemu(outs[mcu], n_random=20)
                        for mcu in QEMU_CORES})


@pytest.mark.slow
@pytest.mark.parametrize("mcu", QEMU_CORES)
def test_qemu_verify_is_bit_exact(qemu_runs, mcu):
    """generate + verify on the emulated core: the M4's fast convolutions interleaved with
    the new element-wise kernels, and the M0+'s narrow-multiply requantization."""
    q = qemu_runs[mcu]()
    assert q.ok, q.text()


def test_inspect_and_weight_blob_see_the_constant_operands(mnv3):
    """`tinyds inspect`'s stand-in quantization reads hardsigmoid's constants, and the
    weight blob (MicroPython natmod) moves them like every other constant array."""
    from tinyds import analyze, codegen

    class SEConcat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.se = models.SqueezeExcite(8, 4)
            self.head = torch.nn.Conv2d(11, 4, 1)

        def forward(self, x):
            return self.head(torch.cat([self.se(self.conv(x)), x], dim=1))

    g = passes.optimize(frontends.from_module(SEConcat().eval(), torch.randn(1, 3, 8, 8)))
    a = analyze.analyze(g, targets.get("stm32f4"))
    assert a.fits and [layer.op for layer in a.layers].count("mul") == 2
    qg, _ = mnv3
    files, _ = codegen.render_library(qg, "t")
    blob_arrays = re.findall(r"^#define (\w+) T_W\(", files["t.c"], flags=re.M)
    assert sum(name.endswith("_input2") for name in blob_arrays) == 6     # 3 x (+3, 1/6)
