"""Cutouts and new backgrounds (pixelwise.masks.cutout): the guided filter puts a blurred, low-resolution
probability's edge back onto the image's sharp edge; RGBA cutouts, backgrounds, colour parsing; the Python API's
and ``predict``'s cutouts for binary runs, and their refusal for multi-class runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from pixelwise.cli import app
from pixelwise.data.naming import is_overlay
from pixelwise.errors import PixelwiseError
from pixelwise.masks.cutout import alpha_matte, cover, cutout_rgba, parse_background, parse_colour, replace_background
from pixelwise.metrics import surface_distances
from pixelwise.predict.segment import Segmentation

from cli_runner import run_cli
from tiny_run import make_tiny_run, write_images

SIDE, FACTOR = 128, 8  # the image, and how much coarser the "network" saw it


def scene(seed: int = 0):
    """A wavy disc (sharp edge) on a noisy background, and its probability as a network at 1/8 of the size
    would give it back: the disc averaged over 8×8 blocks, bilinearly upsampled (a ramp that misses the waves)."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] - SIDE / 2
    truth = np.hypot(yy, xx) < SIDE * 0.3 + SIDE * 0.07 * np.sin(7 * np.arctan2(yy, xx))
    rng = np.random.default_rng(seed)
    image = np.where(truth[..., None], (205, 150, 120), (50, 95, 70)) + rng.normal(0, 10, (SIDE, SIDE, 3))
    low = F.avg_pool2d(torch.from_numpy(truth.astype(np.float32))[None, None], FACTOR)
    prob = F.interpolate(low, size=(SIDE, SIDE), mode="bilinear", align_corners=False)[0, 0].numpy()
    return np.clip(image, 0, 255).astype(np.uint8), prob, truth


def edge_error(mask: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance, pixels, between the two masks' boundaries (both directions)."""
    a, b = surface_distances(mask, truth)
    return float(np.concatenate([a, b]).mean())


@pytest.mark.parametrize("colour", [True, False])
def test_guided_filter_puts_the_edge_on_the_image_edge(colour):
    image, prob, truth = scene()
    alpha = alpha_matte(image, prob, radius=6, colour=colour)
    before, after = edge_error(prob > 0.5, truth), edge_error(alpha > 0.5, truth)
    assert before > 0.4  # the upsampled probability misses the waves...
    assert after < 0.25 * before, (before, after)  # ...the matte follows the image (measured: 0.6 px → ~0)
    # As a matte too: alpha is nearer the sharp truth than the probability (measured: 0.068 → 0.010).
    assert np.abs(alpha - truth).mean() < 0.4 * np.abs(prob - truth).mean()


def test_alpha_is_in_range_and_exactly_the_mask_far_from_its_border():
    image, prob, truth = scene(1)
    radius = 4
    alpha = alpha_matte(image, prob, radius=radius)
    assert alpha.dtype == np.float32 and alpha.shape == truth.shape
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    hard = prob > 0.5
    # The refined band reaches 2·radius from the border in either axis (chessboard distance).
    far = (
        np.maximum(
            ndimage.distance_transform_cdt(hard, "chessboard"), ndimage.distance_transform_cdt(~hard, "chessboard")
        )
        > 2 * radius + 1
    )
    assert far.sum() > SIDE * SIDE // 2
    assert np.array_equal(alpha[far], hard[far].astype(np.float32))
    # Nothing or everything: no edge to refine.
    assert not alpha_matte(image, np.zeros(truth.shape, np.float32)).any()
    assert alpha_matte(image, np.ones(truth.shape, np.float32)).min() == 1.0


def test_threshold_and_the_post_processed_mask_are_respected():
    image, prob, truth = scene(2)
    # A run whose threshold is 0.3 keeps more than p > 0.5; the matte's 0.5 follows the run's threshold...
    low_threshold = alpha_matte(image, np.clip(prob * 0.6, 0, 1), radius=6, threshold=0.3)
    assert edge_error(low_threshold > 0.5, truth) < 0.5 * edge_error(prob > 0.5, truth)
    # ...and a region the post-processing removed is not brought back.
    mask = prob > 0.5
    removed = np.zeros_like(mask)
    alpha = alpha_matte(image, prob, radius=4, mask=removed)
    assert not alpha.any() and not mask.all()


def test_cutout_rgba_carries_the_alpha():
    image, prob, _ = scene()
    alpha = alpha_matte(image, prob, radius=4)
    rgba = cutout_rgba(image, alpha)
    assert rgba.dtype == np.uint8 and rgba.shape == (SIDE, SIDE, 4)
    assert np.array_equal(rgba[..., :3], image)
    assert np.array_equal(rgba[..., 3], np.rint(alpha * 255).astype(np.uint8))


@pytest.mark.parametrize(
    "spec, rgb",
    [
        ("#20a040", (32, 160, 64)),
        ("#fff", (255, 255, 255)),
        ("0, 255,10", (0, 255, 10)),
        ("white", (255, 255, 255)),
        ("Green", (0, 128, 0)),
        ((1, 2, 3), (1, 2, 3)),
    ],
)
def test_colour_backgrounds(spec, rgb):
    image, prob, _ = scene()
    alpha = (prob > 0.5).astype(np.float32)
    alpha[0, 0] = 0.5  # one half-transparent pixel: the average of the two
    out = replace_background(image, alpha, spec)
    assert out.dtype == np.uint8 and out.shape == image.shape
    inside, outside = alpha == 1, alpha == 0
    assert np.array_equal(out[inside], image[inside])
    assert (out[outside] == rgb).all()
    assert np.abs(out[0, 0].astype(float) - (image[0, 0].astype(float) + rgb) / 2).max() <= 1


def test_image_background_covers_and_is_centre_cropped(tmp_path):
    image, prob, _ = scene()
    alpha = (prob > 0.5).astype(np.float32)
    wide = np.zeros((64, 256, 3), np.uint8)
    wide[:, :, 0] = np.arange(256, dtype=np.uint8)[None]  # red rises from left to right
    path = tmp_path / "beach.png"
    Image.fromarray(wide).save(path)
    covered = cover(wide, SIDE, SIDE)
    assert covered.shape == (SIDE, SIDE, 3)
    # Scaled ×2 to cover 128 rows, 512 columns cropped to the middle 128: original columns 96..160.
    assert abs(int(covered[:, 0, 0].mean()) - 96) <= 2 and abs(int(covered[:, -1, 0].mean()) - 160) <= 2
    for spec in (path, str(path), wide):
        out = replace_background(image, alpha, spec)
        assert np.array_equal(out[alpha == 0], covered[alpha == 0])
        assert np.array_equal(out[alpha == 1], image[alpha == 1])


def test_blur_background_blurs_around_the_subject():
    image, prob, _ = scene()
    alpha = (prob > 0.5).astype(np.float32)
    out = replace_background(image, alpha, "blur")
    outside = ndimage.binary_erosion(alpha == 0, iterations=3)
    assert np.array_equal(out[alpha == 1], image[alpha == 1])
    assert out[outside].std(axis=0).max() < 0.5 * image[outside].std(axis=0).min()  # noise smoothed away
    # The subject's colour is left out of the blur: just outside it the background keeps its own colour.
    ring = (alpha == 0) & ~outside
    assert np.abs(out[ring].mean(axis=0) - (50, 95, 70)).max() < 12


@pytest.mark.parametrize("text", ["#12345", "300,0,0", "1,2", "notacolour", "rgb(1,2,3)", ""])
def test_bad_colours_are_one_line_errors(text):
    with pytest.raises(PixelwiseError) as error:
        parse_colour(text)
    message = str(error.value)
    assert "\n" not in message and ("#rrggbb" in message or "0..255" in message)


def test_missing_background_image_is_a_missing_file_not_a_colour(tmp_path):
    for spec in ("beach.jpg", str(tmp_path / "nope"), tmp_path / "gone.png"):
        with pytest.raises(PixelwiseError, match="not found"):
            parse_background(spec)
    assert parse_background("BLUR").kind == "blur"


def test_multi_class_is_refused():
    image, prob, _ = scene()
    three = np.stack([1 - prob, prob / 2, prob / 2])
    with pytest.raises(PixelwiseError, match="cutouts need a binary run"):
        alpha_matte(image, three)
    seg = Segmentation(
        mask=(prob > 0.5).astype(np.uint8),
        class_names=("background", "a", "b"),
        threshold=0.5,
        probabilities=three,
        image=image,
    )
    with pytest.raises(PixelwiseError, match="cutouts need a binary run"):
        seg.cutout()


def test_segmentation_cutout_needs_its_probabilities():
    image, prob, _ = scene()
    mask = (prob > 0.4).astype(np.uint8)
    kept = Segmentation(
        mask=mask,
        class_names=("background", "person"),
        threshold=0.4,
        probabilities=np.stack([1 - prob, prob]),
        image=image,
    )
    rgba = kept.cutout()
    assert rgba.shape == (SIDE, SIDE, 4) and np.array_equal(rgba[..., :3], image)
    assert np.array_equal(rgba[..., 3] > 127, kept.alpha() > 0.5)
    assert kept.replace_background("black").shape == image.shape
    bare = Segmentation(mask=mask, class_names=("background", "person"), threshold=0.4, image=image)
    with pytest.raises(ValueError, match="probabilities=True"):
        bare.cutout()


def test_pictures_are_not_masks_for_score():
    assert is_overlay("a_cutout") and is_overlay("a_background") and is_overlay("a_overlay")
    assert not is_overlay("a_mask")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("cutout-images") / "in", sizes=((72, 96), (90, 60)))[0].parent


def test_cli_writes_cutouts_and_backgrounds_for_a_binary_run(tmp_path, inputs):
    run = make_tiny_run(tmp_path / "binary", steps=2)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["predict", str(run), str(inputs), "--out", str(out), "--no-tta", "--cutout", "--background", "#00ff00"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    for source in sorted(inputs.iterdir()):
        with Image.open(out / f"{source.stem}_cutout.png") as cut, Image.open(source) as original:
            assert cut.mode == "RGBA" and cut.size == original.size
            rgba = np.asarray(cut)
        with Image.open(out / f"{source.stem}_background.png") as framed:
            assert framed.mode == "RGB" and framed.size == original.size
            new = np.asarray(framed)
        with Image.open(out / f"{source.stem}_mask.png") as mask_file:
            mask = np.asarray(mask_file) > 0
        alpha = rgba[..., 3]
        assert np.array_equal(rgba[..., :3], np.asarray(Image.open(source).convert("RGB")))
        far_outside = ndimage.binary_erosion(~mask, np.ones((3, 3)), iterations=5, border_value=1)  # past the band
        assert (alpha[far_outside] == 0).all()
        assert (new[alpha == 0] == (0, 255, 0)).all()


def test_cli_refuses_a_multi_class_run_writing_nothing(tmp_path, inputs, capsys, monkeypatch):
    run = make_tiny_run(tmp_path / "three", steps=1, num_classes=3)
    out = tmp_path / "out"
    for extra in (["--cutout"], ["--background", "blur"]):
        code, text = run_cli(["predict", run, inputs, "--out", out, "--no-tta", *extra], capsys, monkeypatch)
        assert code == 2 and "cutouts need a binary run" in text and len(text.strip().splitlines()) == 1
        assert not out.exists()
    binary = make_tiny_run(tmp_path / "two", steps=1)
    code, text = run_cli(
        ["predict", binary, inputs, "--out", out, "--no-tta", "--background", "nocolour"], capsys, monkeypatch
    )
    assert code == 2 and "nocolour" in text and len(text.strip().splitlines()) == 1 and not out.exists()
