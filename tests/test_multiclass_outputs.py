"""What multi-class runs write for people to look at: palette mask PNGs (pixel values = class indices,
palette = class colours), colour overlays with a legend, and ``classes.csv`` (each image's class fractions
under the class names); binary outputs stay 0/255 greyscale masks and red contour overlays."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixelwise
from pixelwise.data.classes import PREDICTION_RGB, ClassMap
from pixelwise.errors import PixelwiseError
from pixelwise.masks.labels import mask_png_bytes
from pixelwise.masks.overlay import class_overlay, draw_contours, prediction_overlay
from pixelwise.predict.predict import Shard, merge_instance_shards, predict_files
from pixelwise.predict.predictor import RunPredictor
from pixelwise.predict.segment import segment_images
from pixelwise.runtime import normalize

from tiny_run import make_tiny_run, trained_config, write_images

NAMES = ("background", "lesion", "ruler")
#: Colours that occur in no test image, so finding one in an overlay means it was drawn.
COLORS = ((0, 0, 0), (250, 20, 200), (20, 230, 240))


def colour_present(image: np.ndarray, rgb) -> bool:
    return bool((image.reshape(-1, 3) == np.asarray(rgb, np.uint8)).all(1).any())


def three_class_predictor(tmp_path: Path, with_class_map: bool = True) -> RunPredictor:
    """3 classes by colour: red → lesion (1), blue → ruler (2), dark → background (0); at 32 px."""
    classes = ClassMap.from_names(NAMES, colors=COLORS).to_dict() if with_class_map else None
    config = trained_config(size=32, num_classes=3, threshold=0.5, fast=False, classes=classes)

    def predict_unit(unit: torch.Tensor) -> torch.Tensor:
        x = normalize(unit, config.record.mean, config.record.std)
        return torch.cat([torch.zeros_like(x[:, :1]), 4 * x[:, :1], 4 * x[:, 2:3]], dim=1).softmax(1)

    return RunPredictor(tmp_path, config, predict_unit)


def red_and_blue_image(path: Path, height: int = 64, width: int = 80) -> Path:
    """Dark image, a red square (lesion) top-left and a blue bar (ruler) bottom-right."""
    image = np.full((height, width, 3), 10, np.uint8)
    image[6:30, 6:30] = (255, 0, 0)
    image[44:58, 40:76] = (0, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


# --------------------------------------------------------------------------------------------
# The encodings themselves
# --------------------------------------------------------------------------------------------


def test_multiclass_mask_png_is_a_palette_png_of_the_indices():
    labels = np.random.default_rng(0).integers(0, 3, (17, 23)).astype(np.uint8)
    image = Image.open(io.BytesIO(mask_png_bytes(labels, COLORS)))
    assert image.mode == "P" and image.size == (23, 17)
    assert np.array_equal(np.array(image), labels)
    assert image.getpalette()[:9] == [c for rgb in COLORS for c in rgb]
    assert np.array_equal(np.array(image.convert("RGB")), np.asarray(COLORS, np.uint8)[labels]), "viewers see colours"
    with pytest.raises(ValueError, match="no colour"):
        mask_png_bytes(np.full((2, 2), 3, np.uint8), COLORS)


def test_binary_mask_png_is_still_greyscale_0_255():
    labels = np.array([[0, 1], [1, 0]], np.uint8)
    image = Image.open(io.BytesIO(mask_png_bytes(labels, COLORS[:2])))
    assert image.mode == "L" and np.array_equal(np.array(image), labels * 255)


def test_class_overlay_fills_outlines_and_names_the_classes_present():
    image = np.full((120, 160, 3), 90, np.uint8)
    labels = np.zeros((120, 160), np.uint8)
    labels[60:110, 10:70] = 1
    labels[70:115, 90:150] = 2
    four = (*COLORS, (5, 6, 7))  # class 3 is absent: no swatch of its colour
    out = class_overlay(image, labels, (*NAMES, "absent"), four)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert all(colour_present(out, rgb) for rgb in COLORS[1:]), "contours and swatches in the class colours"
    assert not colour_present(out, four[3])
    # Inside a class: 45 % of its colour over the image.
    assert np.allclose(out[85, 40], 0.55 * 90 + 0.45 * np.asarray(COLORS[1]), atol=1)
    # The legend sits in the emptiest corner (top-left, away from the classes); the rest of the
    # background is untouched.
    assert not np.array_equal(out[:12, :12], image[:12, :12])
    assert np.array_equal(out[40:55, 100:160], image[40:55, 100:160])


def test_binary_overlay_is_the_red_contour_as_before():
    image = np.full((40, 40, 3), 50, np.uint8)
    labels = np.zeros((40, 40), np.uint8)
    labels[10:30, 10:30] = 1
    expected = draw_contours(image, [(labels > 0, PREDICTION_RGB)])
    assert np.array_equal(prediction_overlay(image, labels, ("background", "foreground"), COLORS[:2]), expected)


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------


def test_predict_writes_palette_masks_colour_overlays_and_classes_csv(tmp_path):
    paths = [red_and_blue_image(tmp_path / "in" / "both.png"), red_and_blue_image(tmp_path / "in" / "tall.png", 90, 80)]
    predictor = three_class_predictor(tmp_path)
    out = tmp_path / "out"
    predict_files(predictor, [tmp_path / "in"], out)
    results = segment_images(predictor, [np.asarray(Image.open(p)) for p in paths])  # predict's own path
    expected = {p.stem: result.mask for p, result in zip(paths, results)}
    for stem, labels in expected.items():
        mask = Image.open(out / f"{stem}_mask.png")
        assert mask.mode == "P" and np.array_equal(np.array(mask), labels), stem
        assert mask.getpalette()[:9] == [c for rgb in COLORS for c in rgb]
        overlay = np.asarray(Image.open(out / f"{stem}_overlay.png"))
        source = np.asarray(Image.open(tmp_path / "in" / f"{stem}.png"))
        assert not np.array_equal(overlay, source)
        assert colour_present(overlay, COLORS[1]) and colour_present(overlay, COLORS[2]), stem
    assert set(np.unique(expected["both"])) == {0, 1, 2}

    rows = read_csv(out / "classes.csv")
    assert rows[0] == ["image", *NAMES]
    assert [row[0] for row in rows[1:]] == ["both", "tall"]
    for row in rows[1:]:
        fractions = np.asarray(row[1:], float)
        labels = expected[row[0]]
        assert np.allclose(fractions, np.bincount(labels.ravel(), minlength=3) / labels.size, atol=1e-6)
        assert fractions.sum() == pytest.approx(1.0, abs=1e-5)


def test_classes_csv_survives_skip_existing_and_shards(tmp_path):
    for i in range(3):
        red_and_blue_image(tmp_path / "in" / f"img{i}.png", 48 + 8 * i, 64)
    predictor = three_class_predictor(tmp_path, with_class_map=False)  # old run: default names
    predict_files(predictor, [tmp_path / "in"], tmp_path / "whole")
    whole = (tmp_path / "whole" / "classes.csv").read_text()
    assert whole.splitlines()[0] == "image,background,class 1,class 2"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "classes.csv").write_text("kept\n")
    with pytest.raises(PixelwiseError, match="classes.csv already exists"):
        predict_files(predictor, [tmp_path / "in"], tmp_path / "other")
    assert (tmp_path / "other" / "classes.csv").read_text() == "kept\n"
    # A re-run that skips every image rebuilds the table from the mask files.
    (tmp_path / "whole" / "classes.csv").unlink()
    assert predict_files(predictor, [tmp_path / "in"], tmp_path / "whole", skip_existing=True) == []
    assert (tmp_path / "whole" / "classes.csv").read_text() == whole
    # Shards write their own tables; merging joins them into the same rows.
    for index in (0, 1):
        predict_files(predictor, [tmp_path / "in"], tmp_path / "sharded", shard=Shard(index, 2), skip_existing=True)
    assert merge_instance_shards(tmp_path / "sharded") == tmp_path / "sharded" / "classes.csv"
    merged = (tmp_path / "sharded" / "classes.csv").read_text().splitlines()
    assert merged[0] == whole.splitlines()[0] and sorted(merged[1:]) == sorted(whole.splitlines()[1:])


def test_binary_runs_write_no_classes_csv(tmp_path):
    red_and_blue_image(tmp_path / "in" / "a.png")
    config = trained_config(size=32, num_classes=2, threshold=0.5, fast=False)
    predictor = RunPredictor(tmp_path, config, lambda unit: torch.full_like(unit[:, :1], 0.7, dtype=torch.float32))
    predict_files(predictor, [tmp_path / "in"], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_mask.png", "a_overlay.png"]
    assert Image.open(tmp_path / "out" / "a_mask.png").mode == "L"


# --------------------------------------------------------------------------------------------
# A tiny trained 3-class run: predict's files and the API agree
# --------------------------------------------------------------------------------------------


def with_class_map(run: Path) -> Path:
    """Give a run folder's config.json the class map training writes for a label file."""
    path = run / "config.json"
    config = json.loads(path.read_text())
    config["record"]["classes"] = ClassMap.from_names(NAMES, colors=COLORS).to_dict()
    path.write_text(json.dumps(config))
    return run


def test_tiny_run_predict_files_are_the_apis_palette_masks(tmp_path):
    from typer.testing import CliRunner

    from pixelwise.cli import app

    run = with_class_map(make_tiny_run(tmp_path / "run", steps=1, num_classes=3))
    images = write_images(tmp_path / "in")
    result = CliRunner().invoke(
        app, ["predict", str(run), str(tmp_path / "in"), "--out", str(tmp_path / "out")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    seg = pixelwise.load(run)
    assert seg.class_names == NAMES and seg.class_colors == COLORS
    for path in images:
        prediction = seg.predict(path)
        mask = Image.open(tmp_path / "out" / f"{path.stem}_mask.png")
        assert mask.mode == "P" and np.array_equal(np.array(mask), prediction.mask), path.name
        assert mask.getpalette()[:9] == [c for rgb in COLORS for c in rgb]
        assert prediction.png_bytes() == (tmp_path / "out" / f"{path.stem}_mask.png").read_bytes()
        assert prediction.overlay_png_bytes() == (tmp_path / "out" / f"{path.stem}_overlay.png").read_bytes()
    assert read_csv(tmp_path / "out" / "classes.csv")[0] == ["image", *NAMES]
