"""Native-resolution runs: the plan (squash or tiles, with its reason), class-aware patch sampling, void padding,
a tiled run end to end (train → evaluate → predict → API → ONNX), and old runs without a scale."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.config import Recipe, RunConfig
from pixelwise.data.classes import IGNORE
from pixelwise.runs import RunFolder

TILE = 32


def make_small_object_set(root: Path, n: int = 10, height: int = 48, width: int = 144) -> Path:
    """images/ + masks/: wide noisy images, each with a few 2×2-px bright squares (class 1, 0/255 masks): squashed
    to 128 px they would be under 2 px (the plan's MIN_SQUASHED_PX)."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image = rng.integers(60, 120, (height, width, 3)).astype(np.uint8)
        mask = np.zeros((height, width), np.uint8)
        for _ in range(4):
            y, x = rng.integers(2, height - 5), rng.integers(2, width - 5)
            mask[y : y + 2, x : x + 2] = 255
        image[mask > 0] = (250, 250, 90)
        Image.fromarray(image).save(root / "images" / f"wide{i:02d}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"wide{i:02d}.png")
    return root


# -- the plan ---------------------------------------------------------------------------------------------------


def test_plan_squashes_isic_like_data_and_says_why(tmp_path, caplog):
    from pixelwise.data.synth import make_synth_dataset
    from pixelwise.train.data import prepare_data

    data = make_synth_dataset(tmp_path / "synth", n=12, size=96, seed=0, progress=False)
    recipe = Recipe(data=str(data), cache_dir=str(tmp_path / "cache"), val_fraction=0.2, test_fraction=0.2)
    with caplog.at_level(logging.INFO, logger="pixelwise"):
        prepared = prepare_data(recipe.validate(), RunFolder(tmp_path / "run"))
    assert not prepared.is_tiled and prepared.size == 128
    assert "plan: squash to 128 px" in caplog.text and "thinnest class" in caplog.text


def test_plan_tiles_small_objects_in_wide_images_and_says_why(tmp_path, caplog):
    from pixelwise.train.data import prepare_data

    data = make_small_object_set(tmp_path / "wide")
    recipe = Recipe(data=str(data), cache_dir=str(tmp_path / "cache"), val_fraction=0.2, test_fraction=0.2)
    with caplog.at_level(logging.INFO, logger="pixelwise"):
        prepared = prepare_data(recipe.validate(), RunFolder(tmp_path / "run"))
    assert prepared.is_tiled and prepared.plan.scale == 1.0
    assert "plan: tiles of" in caplog.text and "would leave them" in caplog.text
    # Padded to one size with void masks; each image's own size is kept.
    side = prepared.size  # the planned tile: the longer side rounded up to 32
    assert side == 160 and prepared.train_images.shape[-2:] == prepared.train_masks.shape[-2:] == (side, side)
    assert prepared.train_sizes.tolist()[0] == [48, 144] and (prepared.train_masks[:, 48:] == IGNORE).all()


def test_forced_scale_and_squash(tmp_path):
    from pixelwise.config import parse_scale
    from pixelwise.data.objects import ObjectStats
    from pixelwise.errors import PixelwiseError
    from pixelwise.train.plan import plan_input

    assert parse_scale("0") == "auto" and parse_scale("squash") == "squash" and parse_scale("0.5") == 0.5
    with pytest.raises(PixelwiseError, match="--scale"):
        parse_scale("big")
    with pytest.raises(PixelwiseError, match="--fit pad"):
        Recipe(scale="1.0", fit="pad").validate()
    stats = ObjectStats(4, 400.0, 600.0, 1.5)
    assert plan_input(Recipe(scale="squash"), stats, 3, 10).scale is None
    forced = plan_input(Recipe(scale="0.5"), stats, 3, 10)
    assert forced.scale == 0.5 and forced.size == 256 and "--scale 0.5" in forced.reason


def test_instance_runs_keep_the_border_between_objects_wider_before_they_squash():
    """DSB-like statistics: 256×256 images, a border class 3 px thick. Squashed to 160 px it keeps 1.9 px: a
    semantic run would still squash (≥ 2 px), an instance run plans tiles at scale 1 (it needs 4 px)."""
    from pixelwise.data.objects import ClassObjects, ObjectStats
    from pixelwise.train.plan import MIN_SQUASHED_PX, MIN_SQUASHED_PX_INSTANCES, plan_input

    classes = [
        ClassObjects("border", 40, 0.03, 900, 20.0, 3.3, 2.0),
        ClassObjects("nucleus", 40, 0.13, 900, 120.0, 10.0, 5.0),
    ]
    stats = ObjectStats(40, 256.0, 256.0, 1.0, classes)
    assert 3.3 * 160 / 256 >= MIN_SQUASHED_PX and 3.3 * 160 / 256 < MIN_SQUASHED_PX_INSTANCES
    assert plan_input(Recipe(), stats, 3, 400).scale is None
    planned = plan_input(Recipe(), stats, 3, 400, instances=True)
    assert planned.scale == 1.0 and planned.size == 256 and "'border'" in planned.reason


# -- class-aware sampling and void ------------------------------------------------------------------------------


def test_class_aware_sampling_centres_rare_classes_at_the_stated_rate():
    from pixelwise.train.patches import FOREGROUND_FRACTION, PatchSampler

    masks = torch.zeros((1, 128, 128), dtype=torch.uint8)
    masks[0, :, :64] = 1  # half the image: a common class
    masks[0, 100:102, 100:102] = 2  # 4 pixels: a rare class
    sampler = PatchSampler(masks, torch.tensor([[128, 128]]), TILE, 3)
    torch.manual_seed(0)
    centres = [sampler.origin(masks, 0)[2] for _ in range(3000)]
    rare, common = centres.count(2) / 3000, centres.count(1) / 3000
    # A third of the crops are centred on a foreground class drawn uniformly among those present.
    assert abs(rare + common - FOREGROUND_FRACTION) < 0.04
    assert abs(rare - FOREGROUND_FRACTION / 2) < 0.03  # uniform random crops would centre it 0.02 % of the time
    images = torch.zeros((1, 3, 128, 128), dtype=torch.uint8)
    crops, crop_masks = sampler.crops(images, masks, torch.zeros(64, dtype=torch.long))
    assert crops.shape == (64, 3, TILE, TILE) and crop_masks.shape == (64, TILE, TILE)


def test_padded_void_counts_in_no_loss_and_no_metric():
    from pixelwise.losses import build_loss
    from pixelwise.train.loop import per_image_dice
    from pixelwise.train.patches import pad_stack

    small = np.zeros((4, 20, 24), np.uint8)
    small[3, 5:10, 5:10] = 1
    images, masks, sizes = pad_stack([small, np.zeros((4, 32, 32), np.uint8)], TILE, 128)
    assert sizes.tolist() == [[20, 24], [32, 32]]
    assert (masks[0, 20:] == IGNORE).all() and (masks[0, :, 24:] == IGNORE).all() and (images[0, :, 20:] == 128).all()
    loss = build_loss("bce+dice", 2)
    logits = torch.randn(2, 1, TILE, TILE)
    changed = logits.clone()
    changed[0, :, 20:] = 50.0  # any prediction on the padding
    assert torch.allclose(loss(logits, masks), loss(changed, masks))
    labels = masks.clone()
    labels[labels == IGNORE] = IGNORE  # validation marks void predictions alike
    assert per_image_dice(labels[:1], masks[:1])[0] == pytest.approx(1.0)


# -- a tiled run end to end -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiled_run(tmp_path_factory):
    from pixelwise.train.loop import train

    root = tmp_path_factory.mktemp("tiled")
    data = make_small_object_set(root / "data", n=10)
    recipe = Recipe(
        data=str(data),
        model="unet",
        size=TILE,
        scale="1.0",
        epochs=1,
        batch_size=4,
        augment="none",
        fast=False,
        cache_dir=str(root / "cache"),
        val_fraction=0.2,
        test_fraction=0.2,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIXELWISE_THREADS", "1")
        return train(recipe, root / "run"), data


def test_tiled_run_records_its_plan_and_predicts_at_the_input_size(tiled_run, tmp_path):
    import pixelwise
    from pixelwise.evaluate.evaluate import evaluate_run
    from pixelwise.predict.engine import make_predictor
    from pixelwise.predict.predict import predict_files

    run, data = tiled_run
    record = json.loads((run / "config.json").read_text())["record"]
    assert record["scale"] == 1.0 and record["size"] == TILE and record["tiles"]["tile"] == TILE
    assert record["tiles"]["blend"] == "gaussian" and record["batch_size"] == 4

    result = evaluate_run(run, split="test", tta="none", threshold_curve=True)
    summary = json.loads((result.folder / "summary.json").read_text())
    assert summary["scale"] == 1.0 and set(summary["by_object_size"]) == {"small", "medium", "large"}
    assert summary["by_object_size"]["small"]["objects"] > 0
    assert "By object size" in (result.folder / "report.html").read_text()

    image = np.asarray(Image.open(next((data / "images").iterdir())).convert("RGB"))
    big = np.tile(image, (2, 2, 1))[:90, :200]  # another size than the training images
    Image.fromarray(big).save(tmp_path / "big.png")
    predictor = make_predictor(run, "torch", "none", "fp32")
    predict_files(predictor, [tmp_path / "big.png"], tmp_path / "out")
    mask = np.asarray(Image.open(tmp_path / "out" / "big_mask.png"))
    assert mask.shape == (90, 200)

    segmenter = pixelwise.load(run, tta=False)
    assert segmenter.scale == 1.0
    api = segmenter.predict(big, probabilities=True)
    assert api.mask.shape == (90, 200) and api.probabilities.shape == (2, 90, 200)
    assert np.array_equal(mask, api.mask_png_values()), "predict and the API: the same per-image path"
    plain = segmenter.predict(big)
    assert np.array_equal(plain.mask, api.mask)


def test_tiled_run_and_its_onnx_export_give_the_same_masks(tiled_run):
    pytest.importorskip("onnxruntime")
    import pixelwise
    from pixelwise.deploy.contract import read_sidecar
    from pixelwise.deploy.onnx_export import export_run

    run, data = tiled_run
    export_run(run)
    meta = read_sidecar(run / "model.onnx")
    assert meta["scale"] == 1.0 and meta["tiles"]["tile"] == TILE and meta["tiles"]["stride"] == 24
    image = np.asarray(Image.open(next((data / "images").iterdir())).convert("RGB"))
    torch_mask = pixelwise.load(run, tta=False).predict(image).mask
    onnx_mask = pixelwise.load(run, engine="onnx", tta=False).predict(image).mask
    assert (torch_mask != onnx_mask).mean() < 0.001


def test_old_config_without_scale_loads_and_predicts_as_before(tmp_path):
    from pixelwise.predict.engine import make_predictor
    from pixelwise.predict.segment import image_labels, labels_at_sizes, network_batch

    from tiny_run import make_tiny_run, synth_image

    run = make_tiny_run(tmp_path / "old")
    values = json.loads((run / "config.json").read_text())
    for key in ("scale", "tiles", "batch_size", "plan"):
        values["record"].pop(key, None)
    (run / "config.json").write_text(json.dumps(values))
    config = RunConfig.from_dict(values)
    assert not config.record.is_tiled and config.record.tile_plan() is None
    predictor = make_predictor(run, "torch", "none", "fp32")
    images = [synth_image(0, 96), synth_image(1, 80)]
    new = image_labels(predictor, images)
    old = labels_at_sizes(predictor, network_batch(images, 64), [i.shape[:2] for i in images])
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(new, old))
