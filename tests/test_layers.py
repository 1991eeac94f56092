"""The import structure of DESIGN.md §2/§2b, checked statically: `vad/` never imports
`pipelines` or Ray, there are no import cycles, and inside `vad/` layers only point down.

Every ``.py`` under ``vad/`` and ``pipelines/`` is parsed with :mod:`ast` (nothing is imported).
All import statements count, including those inside functions (a lazy import is still a
dependency), except those under ``if TYPE_CHECKING:``. Importing ``a.b.c`` is an edge to
``a.b.c`` only: the parent packages Python also runs are not added as edges.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("vad", "pipelines")

# DESIGN §2b, earliest first: a module may import its own layer and earlier ones, never a later
# one. Modules in one tuple share a layer. Subpackages not listed (vad.config, vad.utils,
# vad.fsutil, vad.paths, vad.assets, vad.data, vad.eval, vad.viz, vad.rundir, ...) are only held
# to the no-pipelines/no-Ray rule and to the no-cycle rule.
LAYERS: list[tuple[str, ...]] = [
    ("vad.io",),
    ("vad.clips",),
    ("vad.features",),
    ("vad.cache",),
    ("vad.heads",),
    ("vad.events",),
    ("vad.explain",),
    ("vad.sinks", "vad.report"),
]

# Top-level names `vad/` must never import (pipelines own jobs and parallelism).
FORBIDDEN_IN_VAD = ("pipelines", "ray")


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: ``target`` is a repo module, or the raw dotted name
    when it is not in the repo (a third-party or standard-library module)."""

    source: str  # importing module
    target: str
    in_repo: bool
    file: str  # repo-relative path
    line: int
    code: str  # the statement as written

    def where(self) -> str:
        return f"{self.file}:{self.line}: `{self.code}`"


def module_name(path: Path, repo: Path) -> str:
    parts = list(path.relative_to(repo).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover_modules(repo: Path, roots: tuple[str, ...] = ROOTS) -> dict[str, Path]:
    """Dotted name -> file, for every module and package of the repo's roots."""
    return {
        module_name(path, repo): path
        for root in roots
        for path in sorted((repo / root).rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportCollector(ast.NodeVisitor):
    """Every Import/ImportFrom node, at any depth, minus ``if TYPE_CHECKING:`` bodies."""

    def __init__(self) -> None:
        self.nodes: list[ast.Import | ast.ImportFrom] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:  # the `else:` of a TYPE_CHECKING block runs at run time
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.nodes.append(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.nodes.append(node)


def _resolve_dotted(name: str, modules: dict[str, Path]) -> tuple[str, bool]:
    """``import a.b.c``: the module itself when it is in the repo."""
    if name in modules:
        return name, True
    return name, False


def _package_of(source: str, modules: dict[str, Path]) -> str:
    is_package = modules[source].name == "__init__.py"
    return source if is_package else source.rpartition(".")[0]


def resolve_imports(source: str, path: Path, modules: dict[str, Path], repo: Path) -> list[Import]:
    """The dependencies of one module, one per imported module (``from a.b import c`` is
    ``a.b.c`` when that is a repo module, else ``a.b``); relative imports are resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    collector = _ImportCollector()
    collector.visit(tree)
    rel = path.relative_to(repo).as_posix()
    out: list[Import] = []
    for node in collector.nodes:
        code = ast.unparse(node)
        found: dict[str, bool] = {}  # target -> in repo, once per statement
        if isinstance(node, ast.Import):
            for alias in node.names:
                target, in_repo = _resolve_dotted(alias.name, modules)
                found[target] = in_repo
            out.extend(Import(source, tgt, inr, rel, node.lineno, code) for tgt, inr in found.items())
            continue
        if node.module == "__future__":
            continue
        if node.level:
            base = _package_of(source, modules)
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if alias.name != "*" and sub in modules:
                found[sub] = True
            else:
                target, in_repo = _resolve_dotted(base, modules)
                found[target] = in_repo
        out.extend(Import(source, tgt, inr, rel, node.lineno, code) for tgt, inr in found.items())
    return out


def collect_imports(repo: Path = REPO, roots: tuple[str, ...] = ROOTS) -> list[Import]:
    modules = discover_modules(repo, roots)
    return [imp for name, path in modules.items() for imp in resolve_imports(name, path, modules, repo)]


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative, so deep graphs cannot hit the recursion limit).
    Returns every component, each sorted; a cycle is a component of 2+ nodes or a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components that contain a cycle."""
    return [
        c for c in strongly_connected_components(graph)
        if len(c) > 1 or c[0] in graph.get(c[0], set())
    ]


def layer_of(module: str, layers: list[tuple[str, ...]] = LAYERS) -> int | None:
    for rank, names in enumerate(layers):
        if any(module == n or module.startswith(n + ".") for n in names):
            return rank
    return None


def _layer_label(rank: int) -> str:
    return "/".join(LAYERS[rank])


# ------------------------------------------------------------------------------------------------
# The checker's own tests: it must be able to fail.
# ------------------------------------------------------------------------------------------------


def test_cycle_finder_finds_a_known_cycle() -> None:
    graph = {
        "a": {"b"},
        "b": {"c"},
        "c": {"a", "d"},  # a -> b -> c -> a
        "d": {"e"},
        "e": set(),
        "f": {"f"},  # a self-import
        "g": {"a"},
    }
    assert sorted(find_cycles(graph)) == [["a", "b", "c"], ["f"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []


def test_resolver_handles_from_relative_and_type_checking(tmp_path: Path) -> None:
    pkg = tmp_path / "vad" / "features"
    pkg.mkdir(parents=True)
    (tmp_path / "vad" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (tmp_path / "vad" / "cache.py").write_text("")
    (pkg / "base.py").write_text("")
    (pkg / "clip.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import base\n"
        "from .base import X\n"
        "from .. import cache\n"
        "import ray.data\n"
        "if TYPE_CHECKING:\n"
        "    from vad.features import extractor_only_for_types\n"
        "def f():\n"
        "    from pipelines.score import ScoreJob\n"
    )
    modules = discover_modules(tmp_path, ("vad",))
    got = resolve_imports("vad.features.clip", pkg / "clip.py", modules, tmp_path)
    targets = [(i.target, i.in_repo) for i in got]
    assert ("vad.features.base", True) in targets
    assert targets.count(("vad.features.base", True)) == 2  # two statements, one edge each
    assert ("vad.cache", True) in targets
    assert ("ray.data", False) in targets
    assert ("pipelines.score", False) in targets
    assert not any("extractor_only_for_types" in i.code for i in got)
    assert "vad" not in [t for t, _ in targets]  # no implicit edges to parent packages


# ------------------------------------------------------------------------------------------------
# The repo
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return collect_imports()


def test_vad_never_imports_pipelines_or_ray(imports: list[Import]) -> None:
    bad = [
        imp for imp in imports
        if imp.source.split(".")[0] == "vad" and imp.target.split(".")[0] in FORBIDDEN_IN_VAD
    ]
    if bad:
        pytest.fail("vad/ must not import pipelines or ray (DESIGN §2):\n" + "\n".join(
            f"  {imp.where()} -> {imp.target}" for imp in bad
        ), pytrace=False)


def test_no_import_cycles(imports: list[Import]) -> None:
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set())
        if imp.in_repo:
            graph[imp.source].add(imp.target)
    cycles = find_cycles(graph)
    lines: list[str] = []
    for cycle in cycles:
        members = set(cycle)
        lines.append("cycle: " + " <-> ".join(cycle))
        lines.extend(
            f"  {imp.where()} -> {imp.target}"
            for imp in imports
            if imp.source in members and imp.target in members
        )
    if cycles:
        pytest.fail("import cycles (DESIGN §2b):\n" + "\n".join(lines), pytrace=False)


def test_layers_only_point_down(imports: list[Import]) -> None:
    bad: list[str] = []
    for imp in imports:
        if not imp.in_repo:
            continue
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src is not None and dst is not None and dst > src:
            bad.append(
                f"  {imp.where()}: {imp.source} (layer {_layer_label(src)}) imports "
                f"{imp.target} (later layer {_layer_label(dst)})"
            )
    order = " -> ".join(_layer_label(i) for i in range(len(LAYERS)))
    if bad:
        pytest.fail(f"upward imports inside vad/ (order {order}):\n" + "\n".join(bad), pytrace=False)
