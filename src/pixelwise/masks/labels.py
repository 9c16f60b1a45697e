"""Probabilities → class-index masks, at the network's size or at the original image's size, and the mask
PNG files ``predict``, the Python API and ``serve`` write (:func:`mask_png_bytes`).
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pixelwise.data.classes import is_binary, labels_from_probabilities, png_values
from pixelwise.data.imageio import fit_box
from pixelwise.fileio import encode_png


def resize_probabilities(probs: torch.Tensor, height: int, width: int, fit: str = "stretch") -> torch.Tensor:
    """Probabilities K×S×S (or N×K×S×S) → same at height×width (bilinear), for masks at the original size.
    ``fit="pad"``: the letterbox bands are cut off first (:func:`~pixelwise.data.imageio.fit_box`)."""
    batched = probs if probs.dim() == 4 else probs.unsqueeze(0)
    top, left, rows, cols = fit_box(height, width, batched.shape[-1], fit)
    batched = batched[..., top : top + rows, left : left + cols]
    out = F.interpolate(batched.float(), size=(height, width), mode="bilinear", align_corners=False)
    return out if probs.dim() == 4 else out[0]


def labels_at_size(probs: torch.Tensor, height: int, width: int, threshold: float, fit: str = "stretch") -> np.ndarray:
    """K×S×S probabilities → uint8 H×W class indices at the original image size (``fit``: the run's)."""
    return labels_from_probabilities(resize_probabilities(probs, height, width, fit).unsqueeze(0), threshold)[0].numpy()


def mask_png_bytes(labels: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> bytes:
    """The mask PNG file of a prediction: the one encoding used by ``predict``, the Python API and ``serve``.

    Args:
        labels: ``uint8`` H×W class indices ``0..K-1``.
        colors: one RGB display colour per class (``K = len(colors)``, K ≥ 2).

    Returns:
        PNG bytes. Binary runs (K = 2): 8-bit greyscale, 0 = background, 255 = foreground. Multi-class runs:
        a palette ("P" mode) PNG, VOC style: the pixel values are the class indices (``np.array(Image.open(f))``
        gives them back) and palette entry *i* is class *i*'s colour, so any image viewer shows the classes in
        their colours.
    """
    if is_binary(len(colors)):
        return encode_png(png_values(labels, len(colors)))
    return palette_png_bytes(labels, colors)


def palette_png_bytes(indices: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> bytes:
    """``uint8`` H×W palette indices and up to 256 RGB colours → a palette PNG's bytes.

    Raises:
        ValueError: an index without a colour, or more than 256 colours.
    """
    indices = np.ascontiguousarray(indices, dtype=np.uint8)
    if not 1 <= len(colors) <= 256:
        raise ValueError(f"a PNG palette holds 1 to 256 colours, not {len(colors)}")
    if indices.size and int(indices.max()) >= len(colors):
        raise ValueError(f"mask value {int(indices.max())} has no colour: the palette has {len(colors)}")
    image = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.tobytes())
    # Only the classes' entries: Pillow then packs pixels into 1, 2 or 4 bits when K ≤ 16 (smaller files).
    image.putpalette([int(channel) for rgb in colors for channel in rgb], rawmode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
