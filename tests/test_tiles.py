"""Tiled prediction (:mod:`pixelwise.predict.tiles`): the grid, the Gaussian weight, and the streamed blending
against whole-image predictions and a full-buffer reference. Fake predictors only: no network, no training."""

from __future__ import annotations

import itertools
import json
import tracemalloc

import numpy as np
import pytest
import torch

from pixelwise.errors import PixelwiseError
from pixelwise.predict.tiles import (
    TilePlan,
    gaussian_weight,
    plan_tiles,
    sliding_window_labels,
    tile_grid,
    tiled_labels,
)


def per_pixel_probs(classes: int):
    """A translation-equivariant fake network: each pixel's probabilities are a function of its colour only.
    K = 1: the red channel / 255 (sigmoid-like); K > 1: a softmax of fixed colour mixtures (uint8 steps keep
    the classes' margins far above float32 rounding)."""
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0], [0.3, 0.3, 0.3]])

    def predict(x: torch.Tensor) -> torch.Tensor:
        unit = x.float() / 255.0
        if classes == 1:
            return unit[:, :1]
        logits = torch.einsum("kc,nchw->nkhw", mix[:classes] * 8.0, unit)
        return torch.softmax(logits, dim=1)

    return predict


def context_probs(classes: int):
    """A fake network that is *not* translation-equivariant: a 5×5 box blur with zero padding at the tile's
    border, plus a ramp across the tile, so tiles' seams and positions matter."""

    def predict(x: torch.Tensor) -> np.ndarray:
        unit = x.float() / 255.0
        blurred = torch.nn.functional.avg_pool2d(unit, 5, stride=1, padding=2, count_include_pad=True)
        ramp = torch.linspace(-0.2, 0.2, x.shape[-1]).view(1, 1, 1, -1)
        feats = torch.cat([blurred, blurred.mean(1, keepdim=True) + ramp], dim=1)  # N×4×t×t
        if classes == 1:
            return torch.sigmoid(6.0 * (feats[:, :1] + feats[:, 3:] - 0.6)).numpy()
        return torch.softmax(6.0 * feats[:, :classes], dim=1).numpy()

    return predict


def whole_image(predict, image: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, torch.Tensor]:
    """The network on the whole image at once: labels (``> threshold`` for K = 1, else argmax) and probabilities."""
    probs = torch.as_tensor(predict(torch.from_numpy(image.transpose(2, 0, 1)[None].copy())))[0]
    labels = probs[0] > threshold if probs.shape[0] == 1 else probs.argmax(0)
    return labels.numpy().astype(np.uint8), probs


def reference_labels(predict, image: np.ndarray, plan: TilePlan, threshold: float = 0.5):
    """The naive way: full-size K×H×W buffers, every window added, one division at the end."""
    height, width = image.shape[:2]
    tile = plan.tile
    padded = np.full((*plan.padded_shape(height, width), 3), plan.pad_value, np.uint8)
    padded[:height, :width] = image
    windows = plan.grid(height, width)
    weight = (
        np.ones((tile, tile), np.float32)
        if len(windows) == 1
        else gaussian_weight(tile, plan.sigma_scale, plan.min_weight)
    )
    total = weights = None
    for y0, x0 in windows:
        x = torch.from_numpy(padded[y0 : y0 + tile, x0 : x0 + tile].transpose(2, 0, 1)[None].copy())
        probs = np.asarray(predict(x), dtype=np.float32)[0]
        if total is None:
            total = np.zeros((probs.shape[0], *padded.shape[:2]), np.float32)
            weights = np.zeros(padded.shape[:2], np.float32)
        total[:, y0 : y0 + tile, x0 : x0 + tile] += probs * weight
        weights[y0 : y0 + tile, x0 : x0 + tile] += weight
    probs = (total / weights)[:, :height, :width]
    if probs.shape[0] == 1:
        return (probs[0] > threshold).astype(np.uint8), probs[0]
    return probs.argmax(0).astype(np.uint8), 1.0 - probs[0]


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    smooth = np.repeat(np.repeat(coarse, 8, 0), 8, 1)[:height, :width]  # blobs, so labels have regions
    return (smooth // 2 + rng.integers(0, 128, (height, width, 3), dtype=np.uint8)).astype(np.uint8)


SHAPES = [
    (64, 64, 32, 0.25),
    (100, 37, 32, 0.5),
    (37, 100, 32, 0.0),
    (20, 15, 32, 0.25),
    (130, 97, 48, 0.3),
    (33, 33, 32, 0.9),
    (1, 1, 16, 0.25),
    (256, 256, 256, 0.25),
]


@pytest.mark.parametrize("height,width,tile,overlap", SHAPES)
def test_grid_covers_every_pixel_and_stays_inside(height, width, tile, overlap):
    plan = plan_tiles(tile, overlap)
    extent_h, extent_w = plan.padded_shape(height, width)
    grid = tile_grid(height, width, tile, overlap)
    assert grid == plan.grid(height, width) and len(set(grid)) == len(grid)
    covered = np.zeros((extent_h, extent_w), np.int32)
    for y0, x0 in grid:
        assert 0 <= y0 and y0 + tile <= extent_h and 0 <= x0 and x0 + tile <= extent_w
        covered[y0 : y0 + tile, x0 : x0 + tile] += 1
    assert covered.min() >= 1
    for starts, extent in ((plan.starts(height), extent_h), (plan.starts(width), extent_w)):
        assert starts[0] == 0 and starts[-1] + tile == extent  # the last window is flush with the border
        assert all(0 < b - a <= plan.stride for a, b in itertools.pairwise(starts))


def test_plan_stride_dict_and_checks():
    plan = plan_tiles(256, 0.25)
    assert plan.stride == 192 and plan_tiles(100, 0.3).stride == 70 and plan_tiles(8, 0.99).stride == 1
    assert plan.starts(1000) == [0, 192, 384, 576, 744]
    data = json.loads(json.dumps(plan.to_dict()))
    assert data == {
        "tile": 256,
        "overlap": 0.25,
        "stride": 192,
        "blend": "gaussian",
        "sigma_scale": 0.125,
        "min_weight": 1e-3,
        "pad_value": 128,
    }
    assert TilePlan.from_dict(data) == plan
    for bad in (
        {"tile": 0},
        {"tile": 2.5},
        {"overlap": 1.0},
        {"overlap": -0.1},
        {"sigma_scale": 0.0},
        {"min_weight": 0.0},
        {"pad_value": 256},
    ):
        with pytest.raises(PixelwiseError):
            plan_tiles(**{"tile": 32, **bad})


def test_gaussian_weight_is_nnunets():
    weight = gaussian_weight(64)
    assert weight.shape == (64, 64) and weight.dtype == np.float32
    assert weight.max() == pytest.approx(1.0, abs=1e-3) and weight.min() == pytest.approx(1e-3)
    np.testing.assert_array_equal(weight, weight[::-1, ::-1])
    np.testing.assert_array_equal(weight, weight.T)
    # sigma = 64 / 8 = 8 pixels: 8 pixels right of the centre (31.5 → 39.5) the weight is exp(-1/2) of the peak
    row = weight[31] / weight[31].max()
    assert np.interp(39.5, np.arange(64), row) == pytest.approx(np.exp(-0.5), rel=2e-3)
    assert gaussian_weight(64, min_weight=0.2).min() == pytest.approx(0.2)


@pytest.mark.parametrize("classes", [1, 3])
def test_one_tile_equal_to_the_image_is_the_plain_prediction(classes):
    image = random_image(96, 96, seed=1)
    predict = context_probs(classes)
    plain_labels, plain_probs = whole_image(predict, image)
    labels, probability = sliding_window_labels(predict, image, tile=96, overlap=0.5, return_probability=True)
    np.testing.assert_array_equal(labels, plain_labels)
    expected = plain_probs[0] if classes == 1 else 1.0 - plain_probs[0]
    np.testing.assert_array_equal(probability, expected.numpy())


@pytest.mark.parametrize("classes", [1, 2, 5])
@pytest.mark.parametrize("height,width,tile,overlap", SHAPES)
def test_tiles_of_an_equivariant_network_give_the_whole_image_result(classes, height, width, tile, overlap):
    image = random_image(height, width, seed=height * width)
    predict = per_pixel_probs(classes)
    plain_labels, plain_probs = whole_image(predict, image, threshold=0.45)
    labels, probability = sliding_window_labels(
        predict, image, tile, overlap, batch_size=3, threshold=0.45, return_probability=True
    )
    assert labels.shape == (height, width) and labels.dtype == np.uint8 and probability.dtype == np.float32
    np.testing.assert_array_equal(labels, plain_labels)
    expected = plain_probs[0] if classes == 1 else 1.0 - plain_probs[0]
    np.testing.assert_allclose(probability, expected.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("classes", [1, 4])
@pytest.mark.parametrize(
    "height,width,tile,overlap,batch_size",
    [
        (200, 150, 64, 0.25, 4),
        (150, 200, 64, 0.5, 1),
        (257, 63, 64, 0.25, 7),
        (40, 300, 48, 0.3, 2),
        (130, 97, 48, 0.0, 5),
        (30, 20, 32, 0.25, 4),
    ],
)
def test_streaming_equals_a_full_buffer_reference(classes, height, width, tile, overlap, batch_size):
    image = random_image(height, width, seed=classes + height)
    predict = context_probs(classes)
    plan = plan_tiles(tile, overlap)
    ref_labels, ref_probability = reference_labels(predict, image, plan, threshold=0.45)
    labels, probability = tiled_labels(predict, image, plan, batch_size, 0.45, return_probability=True)
    assert 0 < ref_labels.mean() < classes  # both sides of the decision occur
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(probability, ref_probability)
    np.testing.assert_array_equal(sliding_window_labels(predict, image, tile, overlap, batch_size, 0.45), labels)


def test_padding_of_small_images_never_reaches_the_output():
    image = np.full((20, 13, 3), 40, np.uint8)
    image[5:10, 2:8] = 200
    seen = []

    def predict(x: torch.Tensor) -> torch.Tensor:  # the fill (128) is class 1, anything else its brightness
        seen.append(tuple(x.shape))
        fill = (x == 128).all(dim=1, keepdim=True).float()
        return torch.maximum(fill, (x[:, :1].float() > 100).float())

    labels = sliding_window_labels(predict, image, tile=32)
    assert seen == [(1, 3, 32, 32)]
    assert labels.shape == (20, 13)
    expected = np.zeros((20, 13), np.uint8)
    expected[5:10, 2:8] = 1
    np.testing.assert_array_equal(labels, expected)
    # Only one axis shorter than the tile: the windows slide along the other one, padded along the short one.
    wide = np.tile(image, (1, 8, 1))
    np.testing.assert_array_equal(sliding_window_labels(predict, wide, tile=32), np.tile(expected, (1, 8)))


def test_bad_inputs_are_refused():
    predict = per_pixel_probs(1)
    with pytest.raises(ValueError, match="uint8"):
        sliding_window_labels(predict, np.zeros((10, 10, 3), np.float32), tile=8)
    with pytest.raises(ValueError, match="H×W×3"):
        sliding_window_labels(predict, np.zeros((10, 10), np.uint8), tile=8)
    with pytest.raises(ValueError, match="batch_size"):
        sliding_window_labels(predict, np.zeros((10, 10, 3), np.uint8), tile=8, batch_size=0)
    with pytest.raises(ValueError, match="predict_probs returned"):
        sliding_window_labels(lambda x: x[:, :1, :4].float(), np.zeros((10, 10, 3), np.uint8), tile=8)


def peak_bytes(height: int, width: int, tile: int, classes: int) -> int:
    """Peak of traced (numpy and Python) allocations while tiling, with a numpy fake network."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, ::7] = 255
    template = np.linspace(0.0, 1.0, classes * tile * tile, dtype=np.float32).reshape(1, classes, tile, tile)

    def predict(x: torch.Tensor) -> np.ndarray:
        return np.broadcast_to(template, (x.shape[0], classes, tile, tile)) * (x.numpy()[:, :1] > 0)

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        labels = sliding_window_labels(predict, image, tile=tile, overlap=0.25, batch_size=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert labels.shape == (height, width)
    return peak


def test_streaming_memory_does_not_grow_with_the_image_height():
    """A 4000×3000 image (12 MB of labels) needs its labels plus a band bounded by the width and the tile:
    the bound of :func:`~pixelwise.predict.tiles.tiled_labels`'s docstring, about 21 MB here."""
    width, tile, classes, batch = 3000, 256, 2, 4
    bound = (
        (classes + 1) * tile * width * 4  # the band and its weights
        + 64 * width * (8 * classes + 8)  # finishing 64 rows: probabilities, argmax's copy and indices
        + batch * tile * tile * (3 + 8 * classes)  # the batch in, its probabilities, a weighted window
        + 2_000_000
    )  # slack: small arrays, Python objects
    tall, short = peak_bytes(4000, width, tile, classes), peak_bytes(1000, width, tile, classes)
    assert tall - 4000 * width <= bound, (tall, bound)
    assert short - 1000 * width <= bound, (short, bound)
    # Apart from the labels (1 byte per pixel), the peak does not depend on the height.
    assert abs((tall - 4000 * width) - (short - 1000 * width)) < 1_000_000
    assert bound < 24_000_000  # vs 4000 × 3000 × (2 classes + weights) × 4 bytes = 144 MB for full-size buffers
