"""The package's shape: no import circle anywhere in tinyds/.

Every `import` and `from ... import` is read with the standard library's ast, at module
level and inside functions alike (a function-level import only hides a circle, it does
not break it). `from tinyds import data_dir` names the package itself: Python runs a
package's __init__ before any of its modules, so an edge to an ancestor package orders
nothing and is left out.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tinyds"


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py under tinyds/."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The tinyds modules `name` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            # `from pkg import mod` imports pkg.mod; `from mod import thing` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:      # tinyds.a.b.c -> the module that exists
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as [a, b, ..., a], or [] when there is none."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_cycle():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    cycle = find_cycle(graph)
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_only_generate_runs_the_writers():
    """The checkers (verify, bench, firmware, eval, inspect) read an out/ folder; none of
    them imports a writer of tinyds/outputs/."""
    known = modules()
    users = {name for name, path in known.items()
             if any(t == "tinyds.outputs" or t.startswith("tinyds.outputs.")
                    for t in imports(name, path, known))}
    assert users - {n for n in known if n.startswith("tinyds.outputs")} == {"tinyds.generate"}


def test_writers_import_no_checker():
    """A writer renders from the Job; verifying and measuring are the checkers' own."""
    known = modules()
    checkers = {f"tinyds.{m}" for m in ("verify", "verify_micropython", "firmware", "bench",
                                        "cycles", "evaluate")}
    for name, path in known.items():
        if name.startswith("tinyds.outputs"):
            assert not imports(name, path, known) & checkers, name


def test_find_cycle_reports_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
