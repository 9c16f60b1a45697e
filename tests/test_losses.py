"""Losses: near zero for perfect confident logits, larger for wrong ones, gradients, bf16, errors."""

from __future__ import annotations

import pytest
import torch

from pixelwise.errors import PixelwiseError
from pixelwise.losses import LOSSES, build_loss

CONFIDENCE = 30.0  # logit magnitude of a "confident" prediction: sigmoid/softmax within 1e-13 of 0 or 1


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def random_masks(num_classes: int, n: int = 3, size: int = 16) -> torch.Tensor:
    """uint8 N×size×size class indices in which every class is present in every image."""
    masks = torch.randint(0, num_classes, (n, size, size), dtype=torch.uint8)
    masks[:, 0, :num_classes] = torch.arange(num_classes, dtype=torch.uint8)
    return masks


def confident_logits(masks: torch.Tensor, num_classes: int, correct: bool = True) -> torch.Tensor:
    """Logits N×K×H×W (K = 1 binary) that predict ``masks`` (or, if not ``correct``, a wrong class everywhere)."""
    target = masks.long() if correct else (masks.long() + 1) % num_classes
    if num_classes == 2:
        return (target.float() * 2 - 1).unsqueeze(1) * CONFIDENCE
    one_hot = torch.nn.functional.one_hot(target, num_classes).permute(0, 3, 1, 2).float()
    return (one_hot * 2 - 1) * CONFIDENCE


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("name", LOSSES)
def test_perfect_logits_give_near_zero_and_wrong_logits_a_large_loss(name, num_classes):
    loss = build_loss(name, num_classes)
    masks = random_masks(num_classes)
    perfect = loss(confident_logits(masks, num_classes), masks)
    wrong = loss(confident_logits(masks, num_classes, correct=False), masks)
    undecided = loss(torch.zeros_like(confident_logits(masks, num_classes)), masks)
    assert perfect.ndim == 0
    assert 0.0 <= float(perfect) < 1e-3, (name, num_classes, float(perfect))
    assert float(undecided) > float(perfect) + 0.05, (name, num_classes)
    assert float(wrong) > float(undecided), (name, num_classes)


@pytest.mark.parametrize("name", LOSSES)
def test_perfect_prediction_of_an_empty_mask_is_near_zero(name):
    """Images without a lesion are common (ISIC-like data): predicting nothing there must cost nothing."""
    loss = build_loss(name, 2)
    masks = torch.zeros(2, 16, 16, dtype=torch.uint8)
    assert float(loss(torch.full((2, 1, 16, 16), -CONFIDENCE), masks)) < 1e-3
    assert float(loss(torch.full((2, 1, 16, 16), CONFIDENCE), masks)) > 0.5


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("name", LOSSES)
def test_gradients_flow_and_descend(name, num_classes):
    """Non-zero, finite gradients; a few gradient steps on the logits lower the loss."""
    loss = build_loss(name, num_classes)
    masks = random_masks(num_classes)
    k = 1 if num_classes == 2 else num_classes
    logits = (0.1 * torch.randn(3, k, 16, 16)).requires_grad_()
    start = loss(logits, masks)
    start.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    optimizer = torch.optim.SGD([logits], lr=50.0)
    for _ in range(5):
        optimizer.zero_grad()
        value = loss(logits, masks)
        value.backward()
        optimizer.step()
    assert loss(logits, masks).item() < start.item()


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("name", LOSSES)
def test_bf16_logits_give_an_fp32_loss_close_to_fp32(name, num_classes):
    """Under bf16 autocast the model emits bf16 logits; the loss must accept them and stay accurate."""
    loss = build_loss(name, num_classes)
    masks = random_masks(num_classes)
    k = 1 if num_classes == 2 else num_classes
    logits = torch.randn(3, k, 16, 16).to(torch.bfloat16).requires_grad_()
    value = loss(logits, masks)
    assert value.dtype == torch.float32
    reference = loss(logits.detach().float(), masks)
    assert value.item() == pytest.approx(reference.item(), rel=1e-5)
    value.backward()
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


def test_bce_is_the_lessons_binary_cross_entropy_and_cross_entropy_for_classes():
    masks2 = random_masks(2)
    logits2 = torch.randn(3, 1, 16, 16)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits2[:, 0], masks2.float())
    assert float(build_loss("bce", 2)(logits2, masks2)) == pytest.approx(float(expected), rel=1e-6)
    masks3 = random_masks(3)
    logits3 = torch.randn(3, 3, 16, 16)
    expected = torch.nn.functional.cross_entropy(logits3, masks3.long())
    assert float(build_loss("bce", 3)(logits3, masks3)) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_bce_plus_dice_is_the_sum(num_classes):
    masks = random_masks(num_classes)
    k = 1 if num_classes == 2 else num_classes
    logits = torch.randn(3, k, 16, 16)
    total = build_loss("bce+dice", num_classes)(logits, masks)
    parts = build_loss("bce", num_classes)(logits, masks) + build_loss("dice", num_classes)(logits, masks)
    assert float(total) == pytest.approx(float(parts), rel=1e-6)


def test_dice_weighs_a_small_lesion_like_a_large_one():
    """Soft Dice is per image: missing a small lesion costs as much as missing a large one (unlike BCE)."""
    dice, bce = build_loss("dice", 2), build_loss("bce", 2)
    small = torch.zeros(1, 32, 32, dtype=torch.uint8)
    small[0, :4, :4] = 1
    large = torch.zeros(1, 32, 32, dtype=torch.uint8)
    large[0, :16, :16] = 1
    nothing = torch.full((1, 1, 32, 32), -CONFIDENCE)
    assert float(dice(nothing, small)) == pytest.approx(float(dice(nothing, large)), abs=1e-3)
    assert float(bce(nothing, small)) < float(bce(nothing, large))


def test_unknown_loss_names_the_valid_ones():
    with pytest.raises(PixelwiseError) as error:
        build_loss("l2", 2)
    assert all(name in str(error.value) for name in LOSSES)


def test_lovasz_equals_one_minus_jaccard_on_hard_predictions_and_is_below_it_when_soft():
    """The Lovász extension is exact at 0/1 probabilities (per image, then averaged) and convex between."""
    from pixelwise.losses import lovasz_jaccard

    truth = (torch.rand(4, 1, 12, 12) > 0.6).float()
    hard = (torch.rand(4, 1, 12, 12) > 0.5).float()
    inter = (truth * hard).sum(dim=(1, 2, 3))
    union = ((truth + hard) > 0).float().sum(dim=(1, 2, 3))
    expected = float((1 - inter / union).mean())
    assert float(lovasz_jaccard(hard, truth)) == pytest.approx(expected, abs=1e-6)
    # Halfway between the truth and the hard guess: convexity bounds the loss by the mean of the two ends (0, expected).
    assert 0.0 < float(lovasz_jaccard((hard + truth) / 2, truth)) <= expected / 2 + 1e-6
    # Multi-class: a class absent from an image is left out of that image's mean, not counted as perfect.
    masks = torch.zeros(1, 4, 4, dtype=torch.long)
    masks[0, :2] = 1
    targets = torch.nn.functional.one_hot(masks, 3).permute(0, 3, 1, 2).float()
    wrong_class1 = targets.clone()
    wrong_class1[0, 1], wrong_class1[0, 2] = 0.0, targets[0, 1]  # class 1's pixels predicted as class 2
    # Class 0: perfect (loss 0); class 1: all missed (loss 1); class 2 absent → mean over 2 classes = 0.5.
    assert float(lovasz_jaccard(wrong_class1, targets)) == pytest.approx(0.5)
