"""concatenation: reference vs PyTorch's cat, vs TFLite Micro itself, generated C vs
reference, along channels, H, W and a flat axis, of inputs of different sizes; and the
quantizer giving every input the output's scale and zero point (TFLM copies bytes).

The inputs come from one graph input through a max pool (which keeps x's params) and
reshapes (which share x's bytes), so every operand has the output's quantization.
"""
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

sys.path.insert(0, str(Path(__file__).parents[1]))
from oputil import run_c, tflm  # noqa: E402

X = (1, 2, 6, 4)
CASES = {   # axis: (operand names, output shape)
    3: (["r", "p", "r"], (1, 2, 3, 20)),
    2: (["x", "p"], (1, 2, 9, 4)),
    1: (["p", "t"], (1, 6, 3, 4)),
    "flat": (["pf", "xf", "pf"], (1, 96)),
}


def cat_graph(case, q):
    shapes = {"x": X, "p": (1, 2, 3, 4), "r": (1, 2, 3, 8), "t": (1, 4, 3, 4), "pf": (1, 24),
              "xf": (1, 48)}
    names, y_shape = CASES[case]
    t = {n: act(n, s, *q) for n, s in shapes.items()}
    t["y"] = act("y", y_shape, *q)
    ops = [Op("max_pool2d", "pool", ["x"], ["p"], dict(kernel=(1, 2), stride=(1, 2),
                                                      padding=(0, 0, 0, 0), activation="none"))]
    ops += [Op("reshape", f"view_{n}", [src], [n], dict(shape=shapes[n]))
            for n, src in (("r", "x"), ("t", "x"), ("pf", "p"), ("xf", "x"))]
    ops.append(Op("concatenation", "cat", names, ["y"], dict(axis=1 if case == "flat" else case)))
    return Graph("t", t, ops, ["x"], ["y"])


@pytest.mark.parametrize("case", list(CASES))
def test_reference_is_torch_cat(case):
    rng = np.random.default_rng(80)
    g = cat_graph(case, (0.05, int(rng.integers(-128, 128))))
    x = rng.integers(-128, 128, (20, *X[1:])).astype(np.int8)
    vals = reference.run_all(g, x)
    names = g.ops[-1].inputs
    nchw = [torch.tensor(vals[n]).permute(0, 3, 1, 2) if vals[n].ndim == 4 else torch.tensor(vals[n])
            for n in names]
    want = torch.cat(nchw, dim={3: 1, 2: 3, 1: 2, "flat": 1}[case])
    want = want.permute(0, 2, 3, 1) if want.ndim == 4 else want
    np.testing.assert_array_equal(vals["y"], want.numpy())


@pytest.mark.parametrize("case", list(CASES))
def test_matches_tflite_micro(case):
    rng = np.random.default_rng(81)
    g = cat_graph(case, (0.02, int(rng.integers(-128, 128))))
    x = rng.integers(-128, 128, (30, *X[1:])).astype(np.int8)
    np.testing.assert_array_equal(reference.run(g, x), tflm(g, x))


@pytest.mark.parametrize("case", list(CASES))
def test_generated_c_matches_reference(case):
    rng = np.random.default_rng(82)
    g = cat_graph(case, (0.02, 3))
    x = rng.integers(-128, 128, (200, *X[1:])).astype(np.int8)
    np.testing.assert_array_equal(run_c(g, x), reference.run(g, x))


class Branches(nn.Module):
    """Three branches of different ranges (one through a max pool) concatenated on channels."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 5, 1)
        self.c = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.head = nn.Conv2d(12, 6, 1)

    def forward(self, x):
        y = torch.cat([torch.relu(self.a(x)), 4 * self.b(x), self.pool(self.c(x))], dim=1)
        return self.head(y)


def test_quantizer_gives_the_inputs_the_outputs_params_and_tflm_agrees():
    pytest.importorskip("tflite_micro")
    torch.manual_seed(0)
    model, x = Branches().eval(), torch.randn(64, 2, 7, 5)
    g = passes.optimize(frontends.from_module(model, x[:1]))
    qg, report = quantize.quantize(g, x.permute(0, 2, 3, 1).numpy())
    cat = next(op for op in qg.ops if op.type == "concatenation")
    params = {qg.tensors[n].qparams for n in cat.inputs + cat.outputs}
    assert len(params) == 1
    pool_in = next(op for op in qg.ops if op.type == "max_pool2d").inputs[0]
    assert qg.tensors[pool_in].qparams in params      # tied through the pool
    assert report.snr_db > 25
    xq = quantize.quantize_input(qg, x.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(reference.run(qg, xq), tflm(qg, xq))


def test_concatenating_a_sigmoid_output_with_another_range_is_refused():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 3, 1)

        def forward(self, x):
            y = self.a(x)
            return torch.cat([torch.sigmoid(y), y * 3], dim=1)

    g = passes.optimize(frontends.from_module(M().eval(), torch.randn(1, 2, 4, 4)))
    with pytest.raises(TinydsError, match="concatenation input .* has fixed quantization"):
        quantize.quantize(g, np.random.default_rng(0).standard_normal((16, 4, 4, 2)).astype(np.float32))
