"""Training losses: ``build_loss(name, num_classes)`` returns ``loss(logits, masks) -> scalar``.

- ``bce``: the lesson's loss. Binary: binary cross-entropy on the logits. Multi-class: cross-entropy.
- ``dice``: soft Dice per image (MONAI's ``DiceLoss``), sigmoid (binary) or softmax (multi-class).
- ``bce+dice``: their sum, the default: cross-entropy gives steady gradients from the start,
  Dice optimises the overlap the metric rewards and ignores the background/lesion imbalance.
- ``focal``: focal loss (gamma = 2), which down-weights easy pixels.
- ``bce+lovasz``: cross-entropy plus the Lovász extension of each image's Jaccard loss (Berman et al., CVPR
  2018, "The Lovász-Softmax loss"), on probabilities: it equals 1 − Jaccard for hard 0/1 predictions, so it
  optimises the per-image Jaccard that ISIC's thresholded Jaccard averages.

``class_weights`` (float (num_classes,), e.g. median frequency balancing) weight the cross-entropy terms;
for binary runs weight[1] / weight[0] weights the foreground pixels.

Pixels whose mask value is :data:`~pixelwise.data.classes.IGNORE` (void) count in no term: they are left out
of the cross-entropy mean, and their probabilities and targets are zeroed before Dice and focal.

Shapes: logits float N×K×H×W (K = 1 binary, else num_classes); masks integer class indices N×H×W.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pixelwise.data.classes import IGNORE
from pixelwise.errors import PixelwiseError

LOSSES = ("bce", "dice", "bce+dice", "focal", "bce+lovasz")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _targets(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masks N×H×W (class indices, no void) → float targets shaped like the logits (one-hot if K > 1)."""
    if logits.shape[1] == 1:
        return masks.unsqueeze(1).to(logits.dtype)
    return F.one_hot(masks.long(), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)


def cross_entropy(logits: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor | None = None,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean (class-weighted) cross-entropy over the pixels that are not void.

    ``valid``: bool N×H×W, False on void pixels (None: every pixel counts). ``masks`` must hold a class
    index (any) on void pixels.
    """
    if logits.shape[1] == 1:
        pixel_weight = None
        if weights is not None:  # foreground pixels weighted by w1 / w0
            pixel_weight = torch.where(masks.unsqueeze(1) > 0, weights[1] / weights[0].clamp_min(1e-12), 1.0)
        if valid is not None:
            keep = valid.unsqueeze(1).to(logits.dtype)
            pixel_weight = keep if pixel_weight is None else pixel_weight * keep
            per_pixel = F.binary_cross_entropy_with_logits(logits, _targets(logits, masks), weight=pixel_weight,
                                                           reduction="sum")
            return per_pixel / keep.sum().clamp_min(1.0)
        return F.binary_cross_entropy_with_logits(logits, _targets(logits, masks), weight=pixel_weight)
    target = masks.long() if valid is None else torch.where(valid, masks.long(), IGNORE)
    if valid is not None and not valid.any():  # every pixel void: nothing to learn from this batch
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE)


def lovasz_jaccard(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean Lovász-extended Jaccard loss over images and classes (the Lovász-Softmax loss on probabilities).

    For each image and class the pixel errors ``|target − prob|`` are sorted, largest first; the loss is their
    dot product with the increments of the Jaccard loss as those pixels are counted wrong one by one. With 0/1
    probabilities it is exactly ``1 − |A∩B| / |A∪B|``; in between it is the tight convex extension.

    Args:
        probs: float N×K×H×W in [0, 1] (binary: the foreground probability only, K = 1).
        targets: float N×K×H×W, 0/1, the same shape. Multi-class: classes absent from an image (in the
            targets) are left out of its mean, as in Berman et al.'s "present" classes; void pixels must have
            zero probability and target (they then add nothing).

    Returns:
        float scalar in [0, 1].
    """
    n, k = probs.shape[:2]
    probs, targets = probs.reshape(n * k, -1).float(), targets.reshape(n * k, -1).float()
    errors, order = (targets - probs).abs().sort(dim=1, descending=True)
    truth = targets.gather(1, order)
    positives = truth.sum(dim=1, keepdim=True)
    intersection = positives - truth.cumsum(dim=1)
    union = positives + (1.0 - truth).cumsum(dim=1)
    jaccard_loss = 1.0 - intersection / union  # after counting the first i pixels wrong
    increments = torch.cat([jaccard_loss[:, :1], jaccard_loss[:, 1:] - jaccard_loss[:, :-1]], dim=1)
    per_item = (errors * increments).sum(dim=1)
    if k > 1:
        present = positives.squeeze(1) > 0
        return per_item[present].mean() if bool(present.any()) else per_item.sum() * 0.0
    return per_item.mean()


def build_loss(name: str, num_classes: int = 2, class_weights: torch.Tensor | None = None) -> LossFn:
    """Return the loss called ``name`` (one of :data:`LOSSES`) for ``num_classes`` classes.

    Args:
        class_weights: optional float (num_classes,) cross-entropy class weights.
    """
    from monai.losses import DiceLoss, FocalLoss

    binary = num_classes == 2
    if name not in LOSSES:
        raise PixelwiseError(f"unknown loss '{name}': choose one of {', '.join(LOSSES)}")
    if class_weights is not None and len(class_weights) != num_classes:
        raise PixelwiseError(f"{len(class_weights)} class weights for {num_classes} classes")
    # Soft Dice per image on probabilities (void pixels zeroed); background channel excluded for multi-class so
    # that small classes count.
    dice = DiceLoss(include_background=binary, smooth_nr=1e-5, smooth_dr=1e-5)
    focal = FocalLoss(gamma=2.0, use_softmax=not binary, reduction="none")

    def loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # losses in fp32 even under bf16 autocast
        void = masks == IGNORE
        valid = ~void if bool(void.any()) else None
        clean = masks.masked_fill(void, 0) if valid is not None else masks
        weights = class_weights.to(logits.device) if class_weights is not None else None
        total = logits.new_zeros(())
        if name in ("bce", "bce+dice", "bce+lovasz"):
            total = total + cross_entropy(logits, clean, weights, valid)
        if name in ("dice", "bce+dice", "bce+lovasz"):
            probs = torch.sigmoid(logits) if binary else torch.softmax(logits, dim=1)
            targets = _targets(logits, clean)
            if valid is not None:
                keep = valid.unsqueeze(1).to(probs.dtype)
                probs, targets = probs * keep, targets * keep
            total = total + (lovasz_jaccard(probs, targets) if name == "bce+lovasz" else dice(probs, targets))
        if name == "focal":
            per_pixel = focal(logits, _targets(logits, clean)).mean(dim=1)  # as MONAI's mean over N×K×H×W
            if valid is not None:
                return (per_pixel * valid).sum() / valid.sum().clamp_min(1)
            return per_pixel.mean()
        return total

    return loss
