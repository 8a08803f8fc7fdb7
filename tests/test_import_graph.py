"""No import cycle between revati's packages (every import, also inside functions, counts).

Packages: the core (``revati/*.py``: schema, errors, run folders, tables, ...), and each
sub-package (tracer, replay, shim, cli, bench, sweep, report, workload, metrics, models_zoo, drivers).
A cycle (replay importing tracer's run folders while tracer calls into replay, say) means a
layer cannot be understood, tested or replaced alone. Entry points (``__main__.py``) are left
out: they only start the CLI.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIRS = {"revati": REPO / "revati", "revati.tracer": REPO / "tracer",
               "revati.replay": REPO / "replay", "revati.shim": REPO / "shim"}
SUBPACKAGES = ("tracer", "replay", "shim", "cli", "bench", "sweep", "report", "workload", "metrics", "models_zoo",
               "drivers")


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "revati":
        return None
    return f"revati.{parts[1]}" if len(parts) > 1 and parts[1] in SUBPACKAGES else "revati (core)"


def replay_part_of(module: str) -> str | None:
    """Which part of revati.replay a module is in: a sub-package, or "shared" (its top-level modules)."""
    parts = module.split(".")
    if parts[:2] != ["revati", "replay"]:
        return None
    if len(parts) == 2:
        return "replay (shared)"
    return f"replay.{parts[2]}" if parts[2] in REPLAY_ORDER else "replay (shared)"


# Each part may import only the parts before it (replay/__init__.py says why this order).
REPLAY_ORDER = ("kernel_db", "model_fit", "prediction", "trace_replay")


def import_graph(classify=package_of) -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> files that import it, packages as ``classify`` names them."""
    graph: dict[str, dict[str, set[str]]] = {}
    for root, folder in SOURCE_DIRS.items():
        for path in folder.rglob("*.py"):
            if "__pycache__" in path.parts or path.name == "__main__.py":
                continue
            src = classify(".".join((root, *path.relative_to(folder).with_suffix("").parts)))
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                for name in names:
                    dst = classify(name)
                    if src is not None and dst is not None and dst != src:
                        graph.setdefault(src, {}).setdefault(dst, set()).add(str(path.relative_to(REPO)))
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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


def test_the_detector_finds_a_cycle():
    assert cycles({"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}, "d": {"a": set()}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b": set()}}) == []


def test_no_cycle_between_revatis_packages():
    graph = import_graph()
    assert "revati.replay" in graph and "revati (core)" in graph["revati.replay"]  # the walk saw imports
    found = cycles(graph)
    detail = {tuple(c): {(a, b): sorted(graph[a][b])[:3] for a in c for b in c if b in graph.get(a, {})} for c in found}
    assert found == [], detail


def test_replay_sub_packages_import_only_the_ones_before_them():
    graph = import_graph(replay_part_of)
    rank = {"replay (shared)": -1} | {f"replay.{name}": i for i, name in enumerate(REPLAY_ORDER)}
    assert set(graph) >= {"replay.model_fit", "replay.prediction"}  # the walk saw imports
    backwards = {(a, b): sorted(files)[:3] for a, deps in graph.items() for b, files in deps.items()
                 if rank[b] >= rank[a]}
    assert backwards == {}
