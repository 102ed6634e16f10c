"""prelu: reference vs float, vs TFLite Micro itself, generated C vs reference and an
export/import round trip, with one slope, one per channel and a [1,1,C] alpha (negative
slopes included); and PyTorch's PReLU through every frontend."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.nn as nn

from test_avg_pool2d import act
from tinyds import reference
from tinyds.ir import Graph, Op, Tensor
from tinyds.requant import derive_int_params

sys.path.insert(0, str(Path(__file__).parents[1]))
from oputil import run_c, tflm  # noqa: E402

ALPHA_SHAPES = [(1,), (3,), (1, 1, 3)]


def prelu_graph(rng, alpha_shape, shape=(1, 5, 4, 3)):
    s_in = float(10 ** rng.uniform(-2, -0.5))
    s_a = float(10 ** rng.uniform(-3, -1.5))
    alpha = Tensor("alpha", alpha_shape, "int8",
                   data=rng.integers(-128, 128, alpha_shape).astype(np.int8),
                   scale=np.array([s_a], np.float32),
                   zero_point=np.array([int(rng.integers(-20, 20))], np.int64))
    t = {"x": act("x", shape, s_in, int(rng.integers(-128, 128))), "alpha": alpha,
         "y": act("y", shape, s_in * float(10 ** rng.uniform(-0.3, 0.3)), int(rng.integers(-60, 60)))}
    return derive_int_params(Graph("t", t, [Op("prelu", "act", ["x", "alpha"], ["y"], {})],
                                   ["x"], ["y"]))


def graphs(seed, n):
    rng = np.random.default_rng(seed)
    return [prelu_graph(rng, ALPHA_SHAPES[i % 3]) for i in range(n)]


def test_reference_within_one_lsb_of_float():
    rng = np.random.default_rng(100)
    exact = total = 0
    for g in graphs(101, 30):
        x = rng.integers(-128, 128, (32, 5, 4, 3)).astype(np.int8)
        (s_in, zp_in), (s_out, zp_out) = g.input.qparams, g.output.qparams
        a = g.tensors["alpha"]
        slope = ((a.data.astype(np.float64) - a.qparams[1]) * a.qparams[0]).reshape(-1)
        v = (x.astype(np.float64) - zp_in) * s_in
        want = np.clip(np.round(np.where(v >= 0, v, v * slope) / s_out) + zp_out, -128, 127)
        err = np.abs(reference.run(g, x) - want)
        assert err.max() <= 1
        exact += int((err == 0).sum())
        total += err.size
    assert exact / total > 0.95


def test_matches_tflite_micro_c_and_round_trip(tmp_path):
    from tinyds.export_tflite import write_tflite
    from tinyds.frontends.tflite import load_tflite

    rng = np.random.default_rng(102)
    for i, g in enumerate(graphs(103, 12)):
        x = rng.integers(-128, 128, (40, 5, 4, 3)).astype(np.int8)
        x[0], x[1] = -128, 127
        want = reference.run(g, x)
        np.testing.assert_array_equal(want, tflm(g, x), err_msg=str(g.tensors["alpha"].shape))
        np.testing.assert_array_equal(run_c(g, x), want)
        back = load_tflite(write_tflite(g, tmp_path / f"p{i}.tflite"))
        np.testing.assert_array_equal(reference.run(back, x), want)


@pytest.mark.parametrize("via", ["traced", "scripted", "pt2", "module"])
def test_pytorch_prelu(tmp_path, via):
    from test_frontends import _lower, assert_close

    m = nn.Sequential(nn.Conv2d(2, 4, 1), nn.PReLU(4), nn.Conv2d(4, 3, 1), nn.PReLU())
    m[1].weight.data = nn.init.uniform_(m[1].weight.data, -0.5, 0.5)
    g, m, x = _lower(m, (1, 2, 3, 3), tmp_path, via)
    assert [op.type for op in g.ops] == ["conv2d", "prelu", "conv2d", "prelu"]
    assert [g.tensors[op.inputs[1]].shape for op in g.ops if op.type == "prelu"] == [(4,), (1,)]
    assert_close(g, m, x * 3)
