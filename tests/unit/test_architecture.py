"""The import rules and the diagram of docs/architecture.md, held against the code.

The rules are read from the doc's table (its last column, "may import"), not copied
here: every ``import`` of ``s3maptiler/``, ``devtools/``, ``bench/`` and
``application.py`` (top-level or inside a function) is an arrow, and an arrow that a
rule forbids, an import cycle, a diagram arrow that no import makes, or a real arrow
the diagram misses fails here with the file and the name."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "s3maptiler"
DOC = ROOT / "docs" / "architecture.md"

# Code outside the package that the rules cover too, and the one part only they may use.
OUTSIDE = ("devtools", "bench")
ENTRY = "application"
TESTS = "tests"

_CELL_NAME = re.compile(r"^`([a-z_]+)(?:/|\.py)`")
_TICKED = re.compile(r"`([a-z_]+)`")


def rules_from_doc(text: str) -> dict[str, set[str]]:
    """The doc's table: each row's part (```tiles/```, ```metrics.py```) and the parts
    its last column names in backticks ("nothing of the project": none)."""
    rules: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not (match := _CELL_NAME.match(cells[0])):
            continue
        rules[match.group(1)] = set(_TICKED.findall(cells[-1]))
    return rules


def diagram_from_doc(text: str) -> set[tuple[str, str]]:
    """The arrows of the doc's mermaid diagram: ``a & b --> c & d`` is four arrows."""
    block = text.split("```mermaid", 1)[1].split("```", 1)[0]
    arrows: set[tuple[str, str]] = set()
    for line in block.splitlines():
        if "-->" not in line:
            continue
        left, right = line.split("-->")
        for source in left.split("&"):
            for target in right.split("&"):
                arrows.add((source.strip(), target.strip()))
    return arrows


MAY_IMPORT = rules_from_doc(DOC.read_text())


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module the rules cover, by dotted name."""
    paths = [*PACKAGE.rglob("*.py"), ROOT / f"{ENTRY}.py"]
    for folder in OUTSIDE:
        paths += (ROOT / folder).glob("*.py")
    return {module_name(path): path for path in sorted(paths)}


def suite_modules() -> set[str]:
    return {module_name(path) for path in (ROOT / TESTS).rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The covered modules `path` imports, anywhere in the file (function-level too)."""
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


@functools.cache
def graph() -> dict[str, set[str]]:
    known = set(modules()) | suite_modules()
    return {
        name: imports_of(path, known) - {name, "s3maptiler"} for name, path in modules().items()
    }


def part(module: str) -> str:
    """``s3maptiler.render.wms`` -> ``render``; ``s3maptiler.metrics`` -> ``metrics``;
    ``bench.soak`` -> ``bench``; ``tests.servers`` -> ``tests``."""
    first, _, rest = module.partition(".")
    if first != "s3maptiler":
        return first
    return rest.split(".")[0]


def part_arrows(package_only: bool = False) -> set[tuple[str, str]]:
    arrows = set()
    for module, targets in graph().items():
        if module == "s3maptiler" or (package_only and not module.startswith("s3maptiler.")):
            continue
        for target in targets:
            if part(target) != part(module):
                arrows.add((part(module), part(target)))
    return arrows


def test_the_doc_gives_rules():
    assert {"tiles", "http", "cli", ENTRY, *OUTSIDE} <= set(MAY_IMPORT)


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


def test_only_the_entry_point_imports_http():
    assert [name for name, allowed in MAY_IMPORT.items() if "http" in allowed] == [ENTRY]


def test_the_package_imports_nothing_outside_it():
    outside = {ENTRY, TESTS, *OUTSIDE}
    for name in MAY_IMPORT:
        if name not in outside:
            assert not MAY_IMPORT[name] & outside, name


def test_every_diagram_arrow_is_a_real_import_and_none_is_missing():
    drawn = diagram_from_doc(DOC.read_text())
    real = part_arrows(package_only=True)
    assert drawn - real == set(), f"drawn but no such import: {sorted(drawn - real)}"
    assert real - drawn == set(), f"imports the diagram misses: {sorted(real - drawn)}"


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


def test_the_doc_readers_read_what_they_are_given():
    table = (
        "| part | owns | may import |\n|---|---|---|\n"
        "| `tiles/` | grids | nothing of the project |\n"
        "| `metrics.py` | metrics | nothing |\n"
        "| `render/` | `wms.py` (the `tiles` word here is not a rule) | `tiles`, `config` |\n"
    )
    expected = {"tiles": set(), "metrics": set(), "render": {"tiles", "config"}}
    assert rules_from_doc(table) == expected
    diagram = '```mermaid\nflowchart TD\n    a["x"]\n    a --> b & c\n    d & e --> f\n```\n'
    assert diagram_from_doc(diagram) == {("a", "b"), ("a", "c"), ("d", "f"), ("e", "f")}
