"""End to end through the CLI: synth → train → evaluate → predict on tiny images, plus bad input."""

from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest
from forked import run_pixelwise
from PIL import Image
from typer.testing import CliRunner

from pixelwise.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def pixelwise(*args: str) -> subprocess.CompletedProcess:
    """Run the real console entry point (error handling included) in a process of its own."""
    return run_pixelwise(list(args), timeout=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data, run = root / "data", root / "run"
    invoke("data", "synth", data, "--n", 48, "--size", 64, "--seed", 3)
    invoke(
        "train",
        "--data",
        data,
        "--out",
        run,
        "--size",
        64,
        "--epochs",
        6,
        "--batch-size",
        8,
        "--lr",
        5e-3,
        "--model",
        "unet",
        "--cache-dir",
        root / "cache",
        "--patience",
        20,
    )
    return root, data, run


def test_run_folder_holds_what_a_user_relies_on(trained):
    _, _, run = trained
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["model"] == "unet" and config["record"]["size"] == 64
    assert config["record"]["num_classes"] == 2
    assert 0.0 < config["record"]["threshold"] < 1.0
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 1
    assert all(0.0 <= float(r["val_dice"]) <= 1.0 for r in rows)
    split = json.loads((run / "split.json").read_text())
    ids = [i for part in ("train", "val", "test") for i in split[part]]
    assert len(ids) == len(set(ids)) == 48, "split parts must be disjoint and cover the data"
    from safetensors.torch import load_file

    assert any(k.endswith("weight") for k in load_file(str(run / "model.safetensors")))
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.pkl")), "no pickle in a run folder"


def test_evaluate_beats_chance(trained):
    root, data, run = trained
    invoke("evaluate", run, "--cache-dir", root / "cache")
    summary = json.loads((run / "eval-test" / "summary.json").read_text())
    # Chance: predicting every pixel as lesion. Its Dice is 2p/(1+p) for foreground fraction p.
    split = json.loads((run / "split.json").read_text())
    masks = [np.asarray(Image.open(data / "masks" / f"{i}.png")) > 127 for i in split["test"]]
    p = np.array([m.mean() for m in masks])
    chance = float(np.mean(2 * p / (1 + p)))
    assert summary["mean"]["dice"] > chance + 0.05, (summary["mean"]["dice"], chance)
    per_image = list(csv.DictReader((run / "eval-test" / "metrics.csv").open()))
    assert sorted(r["id"] for r in per_image) == sorted(split["test"])
    html = (run / "eval-test" / "report.html").read_text()
    assert "data:image/png;base64" in html


def test_predict_writes_masks_at_input_size_and_never_overwrites(trained, tmp_path):
    root, data, run = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.open(next((data / "images").iterdir())).resize((90, 70)).save(inputs / "odd size.png")
    out = tmp_path / "out"
    invoke("predict", run, inputs, "--out", out)
    mask = np.asarray(Image.open(out / "odd size_mask.png"))
    assert mask.shape == (70, 90) and set(np.unique(mask)) <= {0, 255}
    overlay = np.asarray(Image.open(out / "odd size_overlay.png"))
    assert overlay.shape == (70, 90, 3)

    again = pixelwise("predict", run, inputs, "--out", out)
    assert again.returncode != 0 and "already exists" in again.stderr
    into_input = pixelwise("predict", run, inputs, "--out", inputs)
    assert into_input.returncode != 0 and "input folder" in into_input.stderr
    assert sorted(p.name for p in inputs.iterdir()) == ["odd size.png"]


def test_resume_continues_where_the_run_stopped(trained, tmp_path):
    root, data, _ = trained
    run = tmp_path / "run"
    invoke(
        "train",
        "--data",
        data,
        "--out",
        run,
        "--size",
        64,
        "--epochs",
        2,
        "--batch-size",
        8,
        "--cache-dir",
        root / "cache",
    )
    # Pretend the run was meant to be longer and was interrupted after two epochs.
    state = json.loads((run / "train_state.json").read_text())
    state["loop"].update(epochs=3, finished=False)
    (run / "train_state.json").write_text(json.dumps(state))
    invoke("train", "--resume", run)
    epochs = [int(r["epoch"]) for r in csv.DictReader((run / "metrics.csv").open())]
    assert epochs == [1, 2, 3]


@pytest.mark.parametrize(
    "args, expected",
    [
        (("train", "--data", "/nonexistent/folder"), "does not exist"),
        (("train", "--model", "no_such_net"), "unknown model"),
        (("evaluate", "/tmp"), "not a pixelwise run"),
    ],
)
def test_bad_input_gets_one_clear_line(args, expected):
    result = pixelwise(*args)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_empty_data_folder_and_unreadable_image(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = pixelwise("train", "--data", empty, "--out", tmp_path / "r")
    assert result.returncode == 2 and "empty" in result.stderr and "Traceback" not in result.stderr


def test_a_refused_option_writes_nothing_and_resume_names_what_it_ignores(tmp_path):
    """Options are checked before any file is written, so a retry with the same --out works."""
    from typer.testing import CliRunner

    from pixelwise.cli import app
    from pixelwise.errors import PixelwiseError

    runner = CliRunner()
    out = tmp_path / "run"
    for bad in (
        ["--optimizer", "nope"],
        ["--batch-size", "0"],
        ["--lr", "-1"],
        ["--val-fraction", "0"],
        ["--folds", "1"],
        ["--epochs", "0"],
        ["--size", "8"],
        ["--budget", "0"],
        ["--schedule", "x"],
    ):
        result = runner.invoke(app, ["train", "--out", str(out), *bad])
        assert isinstance(result.exception, PixelwiseError), (bad, result.output)
        assert bad[0] in str(result.exception), (bad, str(result.exception))
        assert not out.exists(), bad


def test_resume_says_which_given_options_it_ignores(trained, tmp_path):
    import shutil

    _, _, run = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    result = pixelwise("train", "--resume", copy, "--lr", "0.5", "--model", "segnet")
    assert result.returncode == 0, result.stderr
    assert "ignoring --lr, --model" in result.stderr.replace("\n", " ")
    assert json.loads((copy / "config.json").read_text())["recipe"]["model"] == "unet"
