"""Edge refinement at the image's own resolution (``RunRecord.refine_edges``): chosen on validation at the end
of training (binary and multi-class runs), and applied the same way by ``predict``, the Python API, ``serve`` and
``evaluate``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.config import RunRecord
from pixelwise.data.classes import ClassMap
from pixelwise.data.layouts import Pair
from pixelwise.errors import PixelwiseError
from pixelwise.masks.cutout import refined_mask
from pixelwise.predict.predictor import RunPredictor
from pixelwise.predict.segment import make_segmentation, segment_images
from pixelwise.runs import RunFolder
from pixelwise.train.data import TrainData
from pixelwise.train.loop import REFINE_MIN_GAIN, choose_refine_on_validation

from tiny_run import trained_config

CPU = torch.device("cpu")
NET = 16  # the network's square input: images of 128 px are seen 8× coarser
FOREGROUND, BACKGROUND = (205, 150, 120), (50, 95, 70)


def wavy_scene(side: int = 128, seed: int = 0, truth_waves: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A disc with a wavy, sharp edge on a noisy background: ``(uint8 H×W×3 image, bool H×W truth)``; the truth is
    the wavy disc, or with ``truth_waves`` False a plain disc (an outline drawn smoother than the image's edge)."""
    yy, xx = np.mgrid[0:side, 0:side] - side / 2
    radius, angle = np.hypot(yy, xx), np.arctan2(yy, xx)
    shown = radius < side * 0.3 + side * 0.07 * np.sin(7 * angle)
    truth = shown if truth_waves else radius < side * 0.3
    rng = np.random.default_rng(seed)
    image = np.where(shown[..., None], FOREGROUND, BACKGROUND) + rng.normal(0, 6, (side, side, 3))
    return np.clip(image, 0, 255).astype(np.uint8), truth


class Brightness(torch.nn.Module):
    """A "network" that knows the scene: logit = 20 · (mean of the normalised channels − midpoint)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20 * (x.mean(dim=1, keepdim=True) - 0.45)


def unit_record(**fields) -> RunRecord:
    """A binary squashed record whose network sees 0..1 pixels unnormalised (mean 0, std 1)."""
    return RunRecord(
        num_classes=2, classes=ClassMap.plain(2).to_dict(), size=NET, mean=(0.0,) * 3, std=(1.0,) * 3, **fields
    )


def validation_data(folder: Path, truth_waves: bool) -> TrainData:
    """Three validation pairs (:func:`wavy_scene`) written as PNG files, their arrays squashed to the network's
    size."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs, images, masks = [], [], []
    for i in range(3):
        image, truth = wavy_scene(seed=i, truth_waves=truth_waves)
        Image.fromarray(image).save(folder / f"v{i}.png")
        Image.fromarray(truth.astype(np.uint8) * 255).save(folder / f"v{i}_mask.png")
        pairs.append(Pair(f"v{i}", folder / f"v{i}.png", folder / f"v{i}_mask.png"))
        images.append(np.asarray(Image.fromarray(image).resize((NET, NET), Image.BILINEAR)).transpose(2, 0, 1))
        masks.append(np.asarray(Image.fromarray(truth.astype(np.uint8)).resize((NET, NET), Image.NEAREST)))
    val_images, val_masks = torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))
    return TrainData(val_images, val_masks, val_images, val_masks, 2, {}, ClassMap.plain(2), val_pairs=tuple(pairs))


def test_refinement_is_chosen_where_it_moves_edges_onto_the_image(tmp_path):
    record = unit_record()
    chosen = choose_refine_on_validation(
        trained_config().recipe, Brightness(), validation_data(tmp_path / "wavy", True), record, torch.device("cpu")
    )
    assert chosen is True


def test_refinement_is_declined_where_the_truth_does_not_follow_the_image(tmp_path, caplog):
    record = unit_record()
    with caplog.at_level("INFO", logger="pixelwise.train.loop"):
        data = validation_data(tmp_path / "smooth", False)
        chosen = choose_refine_on_validation(trained_config().recipe, Brightness(), data, record, CPU)
    assert chosen is False
    gain = float(caplog.text.split("validation mean Dice ")[1].split()[0])
    assert gain < REFINE_MIN_GAIN


class ThreeClassBrightness(torch.nn.Module):
    """:class:`Brightness` as a three-class network: background, the bright disc, and a class never seen."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        disc = Brightness()(x)
        return torch.cat([-disc, disc, torch.full_like(disc, -10.0)], dim=1)


@pytest.mark.parametrize("truth_waves", [True, False])
def test_multi_class_runs_choose_on_pooled_mean_iou(tmp_path, truth_waves, caplog):
    data = dataclasses.replace(
        validation_data(tmp_path / "wavy", truth_waves), num_classes=3, class_map=ClassMap.plain(3)
    )
    record = unit_record().replace(num_classes=3, classes=ClassMap.plain(3).to_dict())
    with caplog.at_level("INFO", logger="pixelwise.train.loop"):
        chosen = choose_refine_on_validation(trained_config().recipe, ThreeClassBrightness(), data, record, CPU)
    assert "pooled mean IoU" in caplog.text
    assert chosen is truth_waves


def test_tiled_and_instance_runs_never_refine(tmp_path):
    data = validation_data(tmp_path / "wavy", True)
    recipe = trained_config().recipe
    instances = unit_record(task="instances")
    assert choose_refine_on_validation(recipe, Brightness(), data, instances, CPU) is False
    with pytest.raises(PixelwiseError, match="refine_edges"):
        unit_record(scale=1.0, tiles={"tile": 64}, refine_edges=True).check()


def brightness_predictor(tmp_path: Path, refine: bool) -> RunPredictor:
    config = trained_config(size=NET, threshold=0.5, fast=False)
    config = dataclasses.replace(
        config, record=config.record.replace(mean=(0.0,) * 3, std=(1.0,) * 3, refine_edges=refine)
    )
    model = Brightness()
    return RunPredictor(tmp_path, config, lambda unit: torch.sigmoid(model(unit)))


def test_a_refining_run_predicts_the_refined_mask_and_a_plain_run_does_not(tmp_path):
    image, truth = wavy_scene(seed=5)
    plain = segment_images(brightness_predictor(tmp_path, False), [image], keep_probabilities=True)[0]
    refined = segment_images(brightness_predictor(tmp_path, True), [image])[0]
    assert refined.probabilities is None  # used, then dropped: not asked for
    expected = refined_mask(image, plain.probabilities, 0.5)
    np.testing.assert_array_equal(refined.mask, expected.astype(np.uint8))
    assert not np.array_equal(plain.mask, refined.mask)

    def dice(mask):
        return 2 * np.sum((mask == 1) & truth) / (np.sum(mask == 1) + truth.sum())

    assert dice(refined.mask) > dice(plain.mask) + 0.01
    # Without the image (a caller that kept none) the labels pass through unrefined.
    config = brightness_predictor(tmp_path, True).config
    unrefined = make_segmentation(config, plain.mask, probabilities=plain.probabilities)
    np.testing.assert_array_equal(unrefined.mask, plain.mask)


def test_evaluate_scores_the_masks_predict_writes(tmp_path, monkeypatch):
    from pixelwise.evaluate import evaluate as evaluate_module

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    scenes = {f"s{i}": wavy_scene(seed=10 + i) for i in range(3)}
    for stem, (image, truth) in scenes.items():
        Image.fromarray(image).save(data / "images" / f"{stem}.png")
        Image.fromarray(truth.astype(np.uint8) * 255).save(data / "masks" / f"{stem}.png")
    predictor = brightness_predictor(tmp_path / "run", True)
    monkeypatch.setattr(evaluate_module, "make_predictor", lambda run, engine, tta, *rest, **options: predictor)
    RunFolder(tmp_path / "run").write_config(predictor.config)  # evaluate reads the run's config.json
    result = evaluate_module.evaluate_run(tmp_path / "run", data, cache_dir=tmp_path / "cache", tta="none")
    scored = {row["id"]: row["dice"] for row in result.rows}
    for stem, (image, truth) in scenes.items():
        mask = segment_images(predictor, [image])[0].mask == 1
        expected = 2 * np.sum(mask & truth) / (mask.sum() + truth.sum())
        assert scored[stem] == pytest.approx(expected, abs=1e-9)
