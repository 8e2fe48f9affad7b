"""The floors of the code base, checked on the source (every module parsed with ``ast``).

``pingap/`` is the library both processes stand on: it imports neither ``workers`` nor
``master``, and never gevent. ``master/`` never imports gevent (it forks and runs
threads); ``workers/`` never imports ``master/``. Every import counts: at module level,
inside functions and under ``TYPE_CHECKING``, since each is a dependency a reader must
follow. Within ``workers/`` no module imports one that (directly or not) imports it
back, and request code (the exchange, the HTTP/1 and HTTP/2 connections) gets its
services passed in (``workers.services``), never from ``workers.worker``. A concept has
one home: ``Headers`` and ``HOP_BY_HOP`` in ``pingap/headers.py``,
``EXIT_BOOT_ERROR`` in ``pingap/system/workercmd.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pingap", "master", "workers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute names (``from x import y`` gives both
    ``x`` and ``x.y``: ``y`` may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else \
        _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(path): _imports(path)
           for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _top(name: str) -> str:
    return name.partition(".")[0]


def test_every_package_is_parsed() -> None:
    assert {_top(name) for name in MODULES} == set(PACKAGES)
    assert "workers.exchange" in MODULES and "pingap.session" in MODULES


@pytest.mark.parametrize(("package", "forbidden"), [
    ("pingap", {"workers", "master", "gevent"}),
    ("master", {"workers", "gevent"}),
    ("workers", {"master"}),
])
def test_a_package_imports_nothing_above_it(package: str, forbidden: set[str]) -> None:
    offending = sorted(f"{module} imports {name}"
                       for module, names in MODULES.items() if _top(module) == package
                       for name in names if _top(name) in forbidden)
    assert offending == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (as the list of modules around it), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_workers() -> None:
    workers = {name for name in MODULES if _top(name) == "workers"}
    graph = {name: {dep for dep in MODULES[name] if dep in workers and dep != name}
             for name in workers}
    # "workers" itself is the package: importing a submodule runs it, not a cycle
    graph["workers"] = set()
    assert _cycle(graph) is None


def test_request_code_never_reaches_up_into_the_worker() -> None:
    for module in ("workers.exchange", "workers.h1", "workers.h2"):
        assert "workers.worker" not in MODULES[module], module


def _module_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


@pytest.mark.parametrize(("name", "home"), [
    ("Headers", "pingap/headers.py"),
    ("HOP_BY_HOP", "pingap/headers.py"),
    ("EXIT_BOOT_ERROR", "pingap/system/workercmd.py"),
])
def test_one_home_per_concept(name: str, home: str) -> None:
    defined = sorted(str(path.relative_to(ROOT)) for package in PACKAGES
                     for path in (ROOT / package).rglob("*.py")
                     if name in _module_level_names(path))
    assert defined == [home]


def test_the_pure_library_leaves_os_plumbing_to_the_processes() -> None:
    offending = sorted(f"{module} imports {name}" for module, names in MODULES.items()
                       if _top(module) == "pingap" and not module.startswith("pingap.system")
                       for name in names if name.startswith("pingap.system"))
    assert offending == []
