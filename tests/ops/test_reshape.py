"""reshape: the reference keeps the bytes in order, and in C it costs nothing: the
planner shares the buffer and no kernel is emitted."""
import sys
from pathlib import Path

import numpy as np

from test_avg_pool2d import act, pool_graph
from tinyds import codegen, reference
from tinyds.ir import Op
from tinyds.ops import reshape

sys.path.insert(0, str(Path(__file__).parents[1]))
from oputil import run_c  # noqa: E402


def test_reference_is_a_row_major_reshape():
    g = pool_graph((1, 4, 4, 3), (2, 2), (2, 2), (0, 0, 0, 0), op_type="max_pool2d")
    g.tensors["flat"] = act("flat", (1, 12), *g.output.qparams)
    g.ops.append(Op("reshape", "flatten", ["y"], ["flat"], dict(shape=(1, 12))))
    g.outputs = ["flat"]
    x = np.arange(96, dtype=np.int8).reshape(2, 4, 4, 3) - 48
    pooled = reference.run_all(g, x)["y"]
    got = reshape.reference(g, g.ops[1], pooled)
    assert got.shape == (2, 12)
    np.testing.assert_array_equal(got, pooled.reshape(2, -1))
    assert reshape.macs(g, g.ops[1]) == 0 and reshape.c_params(g, g.ops[1]) == {}


def test_generated_c_has_no_kernel_and_matches_reference():
    g = pool_graph((1, 6, 6, 2), (3, 3), (3, 3), (0, 0, 0, 0), op_type="max_pool2d")
    g.tensors["flat"] = act("flat", (1, 8), *g.output.qparams)
    g.ops.append(Op("reshape", "flatten", ["y"], ["flat"], dict(shape=(1, 8))))
    g.outputs = ["flat"]
    files, _ = codegen.render_library(g, "t")
    assert "reshape" not in "".join(line for line in files["t.c"].splitlines()
                                    if line.strip().startswith("static void"))
    x = np.random.default_rng(50).integers(-128, 128, (64, 6, 6, 2)).astype(np.int8)
    np.testing.assert_array_equal(run_c(g, x), reference.run(g, x))
