"""Probabilities → class-index masks, at the network's size or at the original image's size, and the PNG
values ``predict`` writes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def labels_from_probabilities(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Probabilities N×K×H×W → class indices N×H×W (uint8): ``> threshold`` if K = 1, argmax otherwise."""
    if probs.shape[1] == 1:
        return (probs[:, 0] > threshold).to(torch.uint8)
    return probs.argmax(dim=1).to(torch.uint8)


def resize_probabilities(probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Probabilities K×S×S (or N×K×S×S) → same at height×width (bilinear), for masks at the original size."""
    batched = probs if probs.dim() == 4 else probs.unsqueeze(0)
    out = F.interpolate(batched.float(), size=(height, width), mode="bilinear", align_corners=False)
    return out if probs.dim() == 4 else out[0]


def labels_at_size(probs: torch.Tensor, height: int, width: int, threshold: float) -> np.ndarray:
    """K×S×S probabilities → uint8 H×W class indices at the original image size."""
    return labels_from_probabilities(resize_probabilities(probs, height, width).unsqueeze(0), threshold)[0].numpy()


def mask_to_png(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices → the PNG values written: 0/255 for binary runs, the indices themselves otherwise."""
    return (labels * 255).astype(np.uint8) if num_classes == 2 else labels.astype(np.uint8)
