"""Tests for the embedded synthetic data set (pixelwise.data.synth)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from pixelwise.cli import data_synth
from pixelwise.data.synth import (
    MANIFEST_NAME,
    MAX_LESION_FRACTION,
    MIN_LESION_FRACTION,
    make_synth_dataset,
    sample_rng,
    synth_sample,
)
from pixelwise.errors import PixelwiseError

BASELINE_N, BASELINE_SIZE = 120, 128


@pytest.fixture(scope="module")
def baseline_set() -> tuple[np.ndarray, np.ndarray]:
    """images uint8 (N, S, S, 3) and masks bool (N, S, S) for the statistical tests."""
    pairs = [synth_sample(sample_rng(0, i), BASELINE_SIZE) for i in range(BASELINE_N)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype(bool)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _dice_per_threshold(darkness: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Dice of ``darkness >= t`` for every t in 0..255; darkness int (N, P) in 0..255, masks bool (N, P).

    Returns float (N, 256).
    """
    fg = np.stack([np.bincount(d[m], minlength=256) for d, m in zip(darkness, masks)])
    bg = np.stack([np.bincount(d[~m], minlength=256) for d, m in zip(darkness, masks)])
    true_pos = fg[:, ::-1].cumsum(1)[:, ::-1]
    false_pos = bg[:, ::-1].cumsum(1)[:, ::-1]
    return 2 * true_pos / (true_pos + false_pos + masks.sum(1, keepdims=True))


def _otsu_threshold(histogram: np.ndarray) -> int:
    """Otsu's threshold t for a 256-bin histogram: classes are values < t and values >= t."""
    p = histogram / histogram.sum()
    weight = np.cumsum(p)[:-1]
    cum_mean = np.cumsum(p * np.arange(256))[:-1]
    total_mean = (p * np.arange(256)).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * weight - cum_mean) ** 2 / (weight * (1 - weight))
    return int(np.nanargmax(between)) + 1


# ----------------------------------------------------------------------------------------------
# Files: layout, values, determinism


def test_layout_and_values(tmp_path: Path) -> None:
    out = make_synth_dataset(tmp_path / "set", n=5, size=64, seed=1, progress=False)
    image_stems = sorted(p.stem for p in (out / "images").glob("*.png"))
    mask_stems = sorted(p.stem for p in (out / "masks").glob("*.png"))
    assert image_stems == mask_stems == [f"synth_{i:04d}" for i in range(5)]
    for stem in image_stems:
        with Image.open(out / "images" / f"{stem}.png") as image:
            assert image.mode == "RGB" and image.size == (64, 64)
        with Image.open(out / "masks" / f"{stem}.png") as mask:
            assert mask.mode == "L" and mask.size == (64, 64)
            values = set(np.unique(np.asarray(mask)).tolist())
        assert values == {0, 255}
    assert json.loads((out / MANIFEST_NAME).read_text())["complete"] is True


def test_sample_contract() -> None:
    image, mask = synth_sample(sample_rng(0, 0), 96)
    assert image.dtype == np.uint8 and image.shape == (96, 96, 3)
    assert mask.dtype == np.uint8 and mask.shape == (96, 96)
    assert set(np.unique(mask).tolist()) == {0, 1}


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = make_synth_dataset(tmp_path / "a", n=4, size=64, seed=7, progress=False)
    second = make_synth_dataset(tmp_path / "b", n=4, size=64, seed=7, progress=False)
    assert _files(first) == _files(second)
    # A larger n leaves the earlier samples unchanged.
    larger = make_synth_dataset(tmp_path / "c", n=6, size=64, seed=7, progress=False)
    larger_files = _files(larger)
    assert all(larger_files[name] == data for name, data in _files(first).items())


def test_different_seeds_give_different_images() -> None:
    a, _ = synth_sample(sample_rng(0, 0), 64)
    b, _ = synth_sample(sample_rng(1, 0), 64)
    c, _ = synth_sample(sample_rng(0, 1), 64)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_scene_does_not_depend_on_size() -> None:
    # Geometry comes from size-independent draws: the 64 px mask is the 128 px mask, downsampled.
    for index in range(4):
        _, small = synth_sample(sample_rng(3, index), 64)
        _, large = synth_sample(sample_rng(3, index), 128)
        large_down = large.reshape(64, 2, 64, 2).mean(axis=(1, 3)) >= 0.5
        overlap = (small.astype(bool) & large_down).sum() / (small.astype(bool) | large_down).sum()
        assert overlap > 0.9


# ----------------------------------------------------------------------------------------------
# Overwrite protection and parameters


def test_refuses_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PixelwiseError, match="not empty"):
        make_synth_dataset(tmp_path, n=2, size=64, seed=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_refuses_a_different_synth_set_and_reuses_the_same(tmp_path: Path) -> None:
    out = make_synth_dataset(tmp_path / "set", n=3, size=64, seed=0, progress=False)
    with pytest.raises(PixelwiseError, match="different synth set"):
        make_synth_dataset(out, n=3, size=64, seed=1, progress=False)
    with pytest.raises(PixelwiseError, match="different synth set"):
        make_synth_dataset(out, n=4, size=64, seed=0, progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    make_synth_dataset(out, n=3, size=64, seed=0, progress=False)  # identical set: kept as is
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before


def test_completes_an_interrupted_set(tmp_path: Path) -> None:
    reference = _files(make_synth_dataset(tmp_path / "ref", n=3, size=64, seed=2, progress=False))
    out = make_synth_dataset(tmp_path / "set", n=3, size=64, seed=2, progress=False)
    (out / "masks" / "synth_0002.png").unlink()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    (out / MANIFEST_NAME).write_text(json.dumps({**manifest, "complete": False}))
    make_synth_dataset(out, n=3, size=64, seed=2, progress=False)
    assert _files(out) == reference


@pytest.mark.parametrize(
    ("n", "size", "seed", "option"), [(0, 64, 0, "--n"), (2, 16, 0, "--size"), (2, 64, -1, "--seed")]
)
def test_bad_parameters_name_the_option(tmp_path: Path, n: int, size: int, seed: int, option: str) -> None:
    with pytest.raises(PixelwiseError, match=option):
        make_synth_dataset(tmp_path / "set", n=n, size=size, seed=seed, progress=False)
    assert not (tmp_path / "set").exists()


def test_refuses_a_file_as_output(tmp_path: Path) -> None:
    target = tmp_path / "file.png"
    target.write_bytes(b"x")
    with pytest.raises(PixelwiseError, match="is a file"):
        make_synth_dataset(target, n=2, size=64, seed=0, progress=False)


def test_command_writes_the_set(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(data_synth)
    result = CliRunner().invoke(app, [str(tmp_path / "cli"), "--n", "3", "--size", "48", "--seed", "5"])
    assert result.exit_code == 0, result.output
    reference = make_synth_dataset(tmp_path / "api", n=3, size=48, seed=5, progress=False)
    assert _files(tmp_path / "cli") == _files(reference)


# ----------------------------------------------------------------------------------------------
# Statistics: lesion size, hard for darkness thresholds, learnable cues


def test_lesion_fraction_within_bounds(baseline_set) -> None:
    _, masks = baseline_set
    fractions = masks.reshape(len(masks), -1).mean(1)
    assert fractions.min() >= MIN_LESION_FRACTION and fractions.max() <= MAX_LESION_FRACTION
    assert fractions.max() - fractions.min() > 0.15  # sizes vary
    # Mostly inside the frame: few lesion pixels on the image border.
    border = masks[:, 0].sum(1) + masks[:, -1].sum(1) + masks[:, :, 0].sum(1) + masks[:, :, -1].sum(1)
    assert (border <= 0.08 * BASELINE_SIZE).all()


@pytest.mark.parametrize("darkness_of", ["luma", "channel_mean"])
def test_darkness_thresholds_fail(baseline_set, darkness_of: str) -> None:
    images, masks = baseline_set
    rgb = images.astype(np.float32)
    gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32) if darkness_of == "luma" else rgb.mean(-1)
    darkness = np.clip(np.rint(255 - gray), 0, 255).astype(np.int64).reshape(len(images), -1)
    flat_masks = masks.reshape(len(masks), -1)
    dice = _dice_per_threshold(darkness, flat_masks)

    # Oracle: the single global threshold that is best for the whole set.
    best_global = dice.mean(0).max()
    # Per image: Otsu's threshold on that image's darkness histogram.
    otsu = [dice[i, _otsu_threshold(np.bincount(d, minlength=256))] for i, d in enumerate(darkness)]

    assert best_global < 0.8, f"best global darkness threshold reaches Dice {best_global:.3f}"
    assert np.mean(otsu) < 0.8, f"per-image Otsu reaches mean Dice {np.mean(otsu):.3f}"


def test_lesions_are_browner_than_their_surroundings(baseline_set) -> None:
    # The cue a model can learn where darkness fails: pigment lowers blue relative to green.
    from scipy import ndimage

    images, masks = baseline_set
    browner = 0
    for image, mask in zip(images.astype(np.float32) + 1.0, masks):
        ring = ndimage.binary_dilation(mask, iterations=6) & ~ndimage.binary_dilation(mask, iterations=2)
        core = ndimage.binary_erosion(mask, iterations=2)
        blue_over_green = image[..., 2] / image[..., 1]
        browner += np.median(blue_over_green[core]) < np.median(blue_over_green[ring]) - 0.02
    assert browner >= 0.95 * len(images)
