"""Test-time augmentation: average a model's probabilities over flips, 90° rotations and input scales.

Each view of the batch is predicted, the prediction is mapped back to the original orientation by the
inverse transform, and the probabilities (after sigmoid/softmax, not logits) are averaged.

The modes are the rows of :data:`TTA_MODES`: name, description, views and input scales. ``--tta`` uses
:data:`~pixelwise.config.PREDICT_TTA` (``d4-zoom``); ``--tta-mode`` picks another. The ``d4`` views that swap H and
W (:data:`SWAPS_AXES`) are ones a model trained on square crops has never seen, so a **non-square** batch gets
only the views that keep H and W, the 4 ``flips`` (:func:`tta_views` says which views a batch gets). ``d4-zoom``'s
enlarged view is a scale the networks know (they train on zoom-in crops): it measured +0.013 thresholded Jaccard
on ISIC over ``d4`` on the same weights (docs/experiments.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pixelwise.choices import Choice, choose, table

if TYPE_CHECKING:
    from torch import Tensor

# torch is imported inside the functions: the CLI lists TTA_MODES in its --help without loading torch.

_Transform = Callable[["Tensor"], "Tensor"]


def _rot(k: int) -> _Transform:
    return lambda t: t.rot90(k, dims=(-2, -1))


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

#: The views that swap H and W: left out on non-square batches.
SWAPS_AXES = frozenset({"rot90", "rot270", "transpose", "anti_transpose"})

_FLIPS = ("identity", "hflip", "vflip", "rot180")
_D4 = (*_FLIPS, "rot90", "rot270", "transpose", "anti_transpose")


@dataclass(frozen=True)
class TtaMode(Choice):
    """A test-time augmentation mode ``--tta-mode`` names: the views averaged, at each input scale."""

    views: tuple[str, ...]  # keys of TTA_TRANSFORMS
    scales: tuple[float, ...] = (1.0,)  # input sizes, times the batch's (rounded by scaled_side)

    @property
    def passes(self) -> int:
        """Network passes per image (on a square batch)."""
        return len(self.views) * len(self.scales)


TTA_MODES: dict[str, TtaMode] = table(
    TtaMode("none", "one pass, no augmentation", ("identity",)),
    TtaMode("flips", "identity, horizontal and vertical flips and both (180°), 4 passes", _FLIPS),
    TtaMode("d4", "the 8 flips and 90° rotations of the square (the 4 flips when H≠W), 8 passes", _D4),
    TtaMode(
        "d4-zoom", "the d4 views at the input size and at 1.25× it (a multiple of 32), 16 passes", _D4, (1.0, 1.25)
    ),
)


def scaled_side(side: int, scale: float) -> int:
    """``side × scale`` rounded to a multiple of 32 (the networks' stride), at least 32; ``side`` at scale 1."""
    return side if scale == 1.0 else max(32, int(side * scale / 32 + 0.5) * 32)  # halves round up


def tta_views(modes: str, height: int, width: int) -> tuple[str, ...]:
    """The transform names a batch of size H×W gets for ``modes`` (if H≠W, without those in :data:`SWAPS_AXES`).

    Raises:
        PixelwiseError: for an unknown mode.
    """
    views = choose("--tta-mode", modes, TTA_MODES).views
    if height != width:
        return tuple(name for name in views if name not in SWAPS_AXES)
    return views


def tta_probabilities(predict_probs: Callable[[Tensor], Tensor], x: Tensor, modes: str) -> Tensor:
    """Mean of the inverse-transformed probabilities over the views (and scales) of ``modes``.

    Args:
        predict_probs: maps a batch N×3×h×w to probabilities N×C×h×w (sigmoid or softmax already applied),
            for the h×w of each view (a scaled view is larger than the batch).
        x: the batch, N×3×H×W (as ``predict_probs`` takes it).
        modes: a name of :data:`TTA_MODES`; no default, so that every caller says which (``predict`` and the
            threshold chosen after training use :data:`~pixelwise.config.PREDICT_TTA`).

    Returns:
        N×C×H×W probabilities with ``predict_probs``'s dtype and device. Each view is summed in float64
        and divided by a power of two, so a model that commutes with the views (e.g. any per-pixel
        function) gives exactly its un-augmented result at scale 1.

    Raises:
        PixelwiseError: for an unknown mode.
        ValueError: when ``predict_probs`` returns a batch whose N, H or W differ from its input's.
    """
    import torch.nn.functional as F

    height, width = x.shape[-2:]
    views = tta_views(modes, height, width)
    scales = TTA_MODES[modes].scales
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
