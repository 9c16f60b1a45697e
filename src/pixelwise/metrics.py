"""Segmentation metrics with the ISIC conventions, shared by training validation, ``evaluate`` and ``score``.

Every binary overlap metric is a function of one image's confusion counts (tp, fp, fn, tn), so the
counts are computed once (in torch on the model's device when given tensors) and the metrics follow
from them in float64. Conventions for empty masks are those of the official ISIC scorer
(``isic-challenge-scoring``); ``docs/metrics.md`` writes them out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METRIC_KEYS = ("dice", "jaccard", "threshold_jaccard", "accuracy", "sensitivity", "specificity", "hd95", "nsd")
OVERLAP_KEYS = ("accuracy", "sensitivity", "specificity", "jaccard", "threshold_jaccard", "dice")
DISTANCE_KEYS = ("hd95", "nsd")

# ISIC 2018 task 1: an image whose Jaccard is below this scores 0 ("thresholded Jaccard").
ISIC_JACCARD_THRESHOLD = 0.65


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch")


def confusion_counts(pred, truth) -> np.ndarray:
    """Per-image confusion counts of two binary masks.

    Args:
        pred: predicted mask, bool (or 0/1) H×W or N×H×W; numpy array or torch tensor.
        truth: truth mask, same shape and kind as ``pred``.

    Returns:
        int64 array N×4 with columns ``tp, fp, fn, tn`` (N = 1 for an H×W pair). With torch
        tensors on an accelerator the sums run there and only N×3 numbers are copied back; CPU
        tensors are counted through numpy without a copy (faster than torch's bool sums on CPU).
    """
    if tuple(pred.shape) != tuple(truth.shape):
        raise ValueError(f"pred and truth shapes differ: {tuple(pred.shape)} vs {tuple(truth.shape)}")
    if pred.ndim == 2:
        pred, truth = pred[None], truth[None]
    if pred.ndim != 3:
        raise ValueError(f"expected H×W or N×H×W masks, got shape {tuple(pred.shape)}")
    n = pred.shape[0]
    total = pred.shape[1] * pred.shape[2]
    if _is_torch(pred) or _is_torch(truth):
        import torch

        p = torch.as_tensor(pred).bool().reshape(n, -1)
        t = torch.as_tensor(truth, device=p.device).bool().reshape(n, -1)
        if p.device.type == "cpu":
            # On CPU numpy's count_nonzero on the shared memory is ~3x faster than torch's bool sum.
            sums = _numpy_sums(p.numpy(), t.numpy())
        else:
            # On an accelerator: three reductions there, only N×3 numbers copied back.
            # int32 is exact up to 2**31 pixels per image and faster than torch's default int64 sums.
            sums = torch.stack(
                [(p & t).sum(1, dtype=torch.int32), p.sum(1, dtype=torch.int32), t.sum(1, dtype=torch.int32)], dim=1
            )
            sums = sums.cpu().numpy().astype(np.int64)
    else:
        sums = _numpy_sums(np.asarray(pred).reshape(n, -1), np.asarray(truth).reshape(n, -1))
    tp, pred_pos, truth_pos = sums[:, 0], sums[:, 1], sums[:, 2]
    fp = pred_pos - tp
    fn = truth_pos - tp
    tn = total - tp - fp - fn
    return np.stack([tp, fp, fn, tn], axis=1).astype(np.int64)


def _numpy_sums(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """int64 N×3 ``(|pred & truth|, |pred|, |truth|)`` of N×P masks (nonzero = positive)."""
    p = pred.astype(bool, copy=False)
    t = truth.astype(bool, copy=False)
    sums = [np.count_nonzero(p & t, axis=1), np.count_nonzero(p, axis=1), np.count_nonzero(t, axis=1)]
    return np.stack(sums, axis=1).astype(np.int64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, when_zero: float) -> np.ndarray:
    """``numerator / denominator`` elementwise, ``when_zero`` where the denominator is 0."""
    out = np.full(numerator.shape, when_zero, dtype=np.float64)
    nonzero = denominator != 0
    out[nonzero] = numerator[nonzero] / denominator[nonzero]
    return out


def overlap_metrics(counts) -> dict[str, np.ndarray]:
    """Per-image overlap metrics from confusion counts, with the ISIC conventions.

    Args:
        counts: int array N×4 (or 4,) with columns ``tp, fp, fn, tn`` (see :func:`confusion_counts`).

    Returns:
        ``accuracy, sensitivity, specificity, jaccard, threshold_jaccard, dice``: float64 arrays (N,)
        in 0..1. Empty truth and empty prediction give Jaccard = Dice = 1; no truth positives give
        sensitivity 1; no truth negatives give specificity 1; thresholded Jaccard is the Jaccard,
        or 0 when it is below 0.65.
    """
    c = np.asarray(counts, dtype=np.float64).reshape(-1, 4)
    tp, fp, fn, tn = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    jaccard = _ratio(tp, tp + fp + fn, 1.0)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, 1.0),
        "sensitivity": _ratio(tp, tp + fn, 1.0),
        "specificity": _ratio(tn, tn + fp, 1.0),
        "jaccard": jaccard,
        "threshold_jaccard": np.where(jaccard >= ISIC_JACCARD_THRESHOLD, jaccard, 0.0),
        "dice": _ratio(2.0 * tp, 2.0 * tp + fp + fn, 1.0),
    }
