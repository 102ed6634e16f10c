"""transpose: reference vs PyTorch's permute, vs TFLite Micro itself, generated C vs
reference, for every permutation of a 4-D tensor's non-batch dims and of a 3-D one; and a
PyTorch net with permutes quantized, exported and run by TFLM like the reference."""
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from test_avg_pool2d import act
from tinyds import frontends, passes, quantize, reference
from tinyds.errors import TinydsError
from tinyds.ir import Graph, Op
from tinyds.ops import transpose

sys.path.insert(0, str(Path(__file__).parents[1]))
from oputil import run_c, tflm  # noqa: E402

PERMS = [(0, *p) for p in itertools.permutations((1, 2, 3))] + [(0, 2, 1)]


def transpose_graph(perm, q=(0.03, 5)):
    shape = (1, 2, 3, 5) if len(perm) == 4 else (1, 4, 7)
    y_shape = tuple(shape[p] for p in perm)
    return Graph("t", {"x": act("x", shape, *q), "y": act("y", y_shape, *q)},
                 [Op("transpose", "perm", ["x"], ["y"], dict(perm=perm))], ["x"], ["y"])


@pytest.mark.parametrize("perm", PERMS)
def test_reference_is_torch_permute_and_matches_tflm_and_c(perm, tmp_path):
    from tinyds.export_tflite import write_tflite
    from tinyds.frontends.tflite import load_tflite

    g = transpose_graph(perm)
    rng = np.random.default_rng(90)
    x = rng.integers(-128, 128, (40, *g.input.shape[1:])).astype(np.int8)
    got = reference.run(g, x)
    np.testing.assert_array_equal(got, torch.tensor(x).permute(*perm).numpy())
    np.testing.assert_array_equal(got, tflm(g, x))
    np.testing.assert_array_equal(run_c(g, x), got)
    back = load_tflite(write_tflite(g, tmp_path / "t.tflite"))
    np.testing.assert_array_equal(reference.run(back, x), got)


def test_moving_the_batch_dim_is_refused():
    g = transpose_graph((1, 0, 2, 3))
    with pytest.raises(TinydsError, match=r"transpose \(1, 0, 2, 3\) of a 4-D tensor"):
        transpose.c_params(g, g.ops[0])


class Permuted(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 4, 1), nn.Conv2d(6, 3, 1)

    def forward(self, x):
        y = torch.relu(self.a(x)).permute(0, 3, 2, 1)      # W=6 becomes the channels
        return self.b(y).transpose(1, 3).mean((2, 3))


def test_quantized_net_with_permutes_matches_tflm():
    pytest.importorskip("tflite_micro")
    torch.manual_seed(0)
    model, x = Permuted().eval(), torch.randn(48, 2, 5, 6)
    g = passes.optimize(frontends.from_module(model, x[:1]))
    qg, report = quantize.quantize(g, x.permute(0, 2, 3, 1).numpy())
    assert [op.type for op in qg.ops].count("transpose") == 2 and report.snr_db > 25
    for op in qg.ops:
        if op.type == "transpose":
            assert qg.tensors[op.inputs[0]].qparams == qg.tensors[op.outputs[0]].qparams
    xq = quantize.quantize_input(qg, x.permute(0, 2, 3, 1).numpy())
    theirs = tflm(qg, xq)
    np.testing.assert_array_equal(reference.run(qg, xq), theirs)
    np.testing.assert_array_equal(run_c(qg, xq, sanitize=False), theirs)
