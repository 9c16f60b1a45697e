"""Test-time augmentation: average a model's probabilities over flips and 90° rotations.

Each view of the batch is predicted, the prediction is mapped back to the original orientation by the
inverse transform, and the probabilities (after sigmoid/softmax, not logits) are averaged.

Modes (``--tta`` uses ``d4``):

- ``none``: the identity only (1 forward pass).
- ``flips``: identity, horizontal flip, vertical flip, both (= 180° rotation); 4 passes, any H×W.
- ``d4``: the 8 symmetries of the square (the 4 above, 90° and 270° rotations, transpose and
  anti-transpose); 8 passes. The last four swap H and W, which a fixed-shape engine (ONNX export) cannot
  take and a model trained on square crops has never seen, so on a **non-square** batch ``d4`` uses the
  4 ``flips`` views instead (:func:`tta_views` says which views a batch gets).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
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


def tta_views(modes: str, height: int, width: int) -> tuple[str, ...]:
    """The transform names a batch of size H×W gets for ``modes`` (``d4`` falls back to ``flips`` if H≠W).

    Raises:
        PixelwiseError: for an unknown mode.
    """
    if modes not in TTA_MODES:
        raise PixelwiseError(f"unknown test-time augmentation {modes!r}: use one of {', '.join(TTA_MODES)}")
    if modes == "d4" and height != width:
        return TTA_MODES["flips"]
    return TTA_MODES[modes]


def tta_probabilities(predict_probs: Callable[[Tensor], Tensor], x: Tensor, modes: str = "d4") -> Tensor:
    """Mean of the inverse-transformed probabilities over the views of ``modes``.

    Args:
        predict_probs: maps a batch N×3×h×w to probabilities N×C×h×w (sigmoid or softmax already applied),
            for the h×w of each view.
        x: the batch, N×3×H×W (normalised, as the model takes it).
        modes: ``"none"``, ``"flips"`` (4 views) or ``"d4"`` (8 views; 4 if H≠W).

    Returns:
        N×C×H×W probabilities with ``predict_probs``'s dtype and device. Each view is summed in float64
        and divided by a power of two, so a model that commutes with the views (e.g. any per-pixel
        function) gives exactly its un-augmented result.

    Raises:
        PixelwiseError: for an unknown mode.
        ValueError: when ``predict_probs`` returns a batch whose N, H or W differ from its input's.
    """
    views = tta_views(modes, x.shape[-2], x.shape[-1])
    total: Tensor | None = None
    dtype = None
    for name in views:
        forward, inverse = TTA_TRANSFORMS[name]
        view = forward(x)
        probs = predict_probs(view)
        if probs.ndim != 4 or probs.shape[0] != view.shape[0] or probs.shape[-2:] != view.shape[-2:]:
            raise ValueError(
                f"predict_probs returned {tuple(probs.shape)} for input {tuple(view.shape)}: expected N×C×H×W"
            )
        dtype = probs.dtype
        back = inverse(probs).double()  # float64: exact sums of up to 8 float32 values
        total = back if total is None else total + back
    assert total is not None and dtype is not None
    return (total / len(views)).to(dtype)
