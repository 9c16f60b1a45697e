"""CamVid through the CLI: `data check` under CamVid's classes, a stray mask value named in one line, and a
training run that keeps the data set's own split and classes (void pixels included)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
from PIL import Image

from pixelwise.data.layouts import CAMVID_CLASSES

from cli_runner import run_cli
from layout_fixtures import make_camvid


def put_stray_value(mask_path, value: int = 12) -> None:
    """Write ``value`` (neither a CamVid class nor void) into a corner of a mask."""
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[:2, :2] = value
    Image.fromarray(mask).save(mask_path)


def test_data_check_uses_camvid_classes_and_names_a_stray_value(tmp_path, capsys, monkeypatch):
    split = make_camvid(tmp_path / "CamVid", n_train=3, n_val=1, n_test=1)
    code, output = run_cli(["data", "check", tmp_path / "CamVid", "--no-cache"], capsys, monkeypatch)
    assert code == 0, output
    assert "camvid" in output and "11 classes" in output and "no problems" in output  # void 11 is not a problem
    stem = split["val"][0].split("/")[1]
    put_stray_value(tmp_path / "CamVid" / "valannot" / f"{stem}.png")
    code, output = run_cli(["data", "check", tmp_path / "CamVid", "--no-cache"], capsys, monkeypatch)
    assert code == 1, output
    named = [line for line in output.splitlines() if f"valannot/{stem}.png" in line]
    assert len(named) == 1 and "12" in named[0] and "neither a class" in named[0], output


def test_training_refuses_a_stray_value_in_one_line(tmp_path, capsys, monkeypatch):
    split = make_camvid(tmp_path / "CamVid", n_train=3, n_val=1, n_test=0)
    stem = split["train"][1].split("/")[1]
    put_stray_value(tmp_path / "CamVid" / "trainannot" / f"{stem}.png")
    code, output = run_cli(
        [
            "train",
            "--data",
            tmp_path / "CamVid",
            "--epochs",
            1,
            "--size",
            32,
            "--model",
            "unet",
            "--out",
            tmp_path / "run",
            "--cache-dir",
            tmp_path / "cache",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "Traceback" not in output, output
    assert len([line for line in output.splitlines() if line.startswith("error")]) == 1, output
    named = [line for line in output.splitlines() if f"trainannot/{stem}.png" in line]
    assert len(named) == 1 and "value(s) 12" in named[0], output
    assert not (tmp_path / "run").exists()


def test_train_end_to_end_keeps_the_folders_split_and_the_classes(tmp_path, capsys, monkeypatch):
    split = make_camvid(tmp_path / "CamVid", n_train=6, n_val=3, n_test=3, size=(36, 48))
    run = tmp_path / "run"
    code, output = run_cli(
        [
            "train",
            "--data",
            tmp_path / "CamVid",
            "--epochs",
            1,
            "--size",
            32,
            "--model",
            "unet",
            "--batch-size",
            4,
            "--out",
            run,
            "--cache-dir",
            tmp_path / "cache",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0, output
    saved = json.loads((run / "split.json").read_text())
    assert {part: saved[part] for part in ("train", "val", "test")} == split
    config = json.loads((run / "config.json").read_text())["record"]
    assert config["num_classes"] == 11 and config["classes"]["names"] == list(CAMVID_CLASSES)
    assert config["classes"]["values"]["11"] == "ignore"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    # Void pixels (value 11, outside the 11 classes) are in no loss term: a finite loss, not NaN or a crash.
    assert len(rows) == 1 and all(math.isfinite(float(rows[0][k])) for k in ("train_loss", "val_loss", "val_dice"))


def test_ignore_index_adds_to_the_layouts_void(tmp_path, capsys, monkeypatch):
    """The checker's advice (--ignore-index 12) works on a layout with its own classes."""
    split = make_camvid(tmp_path / "CamVid", n_train=4, n_val=1, n_test=0)
    stem = split["train"][1].split("/")[1]
    put_stray_value(tmp_path / "CamVid" / "trainannot" / f"{stem}.png")
    code, output = run_cli(
        [
            "train",
            "--data",
            tmp_path / "CamVid",
            "--epochs",
            1,
            "--size",
            32,
            "--model",
            "unet",
            "--batch-size",
            2,
            "--ignore-index",
            12,
            "--out",
            tmp_path / "run",
            "--cache-dir",
            tmp_path / "cache",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0, output
    values = json.loads((tmp_path / "run" / "config.json").read_text())["record"]["classes"]["values"]
    assert values["11"] == "ignore" and values["12"] == "ignore" and values["10"] == 10
