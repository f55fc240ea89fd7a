"""The import graph holds the layering: no cycles, no capability importing the guard or another
capability, and every module importing only its own floor or the floors below it.

Floors, bottom up (docs/architecture.md):

0. ``errors``, ``health``, ``keys``, ``sources``, ``_version``, ``native``
1. ``call``, ``store``, ``settings``, ``worker``, ``_polling``
2. ``component``, ``context``
3. ``telemetry``, ``validation``, ``views``, ``outputs``
4. the capability packages (``operational``, ``integrity``, ``edge_cases``, ``drift``, ``performance``,
   ``feedback_loops``)
5. ``registry``, ``config``
6. ``guard``
7. ``serving``, ``cli``, ``testing``, ``__init__``, ``__main__``

Every import counts, including those under ``if TYPE_CHECKING`` and inside functions.
"""

from __future__ import annotations

import ast
import pathlib

import guarded_serving

ROOT = pathlib.Path(guarded_serving.__file__).parent
FLOORS = {
    "errors": 0, "health": 0, "keys": 0, "sources": 0, "_version": 0, "native": 0,
    "call": 1, "store": 1, "settings": 1, "worker": 1, "_polling": 1, "_progress": 1, "arrival": 1,
    "component": 2, "context": 2,
    "telemetry": 3, "validation": 3, "views": 3, "outputs": 3,
    "operational": 4, "integrity": 4, "edge_cases": 4, "drift": 4, "performance": 4,
    "feedback_loops": 4,
    "registry": 5, "config": 5,
    "guard": 6,
    "serving": 7, "cli": 7, "report": 7, "testing": 7, "": 7, "__main__": 7,
}
CAPABILITIES = {"operational", "integrity", "edge_cases", "drift", "performance", "feedback_loops"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _edges() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    tgt = ".".join(base + ([node.module] if node.module else []))
                else:
                    tgt = node.module or ""
                cands = [tgt] + [f"{tgt}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                cands = [a.name for a in node.names]
            else:
                continue
            edges[m].update(c for c in cands if c in mods and c != m and not m.startswith(c + "."))
    return edges


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_floor():
    """A new top-level module or package must be placed on a floor (here and in docs/architecture.md)."""
    assert {_top(m) for m in _modules()} <= set(FLOORS)


def test_no_import_cycles():
    """Tarjan's strongly connected components: none larger than one module."""
    edges = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    loops: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                loops.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert loops == []


def test_capabilities_import_neither_the_guard_nor_each_other():
    """A capability depends only on the floors below it."""
    breaches = [(m, t) for m, ts in _edges().items() for t in ts
                if _top(m) in CAPABILITIES and (_top(t) == "guard" or (_top(t) in CAPABILITIES and _top(t) != _top(m)))]
    assert breaches == []


def test_imports_go_down_the_floors():
    """No module imports a module on a higher floor."""
    up = [(m, t) for m, ts in _edges().items() for t in ts if FLOORS[_top(t)] > FLOORS[_top(m)]]
    assert up == []
