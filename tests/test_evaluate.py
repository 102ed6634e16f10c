"""`tinyds eval`: every figure checked against a hand count on ten samples.

The model passes the first three of four inputs through as its logits (Linear with an
identity block), so each prediction is the argmax of the first three numbers in a row.
Calibration spans [-1, 1]: the input scale is 2/255, so 0.5 and 0.502 become the same
int8 value and the int8 model picks the first of the tie where the float one picks the
second."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from tinyds import quantize, reference

from test_cli import assert_one_line_error, run

X = np.array([
    #   x0     x1    x2    x3    label   float pred   int8 pred
    [0.9, 0.1, 0.0, 0.0],     # 0    0            0
    [0.1, 0.8, 0.0, 0.0],     # 1    1            1
    [0.0, 0.2, 0.7, 0.0],     # 2    2            2
    [0.6, 0.1, 0.2, 0.0],     # 2    0            0
    [0.5, 0.502, 0.0, 0.0],   # 1    1            0  (tie in int8)
    [-0.3, -0.2, -0.9, 0.0],  # 1    1            1
    [1.5, 0.0, 0.0, 2.0],     # 0    0            0  (two inputs beyond the range)
    [0.0, 0.0, 0.3, -3.0],    # 2    2            2  (one input beyond the range)
    [0.2, 0.9, 0.1, 0.0],     # 0    1            1
    [0.0, 0.1, 0.95, 0.0],    # 2    2            2
], np.float32).reshape(10, 1, 2, 2)
Y = np.array([0, 1, 2, 2, 1, 1, 0, 2, 0, 2])


class PassThrough(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(3, 4))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    torch.jit.save(torch.jit.trace(PassThrough().eval(), torch.zeros(1, 1, 2, 2)), str(d / "m.pt"))
    rng = np.random.default_rng(0)
    calib = np.concatenate([np.full((1, 1, 2, 2), 1.0), np.full((1, 1, 2, 2), -1.0),
                            rng.uniform(-1, 1, (30, 1, 2, 2))]).astype(np.float32)
    np.save(d / "calib.npy", calib)
    np.savez(d / "test.npz", x=X, y=Y)
    np.save(d / "x.npy", X)
    np.save(d / "onehot.npy", np.eye(3, dtype=np.float32)[Y])
    return d


def test_figures_match_a_hand_count(files, capsys):
    rc, stdout, err = run(capsys, "eval", files / "m.pt", "--data", files / "test.npz",
                          "--calib", files / "calib.npy")
    assert rc == 0, err
    lines = stdout.splitlines()
    assert lines[0] == "10 labelled samples, 3 classes"
    assert lines[1] == "top-1 accuracy: float 80.00%, int8 reference 70.00%"
    assert lines[2].startswith("float vs int8 on this data: top-1 agreement 90.00%, output SNR")
    assert lines[3] == "clipping: 7.50% of input values outside the calibrated input range"
    per_class = lines[lines.index("per class    float     int8  samples") + 1:][:3]
    assert [ln.split() for ln in per_class] == [
        ["0", "66.67%", "66.67%", "3"],
        ["1", "100.00%", "66.67%", "3"],
        ["2", "75.00%", "75.00%", "4"]]
    confusion = lines[-3:]
    assert [ln.split() for ln in confusion] == [["0", "2", "1", "0"], ["1", "1", "2", "0"],
                                               ["2", "1", "0", "3"]]


def test_snr_is_the_output_error_on_the_test_data(files):
    from tinyds import evaluate
    from tinyds.api import quantize_model
    q = quantize_model(str(files / "m.pt"), calib=str(files / "calib.npy"), log=lambda s: None)
    x = X.transpose(0, 2, 3, 1)
    ev = evaluate.evaluate(q.float_graph, q.qg, x, Y)
    f = X.reshape(10, 4)[:, :3].astype(np.float64)      # the model's float output, by hand
    s, zp = q.qg.output.qparams
    dq = (reference.run(q.qg, quantize.quantize_input(q.qg, x)).astype(np.float64) - zp) * s
    assert ev.snr_db == pytest.approx(10 * np.log10((f ** 2).sum() / ((f - dq) ** 2).sum()))
    assert ev.input_clipped == 3 / 40
    assert list(ev.confusion().sum(axis=0)) == [4, 3, 3]          # predicted 0, 1, 2
    d = ev.to_dict()
    assert d["accuracy"] == {"float": 80.0, "int8_reference": 70.0, "c": None}


def test_generated_c_is_evaluated_too(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "generate", files / "m.pt", "--calib", files / "calib.npy", "--mcu",
               "cortex-m4", "-o", out)[0] == 0
    rc, stdout, err = run(capsys, "eval", files / "m.pt", "--data", files / "x.npy", "--labels",
                          files / "onehot.npy", "--out", out)
    assert rc == 0, err
    assert ("top-1 accuracy: float 80.00%, int8 reference 70.00%, generated C 70.00% "
            "(10 of 10 outputs byte-identical to the reference)") in stdout
    assert "per class    float     int8        C  samples" in stdout
    rc, _, err = run(capsys, "eval", files / "m.pt", "--data", files / "test.npz", "--out", out,
                     "--calib", files / "calib.npy")
    assert_one_line_error(rc, err, "drop --calib")


def test_synthetic_calibration_marks_every_figure(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "generate", files / "m.pt", "--calib", "synthetic", "-o", out)[0] == 0
    for where in (["--calib", "synthetic"], ["--out", out]):
        rc, stdout, _ = run(capsys, "eval", files / "m.pt", "--data", files / "test.npz", *where)
        assert rc == 0
        lines = stdout.splitlines()
        summary = lines[1:4] + [ln for ln in lines if ln.startswith("confusion")]
        assert all("SYNTHETIC" in ln for ln in summary), stdout


@pytest.mark.parametrize("argv, words", [
    (["--data", "x.npy"], ["x.npy", "--labels"]),
    (["--data", "x.npy", "--labels", "x.npy"], ["labels have shape (10, 1, 2, 2)"]),
    (["--data", "test.npz"], ["--calib", "--calib synthetic"]),
])
def test_bad_eval_input_is_one_line(argv, words, files, capsys):
    resolved = [files / a if a.endswith((".npy", ".npz")) else a for a in argv]
    rc, _, err = run(capsys, "eval", files / "m.pt", *resolved)
    assert_one_line_error(rc, err, *words)


def test_labels_beyond_the_outputs_are_named(files, tmp_path, capsys):
    np.save(tmp_path / "y.npy", np.arange(10))
    rc, _, err = run(capsys, "eval", files / "m.pt", "--data", files / "x.npy", "--labels",
                     tmp_path / "y.npy", "--calib", files / "calib.npy")
    assert_one_line_error(rc, err, "0..9", "3 outputs")
