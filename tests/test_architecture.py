"""The shape of the code: imports flow one way (no cycles), modules stay small, functions stay simple.

The import graph is built from the source with :mod:`ast` (nothing is imported): every ``import``/``from``
statement of a project module, at module level or inside a function (an in-function import is still a
dependency), except those under ``if TYPE_CHECKING:``. Importing ``a.b.c`` also imports the packages ``a.b``
and ``a`` (their ``__init__``), so those count as dependencies too, except the importer's own packages (a
package importing its submodules is how packages work, not a cycle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("spisim", "spinet", "cli")

MAX_LINES = 800
"""Longest module allowed in spisim/, spinet/ and cli/."""

# ----------------------------------------------------------------------------------------------
# The graph


def module_name(path: Path) -> str:
    """``spisim/detector/geometry.py`` -> ``spisim.detector.geometry``; a package's ``__init__.py`` -> its name."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` outside ``if TYPE_CHECKING:`` blocks, at any depth."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that importing module ``name`` (file ``path``) imports, directly."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    targets: set[str] = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
            names: list[str] = []
        else:
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            bases = [base]
            names = [f"{base}.{alias.name}" for alias in node.names]
        for target in [*bases, *names]:
            if target in modules:
                targets.add(target)
    own = set(_ancestors(name))
    implied = {a for t in targets for a in _ancestors(t) if a in modules and a not in own}
    return (targets | implied) - {name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = project_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]], nodes: set[str]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself) among ``nodes``,
    each sorted; Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root] & nodes)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child] & nodes))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


# ----------------------------------------------------------------------------------------------
# The graph builder itself


def test_the_graph_sees_relative_in_function_and_package_imports(graph):
    assert "spisim.units" in graph["spisim.schema"]  # from .units import ... at module level
    assert "spisim.scattering.exact" in graph["spisim.scattering"]  # a package's __init__
    assert "spisim.manifest" in graph["spisim.simulator"]  # from .manifest import Manifest: the package
    assert {"spisim.manifest.build", "spisim.manifest"} <= graph["spisim.simulator"]  # and its parent, implied
    assert "spisim.generate" in graph["spisim.visualize"]  # an in-function import (picture_format)
    assert "spisim.detector" not in graph["spisim.detector.geometry"]  # not the importer's own package
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, {"a", "b", "c", "d"}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}, {"a", "b"}) == []


# ----------------------------------------------------------------------------------------------
# The rules


def test_no_import_cycle_among_spisim_modules(graph):
    spisim = {m for m in graph if m.split(".")[0] == "spisim"}
    assert cycles(graph, spisim) == []


def test_no_import_cycle_among_spisim_and_the_cli_modules(graph):
    nodes = {m for m in graph if m.split(".")[0] in ("spisim", "cli")}
    assert cycles(graph, nodes) == []


def test_physics_modules_do_not_import_the_manifest_schema(graph):
    physics = ("spisim.noise", "spisim.scene", "spisim.beam", "spisim.photons", "spisim.scattering",
               "spisim.detector", "spisim.particles", "spisim.atomistic", "spisim.continuum", "spisim.structure")
    for name, deps in graph.items():
        if name.startswith(physics):
            assert not {d for d in deps if d.startswith("spisim.manifest")}, name


def test_no_import_cycle_among_spinet_modules(graph):
    spinet = {m for m in graph if m.split(".")[0] == "spinet"}
    assert cycles(graph, spinet) == []


def test_no_import_cycle_anywhere(graph):
    assert cycles(graph, set(graph)) == []


def test_study_and_report_meet_only_in_the_records(graph):
    """spinet.study makes the records, spinet.report reads them: neither imports the other (cli.evaluate calls
    both), and the records import neither."""
    def package(name: str) -> set[str]:
        return {m for m in graph if m == name or m.startswith(name + ".")}

    study, report = package("spinet.study"), package("spinet.report")
    assert not {d for m in report for d in graph[m]} & study
    assert not {d for m in study for d in graph[m]} & report
    assert not graph["spinet.records"] & (study | report)
    assert "spinet.records" in graph["spinet.report"] and "spinet.records" in graph["spinet.study.runner"]


def test_modules_are_under_800_lines(graph):
    modules = project_modules()
    long = {m: n for m in modules if (n := len(modules[m].read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_no_function_of_radon_grade_e_or_f():
    radon = pytest.importorskip("radon.complexity", reason="radon is in the test extra (pip install radon)")
    from radon.visitors import ComplexityVisitor

    worst = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            visitor = ComplexityVisitor.from_code(path.read_text(encoding="utf-8"))
            for block in [*visitor.functions, *(m for c in visitor.classes for m in c.methods)]:
                grade = radon.cc_rank(block.complexity)
                where = f"{path.relative_to(REPO).as_posix()} {block.name}"
                if grade in "EF":
                    worst[f"{where} (line {block.lineno})"] = f"{grade} ({block.complexity})"
    assert worst == {}
