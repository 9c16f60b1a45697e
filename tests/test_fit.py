"""Aspect-preserving input (``--fit pad``, letterbox): images placed in the square with their proportions, masks
mapped back exactly to the original pixels; stretch stays the default (measured, docs/experiments.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.config import Recipe, RunConfig
from pixelwise.data.cache import load_arrays
from pixelwise.data.imageio import PAD_GREY, PAD_MASK, fit_box, resize_image, resize_mask
from pixelwise.data.layouts import find_pairs
from pixelwise.errors import PixelwiseError
from pixelwise.masks.labels import labels_at_size
from pixelwise.predict.predictor import RunPredictor
from pixelwise.predict.segment import segment_images
from pixelwise.runtime import normalize

from cli_runner import run_cli
from tiny_run import trained_config


def blobs(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 H×W mask with a few filled ellipses (classes 1 and 2) on background 0."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    mask = np.zeros((height, width), np.uint8)
    for label in (1, 2, 1):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.1, 0.25) * height, rng.uniform(0.1, 0.25) * width
        mask[((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1] = label
    return mask


def test_fit_box_letterboxes_the_longer_side_and_stretch_fills_the_square():
    assert fit_box(100, 50, 32, "stretch") == (0, 0, 32, 32)
    assert fit_box(100, 50, 32, "pad") == (0, 8, 32, 16)  # tall: bands left and right
    assert fit_box(60, 120, 32, "pad") == (8, 0, 16, 32)  # wide: bands above and below
    assert fit_box(77, 77, 32, "pad") == (0, 0, 32, 32)  # square: nothing to pad


def test_pad_places_image_and_mask_in_the_same_box_with_grey_and_void_bands():
    image = np.random.default_rng(0).integers(0, 255, (90, 45, 3), dtype=np.uint8)
    mask = blobs(90, 45)
    placed, placed_mask = resize_image(image, 32, "pad"), resize_mask(mask, 32, "pad")
    top, left, rows, cols = fit_box(90, 45, 32, "pad")
    assert placed.shape == (3, 32, 32) and placed_mask.shape == (32, 32)
    inside = np.zeros((32, 32), bool)
    inside[top : top + rows, left : left + cols] = True
    assert (placed[:, ~inside] == PAD_GREY).all() and (placed_mask[~inside] == PAD_MASK).all()
    assert set(np.unique(placed_mask[inside])) <= {0, 1, 2}
    # The content is the image resized to its box with the same filter as stretch uses for a whole square.
    expected = np.asarray(Image.fromarray(image).resize((cols, rows), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(placed[:, top : top + rows, left : left + cols], expected)


@pytest.mark.parametrize("shape", [(120, 60), (50, 150), (64, 64)])
def test_pad_masks_come_back_to_the_original_pixels(shape):
    """Class indices → padded S×S → one-hot probabilities → back to H×W: the same mask, up to resampling at
    the edges. Reading the padded output as if stretched puts the classes in the wrong place."""
    height, width = shape
    mask = blobs(height, width, seed=height)
    small = torch.from_numpy(resize_mask(mask, 64, "pad")).long()
    probs = torch.nn.functional.one_hot(small.clamp(max=2), 3).permute(2, 0, 1).float()
    back = labels_at_size(probs, height, width, 0.5, "pad")
    assert back.shape == (height, width)
    assert (back == mask).mean() > 0.97
    if height != width:
        assert (labels_at_size(probs, height, width, 0.5, "stretch") == mask).mean() < 0.95


def test_the_cache_keeps_padded_and_stretched_arrays_apart(tmp_path):
    for i in range(3):
        (tmp_path / "data" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((80, 40, 3), 200, np.uint8)).save(tmp_path / "data" / "images" / f"{i}.png")
        Image.fromarray(((blobs(80, 40, i) > 0) * 255).astype(np.uint8)).save(tmp_path / "data" / "masks" / f"{i}.png")
    pairs = find_pairs(tmp_path / "data").pairs
    stretched = load_arrays(pairs, 32, tmp_path / "cache", progress=False)
    padded = load_arrays(pairs, 32, tmp_path / "cache", progress=False, fit="pad")
    again = load_arrays(pairs, 32, tmp_path / "cache", progress=False, fit="pad")  # from the cache this time
    assert (stretched[0] == 200).all() and (stretched[1] != PAD_MASK).all()
    assert (padded[0][:, :, :, :8] == PAD_GREY).all() and (padded[1][:, :, :8] == PAD_MASK).all()
    assert torch.equal(padded[0], again[0]) and torch.equal(padded[1], again[1])
    assert (tmp_path / "cache" / "arrays" / "s32-pad").is_dir() and (tmp_path / "cache" / "arrays" / "s32").is_dir()


def write_pairs(root, shape, n=4):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(np.full((*shape, 3), 90, np.uint8)).save(root / "images" / f"p{i}.png")
        Image.fromarray(((blobs(*shape, i) > 0) * 255).astype(np.uint8)).save(root / "masks" / f"p{i}.png")
    return find_pairs(root).pairs


def test_prediction_of_a_padded_run_lands_on_the_right_pixels(tmp_path):
    """A stand-in network whose foreground is the bright pixels: through --fit pad the mask at the original
    size is the bright rectangle of a tall image, not shifted or squashed."""
    config = trained_config(size=32, num_classes=2, threshold=0.5, fast=False, fit="pad")

    def predict_unit(unit: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(8 * normalize(unit, config.record.mean, config.record.std)[:, :1])

    image = np.full((128, 64, 3), 10, np.uint8)
    image[20:60, 8:40] = 250
    result = segment_images(RunPredictor(tmp_path, config, predict_unit), [image])[0]
    truth = image[:, :, 0] > 128
    assert result.mask.shape == (128, 64)
    inter, union = ((result.mask > 0) & truth).sum(), ((result.mask > 0) | truth).sum()
    assert inter / union > 0.9


def test_train_pad_is_recorded_and_predict_writes_masks_at_the_original_size(tmp_path, capsys, monkeypatch):
    write_pairs(tmp_path / "data", (96, 60), n=8)
    args = [
        "train",
        "--data",
        tmp_path / "data",
        "--out",
        tmp_path / "run",
        "--epochs",
        1,
        "--size",
        32,
        "--model",
        "unet",
        "--batch-size",
        2,
        "--cache-dir",
        tmp_path / "cache",
        "--test-fraction",
        0.25,
        "--fit",
        "pad",
    ]
    code, output = run_cli(args, capsys, monkeypatch)
    assert code == 0, output
    assert "32×32 (pad)" in output
    assert (tmp_path / "cache" / "arrays" / "s32-pad").is_dir()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["recipe"]["fit"] == "pad"
    code, output = run_cli(
        ["predict", tmp_path / "run", tmp_path / "data" / "images" / "p0.png", "--out", tmp_path / "pred"],
        capsys,
        monkeypatch,
    )
    assert code == 0, output
    assert Image.open(tmp_path / "pred" / "p0_mask.png").size == (60, 96)
    code, output = run_cli(["evaluate", tmp_path / "run"], capsys, monkeypatch)
    assert code == 0, output


def test_runs_from_before_fit_stretch_and_an_unknown_fit_is_refused():
    assert RunConfig.from_dict({"size": 64}).recipe.fit == "stretch"
    assert RunConfig.from_dict({"fit": "pad"}).recipe.fit == "pad"
    with pytest.raises(PixelwiseError, match="fit 'zoom'"):
        RunConfig.from_dict({"fit": "zoom", "num_classes": 2, "size": 64}).trained()
    with pytest.raises(PixelwiseError, match="--fit"):
        Recipe(fit="auto").validate()
