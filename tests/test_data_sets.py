"""Several data sets trained as one (``--data A --data B``): each split as a run on it alone splits it, per-set
validation in metrics.csv, per-set numbers in evaluate and the report, weighted epochs."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from pixelwise.config import Recipe
from pixelwise.data.layouts import find_pairs
from pixelwise.data.sets import epoch_length, epoch_order, find_sets, set_names, split_sets
from pixelwise.data.split import make_split
from pixelwise.errors import PixelwiseError

runner = CliRunner()
TINY = ("--size", 32, "--batch-size", 8, "--augment", "none", "--model", "segnet", "--epochs", 1)


def invoke(*args):
    from pixelwise.cli import app

    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    invoke("data", "synth", root / "lesions", "--n", 20, "--size", 32, "--seed", 1)
    invoke("data", "synth", root / "moles", "--n", 12, "--size", 32, "--seed", 2)
    return root


def test_names_are_the_folder_names_made_unique(tmp_path):
    assert set_names([tmp_path / "a" / "people", tmp_path / "b" / "people", tmp_path / "x.csv"]) == [
        "people",
        "people-2",
        "x",
    ]


def test_each_set_is_split_as_a_run_on_it_alone_would_split_it(two_sets):
    index = find_sets([two_sets / "lesions", two_sets / "moles"])
    assert {p.source for p in index.pairs} == {"lesions", "moles"}
    assert all(p.id.startswith(p.source + "/") for p in index.pairs)
    options = dict(seed=3, ratios=(0.6, 0.2, 0.2))
    joined = split_sets(index.pairs, **options)
    for name in ("lesions", "moles"):
        alone = make_split(find_pairs(two_sets / name).pairs, **options)
        for part in ("train", "val", "test"):
            mine = sorted(i.split("/", 1)[1] for i in joined[part] if i.startswith(name + "/"))
            assert mine == alone[part], (name, part)


def test_one_set_is_left_as_find_pairs_reads_it(two_sets):
    one = find_sets([two_sets / "lesions"])
    assert [p.id for p in one.pairs] == [p.id for p in find_pairs(two_sets / "lesions").pairs]
    assert all(p.source is None for p in one.pairs)


def test_weighted_epochs_draw_each_set_as_often_as_its_weight():
    sets = torch.tensor([0] * 10 + [1] * 6)
    torch.manual_seed(0)
    plain = epoch_order(16, sets, (1.0, 1.0))
    assert sorted(plain.tolist()) == list(range(16))
    order = epoch_order(16, sets, (0.5, 2.0))
    assert len(order) == epoch_length(16, sets, (0.5, 2.0)) == 5 + 12
    drawn = torch.bincount(sets[order], minlength=2).tolist()
    assert drawn == [5, 12]
    assert len(set(order[sets[order] == 0].tolist())) == 5, "a half of the first set, each image once"


def test_without_weights_each_set_is_drawn_as_often_as_the_smallest():
    sets = torch.tensor([0] * 10 + [1] * 4 + [2] * 6)
    torch.manual_seed(1)
    order = epoch_order(20, sets, ())
    assert len(order) == epoch_length(20, sets, ()) == 3 * 4
    assert torch.bincount(sets[order], minlength=3).tolist() == [4, 4, 4]
    assert len(set(order.tolist())) == 12, "each drawn image once"
    # One set: every image once, whatever the weights say.
    assert sorted(epoch_order(7, None, ()).tolist()) == list(range(7))


def test_weights_must_match_the_sets(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(PixelwiseError, match="one weight per --data"):
        Recipe(data=str(tmp_path / "a"), data_weights=(1.0, 2.0)).validate()
    with pytest.raises(PixelwiseError, match="positive"):
        Recipe(data=str(tmp_path / "a"), more_data=(str(tmp_path / "b"),), data_weights=(1.0, 0.0)).validate()
    with pytest.raises(PixelwiseError, match="missing does not exist"):
        invoke("train", "--data", tmp_path / "a", "--data", tmp_path / "missing")


def test_a_run_on_two_sets_validates_and_evaluates_each(two_sets, tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    run = tmp_path / "run"
    invoke(
        "train",
        "--data",
        two_sets / "lesions",
        "--data",
        two_sets / "moles",
        "--data-weights",
        "1,2",
        "--val-fraction",
        0.2,
        "--out",
        run,
        "--cache-dir",
        tmp_path / "cache",
        *TINY,
    )
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"val_dice_lesions", "val_dice_moles"} <= set(rows[0])
    assert all(0.0 <= float(rows[0][k]) <= 1.0 for k in ("val_dice_lesions", "val_dice_moles"))
    split = json.loads((run / "split.json").read_text())
    test_ids = split["test"]
    assert {i.split("/")[0] for i in test_ids} == {"lesions", "moles"}

    invoke("evaluate", run, "--cache-dir", tmp_path / "cache", "--no-threshold-curve")
    summary = json.loads((run / "eval-test" / "summary.json").read_text())
    per_set = summary["per_set"]
    assert set(per_set) == {"lesions", "moles"}
    assert per_set["lesions"]["n"] + per_set["moles"]["n"] == len(test_ids) == summary["n_images"]
    with open(run / "eval-test" / "metrics.csv") as f:
        image_rows = list(csv.DictReader(f))
    lesion_dice = [float(r["dice"]) for r in image_rows if r["set"] == "lesions"]
    assert per_set["lesions"]["mean"]["dice"] == pytest.approx(sum(lesion_dice) / len(lesion_dice))
    report = (run / "eval-test" / "report.html").read_text()
    assert "By data set" in report and "moles" in report

    # --data naming one of the run's sets: that set's test images only (not all of its pairs, some trained on)
    invoke("evaluate", run, "--data", two_sets / "moles", "--cache-dir", tmp_path / "cache", "--no-threshold-curve")
    moles = json.loads((run / "eval-test-moles" / "summary.json").read_text())
    assert sorted(row["id"] for row in moles["images"]) == sorted(i for i in test_ids if i.startswith("moles/"))
    assert moles["split"] == "test"


def test_one_set_given_twice_is_refused_in_one_line(two_sets, tmp_path):
    with pytest.raises(PixelwiseError, match="the same data set as --data .*--data-weights"):
        Recipe(data=str(two_sets / "lesions"), more_data=(str(two_sets / "lesions") + "/",)).validate()
