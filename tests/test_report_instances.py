"""report.html and the terminal table of ``evaluate`` on an instance run (``--task instances``): the instance
metrics of summary.json, the worst, median and best images by DSB score, and predicted against true object counts.
No training: the run's network is a stand-in that calls bright pixels object interiors (synthetic DSB 2018 discs)."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from instance_fixtures import make_dsb
from PIL import Image

from pixelwise.data.classes import instance_colour, instance_target_classes
from pixelwise.predict.predictor import RunPredictor

from cli_runner import run_cli
from tiny_run import trained_config

SIZE = 48
HEADLINE = (("ap", "AP"), ("ap50", "AP50"), ("ap75", "AP75"), ("dsb", "DSB score"), ("pq", "PQ"), ("sq", "SQ"))


def bright_objects_predictor(run: Path) -> RunPredictor:
    """An instance run's predictor without a network: interior where the image is bright, background elsewhere, no
    border (so touching discs come out as one object and the images score differently)."""
    classes = instance_target_classes(("nucleus",))
    config = trained_config(size=SIZE, num_classes=3, classes=classes.to_dict(), record={"task": "instances"})

    def predict_unit(unit: torch.Tensor) -> torch.Tensor:
        s = 12 * (unit.mean(1, keepdim=True) - 0.4)
        return torch.cat([-s, torch.full_like(s, -4.0), s], dim=1).softmax(1)

    return RunPredictor(run, config, predict_unit)


def embedded(text: str) -> dict[str, Image.Image]:
    """alt text → the embedded PNG."""
    return {
        alt: Image.open(io.BytesIO(base64.b64decode(data)))
        for alt, data in re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    }


@pytest.fixture
def instance_eval(tmp_path, monkeypatch, capsys):
    """``pixelwise evaluate RUN --data DSB`` of the stand-in instance run: (eval folder, terminal output)."""
    from pixelwise.evaluate import evaluate as evaluate_module

    data = make_dsb(tmp_path / "dsb", n=7, size=SIZE, seed=4)
    run = tmp_path / "run"
    predictor = bright_objects_predictor(run)
    monkeypatch.setattr(evaluate_module, "make_predictor", lambda *args, **options: predictor)
    code, text = run_cli(
        ["evaluate", run, "--data", data, "--no-tta", "--cache-dir", tmp_path / "cache"], capsys, monkeypatch
    )
    assert code == 0, text
    return run / "eval-dsb", text


def test_instance_report_shows_the_summary_numbers_cases_and_counts(instance_eval):
    folder, terminal = instance_eval
    summary = json.loads((folder / "summary.json").read_text())
    scores = summary["instances"]
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert len(rows) == 7 and scores["n_pred"] > 0
    assert len({row["dsb"] for row in rows}) > 1, "the stand-in should score images differently"
    text = (folder / "report.html").read_text()

    # 1. the Instances table: every headline number of summary.json, and StarDist's pooled AP at 0.5
    assert text.count("<h2>Instances</h2>") == 1
    for key, label in (*HEADLINE, ("rq", "RQ")):
        assert f"<tr><td>{label}</td><td>{scores[key]:.4f}</td>" in text, key
    assert f"<td>{scores['stardist']['accuracy']:.4f}</td>" in text and "StarDist AP at τ = 0.5" in text
    assert f"{scores['n_true']} true and {scores['n_pred']} predicted objects in 7 images" in text

    # 2. the worst, median and best images by DSB score, truth beside prediction, objects in their own colours
    ranked = sorted(rows, key=lambda row: (float(row["dsb"]), row["id"]))
    for name, row in (("worst", ranked[0]), ("median", ranked[len(ranked) // 2]), ("best", ranked[-1])):
        assert f"{name}: <b>{row['id']}</b> (DSB score {float(row['dsb']):.4f})" in text, name
    pictures = embedded(text)
    grid = np.asarray(pictures["worst, median and best images"].convert("RGB"))
    assert grid.shape[0] > grid.shape[1]  # three rows of two pictures
    colours = {tuple(c) for c in grid.reshape(-1, 3)}
    assert sum(instance_colour(k) in colours for k in range(1, 5)) >= 3  # outlines in the per-object colours

    # 3. predicted against true objects: the scatter, and both counts in the per-image table
    assert "predicted against true objects per image" in pictures
    for row in rows:
        assert re.search(rf"<td>{row['id']}</td>.*?<td>{row['n_true']}</td><td>{row['n_pred']}</td>", text), row
    assert "<th>true objects</th><th>predicted objects</th>" in text
    assert "<h2>Connected regions</h2>" not in text and "<h2>Best, median and worst cases</h2>" not in text

    # 4. the terminal table has the same headline numbers
    for key, _ in HEADLINE:
        assert re.search(rf"\b{key}\b\s*│\s*{scores[key]:.4f}", terminal), key


def test_semantic_report_has_no_instances_section(tmp_path, monkeypatch):
    from test_predict import brightness_predictor, make_folder_set

    from pixelwise.evaluate import evaluate as evaluate_module

    data = make_folder_set(tmp_path / "data")
    predictor = brightness_predictor(tmp_path)
    monkeypatch.setattr(evaluate_module, "make_predictor", lambda *args, **options: predictor)
    result = evaluate_module.evaluate_run(tmp_path / "run", data, cache_dir=tmp_path / "cache")
    text = (result.folder / "report.html").read_text()
    assert "<h2>Instances</h2>" not in text and "AP50" not in text and "DSB score" not in text
    assert "predicted against true objects per image" not in embedded(text)
    assert "<h2>Connected regions</h2>" in text and "instances per image" in embedded(text)


def test_instance_overlay_gives_each_object_its_colour_and_the_prediction_its_match():
    from pixelwise.evaluate.instance_eval import _coloured_like_truth
    from pixelwise.masks.instance_decode import InstanceSet
    from pixelwise.masks.overlay import instance_overlay

    truth = np.zeros((12, 12), np.int32)
    truth[1:6, 1:6], truth[1:6, 6:11] = 3, 7  # touching
    pred = np.zeros_like(truth)
    pred[1:6, 1:6], pred[8:11, 8:11] = 1, 2  # one match, one false object
    coloured = _coloured_like_truth(truth, pred)
    assert coloured[2, 2] == 3 and coloured[9, 9] == 8 and coloured[0, 0] == 0

    image = np.zeros((12, 12, 3), np.uint8)
    drawn = instance_overlay(image, truth)
    assert tuple(drawn[1, 3]) == instance_colour(3) and tuple(drawn[1, 8]) == instance_colour(7)
    assert tuple(drawn[3, 5]) == instance_colour(3) and tuple(drawn[3, 6]) == instance_colour(7)  # both outlined
    assert (drawn[0, 0] == 0).all()
    objects = InstanceSet(truth, {3: 1, 7: 1})
    assert np.array_equal(objects.overlay(image), instance_overlay(image, truth, 0.4))
