"""Contours of masks drawn over an image, for overlays and report pictures."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Truth contours (green) and prediction contours (red), in overlays and the report.
TRUTH_RGB = (0, 200, 0)
PREDICTION_RGB = (230, 30, 30)


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """``(230, 30, 30)`` → ``"#e61e1e"``, for HTML."""
    return "#" + "".join(f"{c:02x}" for c in rgb)


def contour(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Bool H×W mask → bool H×W band of pixels on the inside of its border, ``thickness`` wide."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    inner = ndimage.binary_erosion(mask, iterations=thickness, border_value=0)
    return mask & ~inner


def draw_contours(image: np.ndarray, masks_and_colors: list[tuple[np.ndarray, tuple[int, int, int]]],
                  thickness: int | None = None) -> np.ndarray:
    """Draw each mask's contour on a copy of ``image`` (uint8 H×W×3); later masks draw on top.

    ``thickness`` defaults to about 0.5 % of the image side (at least 1 px) so the line stays visible
    on large photographs.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    if thickness is None:
        thickness = max(1, round(min(out.shape[:2]) / 200))
    for mask, color in masks_and_colors:
        out[contour(mask, thickness)] = color
    return out
