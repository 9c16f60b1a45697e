"""Segmentation metrics with the ISIC conventions, shared by training validation, ``evaluate`` and ``score``.

Every binary overlap metric is a function of one image's confusion counts (tp, fp, fn, tn), so the
counts are computed once (in torch on the model's device when given tensors) and the metrics follow
from them in float64. Conventions for empty masks are those of the official ISIC scorer
(``isic-challenge-scoring``); ``docs/metrics.md`` writes them out.

Multi-class masks are scored from confusion matrices (rows truth, columns prediction) that leave out void
pixels (truth :data:`~pixelwise.data.classes.IGNORE`); summed over the images of a data set they give the
pooled per-class IoU/Dice, mIoU, class-average and global accuracy that semantic-segmentation papers report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pixelwise.data.classes import IGNORE

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


# --------------------------------------------------------------------------------------------
# Boundary distances
# --------------------------------------------------------------------------------------------


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool H×W mask: foreground pixels with a 4-neighbour outside it.

    Pixels outside the array count as background, so foreground on the image border is boundary.
    """
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _foreground_box(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Bounding box (with ``margin`` pixels, clipped to the array) of the nonzero pixels of an H×W array."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, mask.shape[0])),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, mask.shape[1])),
    )


def surface_distances(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances (pixels) between the boundaries of two non-empty bool H×W masks.

    Returns:
        ``(pred_to_truth, truth_to_pred)``: float64 arrays, one distance per boundary pixel of
        ``pred`` (to the nearest boundary pixel of ``truth``) and vice versa.
    """
    from scipy.spatial import cKDTree

    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    # Erode only inside the union's bounding box plus one background pixel: the same boundary, less work.
    box = _foreground_box(pred | truth, margin=1)
    pred_points = np.argwhere(_boundary(pred[box])).astype(np.float64)
    truth_points = np.argwhere(_boundary(truth[box])).astype(np.float64)
    # Nearest-neighbour queries over boundary points are exact Euclidean distances and much cheaper
    # than dense distance transforms of large images (boundaries are sparse).
    pred_to_truth = cKDTree(truth_points).query(pred_points)[0]
    truth_to_pred = cKDTree(pred_points).query(truth_points)[0]
    return np.asarray(pred_to_truth, dtype=np.float64), np.asarray(truth_to_pred, dtype=np.float64)


def distance_metrics(pred, truth, nsd_tolerance: float = 2.0, pixel_size_mm: float | None = None) -> dict[str, float]:
    """95th-percentile Hausdorff distance and normalised surface Dice of two bool H×W masks.

    Args:
        pred: predicted mask, bool H×W (numpy or torch).
        truth: truth mask, bool H×W.
        nsd_tolerance: boundary tolerance in pixels for the normalised surface Dice.
        pixel_size_mm: side of a (square) pixel in mm; when given, ``hd95_mm`` is ``hd95 * pixel_size_mm``.

    Returns:
        ``hd95`` (pixels, >= 0), ``nsd`` (0..1) and ``hd95_mm`` (mm, NaN without a pixel size).
        All are NaN when either mask is empty: a distance to nothing is undefined, and reporting
        0 would reward an empty prediction.

    Conventions (those of ``monai.metrics`` without sub-pixel boundaries): the boundary is the set
    of foreground pixels with a 4-neighbour outside the mask; hd95 is the larger of the two directed
    95th percentiles (linear interpolation); NSD is the fraction of both boundaries lying within
    ``nsd_tolerance`` (inclusive) of the other.
    """
    pred = _to_numpy_bool(pred)
    truth = _to_numpy_bool(truth)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"expected two H×W masks of the same shape, got {pred.shape} and {truth.shape}")
    nan = float("nan")
    if not pred.any() or not truth.any():
        return {"hd95": nan, "nsd": nan, "hd95_mm": nan}
    pred_to_truth, truth_to_pred = surface_distances(pred, truth)
    hd95 = float(max(np.percentile(pred_to_truth, 95), np.percentile(truth_to_pred, 95)))
    within = np.count_nonzero(pred_to_truth <= nsd_tolerance) + np.count_nonzero(truth_to_pred <= nsd_tolerance)
    nsd = within / (pred_to_truth.size + truth_to_pred.size)
    hd95_mm = hd95 * pixel_size_mm if pixel_size_mm is not None else nan
    return {"hd95": hd95, "nsd": float(nsd), "hd95_mm": float(hd95_mm)}


def _to_numpy_bool(mask) -> np.ndarray:
    if _is_torch(mask):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask).astype(bool, copy=False)


# --------------------------------------------------------------------------------------------
# One image, and aggregates over images
# --------------------------------------------------------------------------------------------


def image_metrics(pred, truth, nsd_tolerance: float = 2.0, pixel_size_mm: float | None = None) -> dict[str, float]:
    """Every metric of one predicted mask against its truth.

    Args:
        pred: predicted mask, bool (or 0/1) H×W, numpy or torch.
        truth: truth mask, bool (or 0/1) H×W.
        nsd_tolerance: tolerance of the normalised surface Dice, pixels.
        pixel_size_mm: pixel side in mm; adds ``hd95_mm`` when given.

    Returns:
        A flat dict of Python floats/ints: the :data:`METRIC_KEYS` (distance metrics NaN when a
        mask is empty), ``hd95_mm`` when a pixel size is given, and the counts ``tp, fp, fn, tn``
        (kept so that a dataset-level pooled Dice can be computed later by :func:`summarize`).
    """
    pred = _to_numpy_bool(pred)
    truth = _to_numpy_bool(truth)
    counts = confusion_counts(pred, truth)
    overlap = overlap_metrics(counts)
    distances = distance_metrics(pred, truth, nsd_tolerance=nsd_tolerance, pixel_size_mm=pixel_size_mm)
    row: dict[str, float] = {}
    for key in METRIC_KEYS:
        row[key] = float(overlap[key][0]) if key in overlap else distances[key]
    if pixel_size_mm is not None:
        row["hd95_mm"] = distances["hd95_mm"]
    for name, value in zip(("tp", "fp", "fn", "tn"), counts[0]):
        row[name] = int(value)
    return row


def pooled_dice(counts) -> float:
    """Dataset-level Dice ``2ΣTP / (2ΣTP + ΣFP + ΣFN)`` of N×4 counts (1.0 when nothing is positive)."""
    total = np.asarray(counts, dtype=np.int64).reshape(-1, 4).sum(axis=0)
    return float(overlap_metrics(total[None])["dice"][0])


def summarize(rows: list[dict], keys=None) -> dict[str, Any]:
    """Aggregate per-image metric rows.

    Args:
        rows: dicts as returned by :func:`image_metrics` (other keys are ignored).
        keys: the metrics to aggregate; keys absent from every row are skipped. Default:
            :data:`METRIC_KEYS`, plus ``hd95_mm`` when the rows have it.

    Returns:
        ``{"n": N, "mean": {...}, "std": {...}, "median": {...}, "missing": {...}, "pooled_dice": float}``.
        Means, population standard deviations (ddof=0) and medians ignore missing (NaN) values,
        ``missing`` counts them per key, and a key with no value at all aggregates to NaN.
        ``pooled_dice`` is computed from the summed counts (NaN when rows carry no counts).
    """
    if keys is None:
        keys = METRIC_KEYS + ("hd95_mm",)
    keys = [key for key in keys if any(key in row for row in rows)]
    summary: dict[str, Any] = {"n": len(rows), "mean": {}, "std": {}, "median": {}, "missing": {}}
    for key in keys:
        values = np.array([_as_float(row.get(key)) for row in rows], dtype=np.float64)
        present = values[~np.isnan(values)]
        summary["missing"][key] = int(values.size - present.size)
        empty = present.size == 0
        summary["mean"][key] = float("nan") if empty else float(present.mean())
        summary["std"][key] = float("nan") if empty else float(present.std())
        summary["median"][key] = float("nan") if empty else float(np.median(present))
    if rows and all(all(name in row for name in ("tp", "fp", "fn", "tn")) for row in rows):
        summary["pooled_dice"] = pooled_dice([[row["tp"], row["fp"], row["fn"], row["tn"]] for row in rows])
    else:
        summary["pooled_dice"] = float("nan")
    return summary


def _as_float(value) -> float:
    return float("nan") if value is None else float(value)


# --------------------------------------------------------------------------------------------
# Multi-class
# --------------------------------------------------------------------------------------------


def confusion_matrix(pred, truth, num_classes: int, ignore: int | None = IGNORE) -> np.ndarray:
    """Confusion matrix of class-index masks; void pixels (truth == ``ignore``) are left out.

    Args:
        pred: predicted class indices, integer array or tensor of any shape (numpy or torch, any device),
            values ``0..num_classes-1`` wherever the truth is not void (anything where it is).
        truth: truth class indices, same shape, values ``0..num_classes-1`` or ``ignore``.
        num_classes: C, the background (or first) class included.
        ignore: the truth value of void pixels (:data:`~pixelwise.data.classes.IGNORE`, 255); None counts
            every pixel.

    Returns:
        int64 C×C: entry ``[t, p]`` counts the non-void pixels of truth class t predicted as class p. The
        matrices of several images add up to the data set's (pooled) matrix.

    Raises:
        ValueError: shapes differ, or a non-void value is outside ``0..num_classes-1``.
    """
    if tuple(pred.shape) != tuple(truth.shape):
        raise ValueError(f"pred and truth shapes differ: {tuple(pred.shape)} vs {tuple(truth.shape)}")
    if _is_torch(pred) or _is_torch(truth):
        import torch

        p = torch.as_tensor(pred).reshape(-1).long()
        t = torch.as_tensor(truth, device=p.device).reshape(-1).long()
        if ignore is not None:
            keep = t != ignore
            p, t = p[keep], t[keep]
        if p.numel():
            _check_class_range(int(p.min()), int(p.max()), num_classes, "prediction")
            _check_class_range(int(t.min()), int(t.max()), num_classes, "truth")
        flat = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
        return flat.cpu().numpy().astype(np.int64).reshape(num_classes, num_classes)
    p = np.asarray(pred).reshape(-1).astype(np.int64)
    t = np.asarray(truth).reshape(-1).astype(np.int64)
    if ignore is not None:
        keep = t != ignore
        p, t = p[keep], t[keep]
    if p.size:
        _check_class_range(int(p.min()), int(p.max()), num_classes, "prediction")
        _check_class_range(int(t.min()), int(t.max()), num_classes, "truth")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.astype(np.int64).reshape(num_classes, num_classes)


def _check_class_range(low: int, high: int, num_classes: int, what: str = "mask") -> None:
    if low < 0 or high >= num_classes:
        raise ValueError(f"{what} class indices must be in 0..{num_classes - 1} (or void), found {low}..{high}")


def multiclass_metrics(pred, truth, num_classes: int, ignore: int | None = IGNORE) -> dict[str, Any]:
    """Per-class and mean metrics of class-index masks, pooled over all the (non-void) pixels given.

    Args:
        pred: predicted class indices, int H×W or N×H×W (numpy or torch), values ``0..num_classes-1``.
        truth: truth class indices, same shape; pixels equal to ``ignore`` (void) are left out.
        num_classes: C, including class 0.
        ignore: truth value of void pixels (255); None counts every pixel.

    Returns:
        :func:`metrics_from_confusion` of the pixels' confusion matrix.
    """
    return metrics_from_confusion(confusion_matrix(pred, truth, num_classes, ignore=ignore))


def metrics_from_confusion(cm) -> dict[str, Any]:
    """Per-class and mean segmentation metrics of a C×C confusion matrix (rows truth, columns prediction).

    Summing the matrices of several images first gives the data set's pooled metrics, the convention of
    PASCAL VOC, Cityscapes and the SegNet paper (CamVid).

    Args:
        cm: int C×C, entry ``[t, p]`` = pixels of truth class t predicted as p (void pixels already left out).

    Returns:
        A dict of:

        * ``iou``, ``dice``: float64 (C,) in 0..1, IoU_c = M[c,c] / (row_c + col_c − M[c,c]) and
          Dice_c = 2·M[c,c] / (row_c + col_c); NaN for a class absent from both truth and prediction;
        * ``class_accuracy``: float64 (C,), per-class recall M[c,c] / row_c; NaN for a class absent from the truth;
        * ``truth_pixels``, ``predicted_pixels``: int64 (C,), row and column sums;
        * ``mean_iou``: mean IoU over all classes present in truth or prediction (VOC/Cityscapes/CamVid mIoU);
        * ``mean_iou_foreground``: mean IoU over classes 1..C-1 (class 0 = background) present in either;
        * ``mean_dice``: mean Dice over classes 1..C-1 present in either (the medical convention);
        * ``mean_class_accuracy``: mean of ``class_accuracy`` over classes present in the truth (SegNet's
          "class average accuracy");
        * ``global_accuracy``: trace / total, the fraction of all non-void pixels predicted right;
        * ``confusion_matrix``: the int64 C×C matrix itself.

        Means are Python floats, NaN when nothing is there to average.
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"expected a square C×C confusion matrix, got shape {cm.shape}")
    num_classes = cm.shape[0]
    tp = np.diag(cm).astype(np.float64)
    truth_total = cm.sum(axis=1)
    pred_total = cm.sum(axis=0)
    union = truth_total + pred_total - tp
    iou = _ratio(tp, union, np.nan)
    dice = _ratio(2 * tp, (truth_total + pred_total).astype(np.float64), np.nan)
    class_accuracy = _ratio(tp, truth_total.astype(np.float64), np.nan)
    foreground = slice(1, None) if num_classes > 1 else slice(0, None)
    total = int(cm.sum())
    return {
        "iou": iou,
        "dice": dice,
        "class_accuracy": class_accuracy,
        "truth_pixels": truth_total,
        "predicted_pixels": pred_total,
        "mean_iou": _nanmean(iou),
        "mean_iou_foreground": _nanmean(iou[foreground]),
        "mean_dice": _nanmean(dice[foreground]),
        "mean_class_accuracy": _nanmean(class_accuracy),
        "global_accuracy": float(tp.sum() / total) if total else float("nan"),
        "confusion_matrix": cm,
    }


def multiclass_image_metrics(
    pred,
    truth,
    num_classes: int,
    nsd_tolerance: float = 2.0,
    pixel_size_mm: float | None = None,
    ignore: int | None = IGNORE,
) -> dict[str, float]:
    """One image's metrics, each the mean over the foreground classes 1..C-1 of class c against the rest.

    Args:
        pred: predicted class indices, int H×W (numpy or torch), values ``0..num_classes-1``.
        truth: truth class indices, int H×W; pixels equal to ``ignore`` are void.
        num_classes: C, class 0 included (and left out of the means).
        nsd_tolerance: tolerance of the normalised surface Dice, pixels.
        pixel_size_mm: pixel side in mm; adds ``hd95_mm`` when given.
        ignore: truth value of void pixels (255); None: no pixel is void.

    Returns:
        The :data:`METRIC_KEYS` (and ``hd95_mm`` with a pixel size) as Python floats: see
        :func:`class_image_metrics` for each class and :func:`mean_over_classes` for the mean.
    """
    per_class = class_image_metrics(
        pred, truth, nsd_tolerance=nsd_tolerance, pixel_size_mm=pixel_size_mm, ignore=ignore
    )
    return mean_over_classes(per_class, range(1, num_classes), pixel_size_mm=pixel_size_mm)


def class_image_metrics(
    pred, truth, nsd_tolerance: float = 2.0, pixel_size_mm: float | None = None, ignore: int | None = IGNORE
) -> dict[int, dict]:
    """:func:`image_metrics` of class c against the rest, for each class c >= 1 present in the truth or prediction.

    Args:
        pred: predicted class indices, int H×W (numpy or torch).
        truth: truth class indices, int H×W; pixels equal to ``ignore`` are void.
        nsd_tolerance, pixel_size_mm: as for :func:`image_metrics`.
        ignore: truth value of void pixels (255); None: no pixel is void.

    Returns:
        ``{class index: image_metrics row}``. Void pixels belong to no class: the prediction there is set to
        void too, so they are true negatives of every class (neither predicted nor missed).
    """
    pred = _to_numpy(pred)
    truth = _to_numpy(truth)
    if ignore is not None:
        pred = np.where(truth == ignore, ignore, pred)
    present = np.union1d(np.unique(pred), np.unique(truth))
    return {
        int(c): image_metrics(pred == c, truth == c, nsd_tolerance=nsd_tolerance, pixel_size_mm=pixel_size_mm)
        for c in present
        if c >= 1 and c != ignore
    }


def mean_over_classes(per_class: dict[int, dict], classes, pixel_size_mm: float | None = None) -> dict[str, float]:
    """Per-image means of :func:`image_metrics` rows over ``classes``.

    Args:
        per_class: class index → :func:`image_metrics` row of that class (class c against the rest), for the
            classes present in the image's truth or prediction.
        classes: the classes averaged over (e.g. ``range(1, C)``); one missing from ``per_class`` counts as
            absent from truth and prediction: as :func:`image_metrics` of two empty masks, overlap metrics 1
            (the ISIC convention) and distances missing, so distances average over the classes that have them.
        pixel_size_mm: when given, ``hd95_mm`` is averaged too.

    Returns:
        ``{key: mean}`` for the :data:`METRIC_KEYS` (and ``hd95_mm``); NaN where no class has a value.
    """
    keys = METRIC_KEYS + (("hd95_mm",) if pixel_size_mm is not None else ())
    rows = [per_class.get(c) or _absent_class_row(pixel_size_mm) for c in classes]
    return {key: _nanmean(np.array([_as_float(row.get(key)) for row in rows], dtype=np.float64)) for key in keys}


def _absent_class_row(pixel_size_mm: float | None) -> dict[str, float]:
    """:func:`image_metrics` of an empty prediction against an empty truth (a class absent from an image)."""
    empty = np.zeros((1, 1), dtype=bool)
    return image_metrics(empty, empty, pixel_size_mm=pixel_size_mm)


def _to_numpy(values) -> np.ndarray:
    if _is_torch(values):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def class_summary(cm, names) -> dict[str, Any]:
    """The JSON-ready multi-class section of ``summary.json`` (``evaluate``) and ``score --json``.

    Args:
        cm: int C×C pooled confusion matrix (rows truth, columns prediction, void left out).
        names: the C class names, index = class index.

    Returns:
        ``{"per_class": [{"name", "iou", "dice", "accuracy", "truth_pixels", "predicted_pixels"}, ...],
        "iou", "dice", "class_accuracy" (lists of C, index = class), "mean_iou", "mean_iou_foreground",
        "mean_dice", "mean_class_accuracy", "global_accuracy", "class_names", "confusion_matrix"}``: plain
        Python values (NaN floats where undefined; the JSON writers turn them into null), ``confusion_matrix``
        as a list of C lists. See :func:`metrics_from_confusion` for the definitions.
    """
    metrics = metrics_from_confusion(cm)
    names = [str(name) for name in names]
    if len(names) != metrics["confusion_matrix"].shape[0]:
        raise ValueError(f"{len(names)} class names for a {metrics['confusion_matrix'].shape[0]}-class matrix")
    per_class = [
        {
            "name": name,
            "iou": float(metrics["iou"][c]),
            "dice": float(metrics["dice"][c]),
            "accuracy": float(metrics["class_accuracy"][c]),
            "truth_pixels": int(metrics["truth_pixels"][c]),
            "predicted_pixels": int(metrics["predicted_pixels"][c]),
        }
        for c, name in enumerate(names)
    ]
    arrays = {key: [float(v) for v in metrics[key]] for key in ("iou", "dice", "class_accuracy")}
    means = ("mean_iou", "mean_iou_foreground", "mean_dice", "mean_class_accuracy", "global_accuracy")
    return {
        "per_class": per_class,
        **arrays,
        **{key: metrics[key] for key in means},
        "class_names": names,
        "confusion_matrix": metrics["confusion_matrix"].tolist(),
    }


def _nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


# --------------------------------------------------------------------------------------------
# Probability threshold
# --------------------------------------------------------------------------------------------

# Pixels handled per chunk in threshold_sweep (bounds the int64 bucket-index memory to ~128 MB).
_SWEEP_CHUNK_PIXELS = 1 << 24


def threshold_sweep(probs, truth, thresholds, ignore=None) -> list[dict[str, float]]:
    """Mean per-image Dice and Jaccard of ``probs > threshold`` for every threshold, in one pass.

    ``>`` is the binarisation rule of pixelwise everywhere (prediction, evaluation, validation).

    Args:
        probs: foreground probabilities, float N×H×W (or H×W) in 0..1, numpy or torch (any device).
        truth: truth masks, bool (or 0/1) with the same shape.
        thresholds: increasing or not, values in 0..1; compared in ``probs``' dtype.
        ignore: optional bool mask of ``truth``'s shape: void pixels (and letterbox bands), which count as
            neither predicted nor true foreground, so they change no Dice or Jaccard.

    Returns:
        One dict per threshold, in the order given: ``threshold``, ``dice``, ``jaccard``,
        ``threshold_jaccard`` (means over images, ISIC conventions) and ``pooled_dice``.

    Each pixel is put in the bucket of how many thresholds it reaches; cumulative bucket counts
    then give every threshold's confusion counts exactly, without binarising N×H×W once per threshold.
    """
    import torch

    order = np.argsort(np.asarray(thresholds, dtype=np.float64), kind="stable")
    sorted_thresholds = np.asarray(thresholds, dtype=np.float64)[order]
    p = torch.as_tensor(probs)
    t = torch.as_tensor(truth, device=p.device)
    if tuple(p.shape) != tuple(t.shape):
        raise ValueError(f"probs and truth shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    if ignore is not None:
        void = torch.as_tensor(ignore, device=p.device).bool()
        p, t = p.masked_fill(void, 0.0), t.bool() & ~void
    if p.ndim == 2:
        p, t = p[None], t[None]
    if not p.is_floating_point():
        p = p.float()
    n, pixels = p.shape[0], p[0].numel()
    k = len(sorted_thresholds)
    boundaries = torch.as_tensor(sorted_thresholds, dtype=p.dtype, device=p.device)
    # reached[i, j]: pixels of image i that reach exactly j thresholds (j in 0..k), all / truth-positive
    reached_all = np.zeros((n, k + 1), dtype=np.int64)
    reached_pos = np.zeros((n, k + 1), dtype=np.int64)
    step = max(1, _SWEEP_CHUNK_PIXELS // max(pixels, 1))
    for start in range(0, n, step):
        chunk_p = p[start : start + step].reshape(-1, pixels)
        chunk_t = t[start : start + step].reshape(-1, pixels).bool()
        m = chunk_p.shape[0]
        # right=False: index = number of thresholds < prob, i.e. prob > threshold for the first `index`.
        bucket = torch.bucketize(chunk_p, boundaries, right=False)
        # One bincount for both tallies: slot = ((image * (k + 1)) + bucket) * 2 + is_truth_positive.
        slot = (bucket + torch.arange(m, device=p.device)[:, None] * (k + 1)) * 2 + chunk_t.long()
        tally = torch.bincount(slot.reshape(-1), minlength=m * (k + 1) * 2).reshape(m, k + 1, 2).cpu().numpy()
        reached_all[start : start + m] = tally.sum(axis=2)
        reached_pos[start : start + m] = tally[:, :, 1]
    # Predicted positives at threshold j = pixels reaching more than j thresholds.
    pred_pos = np.cumsum(reached_all[:, ::-1], axis=1)[:, ::-1][:, 1:]
    tp = np.cumsum(reached_pos[:, ::-1], axis=1)[:, ::-1][:, 1:]
    truth_pos = reached_pos.sum(axis=1, keepdims=True)
    fp = pred_pos - tp
    fn = truth_pos - tp
    tn = pixels - tp - fp - fn
    sweep_sorted = []
    for j in range(k):
        counts = np.stack([tp[:, j], fp[:, j], fn[:, j], tn[:, j]], axis=1)
        overlap = overlap_metrics(counts)
        sweep_sorted.append(
            {
                "threshold": float(sorted_thresholds[j]),
                "dice": float(overlap["dice"].mean()),
                "jaccard": float(overlap["jaccard"].mean()),
                "threshold_jaccard": float(overlap["threshold_jaccard"].mean()),
                "pooled_dice": pooled_dice(counts),
            }
        )
    sweep = [None] * k
    for position, original in enumerate(order):
        sweep[original] = sweep_sorted[position]
    return sweep


#: Probability thresholds tried on the validation split, by training and by the evaluation report.
THRESHOLD_GRID = np.round(np.arange(0.1, 0.91, 0.05), 2)


def choose_threshold(sweep: list[dict[str, float]]) -> float:
    """The threshold of the best mean Dice in a :func:`threshold_sweep`; ties go to the one nearest 0.5."""
    if not sweep:
        raise ValueError("empty threshold sweep")
    best = max(entry["dice"] for entry in sweep)
    tied = [entry["threshold"] for entry in sweep if entry["dice"] >= best - 1e-12]
    return float(min(tied, key=lambda threshold: (abs(threshold - 0.5), threshold)))
