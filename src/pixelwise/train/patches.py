"""Training on patches (tiled runs): square crops of side ``tile`` cut from whole images at the run's scale.

The arrays of a tiled run hold every image at its scaled size, padded to one common H×W (grey 128 images,
:data:`~pixelwise.data.classes.IGNORE` masks: the padding counts in no loss and no metric), so they stack in one
uint8 tensor. Each step cuts one crop per drawn image:

- with probability :data:`FOREGROUND_FRACTION` (nnU-Net's foreground oversampling, 1/3), the crop is centred on
  a random pixel of a foreground class drawn uniformly among the classes present in that image. A class
  covering 0.1 % of the pixels is thus centred as often as one covering 30 % of them in the images holding
  both, so small rare classes are seen every epoch;
- otherwise it lies uniformly inside the image's own (unpadded) extent.

Crops stay inside the image where it is at least ``tile`` wide; smaller images give crops reaching into the
padding (void). The existing batch augmentation then runs on the crops.
"""

from __future__ import annotations

import numpy as np
import torch

from pixelwise.data.classes import IGNORE

#: Share of crops centred on a foreground pixel (nnU-Net's ``oversample_foreground_percent`` = 0.33).
FOREGROUND_FRACTION = 1 / 3


def pad_stack(arrays: list[np.ndarray], min_side: int, fill: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaled pairs (uint8 4×h×w each: RGB planes + class-index mask) → one padded stack.

    Args:
        arrays: per image uint8 4×h_i×w_i, the mask plane already in class indices (IGNORE = void).
        min_side: the stack is at least this high and wide (the tile side: every crop fits).
        fill: uint8 grey of the image padding (its mask padding is :data:`IGNORE`).

    Returns:
        ``(images uint8 N×3×H×W, masks uint8 N×H×W, sizes int64 N×2)`` with H = max(h_i, min_side), W likewise,
        and ``sizes[i] = (h_i, w_i)``.
    """
    height = max([a.shape[1] for a in arrays] + [min_side])
    width = max([a.shape[2] for a in arrays] + [min_side])
    images = np.full((len(arrays), 3, height, width), fill, np.uint8)
    masks = np.full((len(arrays), height, width), IGNORE, np.uint8)
    for index, packed in enumerate(arrays):
        images[index, :, : packed.shape[1], : packed.shape[2]] = packed[:3]
        masks[index, : packed.shape[1], : packed.shape[2]] = packed[3]
    sizes = torch.tensor([a.shape[1:] for a in arrays], dtype=torch.int64).reshape(len(arrays), 2)
    return torch.from_numpy(images), torch.from_numpy(masks), sizes


class PatchSampler:
    """Random crops of side ``tile`` with class-aware centring (see the module doc).

    Args:
        masks: uint8 N×H×W class indices of the padded training stack (any device).
        sizes: int64 N×2, each image's own (unpadded) ``(h, w)``.
        tile: crop side, ≤ H and ≤ W.
        num_classes: classes including background (class 0 is never a centre class).
        foreground_fraction: share of crops centred on a foreground pixel, 0..1.
    """

    def __init__(
        self,
        masks: torch.Tensor,
        sizes: torch.Tensor,
        tile: int,
        num_classes: int,
        foreground_fraction: float = FOREGROUND_FRACTION,
    ):
        if tile > masks.shape[-2] or tile > masks.shape[-1]:
            raise ValueError(f"tile {tile} is larger than the padded arrays {tuple(masks.shape[-2:])}")
        self.tile = tile
        self.sizes = sizes.tolist()
        self.foreground_fraction = foreground_fraction
        # Foreground classes present in each image, counted once (masks may live on the GPU).
        counts = [torch.bincount(m.reshape(-1).long(), minlength=256)[1:num_classes].cpu() for m in masks]
        self.present = [(torch.nonzero(c).flatten() + 1).tolist() for c in counts]

    def origin(self, masks: torch.Tensor, index: int) -> tuple[int, int, int]:
        """``(top, left, centre class or 0)`` of one crop of image ``index`` (draws from torch's global RNG)."""
        height, width = self.sizes[index]
        tile = self.tile
        span_y, span_x = max(height - tile, 0), max(width - tile, 0)
        present = self.present[index]
        if present and float(torch.rand(())) < self.foreground_fraction:
            chosen = present[int(torch.randint(len(present), ()))]
            pixels = torch.nonzero(masks[index, :height, :width] == chosen)
            cy, cx = pixels[int(torch.randint(len(pixels), ()))].tolist()
            top = min(max(cy - tile // 2, 0), span_y)
            left = min(max(cx - tile // 2, 0), span_x)
            return top, left, chosen
        return int(torch.randint(span_y + 1, ())), int(torch.randint(span_x + 1, ())), 0

    def crops(
        self, images: torch.Tensor, masks: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One crop per entry of ``index``: ``(uint8 B×3×t×t, uint8 B×t×t)`` on the arrays' device."""
        tile = self.tile
        out_images, out_masks = [], []
        for i in index.tolist():
            top, left, _ = self.origin(masks, i)
            out_images.append(images[i, :, top : top + tile, left : left + tile])
            out_masks.append(masks[i, top : top + tile, left : left + tile])
        return torch.stack(out_images), torch.stack(out_masks)


def centre_crops(
    images: torch.Tensor, masks: torch.Tensor, sizes: torch.Tensor, tile: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The centred crop of side ``tile`` of every image (its own extent; void padding where smaller): the
    deterministic batch a tiled run's validation loss is measured on. Shapes as :meth:`PatchSampler.crops`."""
    out_images, out_masks = [], []
    for i, (height, width) in enumerate(sizes.tolist()):
        top, left = max(height - tile, 0) // 2, max(width - tile, 0) // 2
        out_images.append(images[i, :, top : top + tile, left : left + tile])
        out_masks.append(masks[i, top : top + tile, left : left + tile])
    return torch.stack(out_images), torch.stack(out_masks)
