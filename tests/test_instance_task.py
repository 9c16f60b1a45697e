"""--task instances: target encoding, data check, training, evaluate, predict, score and the API on synthetic DSB
2018 data (touching discs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from instance_fixtures import disc_labels, make_dsb
from PIL import Image

from pixelwise.config import Recipe
from pixelwise.data.classes import BORDER_CLASS
from pixelwise.errors import PixelwiseError
from pixelwise.evaluate.instance_metrics import match_instances
from pixelwise.masks.instance_decode import (
    FOREGROUND_GRID,
    SEED_GRID,
    decode_labels,
    encode_targets,
    touching_pairs,
)


def test_encoding_round_trip_separates_touching_objects():
    labels = disc_labels(64, np.random.default_rng(3), count=5)
    assert touching_pairs(labels) >= 1
    targets = encode_targets(labels)
    assert set(np.unique(targets)) <= {0, BORDER_CLASS, BORDER_CLASS + 1}
    objects = decode_labels(targets, 3)  # perfect (one-hot) probabilities
    truth_count = len(np.unique(labels)) - 1
    assert objects.count == truth_count
    match = match_instances(labels, objects.labels, 0.9)
    assert match.tp == truth_count  # every object back, touching pairs apart
    assert all(score == pytest.approx(1.0) for score in objects.scores.values())


def test_a_speck_of_interior_probability_does_not_split_an_object():
    """A 24×24 object whose interior probability is high right of column 10 and in one 2×2 speck left of a low
    band: the speck is too small to be a seed (MIN_SEED_AREA), so the object stays whole; a 3×24 region in its
    place is a seed of its own and splits it, as it should."""
    from pixelwise.masks.instance_decode import MIN_SEED_AREA, decode_instances

    def probabilities(rows: slice, cols: slice) -> np.ndarray:
        probs = np.zeros((3, 32, 32), np.float32)
        probs[0] = 1.0
        probs[0, 4:28, 4:28] = 0.0  # the object: all foreground
        probs[2, 4:28, 4:28] = 0.2  # low interior probability ...
        probs[2, 4:28, 10:28] = 0.9  # ... high right of column 10
        probs[2, rows, cols] = 0.9  # and in this region, apart from it
        probs[1] = 1.0 - probs[0] - probs[2]
        return probs

    assert 2 * 2 < MIN_SEED_AREA <= 3 * 24
    assert decode_instances(probabilities(slice(10, 12), slice(5, 7))).count == 1
    assert decode_instances(probabilities(slice(4, 28), slice(4, 7))).count == 2


def test_a_runs_decode_thresholds_are_the_ones_its_objects_are_decoded_with():
    """Two interior blobs (probability 0.9 and 0.6) in one foreground region: two seeds at the default seed
    threshold 0.5, one (the 0.6 blob joins it) at a run's recorded 0.7."""
    from pixelwise.data.classes import ClassMap
    from pixelwise.predict.segment import decode_objects

    probs = np.zeros((3, 24, 32), np.float32)
    probs[0] = 1.0
    probs[0, 4:20, 4:28] = 0.0
    probs[2, 4:20, 4:28] = 0.3
    probs[2, 6:18, 6:14] = 0.9
    probs[2, 6:18, 18:26] = 0.6
    probs[1] = 1.0 - probs[0] - probs[2]
    class_map = ClassMap.from_names(("background", "border", "nucleus"))
    labels = probs.argmax(0).astype(np.uint8)
    assert decode_objects(class_map, labels, probs).count == 2
    assert decode_objects(class_map, labels, probs, thresholds={"seed": 0.7, "foreground": 0.5}).count == 1


def test_a_runs_minimum_score_drops_weak_objects_and_renumbers_the_rest():
    """Three objects: two seeded blobs (interior 0.95 and 0.9) and a foreground region no seed reaches (interior
    0.2, score 0.2). A run's recorded ``min_score`` 0.5 drops the unseeded one, 0.92 the 0.9 blob too; the kept
    objects are numbered 1..M with their scores and classes, and 0 keeps all three."""
    from pixelwise.data.classes import ClassMap
    from pixelwise.predict.segment import decode_objects

    probs = np.zeros((3, 24, 48), np.float32)
    probs[0] = 1.0
    for cols, interior in ((slice(2, 14), 0.95), (slice(18, 30), 0.9), (slice(34, 46), 0.2)):
        probs[0, 4:20, cols] = 0.0
        probs[2, 4:20, cols] = interior
    probs[1] = 1.0 - probs[0] - probs[2]
    class_map = ClassMap.from_names(("background", "border", "nucleus"))
    labels = probs.argmax(0).astype(np.uint8)
    chosen = {"seed": 0.5, "foreground": 0.5}
    everything = decode_objects(class_map, labels, probs, thresholds={**chosen, "min_score": 0.0})
    assert everything.count == 3
    strong = decode_objects(class_map, labels, probs, thresholds={**chosen, "min_score": 0.5})
    assert strong.count == 2 and set(np.unique(strong.labels)) == {0, 1, 2}
    assert strong.labels[10, 40] == 0  # the unseeded region is background now
    assert sorted(strong.scores.values()) == pytest.approx([0.9, 0.95])
    strongest = decode_objects(class_map, labels, probs, thresholds={**chosen, "min_score": 0.92})
    assert strongest.count == 1 and strongest.labels[10, 8] == 1 and strongest.classes == {1: 1}
    assert strongest.scores[1] == pytest.approx(0.95)


def test_distance_seeds_split_two_nuclei_whose_interiors_merged():
    """Two discs of radius 9 whose centres are 14 px apart, one interior blob over both (the neck included):
    region seeds see one object, distance seeds one per disc, each the disc it covers."""
    from pixelwise.masks.instance_decode import decode_instances

    yy, xx = np.mgrid[:32, :48]
    left, right = (yy - 16) ** 2 + (xx - 17) ** 2 <= 81, (yy - 16) ** 2 + (xx - 31) ** 2 <= 81
    probs = np.zeros((3, 32, 48), np.float32)
    probs[0] = ~(left | right)
    probs[2] = 0.9 * (left | right)
    probs[1] = 1.0 - probs[0] - probs[2]
    assert decode_instances(probs).count == 1
    split = decode_instances(probs, seeds="distance")
    assert split.count == 2
    truth = np.where(left & ~right, 1, 0) + np.where(right & ~left, 2, 0)
    assert match_instances(truth, split.labels, 0.7).tp == 2
    with pytest.raises(ValueError, match="seeds must be"):
        decode_instances(probs, seeds="peaks")


def test_encoding_keeps_tiny_objects_and_void():
    labels = np.zeros((16, 16), np.int32)
    labels[3, 3] = 1  # one pixel: no interior after its edge, kept whole
    labels[8:14, 8:14] = 2
    void = np.zeros((16, 16), bool)
    void[0, :] = True
    targets = encode_targets(labels, {1: 1, 2: 2}, void)
    assert targets[3, 3] == BORDER_CLASS + 1
    assert targets[10, 10] == BORDER_CLASS + 2 and targets[8, 8] == BORDER_CLASS
    assert (targets[0] == 255).all()
    objects = decode_labels(targets, 4, class_names=("a", "b"))
    assert sorted(objects.classes.values()) == [1, 2]


def test_data_check_reports_objects_and_task(tmp_path):
    from pixelwise.data.check import check_with_classes
    from pixelwise.data.layouts import find_pairs

    root = make_dsb(tmp_path / "dsb", n=4)
    index = find_pairs(root)
    assert index.layout == "dsb2018" and index.pairs[0].instances == "dsb2018"
    report, classes = check_with_classes(index, cache_dir=tmp_path / "cache")
    assert classes.names == ("background", "border", "nucleus")
    objects = report.summary()["objects"]
    assert report.task == "instances" and objects["total"] == 16 and objects["images_with_touching"] == 4


def test_data_check_names_overlapping_masks(tmp_path):
    from pixelwise.data.check import check_with_classes
    from pixelwise.data.layouts import find_pairs

    root = make_dsb(tmp_path / "dsb", n=3)
    masks = root / "img000" / "masks"
    first = np.asarray(Image.open(sorted(masks.iterdir())[0]))
    Image.fromarray(first).save(masks / "zz_copy.png")  # the same object twice
    report, _ = check_with_classes(find_pairs(root), cache_dir=tmp_path / "cache")
    messages = [p.message for p in report.warnings]
    assert any("zz_copy.png" in m and "overlap" in m for m in messages)


def test_task_errors_are_one_line(tmp_path):
    from pixelwise.train.data import usable_pairs

    with pytest.raises(PixelwiseError, match="--task") as caught:
        Recipe(task="panoptic").validate()
    assert "\n" not in str(caught.value)
    root = make_dsb(tmp_path / "dsb", n=4)
    recipe = Recipe(data=str(root), task="semantic", cache_dir=str(tmp_path / "cache")).validate()
    with pytest.raises(PixelwiseError, match="--task instances") as caught:
        usable_pairs(recipe)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("model", ["unet"])
def test_instances_train_evaluate_predict_score(tmp_path, model, capsys, monkeypatch):
    import pixelwise
    from pixelwise.evaluate.evaluate import evaluate_run
    from pixelwise.evaluate.score import score_instances
    from pixelwise.train.loop import train

    from cli_runner import run_cli

    root = make_dsb(tmp_path / "dsb", n=10, size=48)
    run = tmp_path / "run"
    recipe = Recipe(
        data=str(root), model=model, size=48, epochs=2, batch_size=4, cache_dir=str(tmp_path / "cache"), fast=False
    )
    train(recipe.validate(), run)
    record = json.loads((run / "config.json").read_text())["record"]
    assert record["task"] == "instances" and record["classes"]["names"] == ["background", "border", "nucleus"]
    # the watershed's thresholds, chosen on the validation split from the grids
    assert record["decode"]["seed"] in SEED_GRID and record["decode"]["foreground"] in FOREGROUND_GRID

    result = evaluate_run(run, tta="none", cache_dir=tmp_path / "cache")
    summary = json.loads((result.folder / "summary.json").read_text())
    assert {"ap", "ap50", "ap75", "dsb", "pq", "sq", "rq"} <= summary["instances"].keys()
    assert len(summary["images"]) == summary["n_images"] > 0 and "dsb" in summary["images"][0]
    report = (result.folder / "report.html").read_text()
    assert "ISIC" not in report  # the lesion notes are not an instance run's
    assert (result.folder / "report.html").exists() and (result.folder / "instances.csv").exists()

    images = tmp_path / "images"
    images.mkdir()
    for folder in sorted(root.iterdir()):
        (images / f"{folder.name}.png").write_bytes((folder / "images" / f"{folder.name}.png").read_bytes())
    out = tmp_path / "pred"
    code, text = run_cli(["predict", run, images, "--out", out, "--no-tta"], capsys, monkeypatch)
    assert code == 0, text
    assert (out / "img000_instances.png").exists() and (out / "instances.coco.json").exists()
    header = (out / "instances.csv").read_text().splitlines()[0]
    assert header.startswith("image,instance,class,area_px") and header.endswith("score")
    scored = score_instances(root, out, progress=False)
    assert scored.scores["n_images"] == 10
    from_json = score_instances(root, coco_results=out / "instances.coco.json", progress=False)
    assert from_json.scores["n_pred"] == scored.scores["n_pred"]

    segmenter = pixelwise.load(run, tta=False)
    segmentation = segmenter.predict(images / "img000.png")
    assert segmentation.instance_labels.shape == (48, 48)
    assert segmentation.instance_labels.dtype in (np.uint16, np.int32)
    assert segmentation.probabilities is None
    assert len(segmentation.instances("img000")) == segmentation.objects.count


def test_regions_read_each_connected_region_as_an_object(tmp_path):
    from pixelwise.data.instances_io import read_pair_instances
    from pixelwise.data.layouts import Pair

    mask = np.zeros((20, 20), np.uint8)
    mask[2:6, 2:6] = 1
    mask[10:15, 10:15] = 1
    mask[2:5, 12:18] = 2
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    sample = read_pair_instances(Pair("a", tmp_path / "a.png", tmp_path / "a_mask.png", instances="regions"))
    assert sorted(sample.classes.values()) == [1, 1, 2]
    assert Path(sample.image_path).name == "a.png"
