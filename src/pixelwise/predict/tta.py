"""Test-time augmentation: average a model's probabilities over flips, 90° rotations and input scales.

Each view of the batch is predicted, the prediction is mapped back to the original orientation by the
inverse transform, and the probabilities (after sigmoid/softmax, not logits) are averaged.

Modes (``--tta`` uses :data:`~pixelwise.config.PREDICT_TTA`, ``d4-zoom``):

- ``none``: the identity only (1 forward pass).
- ``flips``: identity, horizontal flip, vertical flip, both (= 180° rotation); 4 passes, any H×W.
- ``d4``: the 8 symmetries of the square (the 4 above, 90° and 270° rotations, transpose and
  anti-transpose); 8 passes. The last four swap H and W, which a model trained on square crops has
  never seen, so a **non-square** batch gets only the views that keep H and W, the 4 ``flips``
  (:func:`tta_views` says which views a batch gets).
- ``d4-zoom``: the ``d4`` views at the input's size and again at 1.25× (bilinear, rounded to a multiple of 32;
  probabilities resized back); 16 passes, 2.6× the pixels of ``d4``. The networks train on zoom-in crops, so
  the enlarged view is a scale they know; it measured +0.013 thresholded Jaccard on ISIC over ``d4`` on the
  same weights (docs/experiments.md, stop 20).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelwise.errors import PixelwiseError

_Transform = Callable[[Tensor], Tensor]


def _rot(k: int) -> _Transform:
    return lambda t: torch.rot90(t, k, dims=(-2, -1))


def _anti_transpose(t: Tensor) -> Tensor:
    # Reflection about the anti-diagonal: transpose, then rotate by 180°.
    return t.transpose(-2, -1).flip(-2, -1)


# name -> (forward, inverse); both act on the last two dims (H, W) of N×C×H×W tensors.
TTA_TRANSFORMS: dict[str, tuple[_Transform, _Transform]] = {
    "identity": (lambda t: t, lambda t: t),
    "hflip": (lambda t: t.flip(-1), lambda t: t.flip(-1)),
    "vflip": (lambda t: t.flip(-2), lambda t: t.flip(-2)),
    "rot180": (_rot(2), _rot(2)),
    "rot90": (_rot(1), _rot(-1)),
    "rot270": (_rot(-1), _rot(1)),
    "transpose": (lambda t: t.transpose(-2, -1), lambda t: t.transpose(-2, -1)),
    "anti_transpose": (_anti_transpose, _anti_transpose),
}

TTA_MODES: dict[str, tuple[str, ...]] = {
    "none": ("identity",),
    "flips": ("identity", "hflip", "vflip", "rot180"),
    "d4": ("identity", "hflip", "vflip", "rot180", "rot90", "rot270", "transpose", "anti_transpose"),
}
TTA_MODES["d4-zoom"] = TTA_MODES["d4"]

#: The views that swap H and W: left out on non-square batches.
SWAPS_AXES = frozenset({"rot90", "rot270", "transpose", "anti_transpose"})

#: Input scales per mode (1.0 only where not listed).
TTA_SCALES: dict[str, tuple[float, ...]] = {"d4-zoom": (1.0, 1.25)}


def scaled_side(side: int, scale: float) -> int:
    """``side × scale`` rounded to a multiple of 32 (the networks' stride), at least 32; ``side`` at scale 1."""
    return side if scale == 1.0 else max(32, int(side * scale / 32 + 0.5) * 32)  # halves round up


def tta_views(modes: str, height: int, width: int) -> tuple[str, ...]:
    """The transform names a batch of size H×W gets for ``modes`` (if H≠W, without those in :data:`SWAPS_AXES`).

    Raises:
        PixelwiseError: for an unknown mode.
    """
    if modes not in TTA_MODES:
        raise PixelwiseError(f"unknown test-time augmentation {modes!r}: use one of {', '.join(TTA_MODES)}")
    if height != width:
        return tuple(name for name in TTA_MODES[modes] if name not in SWAPS_AXES)
    return TTA_MODES[modes]


def tta_probabilities(predict_probs: Callable[[Tensor], Tensor], x: Tensor, modes: str = "d4") -> Tensor:
    """Mean of the inverse-transformed probabilities over the views (and scales) of ``modes``.

    Args:
        predict_probs: maps a batch N×3×h×w to probabilities N×C×h×w (sigmoid or softmax already applied),
            for the h×w of each view (a scaled view is larger than the batch).
        x: the batch, N×3×H×W (as ``predict_probs`` takes it).
        modes: ``"none"``, ``"flips"`` (4 views), ``"d4"`` (8 views; 4 if H≠W) or ``"d4-zoom"`` (``d4`` at
            scales 1 and 1.25).

    Returns:
        N×C×H×W probabilities with ``predict_probs``'s dtype and device. Each view is summed in float64
        and divided by a power of two, so a model that commutes with the views (e.g. any per-pixel
        function) gives exactly its un-augmented result at scale 1.

    Raises:
        PixelwiseError: for an unknown mode.
        ValueError: when ``predict_probs`` returns a batch whose N, H or W differ from its input's.
    """
    height, width = x.shape[-2:]
    views = tta_views(modes, height, width)
    scales = TTA_SCALES.get(modes, (1.0,))
    total: Tensor | None = None
    dtype = None
    for scale in scales:
        size = (scaled_side(height, scale), scaled_side(width, scale))
        scaled = x if size == (height, width) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        for name in views:
            forward, inverse = TTA_TRANSFORMS[name]
            view = forward(scaled)
            probs = predict_probs(view)
            if probs.ndim != 4 or probs.shape[0] != view.shape[0] or probs.shape[-2:] != view.shape[-2:]:
                raise ValueError(
                    f"predict_probs returned {tuple(probs.shape)} for input {tuple(view.shape)}: expected N×C×H×W"
                )
            dtype = probs.dtype
            back = inverse(probs).double()  # float64: exact sums of up to 16 float32 values
            if size != (height, width):
                back = F.interpolate(back, size=(height, width), mode="bilinear", align_corners=False)
            total = back if total is None else total + back
    assert total is not None and dtype is not None
    return (total / (len(views) * len(scales))).to(dtype)
