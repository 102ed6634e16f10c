"""Code generation around the kernels: the model .c/.h contract, arena use,
profiling hook, two models in one program, the out/ folder, and verify.

Kernels here are tiny stand-ins (a clamp and a byte-wise saturating add) so
these tests exercise the plumbing independently of the real op kernels, whose
tests live in tests/ops/.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import numpy as np
import pytest

from tinyds import bundle, codegen, names, ops, outdir, reference, targets, templating, verify
from tinyds.cli import main
from tinyds.errors import TinydsError
from tinyds.generate import generate
from tinyds.ir import Graph, Op, Tensor
from tinyds.ops import OpSpec

sys.path.insert(0, str(Path(__file__).parent))
from oputil import run_c  # noqa: E402

STANDIN_TEMPLATES = {
    # y = max(x, floor): a unary kernel with a per-layer literal.
    "ops/relu.c.j2": """
static void {{fn}}(const int8_t *restrict input, int8_t *restrict output)
{
    for (int i = 0; i < {{size}}; i++) {
        output[i] = input[i] > {{floor}} ? input[i] : {{floor}};
    }
}
""",
    # y = saturate(a + b) byte-wise: a binary kernel, as add's signature.
    "ops/relu6.c.j2": """
static void {{fn}}(const int8_t *input1, const int8_t *input2, int8_t *output)
{
    for (int i = 0; i < {{size}}; i++) {
        output[i] = tinyds_clamp_s8((int32_t)input1[i] + input2[i], -128, 127);
    }
}
""",
}


def _floor(g, op):
    return int(op.attrs["floor"])


STANDINS = {
    "relu": OpSpec(
        "relu", lambda g, op, x: np.maximum(x, _floor(g, op)).astype(np.int8),
        lambda g, op: {"size": g.tensors[op.outputs[0]].size, "floor": _floor(g, op)},
        lambda g, op: 0),
    "relu6": OpSpec(
        "relu6", lambda g, op, a, b: np.clip(a.astype(np.int32) + b, -128, 127).astype(np.int8),
        lambda g, op: {"size": g.tensors[op.outputs[0]].size},
        lambda g, op: 0),
}


@pytest.fixture(autouse=True)
def standin_kernels(monkeypatch):
    real_get = ops.get

    def get(op_type):
        return STANDINS[op_type] if op_type in STANDINS else real_get(op_type)

    monkeypatch.setattr(ops, "get", get)
    monkeypatch.setattr(templating.ENV, "loader", jinja2.ChoiceLoader(
        [jinja2.DictLoader(STANDIN_TEMPLATES), templating.ENV.loader]))


def act(name, shape, scale=0.05, zp=-3):
    return Tensor(name, tuple(shape), "int8", scale=np.array([scale], np.float32),
                  zero_point=np.array([zp], np.int64))


def residual_graph(h=5, w=4, c=3) -> Graph:
    """x -> a=relu -> b=relu -> c=relu -> d=a+c -> r=reshape -> y=relu(r): the skip
    keeps a alive across b and c, and the output comes through a reshape."""
    shape = (1, h, w, c)
    names = ["x", "a", "b", "c", "d"]
    t = {n: act(n, shape) for n in names}
    t["r"], t["y"] = act("r", (1, h * w * c)), act("y", (1, h * w * c), 0.1, 7)
    g_ops = [Op("relu", "block.0", ["x"], ["a"], {"floor": -20}),
             Op("relu", "block.1", ["a"], ["b"], {"floor": -5}),
             Op("relu", "block.2", ["b"], ["c"], {"floor": 10}),
             Op("relu6", "skip/add", ["a", "c"], ["d"], {}),
             Op("reshape", "flatten", ["d"], ["r"], {"shape": (1, h * w * c)}),
             Op("relu", 'head "out"', ["r"], ["y"], {"floor": 0})]
    return Graph("residual", t, g_ops, ["x"], ["y"])


def batch(g, n, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, (n, *g.input.shape[1:]), dtype=np.int8)


def cc(*args, cwd):
    res = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", *map(str, args)],
                         capture_output=True, text=True, cwd=cwd)
    assert res.returncode == 0, res.stderr


def test_generated_c_matches_reference_with_reused_arena():
    g = residual_graph()
    x = batch(g, 300)
    np.testing.assert_array_equal(run_c(g, x), reference.run(g, x))
    _, lib = codegen.render_library(g, "m")
    assert 0 < lib.arena_bytes < lib.plan.unshared_size


def test_reshape_only_model_copies_input_to_output():
    g = Graph("r", {"x": act("x", (1, 2, 3, 4)), "y": act("y", (1, 24))},
              [Op("reshape", "flat", ["x"], ["y"], {"shape": (1, 24)})], ["x"], ["y"])
    x = batch(g, 20)
    np.testing.assert_array_equal(run_c(g, x), x.reshape(20, 24))


def test_header_contract(tmp_path):
    g = residual_graph()
    codegen.generate_library(g, tmp_path, "kws_v2")
    h = (tmp_path / "kws_v2.h").read_text()
    assert "int kws_v2_run(const int8_t *input, int8_t *output);" in h
    assert re.search(r"#define KWS_V2_INPUT_SCALE 0\.05f\n", h)
    (tmp_path / "probe.c").write_text(r"""
#include <stdio.h>
#include "kws_v2.h"
int main(void)
{
    int8_t x[KWS_V2_INPUT_SIZE] = {0}, y[KWS_V2_OUTPUT_SIZE];
    int rc = kws_v2_run(x, y);
    printf("%d %d %d %a %d %a %d %d\n", rc, KWS_V2_INPUT_SIZE, KWS_V2_OUTPUT_SIZE,
           (double)KWS_V2_INPUT_SCALE, KWS_V2_INPUT_ZERO_POINT, (double)KWS_V2_OUTPUT_SCALE,
           KWS_V2_OUTPUT_ZERO_POINT, KWS_V2_NUM_LAYERS);
    for (int i = 0; i < KWS_V2_NUM_LAYERS; i++) printf("%s\n", kws_v2_layer_names[i]);
    printf("%d\n", KWS_V2_ARENA_SIZE);
    return 0;
}
""")
    cc("probe.c", "kws_v2.c", "-o", "probe", cwd=tmp_path)
    lines = subprocess.run(["./probe"], capture_output=True, text=True, cwd=tmp_path,
                           check=True).stdout.splitlines()
    rc, n_in, n_out, s_in, zp_in, s_out, zp_out, layers = lines[0].split()
    assert (int(rc), int(n_in), int(n_out), int(zp_in), int(zp_out), int(layers)) == (0, 60, 60, -3, 7, 6)
    assert np.float32(float.fromhex(s_in)) == np.float32(0.05)
    assert np.float32(float.fromhex(s_out)) == np.float32(0.1)
    assert lines[1:7] == [op.name for op in g.ops]
    assert int(lines[7]) == codegen.render_library(g, "kws_v2")[1].arena_bytes


def test_float_only_op_is_a_clear_error():
    g = residual_graph()
    g.ops[2].type = "batch_norm"
    with pytest.raises(TinydsError, match="block.2: no C kernel for batch_norm"):
        codegen.render_library(g, "m")


def test_kernels_use_no_float_and_no_malloc(tmp_path):
    codegen.generate_library(residual_graph(), tmp_path, "m")
    c = (tmp_path / "m.c").read_text()
    assert not re.search(r"\b(float|double|malloc|free)\b", c)


def test_two_models_link_into_one_profiled_program(tmp_path):
    g1, g2 = residual_graph(), residual_graph(3, 3, 2)
    codegen.generate_library(g1, tmp_path / "lib" / "kws", "kws")
    codegen.generate_library(g2, tmp_path / "lib" / "vww", "vww")
    (tmp_path / "main.c").write_text(r"""
#include <stdio.h>
#include "kws.h"
#include "vww.h"
void tinyds_profile(const char *model, int layer)
{
    printf("%s %d\n", model, layer);
}
int main(void)
{
    static int8_t x1[KWS_INPUT_SIZE], y1[KWS_OUTPUT_SIZE], x2[VWW_INPUT_SIZE], y2[VWW_OUTPUT_SIZE];
    return kws_run(x1, y1) + vww_run(x2, y2);
}
""")
    cc("-DTINYDS_PROFILE", "-Ilib/kws", "-Ilib/vww", "main.c", "lib/kws/kws.c", "lib/vww/vww.c",
       "-o", "both", cwd=tmp_path)
    out = subprocess.run(["./both"], capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    want = [f"{m} {i}" for m in ("kws", "vww") for i in range(-1, 6)]
    assert out.splitlines() == want


@pytest.mark.parametrize("text, name", [
    ("kws", "kws"), ("my-model.v2", "my_model_v2"), ("3x3 net", "m_3x3_net"),
    ("int", "m_int"), ("---", "model"), ("ünïcode", "n_code"), ("tinyds_common", "m_tinyds_common"),
    ("stdint", "m_stdint"), ("String", "m_String"), ("board", "m_board"), ("x" * 250, "x" * 62)])
def test_sanitize_name(text, name):
    assert names.sanitize_name(text) == name


@pytest.mark.parametrize("bad", ["my-model", "3x", "_x", "int", ""])
def test_check_name_refuses_non_identifiers(bad):
    with pytest.raises(TinydsError, match="not a C identifier"):
        names.check_name(bad)


def test_check_name_refuses_the_runtimes_names():
    # NAME.h == tinyds_common.h would overwrite the helpers in lib/NAME/
    with pytest.raises(TinydsError, match="reserved"):
        names.check_name("tinyds_common")
    assert names.check_name("kws_v2") == "kws_v2"


@pytest.mark.parametrize("name, words", [
    ("stdint", ["<stdint.h>", "m_stdint"]), ("Math", ["<math.h>", "m_Math"]),
    ("stdio", ["<stdio.h>"]), ("string", ["<string.h>"]), ("board", ["board.c", "m_board"]),
    ("startup", ["startup.c"]), ("main", ["main.c"]), ("n" * 65, ["65 characters", "n" * 62])])
def test_check_name_refuses_headers_firmware_files_and_long_names(name, words):
    with pytest.raises(TinydsError) as e:
        names.check_name(name)
    for w in words:
        assert w in str(e.value)
    assert names.check_name("n" * 64) == "n" * 64


def test_saved_model_round_trips_without_pickle(tmp_path):
    g = residual_graph()
    g.ops[0].attrs.update(multiplier=np.array([1 << 30, 123], np.int32), stride=(2, 1),
                          act_min=np.int32(-128), beta=1.5, activation="relu6")
    g.tensors["w"] = Tensor("w", (2, 1, 1, 3), "int8", data=np.arange(6, dtype=np.int8).reshape(2, 1, 1, 3),
                            scale=np.array([0.1, 0.2], np.float32), zero_point=np.zeros(2, np.int64), axis=0)
    bundle.save_graph(g, tmp_path)
    back = bundle.load_graph(tmp_path)
    assert [op.__dict__.keys() for op in back.ops] == [op.__dict__.keys() for op in g.ops]
    a0, b0 = g.ops[0].attrs, back.ops[0].attrs
    assert b0["stride"] == (2, 1) and isinstance(b0["stride"], tuple)
    assert b0["multiplier"].dtype == np.int32 and (b0["multiplier"] == a0["multiplier"]).all()
    assert type(b0["act_min"]) is np.int32 and b0["beta"] == 1.5
    w = back.tensors["w"]
    assert w.data.dtype == np.int8 and (w.data == g.tensors["w"].data).all() and w.axis == 0
    assert w.scale.dtype == np.float32 and w.shape == (2, 1, 1, 3)
    # an object array in the npz (which would need pickle) is refused
    np.savez(tmp_path / "model.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(TinydsError, match="damaged"):
        bundle.load_graph(tmp_path)


def _generate(out, g=None, **kw):
    g = g or residual_graph()
    return generate(g, out, "res", targets.get("stm32f4"), vectors=batch(g, 40, seed=1), **kw)


def test_generate_then_verify(tmp_path, capsys):
    out = tmp_path / "out"
    res = _generate(out)
    assert (out / "lib" / "res" / "res.c").is_file() and (out / "lib" / "res" / "res.h").is_file()
    assert (out / "lib" / "res" / "tinyds_common.h").is_file() and (out / "src" / "main.c").is_file()
    meta = json.loads((out / outdir.MARKER).read_text())
    assert meta["name"] == "res" and meta["arena_bytes"] == res.arena_bytes
    v = verify.verify(out)
    assert v.ok and v.vectors == 3 + 40 + 1000 + 1000 and v.calibration == 40
    assert [(c.build, c.vectors) for c in v.checks] == [("release", 2043),
                                                         ("sanitize", verify.SANITIZE_VECTORS)]
    if shutil.which(verify.ARM_CC):
        assert v.target.startswith("res: compiled with arm-none-eabi-gcc -mcpu=cortex-m4")
    assert main(["verify", str(out)]) == 0
    assert "mismatches: 0 -> OK" in capsys.readouterr().out


def test_verify_refuses_c_with_a_warning(tmp_path):
    out = tmp_path / "out"
    _generate(out)
    c = out / "lib" / "res" / "res.c"
    c.write_text(c.read_text().replace("    return 0;\n}", "    int unused;\n    return 0;\n}"))
    with pytest.raises(TinydsError, match="compile .* failed: .*unused"):
        verify.verify(out, n_random=10)


def test_verify_catches_a_wrong_byte(tmp_path, capsys):
    out = tmp_path / "out"
    _generate(out)
    c = out / "lib" / "res" / "res.c"
    c.write_text(c.read_text().replace("    return 0;\n}", "    output[5] ^= 1;\n    return 0;\n}"))
    v = verify.verify(out, n_random=100)
    assert not v.ok
    assert all(ch.mismatched_vectors == ch.vectors == ch.mismatched_bytes for ch in v.checks)
    assert v.checks[0].first.startswith("vector 0 byte 5: ")
    assert main(["verify", str(out), "--vectors", "100"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_verify_catches_an_out_of_bounds_write(tmp_path):
    out = tmp_path / "out"
    _generate(out)
    c = out / "lib" / "res" / "res.c"
    c.write_text(c.read_text().replace("    return 0;\n}", "    output[RES_OUTPUT_SIZE] = 0;\n    return 0;\n}"))
    with pytest.raises(TinydsError, match="heap-buffer-overflow|out of bounds|overflow"):
        verify.verify(out, n_random=10)


def fc_graph(depth=24, out_c=5) -> Graph:
    """One folded fully_connected layer: the portable kernel with a TINYDS_DSP loop."""
    from tinyds.requant import derive_int_params
    rng = np.random.default_rng(3)
    s_w = np.full(out_c, 0.02, np.float32)
    t = {"x": act("x", (1, depth)), "y": act("y", (1, out_c), 0.5, -3),
         "w": Tensor("w", (out_c, depth), "int8", data=rng.integers(-127, 128, (out_c, depth),
                                                                      dtype=np.int8),
                     scale=s_w, zero_point=np.zeros(out_c, np.int64), axis=0)}
    op = Op("fully_connected", "fc", ["x", "w", ""], ["y"], {"activation": "none"})
    return derive_int_params(Graph("fc", t, [op], ["x"], ["y"]))


@pytest.mark.parametrize("mcu, dsp", [("stm32f4", True), ("cortex-m0plus", False)])
def test_verify_runs_the_boards_dsp_path(tmp_path, mcu, dsp):
    """On a DSP board the host builds take the TINYDS_DSP path the MCU runs (through the C
    twins): a broken twin fails there, and not where the core runs the scalar loop."""
    g, out = fc_graph(), tmp_path / "out"
    generate(g, out, "fc", targets.get(mcu), vectors=batch(g, 8, seed=2))
    v = verify.verify(out, n_random=20)
    assert v.ok and ("-DTINYDS_DSP=1" in v.text()) == dsp
    h = out / "lib" / "fc" / "tinyds_dsp.h"
    h.write_text(h.read_text().replace("return tinyds_sxtb16(w >> 8);", "return tinyds_sxtb16(w);"))
    v = verify.verify(out, n_random=20)
    assert v.edited and (v.mismatches > 0) == dsp


def test_generate_replaces_its_own_output_but_never_a_users_folder(tmp_path):
    out = tmp_path / "out"
    _generate(out)
    (out / "lib" / "res" / "notes.txt").write_text("the user's")
    generate(residual_graph(), out, "res2", targets.get("stm32f4"))
    assert not (out / "lib" / "res" / "res.c").exists()        # stale generated file: gone
    assert (out / "lib" / "res" / "notes.txt").read_text() == "the user's"   # added: kept
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(TinydsError, match="not a tinyds output"):
        _generate(mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    _generate(tmp_path / "empty")
    assert (tmp_path / "empty" / outdir.MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine", "out"]   # no temp folders


def test_failed_generate_leaves_nothing_behind(tmp_path, monkeypatch):
    from tinyds.outputs import firmware

    def broken(*a, **k):
        raise TinydsError("project: simulated failure")

    with monkeypatch.context() as m:
        m.setattr(firmware, "write", broken)
        with pytest.raises(TinydsError, match="simulated"):
            _generate(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")            # -o file/out: its parent is a file
    with pytest.raises(TinydsError, match="cannot create the output folder"):
        _generate(tmp_path / "file" / "out")
    (tmp_path / "file").unlink()
    # a model too big for the MCU is refused before anything is written
    big = residual_graph(200, 200, 8)
    with pytest.raises(TinydsError, match="does not fit"):
        generate(big, tmp_path / "out", "big", targets.get("stm32f4"))
    assert list(tmp_path.iterdir()) == []
