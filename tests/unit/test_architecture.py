"""The import rules of docs/architecture.md, read from the code: every ``import`` of
``s3maptiler/`` (top-level or inside a function) is an arrow, and an arrow that a rule
forbids, or any import cycle, fails here with the file and the name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "s3maptiler"

# What each part may import of the project, besides itself (docs/architecture.md).
# A part is a subpackage (tiles, render, ...) or a top-level module (metrics).
MAY_IMPORT: dict[str, set[str]] = {
    "tiles": set(),
    "metrics": set(),
    "config": {"tiles"},
    "render": {"tiles", "config", "metrics"},
    "storage": {"tiles"},
    "archives": {"tiles"},
    "documents": {"tiles", "config"},
    "service": {"tiles", "config", "render", "storage", "archives", "metrics"},
    "bucket": {"tiles", "config", "storage", "documents"},
    "seeding": {"tiles", "config", "render", "storage", "archives"},
    "http": {"tiles", "config", "render", "storage", "documents", "service", "seeding", "metrics"},
    "cli": {
        "tiles",
        "config",
        "render",
        "storage",
        "archives",
        "documents",
        "service",
        "seeding",
        "bucket",
    },
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, anywhere in the file (function-level too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from pkg import module" imports pkg.module; "from module import name" module.
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in known
                else node.module
                for alias in node.names
            ]
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; write it absolute")
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    known = set(modules())
    return {
        name: imports_of(path, known) - {name, "s3maptiler"} for name, path in modules().items()
    }


def part(module: str) -> str:
    """``s3maptiler.render.wms`` -> ``render``; ``s3maptiler.metrics`` -> ``metrics``."""
    return module.split(".")[1] if module.count(".") else module


def test_every_part_is_in_the_rules():
    parts = {part(name) for name in modules() if name != "s3maptiler"}
    assert parts == set(MAY_IMPORT), parts ^ set(MAY_IMPORT)


@pytest.mark.parametrize("source", sorted(MAY_IMPORT))
def test_each_part_imports_only_what_its_rule_allows(source):
    broken = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        if module != "s3maptiler" and part(module) == source
        for target in sorted(targets)
        if part(target) != source and part(target) not in MAY_IMPORT[source]
    ]
    assert broken == [], f"{source} may import only {sorted(MAY_IMPORT[source])}"


def test_nothing_imports_http():
    importers = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        if part(module) != "http"
        for target in targets
        if part(target) == "http"
    ]
    assert importers == []


def test_no_import_cycles():
    """No module reaches itself through imports (Tarjan's strongly connected components)."""
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_rules_find_a_broken_one(tmp_path):
    """The reader sees function-level imports and 'from package import module'."""
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from s3maptiler.http import app\n")
    known = {"s3maptiler.http", "s3maptiler.http.app"}
    assert imports_of(source, known) == {"s3maptiler.http.app"}
