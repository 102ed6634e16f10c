"""`--calib` formats: each loads the same batch, none runs pickled code, and a batch in
the wrong layout is one line that says how to transpose it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyds import calib
from tinyds.errors import TinydsError
from tinyds.ir import Graph, Tensor

from test_cli import assert_one_line_error, run

X = np.random.default_rng(0).standard_normal((10, 1, 8, 8)).astype(np.float32)


@pytest.fixture
def batch_files(tmp_path):
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "one.npz", X)
    np.savez(tmp_path / "two.npz", x=X, y=np.arange(10))
    torch.save(torch.from_numpy(X), tmp_path / "x.pt")
    torch.save({"x": torch.from_numpy(X), "y": torch.arange(10)}, tmp_path / "dict.pt")
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(7):                                 # one sample a file ...
        np.save(folder / f"s{i:02d}.npy", X[i])
    np.save(folder / "s07_batch.npy", X[7:])           # ... or a batch
    (folder / "notes.txt").write_text("ignored")
    return tmp_path


@pytest.mark.parametrize("spec", ["x.npy", "one.npz", "two.npz:x", "x.pt", "dict.pt:x", "samples"])
def test_every_format_loads_the_same_batch(spec, batch_files):
    got = calib.load(str(batch_files / spec))
    assert got.dtype == np.float32 and np.array_equal(got, X)


def test_several_arrays_for_a_one_input_model_need_a_name(batch_files):
    """A .npz of several arrays is one per input of a several-input model; a one-input
    model asks which array to use."""
    x = calib.load(str(batch_files / "two.npz"))
    g = Graph("g", {"input": Tensor("input", (1, 4))}, [], ["input"], ["input"])
    with pytest.raises(TinydsError) as e:
        calib.for_graph(g, x)
    assert "2 arrays" in str(e.value) and "two.npz:NAME" in str(e.value)


@pytest.mark.parametrize("spec, words", [
    ("two.npz:z", ["no array named 'z'", "'x'"]),
    ("dict.pt", ["2 entrys", "dict.pt:NAME"]),
    ("nope.npy", ["nope.npy", "not found"]),
])
def test_ambiguous_or_missing_is_named(spec, words, batch_files):
    with pytest.raises(TinydsError) as e:
        calib.load(str(batch_files / spec))
    for w in words:
        assert w in str(e.value)


class Evil:
    def __reduce__(self):
        import os
        return os.system, ("touch PWNED",)


def test_a_pickled_object_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(Evil(), tmp_path / "evil.pt")
    with pytest.raises(TinydsError, match="weights_only"):
        calib.load(str(tmp_path / "evil.pt"))
    assert not (tmp_path / "PWNED").exists()


def test_folder_of_mixed_shapes_names_the_odd_file(tmp_path):
    np.save(tmp_path / "a.npy", X[0])
    np.save(tmp_path / "b.npy", np.zeros((1, 9, 9), np.float32))
    with pytest.raises(TinydsError, match="b.npy"):
        calib.load(str(tmp_path))


def test_nhwc_for_a_pytorch_model_says_how_to_transpose(tmp_path, capsys):
    from test_cli import Tiny, traced
    model = traced(Tiny(), tmp_path / "tiny.pt")
    np.save(tmp_path / "nhwc.npy", X.transpose(0, 2, 3, 1))
    rc, _, err = run(capsys, "generate", model, "--calib", tmp_path / "nhwc.npy", "-o",
                     tmp_path / "out")
    assert_one_line_error(rc, err, "transpose to NCHW with x.transpose(0, 3, 1, 2)", "(N, 1, 8, 8)")
    assert not (tmp_path / "out").exists()


def test_nchw_for_a_tflite_says_how_to_transpose(tmp_path, capsys):
    pytest.importorskip("ai_edge_litert")
    from test_cli import Tiny, traced
    model = traced(Tiny(), tmp_path / "tiny.pt")
    np.save(tmp_path / "x.npy", X)
    tfl = tmp_path / "tiny.tflite"
    assert run(capsys, "export-tflite", model, "--calib", tmp_path / "x.npy", "-o", tfl)[0] == 0
    rc, _, err = run(capsys, "generate", tfl, "--calib", tmp_path / "x.npy", "-o", tmp_path / "o")
    assert_one_line_error(rc, err, "transpose to NHWC with x.transpose(0, 2, 3, 1)")
    np.save(tmp_path / "x_nhwc.npy", X.transpose(0, 2, 3, 1))
    rc, _, err = run(capsys, "generate", tfl, "--calib", tmp_path / "x_nhwc.npy", "-o",
                     tmp_path / "o")
    assert rc == 0, err


def test_generate_takes_an_npz_and_a_folder(batch_files, tmp_path, capsys):
    from test_cli import Tiny, traced
    model = traced(Tiny(), tmp_path / "tiny.pt")
    for spec in ("two.npz:x", "samples"):
        out = tmp_path / f"out_{spec.replace(':', '_')}"
        rc, stdout, err = run(capsys, "generate", model, "--calib", batch_files / spec, "-o", out)
        assert rc == 0, err
        assert "on 10 samples of calibration data" in stdout and "SYNTHETIC" not in stdout + err
