"""The package's shape: no import cycles between pixelwise's modules (top-level and function-level imports
alike), and prediction that never loads the training code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pixelwise

PACKAGE = Path(pixelwise.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module → the pixelwise modules it imports anywhere in its source (a package import counts as its
    ``__init__``; ``from pixelwise.x import y`` counts as ``pixelwise.x.y`` when that is a module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "pixelwise.train.optim" in graph["pixelwise.config"]  # lazy, inside TrainConfig.validate
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " → ".join(cycle)


def test_prediction_does_not_load_training_code():
    code = ("import sys, pixelwise.predict.engine, pixelwise.predict.onnx_engine, pixelwise.predict.predict, "
            "pixelwise.evaluate.evaluate, pixelwise.deploy.onnx_export; "
            "print(sorted(m for m in sys.modules if m.startswith(('pixelwise.train', 'kornia', 'typer'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
