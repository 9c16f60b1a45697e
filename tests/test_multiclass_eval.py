"""Multi-class evaluation and scoring end to end: truth masks read as the run was trained (merged labels, void
values, colour masks), pooled per-class numbers with class names in summary.json / per_class.csv /
confusion.csv, the report's per-class sections, and `score` on multi-class folders with --ignore-index."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.cli import score
from pixelwise.data.classes import IGNORE, class_map_for
from pixelwise.evaluate.evaluate import evaluate_run
from pixelwise.evaluate.report import select_class_cases
from pixelwise.evaluate.score import score_folders
from pixelwise.metrics import confusion_matrix, metrics_from_confusion
from pixelwise.runs import RunFolder

from tiny_run import make_tiny_run, synth_image

# Raw mask values of the data set: 0 background, 1 coat, 2 shirt, 3 hat, 6 void. The run merges coat and
# shirt into "upper" and ignores 6.
LABELS = "0 background\n1 coat\n2 shirt\n3 hat\n6 void\n"
MERGE = "upper=coat,shirt;hat=hat"
NAMES = ["background", "upper", "hat"]
COLOURS = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 0, 255), 3: (0, 255, 0), 6: (255, 255, 255)}
N, SIDE = 5, 48


def raw_mask(index: int) -> np.ndarray:
    """uint8 SIDE×SIDE raw values: a coat block, a shirt block, a hat block (absent from image 0), void rows."""
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[20:40, 6:22] = 1
    mask[20:40, 22:40] = 2
    if index:
        mask[4:14, 10 + index : 26 + index] = 3
    mask[-3:, :] = 6
    return mask


def make_data(root: Path, colour_masks: bool) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(N):
        Image.fromarray(synth_image(i, SIDE)).save(root / "images" / f"m{i}.png")
        mask = raw_mask(i)
        if colour_masks:
            rgb = np.zeros((SIDE, SIDE, 3), np.uint8)
            for value, colour in COLOURS.items():
                rgb[mask == value] = colour
            Image.fromarray(rgb).save(root / "masks" / f"m{i}.png")
        else:
            Image.fromarray(mask).save(root / "masks" / f"m{i}.png")
    return root


def make_multiclass_run(folder: Path, colour_masks: bool) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    labels = folder.parent / "labels.txt"
    labels.write_text(LABELS)
    class_map, _ = class_map_for(labels, MERGE)
    make_tiny_run(folder, steps=2, num_classes=3)
    run = RunFolder(folder)
    config = run.load_config()
    config = replace(config, record=config.record.replace(classes=class_map.to_dict()))
    if colour_masks:
        colors = ";".join(f"{r},{g},{b}={value}" for value, (r, g, b) in COLOURS.items())
        config = replace(config, recipe=config.recipe.replace(colors=colors))
    run.write_config(config)
    return folder


def expected_truth_rows() -> np.ndarray:
    """Truth pixels per trained class over all images, void left out: what the confusion rows must sum to."""
    totals = np.zeros(3, np.int64)
    for i in range(N):
        merged = np.array([0, 1, 1, 2, 0, 0, IGNORE], np.uint8)[raw_mask(i)]
        totals += np.bincount(merged[merged != IGNORE], minlength=3)
    return totals


def embedded_alts(text: str) -> list[str]:
    return re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', text)


@pytest.mark.parametrize("colour_masks", [False, True], ids=["indexed", "colour"])
def test_evaluate_multiclass_run_pools_per_class_with_names(tmp_path, colour_masks):
    data = make_data(tmp_path / "data", colour_masks)
    run = make_multiclass_run(tmp_path / "runs" / "run", colour_masks)
    result = evaluate_run(run, data=data, cache_dir=tmp_path / "cache")

    per_class = list(csv.DictReader(io.StringIO((result.folder / "per_class.csv").read_text())))
    assert [row["name"] for row in per_class] == NAMES
    assert list(per_class[0]) == ["index", "name", "iou", "dice", "accuracy", "truth_pixels", "predicted_pixels"]
    # merged labels and void: the truth rows are the merged classes' pixels, void rows left out
    assert [int(row["truth_pixels"]) for row in per_class] == expected_truth_rows().tolist()

    lines = list(csv.reader(io.StringIO((result.folder / "confusion.csv").read_text())))
    assert lines[0][1:] == NAMES and [line[0] for line in lines[1:]] == NAMES
    cm = np.array([[int(v) for v in line[1:]] for line in lines[1:]])
    assert cm.sum(axis=1).tolist() == expected_truth_rows().tolist()
    assert cm.sum() == N * SIDE * (SIDE - 3)  # every non-void pixel once

    summary = json.loads((result.folder / "summary.json").read_text())
    section = summary["multiclass"]
    assert [entry["name"] for entry in section["per_class"]] == NAMES and section["confusion_matrix"] == cm.tolist()
    expected = metrics_from_confusion(cm)
    for key in ("mean_iou", "mean_iou_foreground", "mean_class_accuracy", "global_accuracy"):
        assert section[key] == pytest.approx(expected[key]), key
    assert section["per_class"][2]["iou"] == pytest.approx(expected["iou"][2])
    assert len(result.rows) == N and all(0.0 <= row["dice"] <= 1.0 for row in result.rows)

    text = (result.folder / "report.html").read_text()
    assert "<h2>Per class</h2>" in text and "<h2>Confusion matrix</h2>" in text
    assert "confusion matrix" in embedded_alts(text) and "worst image per class" in embedded_alts(text)
    assert all(f"{name}</td>" in text for name in NAMES)
    assert "pooled Dice (all pixels" not in text  # per-class pooled numbers replace the binary pooled Dice


def test_confusion_heat_map_is_row_normalised_with_class_names(tmp_path):
    from pixelwise.evaluate.report import confusion_figure

    figure = confusion_figure(np.array([[8, 2, 0], [0, 5, 5], [0, 0, 0]]), NAMES)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
    shown = ax.images[0].get_array()
    assert shown[0].tolist() == pytest.approx([0.8, 0.2, 0.0]) and shown[1, 1] == pytest.approx(0.5)
    assert shown.mask[2].all()  # a class absent from the truth: an empty row, not zeros
    assert {t.get_text() for t in ax.texts} >= {"80%", "20%", "50%"}


def test_select_class_cases_takes_the_lowest_iou_among_images_containing_the_class():
    truth = np.array([[0, 1], [2, 2]])
    confusions = {
        "a": confusion_matrix(np.array([[0, 1], [2, 2]]), truth, 3),  # perfect
        "b": confusion_matrix(np.array([[0, 0], [2, 1]]), truth, 3),  # class 1 missed, class 2 half
        "c": confusion_matrix(np.array([[1, 1], [1, 1]]), np.array([[0, 0], [0, 0]]), 3),  # no class 1 in truth
    }
    chosen = select_class_cases(confusions)
    assert chosen == {1: ("b", 0.0), 2: ("b", 0.5)}  # class 2 in b: 1 of 2 truth pixels, nothing extra


# ---- score ------------------------------------------------------------------------------------------------


def palette_png(path: Path, labels: np.ndarray) -> None:
    image = Image.fromarray(labels.astype(np.uint8), mode="L").convert("P")
    image.putpalette([v for c in range(256) for v in ((c * 40) % 256, (c * 90) % 256, (c * 150) % 256)])
    image.save(path)


def write_multiclass_folders(root: Path) -> tuple[Path, Path, list[tuple[np.ndarray, np.ndarray]]]:
    """Truth (indexed L PNGs, value 11 = void) and predictions (palette PNGs of class indices), 3 images."""
    truth_dir, pred_dir = root / "truth", root / "pred"
    truth_dir.mkdir(parents=True)
    pred_dir.mkdir()
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(3):
        truth = np.zeros((30, 40), np.uint8)
        truth[5:20, 5:20] = 1
        truth[10:25, 22:38] = 2
        truth[:2, :] = 11  # void
        pred = truth.copy()
        pred[:2, :] = rng.integers(0, 3, (2, 40))  # anything on void pixels
        pred[5:8, 5:20] = 2  # some of class 1 predicted as 2
        pred[24:30, 0:10] = 1 if i else 0  # a false class-1 region on two images
        Image.fromarray(truth).save(truth_dir / f"img{i}_label.png")
        palette_png(pred_dir / f"img{i}.png", pred)
        pairs.append((truth, pred))
    return truth_dir, pred_dir, pairs


def test_score_multiclass_folders_with_ignore_index(tmp_path, capsys):
    truth_dir, pred_dir, pairs = write_multiclass_folders(tmp_path)
    result = score_folders(truth_dir, pred_dir, ignore=(11,), progress=False)
    expected = sum(confusion_matrix(p, np.where(t == 11, IGNORE, t), 3) for t, p in pairs)
    assert result.multiclass["confusion_matrix"] == expected.tolist()
    assert sum(map(sum, result.multiclass["confusion_matrix"])) == 3 * 28 * 40  # void rows not counted
    reference = metrics_from_confusion(expected)
    assert result.multiclass["mean_iou"] == pytest.approx(reference["mean_iou"])
    assert result.multiclass["global_accuracy"] == pytest.approx(reference["global_accuracy"])
    assert [c["name"] for c in result.multiclass["per_class"]] == ["background", "class 1", "class 2"]
    assert {"dice", "jaccard", "hd95"} <= set(result.rows[0]) and "tp" not in result.rows[0]

    labels = tmp_path / "labels.txt"
    labels.write_text("0 floor\n1 chair\n2 table\n11 void\n")
    out_json, out_csv = tmp_path / "out" / "s.json", tmp_path / "out" / "s.csv"
    score(
        truth_dir,
        pred_dir,
        json=out_json,
        csv=out_csv,
        nsd_tolerance=2.0,
        pixel_size=None,
        labels=labels,
        ignore_index=None,
    )
    printed = capsys.readouterr().out
    assert "chair" in printed and "global accuracy" in printed
    document = json.loads(out_json.read_text())
    assert [c["name"] for c in document["multiclass"]["per_class"]] == ["floor", "chair", "table"]
    assert document["multiclass"]["mean_iou"] == pytest.approx(reference["mean_iou"])
    assert (tmp_path / "out" / "s_per_class.csv").read_text().splitlines()[2].startswith("1,chair,")
    assert (tmp_path / "out" / "s_confusion.csv").read_text().splitlines()[0] == "truth / prediction,floor,chair,table"

    # without the void value, the 11s are an (unknown) class: the scores change
    assert score_folders(truth_dir, pred_dir, progress=False).multiclass["confusion_matrix"] != expected.tolist()


def test_score_mixes_binary_and_multiclass_images_and_keeps_void_out_of_binary_folders(tmp_path):
    from pixelwise.metrics import image_metrics, multiclass_image_metrics

    truth_a = np.zeros((20, 20), np.uint8)
    truth_a[4:12, 4:12] = 1
    truth_a[-2:] = 11
    pred_a = np.roll(truth_a, 2, axis=1)
    pred_a[-2:] = 1  # on void pixels: not counted
    truth_b = np.zeros((20, 20), np.uint8)
    truth_b[2:8, 2:8], truth_b[10:18, 10:18] = 1, 2
    pred_b = np.roll(truth_b, 1, axis=0)
    for folder, image_id, mask in (("t", "a", truth_a), ("p", "a", pred_a), ("t", "b", truth_b), ("p", "b", pred_b)):
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.fromarray(mask).save(tmp_path / folder / f"{image_id}.png")
    result = score_folders(tmp_path / "t", tmp_path / "p", ignore=(11,), progress=False)
    void_a = np.where(truth_a == 11, IGNORE, truth_a)
    expected = confusion_matrix(pred_a, void_a, 3) + confusion_matrix(pred_b, truth_b, 3)
    assert result.multiclass["confusion_matrix"] == expected.tolist()
    assert result.rows[0]["dice"] == pytest.approx(multiclass_image_metrics(pred_a, void_a, 3)["dice"])
    assert result.rows[1]["dice"] == pytest.approx(multiclass_image_metrics(pred_b, truth_b, 3)["dice"])

    (tmp_path / "t" / "b.png").unlink()
    (tmp_path / "p" / "b.png").unlink()
    binary = score_folders(tmp_path / "t", tmp_path / "p", ignore=(11,), progress=False)
    assert binary.multiclass is None
    scored = truth_a != 11
    expected_row = image_metrics((pred_a > 0) & scored, (truth_a == 1) & scored)
    assert binary.rows[0]["dice"] == pytest.approx(expected_row["dice"]) and binary.rows[0]["fp"] == expected_row["fp"]


def test_score_multiclass_errors_name_the_file(tmp_path):
    from pixelwise.errors import PixelwiseError

    truth_dir, pred_dir, pairs = write_multiclass_folders(tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("0 floor\n1 chair\n2 table\n")  # 11 is neither a class nor void
    with pytest.raises(PixelwiseError, match=r"img0_label.png: truth value 11 .*labels.txt.*--ignore-index 11"):
        score_folders(truth_dir, pred_dir, labels=labels, progress=False)
    bad = pairs[1][1].copy()
    bad[15, 15] = 3  # a class the label file does not have
    palette_png(pred_dir / "img1.png", bad)
    with pytest.raises(PixelwiseError, match=r"img1.png: prediction has class 3 .*3 classes"):
        score_folders(truth_dir, pred_dir, labels=labels, ignore=(11,), progress=False)
    bad[2, 3] = 11  # predicting the void value on a scored pixel
    palette_png(pred_dir / "img1.png", bad)
    with pytest.raises(PixelwiseError, match=r"img1.png: 1 pixels predicted as void value 11"):
        score_folders(truth_dir, pred_dir, ignore=(11,), progress=False)
