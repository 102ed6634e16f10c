"""An op is one module: everything about LeakyReLU lives in tinyds/ops/leaky_relu.py
(plus its template and tests), and the rest of tinyds reaches it through the registry."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWNERS = {ROOT / "tinyds" / "ops" / "leaky_relu.py", ROOT / "templates" / "ops" / "leaky_relu.c.j2"}


def test_leaky_relu_is_named_only_by_its_own_module():
    named = [str(f.relative_to(ROOT)) for folder in ("tinyds", "templates")
             for f in sorted((ROOT / folder).rglob("*")) if f.is_file() and f not in OWNERS
             and f.suffix in (".py", ".j2", ".h", ".c", ".txt", ".json", ".md")
             and "leaky_relu" in f.read_text(errors="replace").lower()]
    assert named == []
