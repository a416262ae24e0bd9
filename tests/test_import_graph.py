"""The import graph of recmtl/ and pipelines/ against the intended layers: every import (lazy
ones and ``TYPE_CHECKING`` ones included) goes to the importer's own layer or a lower one, and
no set of files imports itself round in a circle. A new cycle or an upward import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module belongs to the longest prefix that names it.
LAYERS: list[tuple[str, ...]] = [
    ("recmtl.errors", "recmtl.logs"),
    ("recmtl.modules",),
    ("recmtl.config", "recmtl.storage"),
    ("recmtl.data", "recmtl.losses", "recmtl.metrics"),
    ("recmtl.models",),
    ("recmtl.export", "recmtl.predict"),
    ("recmtl.train",),
    ("pipelines.synthetic", "pipelines.feature_store"),
    ("pipelines.jobs",),
    ("pipelines.cli",),
    ("pipelines.bench",),
]


def modules(root: Path = ROOT) -> dict[str, Path]:
    """``dotted.name -> file`` for every source file of the two packages (a package is its
    ``__init__.py``)."""
    found = {}
    for top in ("recmtl", "pipelines"):
        for path in sorted((root / top).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            if "." in name:  # the two top packages' faces hold a docstring only
                found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The known modules ``path`` imports anywhere in it: ``from a.b import c`` names ``a.b.c``
    when that is a module, else ``a.b``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                     else node.module for a in node.names]
        else:
            continue
        out |= {n for n in names if n in known}
    return out


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    found = modules(root)
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def layer(name: str) -> int:
    matches = [(len(p), i) for i, prefixes in enumerate(LAYERS) for p in prefixes
               if name == p or name.startswith(p + ".")]
    if not matches:
        raise LookupError(f"{name} is on no layer: add it to LAYERS")
    return max(matches)[1]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected sets of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _package_faces(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` that only hands on its own modules' names is a face, not a
    room: an import of the face counts as an import of what it re-exports."""
    return {a: {c for b in bs for c in (edges[b] if _is_face(b, edges) else {b})}
            for a, bs in edges.items()}


def _is_face(name: str, edges: dict[str, set[str]]) -> bool:
    return bool(edges[name]) and all(b.startswith(name + ".") for b in edges[name])


def test_every_module_is_on_a_layer():
    assert [m for m in graph() if not _on_some_layer(m)] == []


def _on_some_layer(name: str) -> bool:
    try:
        layer(name)
    except LookupError:
        return False
    return True


def test_no_import_runs_up_a_layer():
    edges = _package_faces(graph())
    upward = sorted(f"{a} -> {b}" for a, bs in edges.items() for b in bs
                    if layer(b) > layer(a))
    assert upward == []


def test_no_import_cycles():
    assert cycles(_package_faces(graph())) == []


def test_the_graph_test_sees_a_lazy_cycle_and_an_upward_import(tmp_path):
    """The checks above would fail on a cycle through a function-level import, and on a
    module of a lower layer importing a higher one."""
    pkg = tmp_path / "recmtl"
    (pkg / "modules").mkdir(parents=True)
    (pkg / "train").mkdir()
    (tmp_path / "pipelines").mkdir()
    for d in (pkg, pkg / "modules", pkg / "train", tmp_path / "pipelines"):
        (d / "__init__.py").write_text("")
    (pkg / "modules" / "a.py").write_text("def f():\n    from recmtl.modules import b\n")
    (pkg / "modules" / "b.py").write_text("from recmtl.modules.a import f\n"
                                          "from recmtl.train.loop import g\n")
    (pkg / "train" / "loop.py").write_text("g = 1\n")
    edges = _package_faces(graph(tmp_path))
    assert cycles(edges) == [["recmtl.modules.a", "recmtl.modules.b"]]
    assert [(a, b) for a, bs in edges.items() for b in bs if layer(b) > layer(a)] == [
        ("recmtl.modules.b", "recmtl.train.loop")]


@pytest.mark.parametrize("name,expected", [("recmtl.config.schema", 2), ("recmtl.models", 4),
                                           ("pipelines.bench.harness", 10)])
def test_layer_of(name, expected):
    assert layer(name) == expected
