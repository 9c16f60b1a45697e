"""Training losses: ``build_loss(name, num_classes)`` returns ``loss(logits, masks) -> scalar``.

Each loss is a row of :data:`LOSSES` (at the end of this file): its name, its description and the terms it sums.
Cross-entropy gives steady gradients from the start; Dice optimises the overlap the metric rewards and ignores the
background/lesion imbalance; focal loss (gamma = 2) down-weights easy pixels; the Lovász extension of each image's
Jaccard loss (Berman et al., CVPR 2018, "The Lovász-Softmax loss"), on probabilities, equals 1 − Jaccard for hard
0/1 predictions, so it optimises the per-image Jaccard that ISIC's thresholded Jaccard averages.

``class_weights`` (float (num_classes,), e.g. median frequency balancing) weight the cross-entropy terms;
for binary runs weight[1] / weight[0] weights the foreground pixels.

Pixels whose mask value is :data:`~pixelwise.data.classes.IGNORE` (void) count in no term: they are left out
of the cross-entropy mean, and their probabilities and targets are zeroed before Dice and focal.

Shapes: logits float N×K×H×W (K = 1 binary, else num_classes); masks integer class indices N×H×W.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pixelwise.choices import Choice, choose, table
from pixelwise.data.classes import IGNORE, activate, is_binary, is_binary_output
from pixelwise.errors import PixelwiseError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the CLI lists LOSSES in its --help without loading torch.

#: ``loss(logits, masks) -> scalar``.
LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
#: One summed part of a loss: ``term(logits, masks, valid, class_weights) -> scalar``, where ``masks`` hold a class
#: index on void pixels too and ``valid`` (bool N×H×W) is False on them (None: no void pixel).
Term = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor | None", "torch.Tensor | None"], "torch.Tensor"]


def _targets(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masks N×H×W (class indices, no void) → float targets shaped like the logits (one-hot if K > 1)."""
    import torch.nn.functional as F

    if is_binary_output(logits):
        return masks.unsqueeze(1).to(logits.dtype)
    return F.one_hot(masks.long(), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)


def cross_entropy(
    logits: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor | None = None, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean (class-weighted) cross-entropy over the pixels that are not void.

    ``valid``: bool N×H×W, False on void pixels (None: every pixel counts). ``masks`` must hold a class
    index (any) on void pixels.
    """
    import torch
    import torch.nn.functional as F

    if is_binary_output(logits):
        pixel_weight = None
        if weights is not None:  # foreground pixels weighted by w1 / w0
            pixel_weight = torch.where(masks.unsqueeze(1) > 0, weights[1] / weights[0].clamp_min(1e-12), 1.0)
        if valid is not None:
            keep = valid.unsqueeze(1).to(logits.dtype)
            pixel_weight = keep if pixel_weight is None else pixel_weight * keep
            per_pixel = F.binary_cross_entropy_with_logits(
                logits, _targets(logits, masks), weight=pixel_weight, reduction="sum"
            )
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
    import torch

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


def _probabilities_and_targets(
    logits: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid (K = 1) or softmax probabilities and their 0/1 targets, both zeroed on void pixels."""

    probs = activate(logits)
    targets = _targets(logits, masks)
    if valid is not None:
        keep = valid.unsqueeze(1).to(probs.dtype)
        probs, targets = probs * keep, targets * keep
    return probs, targets


# Term builders: ``binary`` (one sigmoid channel) or not (softmax) -> the term.


def _cross_entropy_term(binary: bool) -> Term:
    return lambda logits, masks, valid, weights: cross_entropy(logits, masks, weights, valid)


def _dice_term(binary: bool) -> Term:
    from monai.losses import DiceLoss

    # Soft Dice per image on probabilities; background channel excluded for multi-class so that small classes count.
    dice = DiceLoss(include_background=binary, smooth_nr=1e-5, smooth_dr=1e-5)
    return lambda logits, masks, valid, weights: dice(*_probabilities_and_targets(logits, masks, valid))


def _lovasz_term(binary: bool) -> Term:
    return lambda logits, masks, valid, weights: lovasz_jaccard(*_probabilities_and_targets(logits, masks, valid))


def _focal_term(binary: bool) -> Term:
    from monai.losses import FocalLoss

    focal = FocalLoss(gamma=2.0, use_softmax=not binary, reduction="none")

    def term(logits, masks, valid, weights):
        per_pixel = focal(logits, _targets(logits, masks)).mean(dim=1)  # as MONAI's mean over N×K×H×W
        if valid is not None:
            return (per_pixel * valid).sum() / valid.sum().clamp_min(1)
        return per_pixel.mean()

    return term


@dataclass(frozen=True)
class LossSpec(Choice):
    """A loss ``--loss`` names: the sum of its terms."""

    terms: tuple[Callable[[bool], Term], ...]  # term builders, each called with ``binary``


LOSSES: dict[str, LossSpec] = table(
    LossSpec(
        "bce", "the lesson's: binary cross-entropy on the logits (multi-class: cross-entropy)", (_cross_entropy_term,)
    ),
    LossSpec("dice", "soft Dice per image (MONAI's DiceLoss) on sigmoid or softmax probabilities", (_dice_term,)),
    LossSpec(
        "bce+dice",
        "their sum: steady gradients from the start, then the overlap the metric rewards",
        (_cross_entropy_term, _dice_term),
    ),
    LossSpec("focal", "focal loss (gamma = 2): easy pixels down-weighted", (_focal_term,)),
    LossSpec(
        "bce+lovasz",
        "cross-entropy + the Lovász extension of each image's Jaccard loss",
        (_cross_entropy_term, _lovasz_term),
    ),
)


def build_loss(name: str, num_classes: int = 2, class_weights: torch.Tensor | None = None) -> LossFn:
    """Return the loss called ``name`` (a key of :data:`LOSSES`) for ``num_classes`` classes.

    Args:
        class_weights: optional float (num_classes,) cross-entropy class weights.

    Raises:
        PixelwiseError: an unknown name, or as many class weights as there are not classes.
    """
    spec = choose("--loss", name, LOSSES)
    if class_weights is not None and len(class_weights) != num_classes:
        raise PixelwiseError(f"{len(class_weights)} class weights for {num_classes} classes")
    terms = [build(is_binary(num_classes)) for build in spec.terms]

    def loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # losses in fp32 even under bf16 autocast
        void = masks == IGNORE
        valid = ~void if bool(void.any()) else None
        clean = masks.masked_fill(void, 0) if valid is not None else masks
        weights = class_weights.to(logits.device) if class_weights is not None else None
        total = logits.new_zeros(())
        for term in terms:
            total = total + term(logits, clean, valid, weights)
        return total

    return loss
