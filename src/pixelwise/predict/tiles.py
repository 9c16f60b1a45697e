"""Native-resolution prediction: overlapping square tiles, blended with a Gaussian weight.

The network sees the image at its own resolution, one ``tile``×``tile`` window at a time, instead of the image
resized to the run's ``size``. Windows overlap by ``overlap`` (a fraction of the tile); each window's
probabilities are weighted by :func:`gaussian_weight` (high in the centre, where the network sees the most
context, low at the borders) and the weighted sum is divided by the sum of the weights: nnU-Net's and MONAI's
``sliding_window_inference`` scheme, written here for uint8 H×W×3 images of any size.

- :func:`plan_tiles` / :class:`TilePlan`: the one place that says how tiles are cut (tile, overlap, stride,
  blending weight, fill of the padding); :meth:`TilePlan.to_dict` is what an export contract can record.
- :func:`tile_grid`: the windows' top-left corners.
- :func:`sliding_window_labels` (and :func:`tiled_labels`, the same from a :class:`TilePlan`): class labels
  at the image's own size, streamed in bands of rows so memory does not grow with the image's height.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from pixelwise.errors import PixelwiseError

#: nnU-Net's and MONAI's Gaussian: sigma = tile / 8.
SIGMA_SCALE = 0.125
#: The weight's floor relative to its peak of 1 (MONAI's): a window's border pixels still count a little, and
#: pixels that only one window reaches (the image's corners) are not divided by a vanishing sum.
MIN_WEIGHT = 1e-3
#: Fill of the padding of images smaller than a tile: the grey that ``fit: pad`` letterboxes with, close to the
#: ImageNet mean, so it normalises to about 0 like the network's own zero padding.
PAD_VALUE = 128
#: Rows turned into labels at a time (bounds the division's and argmax's temporaries).
FINISH_ROWS = 64

#: ``predict_probs``: uint8 N×3×t×t (torch) → probabilities N×K×t×t (torch or numpy, float).
PredictProbs = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]


@dataclass(frozen=True)
class TilePlan:
    """How an image is cut into windows and how their predictions are blended.

    Attributes:
        tile: window side in pixels (square windows). The networks pad their input to their stride, so any side
            works; multiples of 32 waste no computation.
        overlap: fraction of ``tile`` that neighbouring windows share, in ``[0, 1)``.
        sigma_scale: the blending Gaussian's sigma as a fraction of ``tile`` (> 0).
        min_weight: the blending weight's floor relative to its peak of 1, in ``(0, 1]``.
        pad_value: uint8 fill of the padding when the image is smaller than ``tile`` along an axis.

    Windows start every :attr:`stride` pixels from 0; the last one along each axis is moved back to end flush
    with the image's border (so it may overlap its neighbour by more than ``overlap``). An axis shorter than
    ``tile`` gets one window, padded with ``pad_value`` past the image; the padding's predictions are dropped.
    """

    tile: int
    overlap: float = 0.25
    sigma_scale: float = SIGMA_SCALE
    min_weight: float = MIN_WEIGHT
    pad_value: int = PAD_VALUE

    def __post_init__(self):
        if isinstance(self.tile, bool) or not isinstance(self.tile, (int, np.integer)) or self.tile < 1:
            raise PixelwiseError(f"tile must be a positive whole number of pixels, not {self.tile!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise PixelwiseError(f"tile overlap must be a fraction in [0, 1), not {self.overlap!r}")
        if not self.sigma_scale > 0.0:
            raise PixelwiseError(f"sigma_scale must be positive, not {self.sigma_scale!r}")
        if not 0.0 < self.min_weight <= 1.0:
            raise PixelwiseError(f"min_weight must be in (0, 1], not {self.min_weight!r}")
        if not 0 <= self.pad_value <= 255:
            raise PixelwiseError(f"pad_value must be a uint8 value 0..255, not {self.pad_value!r}")

    @property
    def stride(self) -> int:
        """Pixels between consecutive window starts: ``floor(tile × (1 - overlap))``, at least 1 (MONAI's)."""
        return max(1, math.floor(self.tile * (1.0 - self.overlap) + 1e-9))  # 1e-9: 0.7 × 100 stays 70

    def starts(self, length: int) -> list[int]:
        """Window starts along an axis of ``length`` pixels: ``0, stride, 2·stride, …`` and ``length - tile``
        (flush with the border); ``[0]`` when ``length <= tile``."""
        if length < 1:
            raise ValueError(f"an image axis needs at least 1 pixel, got {length}")
        if length <= self.tile:
            return [0]
        last = length - self.tile
        return list(range(0, last, self.stride)) + [last]

    def grid(self, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corners ``(y0, x0)`` of every window, row by row (raster order)."""
        return [(y0, x0) for y0 in self.starts(height) for x0 in self.starts(width)]

    def padded_shape(self, height: int, width: int) -> tuple[int, int]:
        """The windows' extent: the image's size, raised to ``tile`` along an axis that is shorter."""
        return max(height, self.tile), max(width, self.tile)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: the fields, the derived ``stride`` and the blending kind."""
        return {**asdict(self), "tile": int(self.tile), "stride": self.stride, "blend": "gaussian"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TilePlan:
        """The plan :meth:`to_dict` wrote (derived keys ignored; missing optional keys take their defaults)."""
        return cls(
            **{key: data[key] for key in ("tile", "overlap", "sigma_scale", "min_weight", "pad_value") if key in data}
        )


def plan_tiles(
    tile: int,
    overlap: float = 0.25,
    sigma_scale: float = SIGMA_SCALE,
    min_weight: float = MIN_WEIGHT,
    pad_value: int = PAD_VALUE,
) -> TilePlan:
    """The :class:`TilePlan` for these choices, checked.

    Raises:
        PixelwiseError: a value out of range (tile < 1, overlap outside [0, 1), ...).
    """
    return TilePlan(tile=tile, overlap=overlap, sigma_scale=sigma_scale, min_weight=min_weight, pad_value=pad_value)


def tile_grid(height: int, width: int, tile: int, overlap: float = 0.25) -> list[tuple[int, int]]:
    """Top-left corners ``(y0, x0)`` of the windows covering a ``height``×``width`` image, in raster order.

    Every window lies inside ``max(height, tile)``×``max(width, tile)`` (the image, padded along an axis shorter
    than ``tile``), the last window of each axis ends flush with that extent, and together they cover every
    pixel. See :class:`TilePlan`.
    """
    return plan_tiles(tile, overlap).grid(height, width)


def gaussian_weight(tile: int, sigma_scale: float = SIGMA_SCALE, min_weight: float = MIN_WEIGHT) -> np.ndarray:
    """The blending weight of a window (nnU-Net's and MONAI's Gaussian importance map).

    Args:
        tile: window side in pixels.
        sigma_scale: sigma = ``tile × sigma_scale`` (1/8 by default).
        min_weight: floor of the weight, relative to its peak.

    Returns:
        ``float32`` tile×tile in ``[min_weight, 1]``: ``exp(-(dy² + dx²) / (2 sigma²))`` sampled at pixel centres
        around the window's centre ``((tile - 1) / 2, (tile - 1) / 2)`` (so it is symmetric under flips and
        transposition), divided by its maximum, and raised to ``min_weight`` where lower.
    """
    plan_tiles(tile, sigma_scale=sigma_scale, min_weight=min_weight)  # checks the values
    sigma = tile * sigma_scale
    offsets = np.arange(tile, dtype=np.float64) - (tile - 1) / 2.0
    profile = np.exp(-(offsets**2) / (2.0 * sigma * sigma))
    weight = np.outer(profile, profile)
    weight /= weight.max()
    return np.maximum(weight, min_weight).astype(np.float32)


def sliding_window_labels(
    predict_probs: PredictProbs,
    image: np.ndarray,
    tile: int = 256,
    overlap: float = 0.25,
    batch_size: int = 4,
    threshold: float = 0.5,
    *,
    sigma_scale: float = SIGMA_SCALE,
    min_weight: float = MIN_WEIGHT,
    pad_value: int = PAD_VALUE,
    return_probability: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class labels of a whole image at its own resolution, from overlapping windows blended by a Gaussian.

    :func:`tiled_labels` with :func:`plan_tiles` ``(tile, overlap, sigma_scale, min_weight, pad_value)``; see it
    for the arguments, the result and the memory bound.
    """
    plan = plan_tiles(tile, overlap, sigma_scale, min_weight, pad_value)
    return tiled_labels(predict_probs, image, plan, batch_size, threshold, return_probability=return_probability)


def tiled_labels(
    predict_probs: PredictProbs,
    image: np.ndarray,
    plan: TilePlan,
    batch_size: int = 4,
    threshold: float = 0.5,
    *,
    return_probability: bool = False,
    return_probabilities: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class labels of a whole image at its own resolution, from the windows of ``plan``.

    Windows (:meth:`TilePlan.grid`) are cut from ``image``, ``batch_size`` at a time, and their probabilities
    are summed with the weight :func:`gaussian_weight`, then divided by the summed weight:
    ``P(pixel) = Σ w_i · p_i / Σ w_i`` over the windows ``i`` containing the pixel. A single window (an image
    no larger than ``tile`` along both axes) is not weighted: its probabilities are the network's own, bit for bit.

    Memory is bounded by the image's width, not its height. Windows are visited row of windows by row of
    windows; only the ``tile`` rows under the current row of windows are accumulated (a band), and the rows
    that no later window reaches are turned into labels (:data:`FINISH_ROWS` at a time) and dropped before the
    band moves down. Besides the outputs (``uint8`` H×W labels, plus ``float32`` H×W when
    ``return_probability``), the working memory is at most about

    - ``(K + 1) × tile × W' × 4`` bytes: the band of weighted sums and of weights (``W' = max(W, tile)``);
    - ``FINISH_ROWS × W × (8K + 8)`` bytes: the probabilities of the rows being finished (and argmax's copy
      and int64 indices when K > 1);
    - ``batch_size × tile² × (3 + 8K)`` bytes: the batch in, its probabilities out and one weighted window.

    None of it depends on H. A 10,000×10,000 binary image with 256-pixel tiles thus needs about 35 MB besides
    its 100 MB of labels and the network's own memory, where full-size buffers of probabilities and weights
    would take 800 MB.

    Args:
        predict_probs: maps a ``torch.uint8`` batch N×3×t×t (RGB, 0..255, t = ``plan.tile``, 1 ≤ N ≤
            ``batch_size``) to probabilities N×K×t×t (a torch tensor or numpy array, float, 0..1): K = 1 sigmoid
            probabilities of the foreground (binary runs), K > 1 softmax probabilities over the classes. It is
            called under ``torch.no_grad``. :meth:`~pixelwise.predict.predictor.RunPredictor.probabilities` fits.
        image: ``uint8`` H×W×3 RGB, any H, W ≥ 1.
        plan: how the windows are cut and blended (:func:`plan_tiles`).
        batch_size: windows per call of ``predict_probs`` (≥ 1).
        threshold: binary runs (K = 1): foreground where the blended probability is ``> threshold``. Unused
            when K > 1 (argmax).
        return_probability: also return the blended foreground probability.
        return_probabilities: also return every channel's blended probabilities, ``float32`` K×H×W (K×H×W×4
            bytes more: for callers that asked for them, e.g. ``Segmenter.predict(probabilities=True)``).

    Returns:
        ``uint8`` H×W class indices (binary: 0/1), or ``(labels, probability)`` with ``probability`` ``float32``
        H×W in 0..1: the foreground's blended probability (K = 1), or ``1 - P(class 0)`` (K > 1); with
        ``return_probabilities``, ``(labels, probabilities K×H×W)`` instead.

    Raises:
        ValueError: ``image`` is not uint8 H×W×3, ``batch_size < 1``, or ``predict_probs`` returned a shape
            other than N×K×t×t (or K changed between calls).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"image must be uint8 H×W×3 with H, W ≥ 1, got {image.dtype} {image.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    height, width = image.shape[:2]
    tile = plan.tile
    windows = plan.grid(height, width)  # raster order: the band only moves down
    band_width = max(width, tile)
    # One window: blending changes nothing, and weight 1 keeps p·w / w = p exact.
    weight = (
        np.ones((tile, tile), np.float32)
        if len(windows) == 1
        else gaussian_weight(tile, plan.sigma_scale, plan.min_weight)
    )

    labels = np.empty((height, width), np.uint8)
    probability = np.empty((height, width), np.float32) if return_probability else None
    every: np.ndarray | None = None  # K×H×W, made at the first batch when return_probabilities
    band: np.ndarray | None = None  # K×tile×W' weighted sums of the rows [top, top + tile); made at the first batch
    band_weight = np.zeros((tile, band_width), np.float32)
    top = 0  # the image row of the band's first row
    classes = 0

    def finish_rows(count: int) -> None:
        """Labels (and probability) of the band's first ``count`` rows, image rows ``top…top + count - 1``."""
        rows = min(count, height - top)  # the band's rows past the image are padding
        for first in range(0, rows, FINISH_ROWS):  # a few rows at a time: the temporaries stay small
            last = min(first + FINISH_ROWS, rows)
            probs = band[:, first:last, :width] / band_weight[first:last, :width]
            out_rows = slice(top + first, top + last)
            if classes == 1:
                labels[out_rows] = probs[0] > threshold
            else:
                labels[out_rows] = probs.argmax(axis=0)
            if probability is not None:
                probability[out_rows] = probs[0] if classes == 1 else 1.0 - probs[0]
            if every is not None:
                every[:, out_rows] = probs

    def move_band(next_top: int) -> None:
        """Finish the rows above ``next_top`` and move the band down to start there."""
        nonlocal top
        shift = next_top - top
        finish_rows(shift)
        keep = tile - shift
        for row in range(keep):  # row by row: source and destination never overlap, so numpy copies in place
            band[:, row] = band[:, row + shift]
            band_weight[row] = band_weight[row + shift]
        band[:, keep:] = 0.0
        band_weight[keep:] = 0.0
        top = next_top

    padded = height < tile or width < tile
    with torch.no_grad():
        for first in range(0, len(windows), batch_size):
            chunk = windows[first : first + batch_size]
            batch = (
                np.full((len(chunk), 3, tile, tile), plan.pad_value, np.uint8)
                if padded
                else np.empty((len(chunk), 3, tile, tile), np.uint8)
            )
            for index, (y0, x0) in enumerate(chunk):
                crop = image[y0 : y0 + tile, x0 : x0 + tile]
                batch[index, :, : crop.shape[0], : crop.shape[1]] = crop.transpose(2, 0, 1)
            out = predict_probs(torch.from_numpy(batch))
            out = (
                out.detach().float().cpu().numpy()
                if isinstance(out, torch.Tensor)
                else np.asarray(out, dtype=np.float32)
            )
            if (
                out.ndim != 4
                or out.shape[0] != len(chunk)
                or out.shape[2:] != (tile, tile)
                or out.shape[1] < 1
                or (classes and out.shape[1] != classes)
            ):
                expected = f"{len(chunk)}×{classes or 'K'}×{tile}×{tile}"
                raise ValueError(
                    f"predict_probs returned shape {tuple(out.shape)} for {len(chunk)} tiles: expected {expected}"
                )
            if band is None:
                classes = out.shape[1]
                band = np.zeros((classes, tile, band_width), np.float32)
                if return_probabilities:
                    every = np.empty((classes, height, width), np.float32)
            for probs, (y0, x0) in zip(out, chunk):
                if y0 != top:
                    move_band(y0)
                band[:, :, x0 : x0 + tile] += probs * weight
                band_weight[:, x0 : x0 + tile] += weight
    finish_rows(tile)
    if every is not None:
        return labels, every
    return (labels, probability) if probability is not None else labels
