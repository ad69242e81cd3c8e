"""The package's import graph has no loops, counting imports inside functions too: a lazy import only
hides a loop from import time, the modules still depend on one another (docs/design.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "lorakit"


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its body. The root __init__ (a lazy facade
    over the public API) is left out: it imports nothing at load time."""
    modules = {module_name(f, package): f for f in package.rglob("*.py")}
    root = package.name

    def owner(name: str) -> str | None:  # `lorakit.data.load.scan` -> the module `lorakit.data.load`
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, file in modules.items():
        if name == root:
            continue
        here = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                targets.update(f"{base}.{a.name}" for a in node.names)
        graph[name] = {t for t in map(owner, targets) if t and t != name and t != root and t.split(".")[0] == root}
    return graph


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_finds_a_loop_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    assert loops(import_graph(pkg)) == [["pkg.a", "pkg.sub.b"]]


def test_the_package_has_no_import_loops():
    graph = import_graph()
    assert "lorakit.rundir" in graph and "lorakit.api" in graph
    assert loops(graph) == [], "import loops (module-level and function-level imports alike)"


def test_the_run_folder_module_is_a_leaf():
    """rundir is what training, merge, export and the engine share: it may use only config, errors and
    atomic writes, so depending on it can never tie those stages to one another."""
    assert import_graph()["lorakit.rundir"] <= {"lorakit.config", "lorakit.errors", "lorakit.atomic"}


def test_every_import_of_a_lorakit_module_names_one_that_exists():
    """A function-level import of a moved or renamed module fails only when that function runs: find them
    all here, in the package, the tests and the benchmarks."""
    repo = PACKAGE.parents[1]
    modules = {module_name(f, PACKAGE) for f in PACKAGE.rglob("*.py")}
    missing = []
    for folder in (PACKAGE, repo / "tests", repo / "benchmarks"):
        for file in folder.rglob("*.py"):
            if "node_modules" in file.parts or ".cache" in file.parts:
                continue
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.ImportFrom)
                    and not node.level
                    and (node.module or "").split(".")[0] == "lorakit"
                ):
                    if node.module not in modules:
                        missing.append(f"{file.relative_to(repo)}:{node.lineno}: {node.module}")
                elif isinstance(node, ast.Import):
                    missing += [
                        f"{file.relative_to(repo)}:{node.lineno}: {a.name}"
                        for a in node.names
                        if a.name.split(".")[0] == "lorakit" and a.name not in modules
                    ]
    assert missing == []
