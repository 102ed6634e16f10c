"""The installed package must carry its templates and firmware sources: a wheel
install (`pip install .`) and an editable one (`pip install -e .`) must both
find them through importlib.resources and render a library with them."""
from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# Runs in the installed environment, outside the repo: renders a model with the
# installed templates and reports where everything came from.
PROBE = r"""
import importlib.resources, json, sys
import numpy as np
import tinyds, tinyds.firmware
from tinyds import codegen
from tinyds.ir import Graph, Op, Tensor

def act(name, shape):
    return Tensor(name, shape, "int8", scale=np.array([0.5], np.float32),
                  zero_point=np.array([-3], np.int64))

g = Graph("probe", {"x": act("x", (1, 2, 2, 3)), "y": act("y", (1, 12))},
          [Op("reshape", "flat", ["x"], ["y"], {"shape": (1, 12)})], ["x"], ["y"])
files, lib = codegen.render_library(g, "probe")
templates = tinyds.data_dir("templates")
firmware = tinyds.data_dir("firmware")
print(json.dumps({
    "package": str(importlib.resources.files("tinyds")),
    "templates": str(templates), "firmware": str(firmware),
    "kernel_templates": sorted(p.name for p in (templates / "ops").glob("*.c.j2")),
    "harness": (templates / "harness" / "harness.c.j2").is_file(),
    "report": (templates / "report" / "report.html.j2").is_file(),
    "startup": (firmware / "startup.c").is_file(),
    "firmware_module": hasattr(tinyds.firmware, "run_vectors"),
    "header_ok": "int probe_run(const int8_t *input, int8_t *output);" in files["probe.h"],
}))
"""


def _probe(python: str, env: dict, cwd: Path) -> dict:
    import json
    res = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, env=env, cwd=cwd)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _expect(found: dict, root: Path) -> None:
    repo_kernels = sorted(p.name for p in (REPO / "templates" / "ops").glob("*.c.j2"))
    assert Path(found["templates"]).resolve().is_relative_to(root.resolve())
    assert Path(found["firmware"]).resolve().is_relative_to(root.resolve())
    assert found["kernel_templates"] == repo_kernels and repo_kernels
    assert found["harness"] and found["report"] and found["startup"] and found["firmware_module"] and found["header_ok"]


def test_wheel_install_ships_templates_and_firmware(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(REPO)],
                   check=True, env=_clean_env(), cwd=tmp_path)
    env = {**_clean_env(), "PYTHONPATH": str(target)}
    found = _probe(sys.executable, env, tmp_path)
    assert Path(found["package"]).resolve() == (target / "tinyds").resolve()
    _expect(found, target / "tinyds")
    for src in (REPO / "tinyds").rglob("*.py"):     # every module made it into the wheel
        assert (target / "tinyds" / src.relative_to(REPO / "tinyds")).is_file(), src


def test_editable_install_uses_the_checkout(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = str(env_dir / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "-e", str(REPO)], check=True, env=_clean_env(), cwd=tmp_path)
    found = _probe(python, _clean_env(), tmp_path)
    assert Path(found["package"]).resolve() == (REPO / "tinyds").resolve()
    _expect(found, REPO)
