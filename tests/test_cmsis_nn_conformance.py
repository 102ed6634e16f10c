"""Arm's CMSIS-NN s8 unit-test vectors (TFLite BUILTIN_REF outputs) through our reference.

The vectors give integer multipliers/shifts directly, so each case is built as a
quantized Graph with those attrs set and no float scale is involved: this checks
the integer kernels alone against an implementation nobody here wrote.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from oputil import qemu_cases, run_c_cases
from tinyds import reference
from tinyds.ir import Graph, Op, Tensor
from tinyds.kernels import KernelOptions, choose

FIXTURE = Path(__file__).parent / "fixtures" / "cmsis_nn"
CASES = json.loads((FIXTURE / "cmsis_nn_s8.json").read_text())
ARRAYS = np.load(FIXTURE / "cmsis_nn_s8.npz")
ONE = np.ones(1, np.float32)  # placeholder scale: nothing below derives params from scales


def _act(name, shape, zp, scale=ONE):
    return Tensor(name, (1, *shape[1:]), "int8", scale=scale,
                  zero_point=np.array([zp], np.int64))


def build_graph(case: str) -> Graph:
    """One CMSIS-NN case as a quantized Graph (batch 1 in the IR, N fed at run time)."""
    c = CASES[case]
    x = _act(f"{case}_input", ARRAYS[c["input"]].shape, c["input_zp"])
    g = Graph(case, {x.name: x}, [], [x.name], [])
    prev = x.name
    for layer in c["layers"]:
        out_scale = np.array([1 / 256], np.float32) if layer["op"] == "softmax" else ONE
        y = g.add_tensor(_act(layer["name"] + "_out", layer["output_shape"], layer["output_zp"],
                              out_scale))
        attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in layer["attrs"].items()}
        inputs = [prev]
        if "weights" in layer:
            w = ARRAYS[layer["weights"]]
            axis = 3 if layer["op"] == "depthwise_conv2d" else 0
            g.add_tensor(Tensor(layer["weights"], w.shape, "int8", data=w,
                                scale=np.ones(w.shape[axis], np.float32),
                                zero_point=np.full(w.shape[axis], layer["weight_zp"], np.int64),
                                axis=axis))
            inputs.append(layer["weights"])
            if layer["bias"] is None:
                inputs.append("")
            else:
                b = ARRAYS[layer["bias"]]
                g.add_tensor(Tensor(layer["bias"], b.shape, "int32", data=b,
                                    scale=np.ones(b.shape[0], np.float32),
                                    zero_point=np.zeros(b.shape[0], np.int64), axis=0))
                inputs.append(layer["bias"])
            attrs["multiplier"] = ARRAYS[layer["multiplier"]].astype(np.int32)
            attrs["shift"] = ARRAYS[layer["shift"]].astype(np.int32)
        g.ops.append(Op(layer["op"], layer["name"], inputs, [y.name], attrs))
        prev = y.name
    g.outputs = [prev]
    return g


def test_fixture_holds_every_folder():
    groups = {}
    for c in CASES.values():
        groups[c["group"]] = groups.get(c["group"], 0) + 1
    assert groups == {"depthwise": 14, "conv1x1": 5, "fully_connected": 7, "avgpool": 6,
                      "network": 2}
    assert [l["op"] for l in CASES["ds_cnn_s"]["layers"]] == (
        ["conv2d"] + ["depthwise_conv2d", "conv2d"] * 4
        + ["avg_pool2d", "reshape", "fully_connected", "softmax"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_matches_cmsis_nn(case):
    g = build_graph(case)
    got = reference.run(g, ARRAYS[CASES[case]["input"]])
    want = ARRAYS[CASES[case]["expected"]]
    assert got.dtype == np.int8 and got.shape == want.shape
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"{case}: {len(bad)}/{want.size} bytes differ, first at "
                           f"{tuple(bad[0])}: got {got[tuple(bad[0])]} want {want[tuple(bad[0])]}")


@pytest.fixture(scope="module")
def host_outputs():
    """{dsp: {case: outputs}}: every case's generated C on the host, all cases in one
    program per kernel choice."""
    names = sorted(CASES)
    cases = [(build_graph(c), ARRAYS[CASES[c]["input"]]) for c in names]
    return {dsp: dict(zip(names, run_c_cases(cases, target=KernelOptions(dsp=dsp))))
            for dsp in (False, True)}


@pytest.mark.parametrize("dsp", [False, True], ids=["portable", "fast"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_c_matches_cmsis_nn(case, dsp, host_outputs):
    """The portable kernels, and the fast ones (through their C twins) where they apply."""
    np.testing.assert_array_equal(host_outputs[dsp][case], ARRAYS[CASES[case]["expected"]],
                                  err_msg=case)


def test_fast_kernels_take_most_conformance_layers():
    """The fast-kernel sweep above is not vacuous: most conv/depthwise folders use them."""
    fast = [choose(g, op, KernelOptions(dsp=True)).int16_weights for g in map(build_graph, CONV_CASES)
            for op in g.ops if op.type in ("conv2d", "depthwise_conv2d")]
    assert sum(fast) >= len(fast) // 2, f"{sum(fast)} of {len(fast)}"


CONV_CASES = sorted(k for k, c in CASES.items() if c["group"] in ("depthwise", "conv1x1", "network"))


def _qemu_case(case):
    return qemu_cases("stm32f4")(lambda: [(build_graph(case), ARRAYS[CASES[case]["input"]])])


QEMU_CASES = {case: _qemu_case(case) for case in CONV_CASES}


@pytest.mark.slow
@pytest.mark.parametrize("case", CONV_CASES)
def test_generated_c_matches_cmsis_nn_in_qemu(case, qemu_sweep):
    """The conv / depthwise kernels cross-built for Cortex-M4 (the fast kernels where
    they apply, as generate picks them) and run in QEMU."""
    [(_, _, got)] = qemu_sweep(QEMU_CASES[case])
    want = ARRAYS[CASES[case]["expected"]]
    np.testing.assert_array_equal(got.reshape(want.shape), want, err_msg=case)
