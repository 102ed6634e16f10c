"""Ownership of out/: regenerating replaces what tinyds wrote and never what the user
wrote (src/main.c after its first write, files the user added, generated files the
user edited unless --force)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyds import outdir
from tinyds.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_dscnn.pt"
CALIB = ROOT / "examples" / "digits_calib.npy"


def generate(capsys, out: Path, *extra) -> tuple[int, str, str]:
    rc = main(["generate", str(MODEL), "--calib", str(CALIB), "-o", str(out), *extra])
    o = capsys.readouterr()
    return rc, o.out, o.err


def snapshot(out: Path) -> dict[str, bytes]:
    return {rel: p.read_bytes() for rel, p in outdir.tree(out).items()}


def test_regenerate_keeps_added_files_and_an_edited_main(tmp_path, capsys):
    out = tmp_path / "out"
    assert generate(capsys, out)[0] == 0
    first = snapshot(out)
    meta = json.loads((out / "tinyds.json").read_text())
    assert "src/main.c" not in meta["files"]                 # the user's from now on
    assert meta["files"]["lib/digits_dscnn/digits_dscnn.c"] == outdir.sha256(
        out / "lib/digits_dscnn/digits_dscnn.c")
    main_c = out / "src" / "main.c"
    main_c.write_text(main_c.read_text().replace("int main(void)", "/* mine */\nint main(void)"))
    (out / "src" / "app.c").write_text("int app(void) { return 1; }\n")
    (out / "lib" / "digits_dscnn" / "NOTES.md").write_text("my notes\n")
    edited_main = main_c.read_bytes()
    rc, printed, _ = generate(capsys, out)
    assert rc == 0 and "kept" not in printed                 # nothing of tinyds's was edited
    assert main_c.read_bytes() == edited_main
    assert (out / "src" / "app.c").read_text() == "int app(void) { return 1; }\n"
    assert (out / "lib" / "digits_dscnn" / "NOTES.md").read_text() == "my notes\n"
    now = snapshot(out)
    for rel, data in first.items():                          # the generated files came back
        if rel not in ("src/main.c", "tinyds.json"):
            assert now[rel] == data, rel
    # --force replaces edited generated files, never the user's main.c or added files
    assert generate(capsys, out, "--force")[0] == 0
    assert main_c.read_bytes() == edited_main and (out / "src" / "app.c").is_file()
    # a stale generated file goes (another --name), the user's file in its folder stays
    assert generate(capsys, out, "--name", "digits2")[0] == 0
    assert sorted(p.name for p in (out / "lib" / "digits_dscnn").iterdir()) == ["NOTES.md"]
    assert (out / "lib" / "digits2" / "digits2.c").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]   # no temporary folders


def test_edited_generated_file_is_kept_and_reported_unless_force(tmp_path, capsys):
    out = tmp_path / "out"
    assert generate(capsys, out)[0] == 0
    c = out / "lib" / "digits_dscnn" / "digits_dscnn.c"
    ld = out / "link.ld"
    generated_c = c.read_bytes()
    c.write_bytes(generated_c + b"/* tuned by hand */\n")
    ld.write_text(ld.read_text().replace("LENGTH = 131072", "LENGTH = 65536"))
    edited_c, edited_ld = c.read_bytes(), ld.read_bytes()
    rc, printed, err = generate(capsys, out)
    assert rc == 0 and err == ""
    kept = [line for line in printed.splitlines() if "kept" in line]
    assert kept == ["digits_dscnn: kept 2 file(s) you edited or added where tinyds writes: "
                    "lib/digits_dscnn/digits_dscnn.c, link.ld (--force replaces them)"]
    assert c.read_bytes() == edited_c and ld.read_bytes() == edited_ld
    # still the user's on the next run (the record keeps tinyds's own hash)
    assert "kept 2 file(s)" in generate(capsys, out)[1]
    assert c.read_bytes() == edited_c
    rc, printed, _ = generate(capsys, out, "--force")
    assert rc == 0 and "kept" not in printed
    assert c.read_bytes() == generated_c and b"LENGTH = 131072" in ld.read_bytes()


def test_a_file_the_user_put_where_tinyds_writes_is_kept(tmp_path, capsys):
    """A path tinyds never recorded is the user's, even if a newer tinyds writes there."""
    out = tmp_path / "out"
    assert generate(capsys, out)[0] == 0
    meta = json.loads((out / "tinyds.json").read_text())
    del meta["files"]["Makefile"]                            # as if tinyds had not written it
    (out / "tinyds.json").write_text(json.dumps(meta))
    (out / "Makefile").write_text("all:\n\techo mine\n")
    assert "Makefile" in generate(capsys, out)[1]
    assert (out / "Makefile").read_text() == "all:\n\techo mine\n"


def test_lib_only_writes_just_the_library(tmp_path, capsys):
    out = tmp_path / "out"
    assert generate(capsys, out, "--lib-only")[0] == 0
    assert sorted(outdir.tree(out)) == [
        "lib/digits_dscnn/CMakeLists.txt", "lib/digits_dscnn/digits_dscnn.c", "lib/digits_dscnn/digits_dscnn.h",
        "lib/digits_dscnn/digits_dscnn_io.c", "lib/digits_dscnn/tinyds_common.h", "lib/digits_dscnn/tinyds_dsp.h", "tinyds.json"]
    rc = main(["verify", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "--lib-only" in err
    # a full generate over it adds the project; --lib-only again removes it, keeps main.c
    assert generate(capsys, out)[0] == 0 and (out / "Makefile").is_file()
    assert generate(capsys, out, "--lib-only")[0] == 0
    assert sorted(outdir.tree(out)) == [
        "lib/digits_dscnn/CMakeLists.txt", "lib/digits_dscnn/digits_dscnn.c", "lib/digits_dscnn/digits_dscnn.h",
        "lib/digits_dscnn/digits_dscnn_io.c", "lib/digits_dscnn/tinyds_common.h", "lib/digits_dscnn/tinyds_dsp.h", "src/main.c",
        "tinyds.json"]


@pytest.mark.parametrize("bad", ["[1, 2]", '{"tool": "tinyds", "name": "x", "mcu": "stm32f4", '
                                 '"files": ["not", "a", "dict"]}'])
def test_a_damaged_record_leaves_every_file_in_place_as_tinyds_s(bad, tmp_path, capsys):
    out = tmp_path / "out"
    assert generate(capsys, out)[0] == 0
    (out / "src" / "app.c").write_text("int app;\n")
    (out / "tinyds.json").write_text(bad)
    rc, _, err = generate(capsys, out)
    if bad.startswith("["):                                  # not our marker: refused
        assert rc == 2 and "not a tinyds output" in err
    else:
        assert rc == 0
    assert (out / "src" / "app.c").read_text() == "int app;\n"


def test_same_model_from_two_places_gives_identical_bytes(tmp_path, capsys):
    """No absolute path (nor time) in anything generated: builds reproduce on any machine."""
    trees = []
    for where in ("a", "b/deeper/still"):
        home = tmp_path / where
        home.mkdir(parents=True)
        (home / "digits_dscnn.pt").write_bytes(MODEL.read_bytes())
        (home / "calib.npy").write_bytes(CALIB.read_bytes())
        out = home / "project" / "out"
        assert main(["generate", str(home / "digits_dscnn.pt"), "--calib", str(home / "calib.npy"),
                     "-o", str(out)]) == 0
        capsys.readouterr()
        trees.append(snapshot(out))
        for rel, data in trees[-1].items():
            assert str(tmp_path).encode() not in data, rel
    assert sorted(trees[0]) == sorted(trees[1])
    for rel in trees[0]:
        assert trees[0][rel] == trees[1][rel], rel
    assert b'"source": "digits_dscnn.pt"' in trees[0]["tinyds.json"]


@pytest.mark.parametrize("record", ["../victim.txt", "{abs}", "lib/../../victim.txt", "./x/../../victim.txt"])
def test_a_record_naming_a_path_outside_out_touches_nothing(record, tmp_path, capsys):
    """A tinyds.json from elsewhere cannot make generate delete a file outside out/."""
    out = tmp_path / "out"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    assert generate(capsys, out)[0] == 0
    meta = json.loads((out / "tinyds.json").read_text())
    record = record.format(abs=victim)
    meta["files"][record] = outdir.sha256(victim)         # as if tinyds had written it
    (out / "tinyds.json").write_text(json.dumps(meta))
    before = snapshot(out)
    for extra in ((), ("--force",)):
        rc, _, err = generate(capsys, out, "--name", "other", *extra)
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert repr(record) in err and "nothing was changed" in err
        assert victim.read_text() == "precious\n"
        assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "victim.txt"]


@pytest.mark.parametrize("folder", ["lib", "src", "lib/digits_dscnn"])
def test_a_linked_folder_is_never_written_through(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert generate(capsys, out)[0] == 0
    elsewhere = tmp_path / "elsewhere"
    (out / folder).rename(elsewhere)
    (out / folder).symlink_to(elsewhere, target_is_directory=True)
    outside = snapshot(elsewhere)
    (out / "Makefile").write_text("edited\n")
    rc, _, err = generate(capsys, out, "--force")
    assert rc == 2 and len(err.splitlines()) == 1 and "link" in err, err
    assert snapshot(elsewhere) == outside
    assert (out / "Makefile").read_text() == "edited\n"        # nothing moved


def test_links_in_out_are_kept_never_followed(tmp_path, capsys):
    """A link where tinyds writes a file, a link named like the marker's part file and a
    stale record whose file became a link: nothing outside out/ is written or deleted."""
    out = tmp_path / "out"
    assert generate(capsys, out)[0] == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / "link.ld").unlink()
    (out / "link.ld").symlink_to(victim)
    for name in (".tinyds.json.part", ".report.html.part"):
        (out / name).symlink_to(victim)
    rc, printed, _ = generate(capsys, out, "--force")
    assert rc == 0 and "link.ld" in printed
    assert victim.read_text() == "precious\n" and (out / "link.ld").is_symlink()
    # a stale recorded file that is now a link to the user's file: not deleted, not followed
    meta = json.loads((out / "tinyds.json").read_text())
    (out / "Makefile").unlink()
    (out / "Makefile").symlink_to(victim)
    meta["files"]["Makefile"] = outdir.sha256(victim)
    (out / "tinyds.json").write_text(json.dumps(meta))
    assert generate(capsys, out, "--lib-only", "--force")[0] == 0
    assert victim.read_text() == "precious\n" and (out / "Makefile").is_symlink()


def test_a_linked_marker_does_not_make_a_folder_replaceable(tmp_path, capsys):
    real = tmp_path / "real"
    assert generate(capsys, real)[0] == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    (mine / "tinyds.json").symlink_to(real / "tinyds.json")
    rc, _, err = generate(capsys, mine)
    assert rc == 2 and "not a tinyds output" in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "tinyds.json"]


def test_a_stale_file_the_user_edited_survives_force(tmp_path, capsys):
    """Regenerate deletes only files whose content is still what tinyds wrote."""
    out = tmp_path / "out"
    assert generate(capsys, out)[0] == 0
    c = out / "lib" / "digits_dscnn" / "digits_dscnn.c"
    c.write_text(c.read_text() + "/* mine */\n")
    rc, printed, _ = generate(capsys, out, "--name", "digits2", "--force")
    assert rc == 0 and "lib/digits_dscnn/digits_dscnn.c" in printed
    assert c.read_text().endswith("/* mine */\n")
    assert not (out / "lib" / "digits_dscnn" / "digits_dscnn.h").exists()
