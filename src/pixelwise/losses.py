"""Training losses: ``build_loss(name, num_classes)`` returns ``loss(logits, masks) -> scalar``.

- ``bce``: the lesson's loss. Binary: binary cross-entropy on the logits. Multi-class: cross-entropy.
- ``dice``: soft Dice per image (MONAI's ``DiceLoss``), sigmoid (binary) or softmax (multi-class).
- ``bce+dice``: their sum, the default: cross-entropy gives steady gradients from the start,
  Dice optimises the overlap the metric rewards and ignores the background/lesion imbalance.
- ``focal``: focal loss (gamma = 2), which down-weights easy pixels.

Shapes: logits float N×K×H×W (K = 1 binary, else num_classes); masks integer class indices N×H×W.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pixelwise.errors import PixelwiseError

LOSSES = ("bce", "dice", "bce+dice", "focal")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _targets(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masks N×H×W (class indices) → float targets shaped like the logits (one-hot if K > 1)."""
    if logits.shape[1] == 1:
        return masks.unsqueeze(1).to(logits.dtype)
    return F.one_hot(masks.long(), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)


def cross_entropy(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits, _targets(logits, masks))
    return F.cross_entropy(logits, masks.long())


def build_loss(name: str, num_classes: int = 2) -> LossFn:
    """Return the loss called ``name`` (one of :data:`LOSSES`) for ``num_classes`` classes."""
    from monai.losses import DiceLoss, FocalLoss

    binary = num_classes == 2
    if name not in LOSSES:
        raise PixelwiseError(f"unknown loss '{name}': choose one of {', '.join(LOSSES)}")
    # Soft Dice per image; background channel excluded for multi-class so that small classes count.
    dice = DiceLoss(sigmoid=binary, softmax=not binary, include_background=binary,
                    smooth_nr=1e-5, smooth_dr=1e-5)
    focal = FocalLoss(gamma=2.0, use_softmax=not binary)

    def loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # losses in fp32 even under bf16 autocast
        if name == "bce":
            return cross_entropy(logits, masks)
        if name == "dice":
            return dice(logits, _targets(logits, masks))
        if name == "focal":
            return focal(logits, _targets(logits, masks))
        return cross_entropy(logits, masks) + dice(logits, _targets(logits, masks))

    return loss
