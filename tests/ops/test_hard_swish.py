"""hard_swish: reference vs PyTorch, vs TFLite Micro itself, and generated C vs reference,
over every int8 input value, with scales that take each shift branch (reluish left
shift, none, right shift)."""
import numpy as np
import pytest
import torch.nn.functional as F

from test_leaky_relu import ALL_INT8, assert_within_one_lsb, unary_graph
from tinyds.errors import TinydsError


def random_graph(rng):
    s_in, zp_in = float(10 ** rng.uniform(-3.2, -0.3)), int(rng.integers(-128, 128))
    # hardswish's output range is about [-0.375, max(x)]: output scales near the input's
    s_out = s_in * float(10 ** rng.uniform(-0.4, 0.2))
    return unary_graph("hard_swish", (s_in, zp_in), (s_out, int(rng.integers(-128, 0))))


def graphs(seed, n):
    rng = np.random.default_rng(seed)
    gs = [random_graph(rng) for _ in range(n)]
    assert {np.sign(g.ops[0].attrs["reluish_shift"]) for g in gs} == {-1, 0, 1}
    return gs


def test_reference_within_one_lsb_of_pytorch():
    assert_within_one_lsb(graphs(40, 40), lambda g: F.hardswish, 0.9)


def test_tflite_micro_and_generated_c_match_the_reference(opkit):
    opkit.check_op([(g, ALL_INT8) for g in graphs(41, 30) + graphs(42, 30)], tflm=True)


def test_output_scale_far_below_the_input_scale_is_refused():
    with pytest.raises(TinydsError, match="hardswish output scale"):
        unary_graph("hard_swish", (1.0, 0), (1e-4, 0))


def test_clang_compiles_the_kernels_without_warnings(tmp_path):
    """clang (unlike GCC) warns about an unused static function: a hardswish whose reluish
    shift is <= 0 calls no saturating shift, and a logistic no softmax reciprocal."""
    import shutil
    import subprocess

    from tinyds import codegen
    from tinyds.ir import Op
    from tinyds.requant import derive_int_params

    if shutil.which("clang") is None:
        pytest.skip("clang not installed")
    g = unary_graph("hard_swish", (0.002, 0), (0.002, 0))
    assert g.ops[0].attrs["reluish_shift"] <= 0
    g.tensors["z"] = unary_graph("logistic", (0.1, 0), (1 / 256, -128)).tensors["y"]
    g.tensors["z"].name = "z"
    g.ops.append(Op("logistic", "sigmoid", ["y"], ["z"], {}))
    g.outputs = ["z"]
    files, _ = codegen.render_library(derive_int_params(g), "t")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    res = subprocess.run(["clang", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-c",
                          str(tmp_path / "t.c"), "-o", str(tmp_path / "t.o")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
