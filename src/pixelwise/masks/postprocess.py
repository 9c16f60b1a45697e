"""Clean-up of predicted binary masks: drop specks, keep the largest region, fill holes.

Foreground regions are 8-connected (diagonal neighbours belong to the same region); holes are background
regions that do not touch the image border (4-connected, the complement of 8-connected foreground).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pixelwise.data.classes import is_binary

#: 8-connectivity for foreground regions.
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 8-connected foreground regions of a bool H×W mask.

    Returns:
        ``(labels, count)``: int32 H×W with 0 for background and 1..count in raster order of each
        region's first pixel, and the number of regions.
    """
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=EIGHT_CONNECTED)
    return labels.astype(np.int32, copy=False), int(count)


def postprocess_mask(mask, fill_holes: bool = False, keep_largest: bool = False, min_area: int = 0) -> np.ndarray:
    """Clean a predicted binary mask.

    Steps, in this order: drop regions smaller than ``min_area`` pixels, keep only the largest region
    (the first in raster order on a tie), fill holes.

    Args:
        mask: bool (or 0/1) H×W.
        fill_holes: fill background enclosed by foreground.
        keep_largest: keep one region (ISIC truth masks are single regions).
        min_area: smallest region kept, pixels; 0 keeps all.

    Returns:
        bool H×W, a new array (the input is not modified).
    """
    result = np.array(mask, dtype=bool, copy=True)
    if result.ndim != 2:
        raise ValueError(f"expected an H×W mask, got shape {result.shape}")
    if min_area > 0 or keep_largest:
        labels, count = label_regions(result)
        if count:
            areas = np.bincount(labels.ravel(), minlength=count + 1)
            areas[0] = 0  # background is never kept
            keep = areas >= max(min_area, 1)
            if keep_largest and keep.any():
                largest = int(np.argmax(np.where(keep, areas, -1)))
                keep = np.zeros_like(keep)
                keep[largest] = True
            result = keep[labels]
    if fill_holes:
        result = ndimage.binary_fill_holes(result)
    return result


@dataclass(frozen=True)
class PostProcess:
    """The clean-up options of ``predict``/``evaluate``/``serve``: ``--fill-holes``, ``--keep-largest``,
    ``--min-area``."""

    fill_holes: bool = False
    keep_largest: bool = False
    min_area: int = 0

    def apply(self, labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
        """Clean a uint8 H×W label mask. Binary runs only: multi-class masks are returned unchanged.

        ``num_classes`` is the run's class count; pass it, otherwise a multi-class mask that happens to
        hold only classes 0 and 1 would be mistaken for a binary one and post-processed.
        """
        multiclass = not is_binary(num_classes) if num_classes is not None else labels.max(initial=0) > 1
        if multiclass or not (self.fill_holes or self.keep_largest or self.min_area):
            return labels  # post-processing is defined for binary masks
        return postprocess_mask(
            labels.astype(bool), fill_holes=self.fill_holes, keep_largest=self.keep_largest, min_area=self.min_area
        ).astype(np.uint8)
