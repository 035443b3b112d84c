"""The package's import graph, read from the source (no execution): no cycles, and imports flow
down only - the lower floors (data, model, metrics, losses, scenarios, inference, continual,
config, errors) never import engine/, compat/, cli or demo, not even lazily inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "eclipse_seg"

# floor of each top-level part of the package (a module may import only its floor or lower ones)
FLOORS = {
    "errors": 0,
    "data": 1,
    "model": 2,
    "inference": 2,
    "panoptic_segments": 2,
    "losses": 2,
    "metrics": 2,
    "scenarios": 2,
    "continual": 3,
    "config": 3,
    "runtime": 3,
    "engine": 4,
    "compat": 5,
    "demo": 5,
    "export": 5,
    "cli": 6,
    "__main__": 7,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """eclipse_seg modules imported anywhere in the file (module level or inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("eclipse_seg"))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.startswith("eclipse_seg")
        ):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # `from eclipse_seg.x import y`: y may be a module or a name in x
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported != "eclipse_seg":
                targets.add(imported)
        graph[name] = targets
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_has_a_floor():
    parts = {_part(m) for m in _graph()} - {"__init__"}
    assert parts <= set(FLOORS), (
        f"give these parts a floor in FLOORS: {sorted(parts - set(FLOORS))}"
    )


def test_imports_flow_down_only():
    wrong = [
        f"{src} -> {dst}"
        for src, targets in _graph().items()
        for dst in targets
        if _part(src) != "__init__" and FLOORS[_part(dst)] > FLOORS[_part(src)]
    ]
    assert not wrong, "imports from a lower floor into a higher one:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [node, nxt]))
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_violation(tmp_path):
    """The graph reader finds lazy imports inside functions (the rule covers them too)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from eclipse_seg.engine.build import build_model\n")
    assert "eclipse_seg.engine.build" in _imports(src)
