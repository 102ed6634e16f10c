"""add: reference vs float, vs TFLite Micro itself, and generated C vs reference.

A one-input graph feeds the add two different operands: a 3x3 max pool of x (x's
quantization) and x itself seen through a reshape that gives it other
quantization parameters (a reshape shares bytes in C and in TFLite).
"""
import numpy as np
import pytest

from test_avg_pool2d import act
from tinyds import kernels, reference, targets
from tinyds.errors import TinydsError
from tinyds.kernels import KernelOptions
from tinyds.ir import Graph, Op
from tinyds.ops import add
from tinyds.requant import derive_int_params
from oputil import qemu_cases, run_c, tflm


def add_graph(shape, q_a, q_b, q_out, activation="none"):
    t = {"x": act("x", shape, *q_a), "a": act("a", shape, *q_a), "b": act("b", shape, *q_b),
         "y": act("y", shape, *q_out)}
    ops = [Op("max_pool2d", "pool", ["x"], ["a"], dict(kernel=(3, 3), stride=(1, 1),
                                                       padding=(1, 1, 1, 1), activation="none")),
           Op("reshape", "view", ["x"], ["b"], dict(shape=shape)),
           Op("add", "residual", ["a", "b"], ["y"], dict(activation=activation))]
    return derive_int_params(Graph("t", t, ops, ["x"], ["y"]))


def random_graph(rng, shape=(1, 5, 4, 3)):
    s_a = float(10 ** rng.uniform(-2, 0))
    s_b = s_a * float(10 ** rng.uniform(-1.5, 1.5)) if rng.random() < 0.8 else s_a
    s_out = (s_a + s_b) * float(10 ** rng.uniform(-0.3, 0.5))
    zp = lambda: int(rng.integers(-128, 128))  # noqa: E731
    return add_graph(shape, (s_a, zp()), (s_b, zp()), (s_out, zp()),
                     str(rng.choice(["none", "relu", "relu6"])))


def test_reference_within_one_lsb_of_float():
    rng = np.random.default_rng(20)
    exact = total = 0
    for _ in range(30):
        g = random_graph(rng)
        x = rng.integers(-128, 128, (64, 5, 4, 3)).astype(np.int8)
        vals = reference.run_all(g, x)
        (s_a, zp_a), (s_b, zp_b), (s_y, zp_y) = (g.tensors[n].qparams for n in "aby")
        real = (vals["a"].astype(np.float64) - zp_a) * s_a + (vals["b"].astype(np.float64) - zp_b) * s_b
        op = g.ops[2]
        want = np.clip(np.round(real / s_y) + zp_y, op.attrs["act_min"], op.attrs["act_max"])
        err = np.abs(vals["y"] - want)
        assert err.max() <= 1
        exact += int((err == 0).sum())
        total += err.size
    assert exact / total > 0.98


def test_matches_tflite_micro():
    rng = np.random.default_rng(21)
    for _ in range(10):
        g = random_graph(rng)
        x = rng.integers(-128, 128, (30, 5, 4, 3)).astype(np.int8)
        np.testing.assert_array_equal(reference.run(g, x), tflm(g, x))


@pytest.mark.parametrize("optimize", ["speed", "size"])
def test_generated_c_matches_reference(optimize):
    """Both kernels: "speed" reads the operand rescales from tables, "size" computes them."""
    rng = np.random.default_rng(22)
    target = KernelOptions(optimize=optimize)
    for shape in [(1, 5, 4, 3), (1, 7, 3, 9), (1, 1, 1, 1), (1, 16, 16, 1)]:
        g = random_graph(rng, shape)
        x = rng.integers(-128, 128, (256, *shape[1:])).astype(np.int8)
        x[0], x[1] = -128, 127
        if shape == (1, 16, 16, 1):          # every pair of int8 operand values
            x[2] = np.arange(-128, 128).reshape(shape[1:])
        kernel = kernels.choose(g, g.ops[2], target)
        assert ("table1" in kernel.params) == (optimize == "speed")
        np.testing.assert_array_equal(run_c(g, x, target=target), reference.run(g, x))


def table_cases():
    rng = np.random.default_rng(24)
    cases = []
    for shape in [(1, 16, 16, 1), (1, 3, 5, 8)]:
        g = random_graph(rng, shape)
        x = rng.integers(-128, 128, (40, *shape[1:])).astype(np.int8)
        x[0] = -128
        x[1] = 127
        cases.append((g, x))
    return cases


TABLE_CASES = {mcu: qemu_cases(mcu)(lambda: table_cases()) for mcu in ("stm32f4", "cortex-m0plus")}


@pytest.mark.slow
@pytest.mark.parametrize("mcu", ["stm32f4", "cortex-m0plus"])
def test_table_kernel_on_qemu(qemu_sweep, mcu):
    """The table kernel as generate builds it: SMMULR on the M4, the C product on the M0+."""
    for g, x, got in qemu_sweep(TABLE_CASES[mcu]):
        assert "table1" in kernels.choose(g, g.ops[2], KernelOptions.for_target(targets.get(mcu))).params
        np.testing.assert_array_equal(got, reference.run(g, x))


def test_tables_fall_back_when_flash_is_short(monkeypatch):
    """An MCU whose flash cannot hold the tables gets the computed ADD."""
    import dataclasses

    from tinyds import codegen
    g = random_graph(np.random.default_rng(25))
    _, lib = codegen.render_for_mcu(g, "m", targets.get("stm32f4"))
    assert "table1" in lib.kernels[2].params
    need = codegen.flash_need(lib) + targets.RUNTIME_FLASH_BYTES
    tight = dataclasses.replace(targets.get("stm32f4"), flash=need - 1)
    _, fell = codegen.render_for_mcu(g, "m", tight)
    assert "table1" not in fell.kernels[2].params
    assert fell.weight_bytes == lib.weight_bytes - 2048


def test_shapes_that_do_not_broadcast_are_rejected():
    g = add_graph((1, 2, 2, 3), (0.1, 0), (0.1, 0), (0.2, 0))
    g.tensors["b"].shape = (1, 1, 1, 2)
    with pytest.raises(TinydsError, match=r"add of shapes \(1, 2, 2, 3\) and \(1, 1, 1, 2\)"):
        add.c_params(g, g.ops[2])
