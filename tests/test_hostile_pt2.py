"""Hostile `.pt2` archives: no pickle they carry ever runs without --allow-pickle, nothing
they declare is inflated or allocated beyond a model's size, and every one ends in one
`tinyds: error:` line with exit 2 and nothing written."""
from __future__ import annotations

import json
import pickle
import time
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from test_cli import assert_one_line_error, run


class Payload:
    """Unpickling this creates the marker file: proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def repack(src: Path, dst: Path, change) -> Path:
    """src's members, edited by change(dict name -> bytes) in place, written to dst."""
    m = members(src)
    change(m)
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in m.items():
            z.writestr(name, data)
    return dst


def torch_saved(obj) -> bytes:
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    path = tmp_path_factory.mktemp("pt2") / "good.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 1, 8, 8),)), str(path))
    return path


def _key(m: dict, suffix: str) -> str:
    return next(n for n in m if n.endswith(suffix))


def _config(m: dict, suffix: str, edit) -> None:
    k = _key(m, suffix)
    doc = json.loads(m[k])
    edit(doc["config"])
    m[k] = json.dumps(doc).encode()


def evil_sample_inputs(marker):
    return lambda m: m.__setitem__(_key(m, "sample_inputs/model.pt"),
                                   torch_saved(((Payload(marker),), {})))


def evil_weight(marker):
    def change(m):
        _config(m, "model_weights_config.json",
                lambda c: c["0.weight"].update(use_pickle=True, tensor_meta=None))
        m[_key(m, "weights/weight_0")] = torch_saved(Payload(marker))
    return change


def evil_opaque_constant(marker):
    def change(m):
        _config(m, "model_constants_config.json",
                lambda c: c.update(obj={"path_name": "opaque_obj_0", "is_param": False,
                                        "use_pickle": True, "tensor_meta": None}))
        m[_key(m, "archive_format").replace("archive_format", "data/constants/opaque_obj_0")] = \
            pickle.dumps(Payload(marker))
    return change


def evil_sympy(marker):
    """sympify evaluates its string: a symbolic size that opens the marker file."""
    def change(m):
        k = _key(m, "models/model.json")
        text = m[k].decode().replace('{"as_int": 8}', json.dumps(
            {"as_expr": {"expr_str": f"open({str(marker)!r}, 'w')", "hint": {"as_int": 8}}}), 1)
        m[k] = text.encode()
    return change


PAYLOADS = {"pickled example inputs": (evil_sample_inputs, "sample_inputs"),
            "pickled weight": (evil_weight, "0.weight"),
            "pickled opaque constant": (evil_opaque_constant, "opaque_obj_0"),
            "sympy expression": (evil_sympy, "symbolic")}


@pytest.mark.parametrize("case", PAYLOADS)
def test_payload_never_runs(case, good, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    make, word = PAYLOADS[case]
    bad = repack(good, tmp_path / "bad.pt2", make(marker))
    rc, _, err = run(capsys, "generate", bad, "-o", tmp_path / "out")
    assert_one_line_error(rc, err, "bad.pt2", word)
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt2"]


def test_restricted_pickles_still_load(good, tmp_path, capsys):
    """Plain-tensor example inputs (what torch.export.save writes) are admitted."""
    rc, _, err = run(capsys, "generate", good, "--calib", "synthetic", "-o", tmp_path / "out")
    assert rc == 0, err


def test_zip_bomb_is_refused_before_inflating(good, tmp_path, capsys):
    bomb = tmp_path / "bomb.pt2"
    repack(good, bomb, lambda m: None)
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open(_key(members(good), "archive_format").replace("archive_format", "extra/x"),
                    "w", force_zip64=True) as f:
            zeros = bytes(1 << 20)
            for _ in range(512):
                f.write(zeros)
    assert bomb.stat().st_size < 4 << 20
    t0 = time.perf_counter()
    rc, _, err = run(capsys, "generate", bomb, "-o", tmp_path / "out")
    assert time.perf_counter() - t0 < 2.0
    assert_one_line_error(rc, err, "bomb.pt2", "extra/x", "536870912 bytes")
    assert not (tmp_path / "out").exists()


def _weight_meta(edit):
    return lambda m: _config(m, "model_weights_config.json", lambda c: edit(c["0.weight"]))


DAMAGED = {
    "missing weight file": (lambda m: m.pop(_key(m, "weights/weight_0")), "missing"),
    "negative size": (_weight_meta(lambda w: w["tensor_meta"]["sizes"][0].update(as_int=-2)),
                      "damaged shape"),
    "weight larger than its file": (_weight_meta(
        lambda w: w["tensor_meta"]["sizes"][0].update(as_int=100000)), "needs"),
    "huge zero-byte weight": (lambda m: (_weight_meta(lambda w: w["tensor_meta"].update(
        sizes=[{"as_int": 100000}] * 2, strides=[{"as_int": 100000}, {"as_int": 1}]))(m),
        m.__setitem__(_key(m, "weights/weight_0"), b"")), "needs"),
    "model.json not json": (lambda m: m.__setitem__(_key(m, "models/model.json"), b"\xff{"),
                            "not valid JSON"),
    "foreign operator": (lambda m: m.__setitem__(_key(m, "models/model.json"), m[_key(
        m, "models/model.json")].replace(b"torch.ops.aten.relu.default", b"torch.load")),
        "torch.load"),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_damaged_archive_is_one_line(case, good, tmp_path, capsys):
    change, word = DAMAGED[case]
    bad = repack(good, tmp_path / "bad.pt2", change)
    rc, _, err = run(capsys, "generate", bad, "-o", tmp_path / "out")
    assert_one_line_error(rc, err, "bad.pt2", word)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt2"]


def legacy(weights) -> callable:
    """The archive as torch < 2.7 saved it: weights and constants as pickled dicts."""
    def change(m):
        top = _key(m, "archive_format").replace("archive_format", "")
        for n in [n for n in m if n.startswith(top + "data/weights/")
                  or n.startswith(top + "data/constants/")]:
            del m[n]
        m[top + "data/weights/model.pt"] = torch_saved(weights())
        m[top + "data/constants/model.pt"] = torch_saved({})
    return change


def test_legacy_pickled_weights_load_when_they_are_only_tensors(good, tmp_path, capsys):
    sd = torch.export.load(str(good)).state_dict
    bad = repack(good, tmp_path / "legacy.pt2", legacy(lambda: dict(sd)))
    rc, _, err = run(capsys, "generate", bad, "--calib", "synthetic", "-o", tmp_path / "out")
    assert rc == 0, err


def test_legacy_pickled_weights_with_a_payload_never_run(good, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    sd = torch.export.load(str(good)).state_dict
    bad = repack(good, tmp_path / "bad.pt2", legacy(lambda: {**sd, "x": Payload(marker)}))
    rc, _, err = run(capsys, "generate", bad, "-o", tmp_path / "out")
    assert_one_line_error(rc, err, "bad.pt2", "data/weights/model.pt")
    assert not marker.exists()
