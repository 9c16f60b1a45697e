"""Every family of user choices is one table of rows: the CLI's --help, its validation and the library derive
from it, so a row added to a table is listed, accepted and reachable without touching the CLI."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest
import torch

import pixelwise.evaluate.evaluate as evaluate_module
import pixelwise.predict.engine as engine_module
import pixelwise.predict.predict as predict_module
from pixelwise.choices import Choice, choices_help, choose, table
from pixelwise.config import CLASS_WEIGHTS, FITS, KEEP, PREDICT_TTA
from pixelwise.data.augment import PRESETS, build_augment
from pixelwise.data.layouts import LAYOUTS, find_pairs
from pixelwise.data.synth_sets import SYNTH_SETS
from pixelwise.errors import PixelwiseError
from pixelwise.losses import LOSSES, build_loss
from pixelwise.predict.tta import TTA_MODES, TTA_TRANSFORMS, tta_probabilities
from pixelwise.train.optim import OPTIMIZERS, build_optimizer
from pixelwise.train.schedule import SCHEDULES, build_schedule

from cli_runner import run_cli

TABLES = {
    "LAYOUTS": LAYOUTS,
    "PRESETS": PRESETS,
    "LOSSES": LOSSES,
    "TTA_MODES": TTA_MODES,
    "OPTIMIZERS": OPTIMIZERS,
    "SCHEDULES": SCHEDULES,
    "FITS": FITS,
    "KEEP": KEEP,
    "CLASS_WEIGHTS": CLASS_WEIGHTS,
    "SYNTH_SETS": SYNTH_SETS,
}

# (command, option, its table, the default it marks): every CLI option that takes one of these names.
OPTIONS = [
    (["train"], "--layout", LAYOUTS, None),
    (["train"], "--loss", LOSSES, "bce+dice"),
    (["train"], "--augment", PRESETS, "zoom-pair"),
    (["train"], "--optimizer", OPTIMIZERS, "adamw"),
    (["train"], "--schedule", SCHEDULES, "cosine"),
    (["train"], "--fit", FITS, "stretch"),
    (["train"], "--keep", KEEP, "last"),
    (["train"], "--class-weights", CLASS_WEIGHTS, "auto"),
    (["data", "check"], "--layout", LAYOUTS, None),
    (["predict"], "--tta-mode", TTA_MODES, PREDICT_TTA),
    (["evaluate"], "--tta-mode", TTA_MODES, PREDICT_TTA),
    (["data", "synth"], "--task", SYNTH_SETS, "semantic"),
]


def flat(text: str) -> str:
    """Rendered help with the panel borders dropped and every run of white space one space: a help text wrapped
    over several lines of its column reads as it was written."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def listed_names(help_text: str) -> list[str]:
    """The names :func:`choices_help` wrote into ``help_text``, in order."""
    return [entry.split(": ")[0] for entry in help_text.split("; ")]


@pytest.mark.parametrize("name", TABLES)
def test_each_table_is_rows_keyed_by_their_names(name):
    rows = TABLES[name]
    assert isinstance(rows, dict) and rows
    for key, row in rows.items():
        assert isinstance(row, Choice) and row.name == key
        assert row.description and "\n" not in row.description
        assert "; " not in row.description, "'; ' separates the entries of --help: use a comma"
    assert listed_names(choices_help(rows)) == list(rows)


def test_choices_help_marks_the_default_and_table_refuses_a_repeated_name():
    assert choices_help(SCHEDULES, "constant").endswith("constant: " + SCHEDULES["constant"].description + " (default)")
    assert "(default)" not in choices_help(SCHEDULES)
    with pytest.raises(ValueError):
        table(Choice("a", "one"), Choice("a", "two"))


@pytest.mark.parametrize("command,option,rows,default", OPTIONS, ids=lambda v: v if isinstance(v, str) else None)
def test_help_lists_exactly_the_table(command, option, rows, default, capsys, monkeypatch):
    code, output = run_cli([*command, "--help"], capsys, monkeypatch)
    assert code == 0
    assert " ".join(choices_help(rows, default).split()) in flat(output), f"{' '.join(command)} {option}"


@pytest.mark.parametrize("command,option,rows,default", OPTIONS, ids=lambda v: v if isinstance(v, str) else None)
def test_an_unknown_name_is_refused_in_one_line_naming_the_choices(
    command, option, rows, default, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a train that got past validation would write runs/ here, not in the checkout
    (tmp_path / "data").mkdir()
    where = {
        "train": [],
        "data": [tmp_path / "data"],
        "predict": [tmp_path / "run", "--out", tmp_path / "out"],
        "evaluate": [tmp_path / "run"],
    }[command[0]]
    code, output = run_cli([*command, *where, option, "no-such-name"], capsys, monkeypatch)
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "no-such-name" in lines[0] and option in lines[0], output
    assert f"choose one of {', '.join(rows)}" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", TTA_MODES)
def test_every_tta_mode_is_reachable_from_predict_and_evaluate(mode, tmp_path, capsys, monkeypatch):
    asked = {}
    monkeypatch.setattr(
        engine_module, "make_predictor", lambda run, engine, tta, precision: asked.setdefault("predict", tta)
    )
    monkeypatch.setattr(predict_module, "predict_files", lambda *args, **kwargs: None)
    monkeypatch.setattr(
        evaluate_module,
        "evaluate_run",
        lambda *args, tta, **kwargs: asked.setdefault("evaluate", tta) and evaluate_module.EvalResult(tmp_path, [], {}),
    )
    run = tmp_path / "run"
    assert run_cli(["predict", run, "--out", tmp_path / "out", "--tta-mode", mode], capsys, monkeypatch)[0] == 0
    assert run_cli(["evaluate", run, "--tta-mode", mode], capsys, monkeypatch)[0] == 0
    assert asked == {"predict": mode, "evaluate": mode}


@pytest.mark.parametrize(
    "flags,expected",
    [([], PREDICT_TTA), (["--tta"], PREDICT_TTA), (["--no-tta"], "none"), (["--no-tta", "--tta-mode", "none"], "none")],
)
def test_tta_flags_pick_the_documented_modes(flags, expected, tmp_path, capsys, monkeypatch):
    asked = []
    monkeypatch.setattr(engine_module, "make_predictor", lambda run, engine, tta, precision: asked.append(tta))
    monkeypatch.setattr(predict_module, "predict_files", lambda *args, **kwargs: None)
    code, output = run_cli(["predict", tmp_path / "run", "--out", tmp_path / "out", *flags], capsys, monkeypatch)
    assert code == 0, output
    assert asked == [expected]


def test_no_tta_with_another_mode_is_refused(tmp_path, capsys, monkeypatch):
    code, output = run_cli(
        ["predict", tmp_path / "run", "--out", tmp_path / "out", "--no-tta", "--tta-mode", "d4"], capsys, monkeypatch
    )
    assert code == 2 and "--no-tta" in output and "--tta-mode d4" in output


def test_tta_probabilities_takes_no_default_mode():
    # A default here once differed silently from predict's (PREDICT_TTA): every caller names its mode.
    assert inspect.signature(tta_probabilities).parameters["modes"].default is inspect.Parameter.empty


def test_tta_rows_name_known_views_and_say_their_passes():
    for spec in TTA_MODES.values():
        assert set(spec.views) <= set(TTA_TRANSFORMS) and spec.views[0] == "identity"
        if spec.passes > 1:
            assert f"{spec.passes} passes" in spec.description
    assert PREDICT_TTA in TTA_MODES


def test_library_entry_points_refuse_unknown_names_with_the_table():
    for call, rows in (
        (lambda: build_loss("l2"), LOSSES),
        (lambda: build_augment("medium"), PRESETS),
        (lambda: find_pairs(".", "voc"), LAYOUTS),
        (lambda: build_schedule("step", None, 0, 10), SCHEDULES),
        (lambda: build_optimizer(torch.nn.Linear(1, 1), "sgd", 0.1, 0.0), OPTIMIZERS),
        (lambda: choose("--tta-mode", "d8", TTA_MODES), TTA_MODES),
    ):
        with pytest.raises(PixelwiseError, match=re.escape(f"choose one of {', '.join(rows)}")):
            call()


def test_the_cli_lists_the_tables_without_loading_torch():
    # The tables hold builders yet import torch lazily: `pixelwise --help`, `score` and `data check` start fast.
    code = (
        "import sys, pixelwise.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'kornia', 'monai'}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
