"""From uint8 pixels to the network's input, the same way in training, evaluation, prediction and export.

Images are scaled to 0..1, then normalised per channel with the ImageNet mean and standard deviation
(stored in each run's ``config.json`` so a consumer of an exported model can repeat it).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pixelwise.data import MEAN, STD


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W (0..255) → float32 N×3×H×W (0..1)."""
    return images.float().div_(255.0)


def normalize(images: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """float32 N×3×H×W in 0..1 → zero-mean, unit-variance channels (ImageNet statistics)."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Logits N×K×H×W → probabilities: sigmoid when K = 1 (binary), softmax over K otherwise."""
    logits = logits.float()
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def labels_from_probabilities(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Probabilities N×K×H×W → class indices N×H×W (uint8): threshold if K = 1, argmax otherwise."""
    if probs.shape[1] == 1:
        return (probs[:, 0] > threshold).to(torch.uint8)
    return probs.argmax(dim=1).to(torch.uint8)
