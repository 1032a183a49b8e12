"""The package's layering rules, read from the source with `ast` (nothing is imported):

1. common/ imports no armkit package (it is the neutral plumbing every package builds on);
2. decoders/ and backbones/ never import tokenizer/ (the AR recipes are where the AR model meets the tokenizer);
3. no eager import cycle between armkit modules (module-level imports; not inside a function, not under
   `if TYPE_CHECKING:`);
4. nothing outside recipes/commands/ imports the CLI (`armkit.recipes.commands.*`, or an old name of it such as
   `armkit.recipes.cli`).

Each rule is a function over an `ImportGraph`, so every rule is also shown to fire on a planted violation.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from armkit.recipes.moved import new_name

ROOT = Path(__file__).resolve().parents[1]  # the repository root is the package `armkit`
SKIP_DIRS = {"tests", "benchmarks", ".venv", "build", "dist", "__pycache__"}
CLI = "armkit.recipes.commands"


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the armkit module (or package) it names, old names resolved through recipes/moved.py
    line: int
    eager: bool  # runs when `source` is imported: module level (or a class body), not in a function or TYPE_CHECKING


@dataclass
class ImportGraph:
    modules: dict[str, Path] = field(default_factory=dict)  # module name -> file
    imports: list[Import] = field(default_factory=list)

    def eager_edges(self) -> dict[str, set[str]]:
        """module -> the armkit modules that importing it executes (each package `__init__` on the way included)."""
        edges: dict[str, set[str]] = {name: set() for name in self.modules}
        for imp in self.imports:
            if imp.eager:
                edges[imp.source].update(t for t in _executed(imp.source, imp.target) if t in self.modules)
        return edges


def module_name(root: Path, file: Path) -> str:
    parts = ["armkit", *file.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _executed(source: str, target: str) -> list[str]:
    """Importing `target` runs each enclosing package's `__init__`, then the target. An enclosing package of the
    importer itself is already being imported when the importer runs, so it adds no edge (unless named directly)."""
    parts = target.split(".")
    out = []
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name == target or not (source == name or source.startswith(name + ".")):
            out.append(name)
    return out


def _canonical(name: str) -> str:
    return new_name(name) or name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: dict[str, Path]) -> None:
        self.module, self.modules = module, modules
        self.package = module if is_package else module.rpartition(".")[0]
        self.lazy = 0
        self.found: list[Import] = []

    def _add(self, target: str, line: int) -> None:
        if target == "armkit" or target.startswith("armkit."):
            self.found.append(Import(self.module, _canonical(target), line, eager=self.lazy == 0))

    def _function(self, node) -> None:
        self.lazy += 1
        self.generic_visit(node)
        self.lazy -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.lazy += 1
            for child in node.body:
                self.visit(child)
            self.lazy -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            package = ".".join(base + ([node.module] if node.module else []))
        else:
            package = node.module or ""
        if not (package == "armkit" or package.startswith("armkit.")):
            return
        package = _canonical(package)
        for alias in node.names:
            child = _canonical(f"{package}.{alias.name}")
            if child in self.modules:  # `from package import submodule` imports the package, then the submodule
                self._add(child, node.lineno)
            else:  # a name defined by the package's `__init__`
                self._add(package, node.lineno)


def build_graph(root: Path) -> ImportGraph:
    """Every .py file under `root` (the `armkit` package; tests/, benchmarks/ and the venv left out) and its imports
    of armkit modules."""
    graph = ImportGraph()
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        graph.modules[module_name(root, file)] = file
    names = frozenset(graph.modules)
    for name, file in graph.modules.items():
        text = file.read_text(encoding="utf-8")
        key = (name, text, names)
        if key not in _PARSED:  # the planted-violation tests re-read an unchanged copy: parse each text once
            collector = _Collector(name, file.name == "__init__.py", graph.modules)
            collector.visit(ast.parse(text, filename=str(file)))
            _PARSED[key] = collector.found
        graph.imports.extend(_PARSED[key])
    return graph


_PARSED: dict[tuple[str, str, frozenset[str]], list[Import]] = {}


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _where(graph: ImportGraph, imp: Import) -> str:
    return f"{graph.modules[imp.source].relative_to(graph.modules['armkit'].parent)}:{imp.line} imports {imp.target}"


def common_imports_armkit(graph: ImportGraph) -> list[str]:
    """Rule 1: common/ imports no armkit package (any import, lazy ones included); itself aside."""
    return [_where(graph, i) for i in graph.imports
            if _inside(i.source, "armkit.common") and not _inside(i.target, "armkit.common")]


def library_imports_tokenizer(graph: ImportGraph) -> list[str]:
    """Rule 2: decoders/ and backbones/ never import armkit.tokenizer (lazy imports included)."""
    return [_where(graph, i) for i in graph.imports
            if (_inside(i.source, "armkit.decoders") or _inside(i.source, "armkit.backbones"))
            and _inside(i.target, "armkit.tokenizer")]


def cli_imported_outside_commands(graph: ImportGraph) -> list[str]:
    """Rule 4: only recipes/commands/ imports `armkit.recipes.commands` (lazy imports included)."""
    return [_where(graph, i) for i in graph.imports
            if _inside(i.target, CLI) and not _inside(i.source, CLI)]


def import_cycles(graph: ImportGraph) -> list[list[str]]:
    """Rule 3: each eager import cycle, as a path `[a, b, ..., a]` (one per strongly connected component)."""
    edges = graph.eager_edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    for start in sorted(edges):  # Tarjan, iteratively (the graph may be deep)
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in edges[node]:
                        components.append(component)
    return [_cycle_path(edges, component) for component in components]


def _cycle_path(edges: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest cycle through the component's first module (breadth-first, inside the component)."""
    start = min(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in component {component}")


RULES = {"common/ imports armkit": common_imports_armkit,
         "decoders/ or backbones/ import armkit.tokenizer": library_imports_tokenizer,
         "the CLI imported outside recipes/commands/": cli_imported_outside_commands}


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return build_graph(ROOT)


def test_graph_reads_the_whole_package(graph):
    for name in ("armkit", "armkit.common.buildable", "armkit.tokenizer.model", "armkit.decoders.dit",
                 "armkit.backbones.ar", "armkit.recipes.commands.cli", "armkit.recipes.data.reader"):
        assert name in graph.modules
    assert not any(_inside(name, "armkit.tests") or _inside(name, "armkit.benchmarks") for name in graph.modules)
    edges = graph.eager_edges()
    assert "armkit.tokenizer.model" in edges["armkit.tokenizer"]  # `from armkit.tokenizer.model import Tokenizer`


@pytest.mark.parametrize("rule", RULES, ids=list(RULES))
def test_layering_rule_holds(graph, rule):
    violations = RULES[rule](graph)
    assert not violations, f"{rule}:\n  " + "\n  ".join(violations)


def test_no_eager_import_cycle(graph):
    cycles = import_cycles(graph)
    assert not cycles, "eager import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


# --- each rule fires on a planted violation, in a copy of the package -------------------------------------------


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the package's source (no tests, benchmarks or venv) to plant violations in."""
    copy = tmp_path / "armkit"
    shutil.copytree(ROOT, copy, ignore=lambda folder, names: [
        n for n in names if n in SKIP_DIRS or n.startswith(".") or n.endswith(".egg-info")
        or (Path(folder, n).is_file() and not n.endswith(".py"))])
    graph = build_graph(copy)
    assert not any(rule(graph) for rule in RULES.values()) and not import_cycles(graph)
    return copy


def _append(file: Path, text: str) -> None:
    file.write_text(file.read_text() + "\n" + text + "\n")


@pytest.mark.parametrize("line", ["from armkit.tokenizer.quantizer import FSQQuantizer",
                                  "from .. import backbones",
                                  "def later():\n    import armkit.recipes.data.reader"])
def test_common_rule_fires(tree, line):
    _append(tree / "common" / "weights.py", line)
    violations = common_imports_armkit(build_graph(tree))
    assert len(violations) == 1 and violations[0].startswith("common/weights.py:")


@pytest.mark.parametrize("where, line", [("decoders/dit.py", "from armkit.tokenizer import Tokenizer"),
                                         ("backbones/ar.py", "from ..tokenizer.losses import sigmoid"),
                                         ("backbones/ar.py", "def f():\n    import armkit.tokenizer.model")])
def test_library_rule_fires(tree, where, line):
    _append(tree / where, line)
    violations = library_imports_tokenizer(build_graph(tree))
    assert len(violations) == 1 and violations[0].startswith(where + ":")


@pytest.mark.parametrize("line", ["from armkit.recipes.commands.cli import main",
                                  "from armkit.recipes import cli",  # the old name, resolved through moved.py
                                  "def f():\n    from ..commands import generate"])
def test_cli_rule_fires(tree, line):
    _append(tree / "recipes" / "ar" / "generation.py", line)
    violations = cli_imported_outside_commands(build_graph(tree))
    assert len(violations) == 1 and violations[0].startswith("recipes/ar/generation.py:")
    assert "armkit.recipes.commands" in violations[0]


def test_cycle_rule_fires_and_reports_the_path(tree):
    # tokenizer/quantizer.py -> common/weights.py -> tokenizer/__init__.py -> tokenizer/model.py -> quantizer.py
    _append(tree / "common" / "weights.py", "from armkit.tokenizer import Tokenizer")
    cycles = import_cycles(build_graph(tree))
    assert len(cycles) == 1
    cycle = cycles[0]
    assert cycle[0] == cycle[-1] and "armkit.common.weights" in cycle and "armkit.tokenizer" in cycle
    edges = build_graph(tree).eager_edges()
    assert all(b in edges[a] for a, b in zip(cycle, cycle[1:]))  # a real path, edge by edge


def test_cycle_rule_ignores_lazy_and_type_checking_imports(tree):
    _append(tree / "common" / "weights.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                             "    from armkit.tokenizer import Tokenizer\n"
                                             "def f():\n    from armkit.tokenizer import Tokenizer")
    assert not import_cycles(build_graph(tree))
    _append(tree / "common" / "weights.py", "class Late:\n    from armkit.tokenizer import Tokenizer")  # runs eagerly
    assert import_cycles(build_graph(tree))


def test_lazy_package_getattr_adds_no_edge(tree):
    """`from armkit.recipes.data import X` runs only data/__init__, whose lazy `__getattr__` imports nothing
    eagerly; an eager import in that `__init__` would close the cycle."""
    _append(tree / "recipes" / "data" / "reader.py", "from armkit.recipes.data import ShardDataModule")
    assert not import_cycles(build_graph(tree))
    _append(tree / "recipes" / "data" / "__init__.py", "from armkit.recipes.data.reader import ShardReader")
    cycles = import_cycles(build_graph(tree))
    assert cycles and {"armkit.recipes.data", "armkit.recipes.data.reader"} <= set(cycles[0])
