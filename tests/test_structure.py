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
                return stack[stack.index(target) :] + [target]
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
    assert "pixelwise.train.optim" in graph["pixelwise.config"]  # lazy, inside Recipe.validate
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " → ".join(cycle)


def test_prediction_does_not_load_training_code():
    code = (
        "import sys, pixelwise.predict.engine, pixelwise.predict.onnx_engine, pixelwise.predict.predict, "
        "pixelwise.evaluate.evaluate, pixelwise.deploy.onnx_export; "
        "print(sorted(m for m in sys.modules if m.startswith(('pixelwise.train', 'kornia', 'typer'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_the_project_names_experiments_by_date_commit_or_name_not_by_work_stop():
    """Prose says "2026-12-02", a commit or an experiment's name; a work-session number meant something only to its
    writers."""
    import re

    root = PACKAGE.parents[1]
    listed = subprocess.run(
        [
            "git",
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            "src",
            "docs",
            "README.md",
            "benchmarks",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        import pytest

        pytest.skip("not a git checkout")
    pattern = re.compile(r"\bstop[ -]\d+", re.IGNORECASE)
    checked = [
        p
        for p in listed.stdout.splitlines()
        if not p.startswith("benchmarks/") or re.fullmatch(r"benchmarks/[^/]+\.(py|sh|json)", p)
    ]
    found = []
    for name in checked:
        try:
            text = (root / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary files, or deleted from the working tree but still in the index
        found += [f"{name}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert not found, "name experiments by date, commit or name:\n" + "\n".join(found)


# The decisions the class owner (pixelwise.data.classes) makes for everyone: "binary or not", the channel count
# of a binary output, default class names and display colours.
OWNER_ONLY = {
    r"num_classes\s*(==|!=)\s*2\b": "binary or not: ask data.classes.is_binary / ClassMap.is_binary",
    r"num_classes\s*(>|<=)\s*2\b": "binary or not: ask data.classes.is_binary / ClassMap.is_binary",
    r"\.shape\[1\]\s*==\s*1\b": "a one-channel output: ask data.classes.is_binary_output",
    r"\(\s*\"background\",\s*\"foreground\"\s*\)": "default names: data.classes.default_names",
    r"\(230,\s*30,\s*30\)|\(0,\s*200,\s*0\)": "colours: data.classes (PREDICTION_RGB, TRUTH_RGB)",
}


def test_only_the_class_owner_decides_what_follows_from_the_classes():
    import re

    owner = PACKAGE / "data" / "classes.py"
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path == owner:
            continue
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        for pattern, fix in OWNER_ONLY.items():
            for match in re.finditer(pattern, code):
                found.append(f"{path.relative_to(PACKAGE)}: {match.group(0)!r} ({fix})")
    assert not found, "\n".join(found)


def test_the_recipe_is_immutable_and_the_record_holds_what_training_learned():
    """No untyped ``extra`` bag, no field assigned on a recipe: what a run learns is its RunRecord."""
    import dataclasses
    import re

    from pixelwise.config import Recipe, RunConfig, RunRecord

    for cls in (Recipe, RunRecord, RunConfig):
        assert cls.__dataclass_params__.frozen, cls
    assert "extra" not in {f.name for f in dataclasses.fields(Recipe)} | {f.name for f in dataclasses.fields(RunRecord)}
    assert not {"threshold", "classes", "mean", "std"} & {f.name for f in dataclasses.fields(Recipe)}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\bconfig\.extra\b|\.extra\[", text), f"{path}: an untyped extra bag"
        assert not re.search(r"\b(config|recipe)\.[a-z_]+\s*=[^=]", text), f"{path}: a recipe changed in place"


# Modules that may hold a rich Console or print: the CLI owns the terminal, reporting.py the one stderr console
# that log lines and progress bars share.
TERMINAL_OWNERS = {"cli.py", "reporting.py"}


def terminal_writes(path: Path) -> list[str]:
    """Where ``path`` imports rich's Console (or rich's print) or calls ``print(``: ``line: what`` each."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = {alias.name for alias in node.names}
            if (node.module == "rich.console" and "Console" in names) or (
                node.module == "rich" and names & {"console", "print"}
            ):
                found.append(f"{node.lineno}: from {node.module} import {', '.join(sorted(names))}")
        elif isinstance(node, ast.Import) and any(alias.name == "rich.console" for alias in node.names):
            found.append(f"{node.lineno}: import rich.console")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(f"{node.lineno}: print(")
    return found


def test_library_code_does_not_print():
    """Library modules log (logging) and wrap slow loops in pixelwise.reporting.progress; only the CLI prints."""
    assert terminal_writes(PACKAGE / "cli.py"), "the check must see the CLI's own Console"
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name not in TERMINAL_OWNERS:
            found += [f"{name}:{where}" for where in terminal_writes(path)]
    assert not found, "log through logging, build tables for the CLI to print:\n" + "\n".join(found)


def test_the_python_api_writes_nothing(tmp_path, capsys, caplog, monkeypatch):
    """``pixelwise.load(run).predict(image)`` and ``predict_files`` leave stdout and stderr alone, and warn of
    nothing (a program without logging set up would see warnings on stderr through logging's last resort)."""
    import logging

    import pixelwise.reporting as reporting
    from pixelwise.predict.engine import make_predictor
    from pixelwise.predict.predict import predict_files

    from tiny_run import make_tiny_run, synth_image, write_images

    # An earlier CLI test in this process installed the CLI's output; the library's default is none.
    logger = logging.getLogger(reporting.LOGGER)
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(reporting, "_bars", False)
    run = make_tiny_run(tmp_path / "run", steps=1)
    inputs = tmp_path / "in"
    write_images(inputs)
    (inputs / "notes.txt").write_text("not an image: predict_files says it skipped it, in the log")
    capsys.readouterr()
    with caplog.at_level(logging.DEBUG, logger=reporting.LOGGER):
        segmentation = pixelwise.load(run).predict(synth_image(0))
        written = predict_files(make_predictor(run), [inputs], tmp_path / "out")
    assert segmentation.mask.shape == (96, 96) and len(written) == 3
    assert capsys.readouterr() == ("", "")
    assert any("skipped 1 item(s)" in record.getMessage() for record in caplog.records), "logged, not printed"
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
