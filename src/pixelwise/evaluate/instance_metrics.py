"""Instance segmentation metrics, each equal to its field's reference implementation.

An instance segmentation of one image is an **instance-id label image**: an integer H×W array where 0 is
background and every other value is one object (ids need not be consecutive). Optionally each object has a
class (a mapping id → class index ≥ 1; without one every object is class 1) and, for predictions, a
confidence score (id → float; without one every prediction scores 1.0).

Everything starts from the overlap of two label images (:func:`match_instances`): one joint histogram of the
(truth id, predicted id) pairs gives every object's area and every pairwise intersection at once, so the
IoU matrix costs one pass over the pixels whatever the number of objects.

The numbers and their references (``docs/metrics.md``, "Instance metrics", writes the conventions out):

* :func:`coco_mask_ap` — COCO mask AP, AP50, AP75 as ``pycocotools.cocoeval.COCOeval`` (``iouType="segm"``,
  ``maxDets=100``, area range "all") computes them; a test checks equality to 1e-6.
* :func:`dsb_score` — the Kaggle Data Science Bowl 2018 score.
* :func:`stardist_matching` — StarDist's ``matching_dataset`` (pooled over images) at thresholds τ.
* :func:`panoptic_quality` — PQ, SQ, RQ of Kirillov et al. 2019 as ``panopticapi`` computes them (things only).
* :func:`instance_scores` — all of them at once, with one row per image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: COCOeval's IoU thresholds .50:.05:.95 — the same float values (``np.linspace``), so ``>=`` compares alike.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: COCOeval's 101 recall points 0:.01:1.
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
#: Detections kept per image and class (COCOeval's largest ``maxDets``).
COCO_MAX_DETECTIONS = 100
#: Kaggle DSB 2018 thresholds 0.5, 0.55, ..., 0.95, each the correctly rounded k/20 so that an IoU exactly equal
#: to a threshold (a ratio of pixel counts) compares as equal, never as a rounding accident.
DSB_THRESHOLDS = tuple(k / 20 for k in range(10, 20))

LabelLike = Any  # an integer H×W numpy array (uint8/uint16/int32/int64)
IdMap = Mapping[int, Any] | Sequence[Any] | np.ndarray | None


# ----------------------------------------------------------------------------------------------------------------
# Overlap and matching


def as_instance_labels(labels: LabelLike, name: str = "labels") -> np.ndarray:
    """Check one instance-id label image and return it as an ndarray (no copy when it already is one).

    Args:
        labels: integer H×W array, 0 = background, other values = object ids (not necessarily consecutive).
        name: how error messages name it.

    Raises:
        ValueError: not 2-D, not an integer type, or negative values.
    """
    array = np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected an H×W instance-id image, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name}: instance ids must be integers, got dtype {array.dtype}")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise ValueError(f"{name}: instance ids must be ≥ 0 (0 = background)")
    return array


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, index)``: the object ids present (ascending, 0 left out) and an int64 H×W index image with
    0 for background and 1..N for the objects in id order."""
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top <= max(4 * flat.size, 1 << 16):
        # A lookup table through bincount: linear in the pixels, no sort.
        present = np.bincount(flat, minlength=top + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        table = np.zeros(top + 1, dtype=np.int64)
        table[ids] = np.arange(1, ids.size + 1)
        return ids.astype(np.int64), table[flat].reshape(labels.shape)
    values, inverse = np.unique(flat, return_inverse=True)
    offset = 1 if values[0] != 0 else 0
    ids = values[values != 0].astype(np.int64)
    return ids, (inverse.astype(np.int64) + offset).reshape(labels.shape)


@dataclass(frozen=True)
class InstanceMatch:
    """The overlap of one truth and one predicted label image, and a one-to-one matching at a threshold.

    Rows are truth objects, columns predicted objects, both in ascending id order.

    Attributes:
        true_ids, pred_ids: int64 (N,) and (M,): the object ids.
        true_areas, pred_areas: int64 (N,), (M,): pixels per object.
        intersections: int64 N×M: pixels shared by each pair.
        iou: float64 N×M in 0..1: intersection / (area_true + area_pred − intersection).
        threshold, strict: the matching rule: a pair may match when IoU ≥ threshold (IoU > threshold when strict).
        true_index, pred_index: int64 (K,): rows and columns of the K matched pairs (true positives).
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_areas: np.ndarray
    pred_areas: np.ndarray
    intersections: np.ndarray
    iou: np.ndarray
    threshold: float
    strict: bool
    true_index: np.ndarray
    pred_index: np.ndarray

    @property
    def n_true(self) -> int:
        return int(self.true_ids.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    @property
    def tp(self) -> int:
        return int(self.true_index.size)

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_true - self.tp

    @property
    def matched_iou(self) -> np.ndarray:
        """float64 (K,): the IoU of each matched pair."""
        return self.iou[self.true_index, self.pred_index]

    def at(self, threshold: float, strict: bool = False) -> InstanceMatch:
        """The same overlap matched at another threshold (no pixel is counted again)."""
        rows, cols = match_iou(self.iou, threshold, strict)
        return InstanceMatch(
            self.true_ids,
            self.pred_ids,
            self.true_areas,
            self.pred_areas,
            self.intersections,
            self.iou,
            float(threshold),
            bool(strict),
            rows,
            cols,
        )


def match_instances(truth: LabelLike, pred: LabelLike, threshold: float = 0.5, strict: bool = False) -> InstanceMatch:
    """IoU of every truth object with every predicted object, and their one-to-one matching at ``threshold``.

    The intersections come from one joint histogram of the (truth id, predicted id) pairs of all pixels
    (``np.bincount`` of a combined index, or ``np.unique`` when that table would be large), so the cost is
    linear in the pixels, not in objects × pixels.

    Args:
        truth: integer H×W instance ids (uint8/uint16/int32/int64), 0 = background.
        pred: integer H×W instance ids, same shape.
        threshold: IoU a pair needs to match, 0..1.
        strict: match on IoU > threshold (Kaggle DSB, PQ) instead of IoU ≥ threshold (StarDist, COCO).

    Returns:
        An :class:`InstanceMatch`. Matching: above 0.5 an object can overlap at most one other object by
        that much, so every pair over the threshold is a match; at or below 0.5 pairs can compete and the
        matching is StarDist's optimal one (:func:`match_iou`).

    Raises:
        ValueError: shapes differ, or a label image is not an integer H×W array of values ≥ 0.
    """
    truth = as_instance_labels(truth, "truth")
    pred = as_instance_labels(pred, "pred")
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction shapes differ: {truth.shape} vs {pred.shape}")
    true_ids, true_index = _compact(truth)
    pred_ids, pred_index = _compact(pred)
    n, m = true_ids.size, pred_ids.size
    codes = (true_index * (m + 1) + pred_index).ravel()
    cells = (n + 1) * (m + 1)
    if cells <= 4 * codes.size + (1 << 20):
        joint = np.bincount(codes, minlength=cells).reshape(n + 1, m + 1)
    else:
        # Many objects on a small image: count only the pairs that occur.
        values, counts = np.unique(codes, return_counts=True)
        joint = np.zeros((n + 1, m + 1), dtype=np.int64)
        joint[values // (m + 1), values % (m + 1)] = counts
    joint = joint.astype(np.int64, copy=False)
    true_areas = joint[1:, :].sum(axis=1)
    pred_areas = joint[:, 1:].sum(axis=0)
    intersections = joint[1:, 1:]
    iou = iou_matrix(intersections, true_areas, pred_areas)
    rows, cols = match_iou(iou, threshold, strict)
    return InstanceMatch(
        true_ids, pred_ids, true_areas, pred_areas, intersections, iou, float(threshold), bool(strict), rows, cols
    )


def iou_matrix(intersections: np.ndarray, true_areas: np.ndarray, pred_areas: np.ndarray) -> np.ndarray:
    """float64 N×M IoU from int N×M intersections and the (N,), (M,) areas (each a float64 division of two
    integers, as pycocotools computes it). Objects have areas ≥ 1, so no union is 0."""
    inter = np.asarray(intersections, dtype=np.int64)
    if inter.size == 0:
        return np.zeros(inter.shape, dtype=np.float64)
    union = np.asarray(true_areas, np.int64)[:, None] + np.asarray(pred_areas, np.int64)[None, :] - inter
    return inter.astype(np.float64) / union.astype(np.float64)


def match_iou(iou: np.ndarray, threshold: float, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of truth rows to predicted columns of an N×M IoU matrix.

    A pair qualifies when IoU ≥ ``threshold`` (IoU > ``threshold`` when ``strict``). Above 0.5 no object can
    qualify with two others, so the qualifying pairs are the matching. Otherwise the matching is StarDist's
    (``stardist.matching.matching``): ``scipy.optimize.linear_sum_assignment`` on the cost
    ``−[qualifies] − IoU / (2·min(N, M))``, i.e. the most qualifying pairs, ties broken by the largest IoU sum.

    Returns:
        ``(rows, cols)``: int64 (K,) each, the matched pairs (rows ascending).
    """
    iou = np.asarray(iou, dtype=np.float64)
    qualifies = iou > threshold if strict else iou >= threshold
    if not qualifies.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    if threshold > 0.5 or (strict and threshold >= 0.5):
        rows, cols = np.nonzero(qualifies)
        return rows.astype(np.int64), cols.astype(np.int64)
    from scipy.optimize import linear_sum_assignment

    # Objects that overlap nothing change neither the count nor the tie-break: leave them out of the assignment,
    # but keep StarDist's scale of the tie-breaker (the full min(N, M)).
    n_matched = min(iou.shape)
    keep_rows = np.flatnonzero(iou.any(axis=1))
    keep_cols = np.flatnonzero(iou.any(axis=0))
    sub = iou[np.ix_(keep_rows, keep_cols)]
    costs = -qualifies[np.ix_(keep_rows, keep_cols)].astype(np.float64) - sub / (2 * n_matched)
    rows, cols = linear_sum_assignment(costs)
    good = qualifies[keep_rows[rows], keep_cols[cols]]
    return keep_rows[rows[good]].astype(np.int64), keep_cols[cols[good]].astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------
# Per-image inputs


def _lookup(mapping: IdMap, ids: np.ndarray, default, what: str, image: str, dtype) -> np.ndarray:
    """Values of ``mapping`` (dict id → value, or a sequence/array indexed by id) for each id; ``default`` for all
    when ``mapping`` is None."""
    if mapping is None:
        return np.full(ids.size, default, dtype=dtype)
    out = np.empty(ids.size, dtype=dtype)
    for k, object_id in enumerate(ids.tolist()):
        try:
            out[k] = mapping[object_id]
        except (KeyError, IndexError):
            raise ValueError(f"image {image}: object {object_id} has no {what}") from None
    return out


@dataclass(frozen=True)
class _Image:
    """One image's overlap with the classes and scores of its objects, aligned with its rows/columns."""

    id: str
    match: InstanceMatch
    true_classes: np.ndarray
    pred_classes: np.ndarray
    pred_scores: np.ndarray
    #: int64 (M,): pixels of each predicted object that lie on void (PQ); zeros without a void mask.
    pred_void: np.ndarray
    #: int64 N×M intersections with void pixels left out (PQ).
    void_free_intersections: np.ndarray
    void_free_true_areas: np.ndarray


def _prepare(
    truths, preds, ids=None, true_classes=None, pred_classes=None, pred_scores=None, voids=None
) -> list[_Image]:
    truths, preds = list(truths), list(preds)
    if len(truths) != len(preds):
        raise ValueError(f"{len(truths)} truth images but {len(preds)} predictions")
    count = len(truths)
    ids = [str(i) for i in (ids if ids is not None else range(count))]
    for name, value in (
        ("ids", ids),
        ("true_classes", true_classes),
        ("pred_classes", pred_classes),
        ("pred_scores", pred_scores),
        ("voids", voids),
    ):
        if value is not None and len(value) != count:
            raise ValueError(f"{name}: {len(value)} entries for {count} images")
    images = []
    for k in range(count):
        truth = as_instance_labels(truths[k], f"truth {ids[k]}")
        pred = as_instance_labels(preds[k], f"prediction {ids[k]}")
        if truth.shape != pred.shape:
            raise ValueError(f"image {ids[k]}: truth is {truth.shape} but prediction {pred.shape}")
        match = match_instances(truth, pred)
        void = None if voids is None or voids[k] is None else np.asarray(voids[k], dtype=bool)
        if void is not None and void.shape != truth.shape:
            raise ValueError(f"image {ids[k]}: void mask is {void.shape} but truth {truth.shape}")
        if void is None or not void.any():
            pred_void = np.zeros(match.n_pred, dtype=np.int64)
            free_inter, free_true = match.intersections, match.true_areas
        else:
            pred_void, free_inter, free_true = _void_counts(truth, pred, void, match)
        images.append(
            _Image(
                ids[k],
                match,
                _lookup(
                    None if true_classes is None else true_classes[k], match.true_ids, 1, "class", ids[k], np.int64
                ),
                _lookup(
                    None if pred_classes is None else pred_classes[k], match.pred_ids, 1, "class", ids[k], np.int64
                ),
                _lookup(
                    None if pred_scores is None else pred_scores[k], match.pred_ids, 1.0, "score", ids[k], np.float64
                ),
                pred_void,
                free_inter,
                free_true,
            )
        )
    return images


def _void_counts(truth, pred, void, match: InstanceMatch):
    """Void pixels per predicted object, and intersections / truth areas with void pixels left out."""
    pred_index = np.searchsorted(match.pred_ids, pred[void])
    on_object = pred[void] != 0
    pred_void = np.bincount(pred_index[on_object], minlength=match.n_pred).astype(np.int64)
    # Truth objects do not extend into void: pixels of a truth object that are marked void are removed from it.
    truth_void = truth[void]
    pred_at = pred[void]
    both = (truth_void != 0) & (pred_at != 0)
    inter = match.intersections.copy()
    if both.any():
        rows = np.searchsorted(match.true_ids, truth_void[both])
        cols = np.searchsorted(match.pred_ids, pred_at[both])
        np.subtract.at(inter, (rows, cols), 1)
    true_areas = match.true_areas.copy()
    if (truth_void != 0).any():
        rows = np.searchsorted(match.true_ids, truth_void[truth_void != 0])
        np.subtract.at(true_areas, rows, 1)
    return pred_void, inter, true_areas


# ----------------------------------------------------------------------------------------------------------------
# COCO mask AP


def _coco_greedy(iou: np.ndarray, order: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """COCOeval's matching of one image and class: bool T×D, detection d (in score order) matched at threshold t.

    Each detection, highest score first, takes the unmatched truth with the largest IoU ≥ t; of equal IoUs the
    last truth in order wins, as in ``COCOeval.evaluateImg`` (its loop keeps a truth whose IoU is not below the
    best so far).
    """
    n_true = iou.shape[0]
    matched = np.zeros((len(thresholds), order.size), dtype=bool)
    if n_true == 0 or order.size == 0:
        return matched
    for t_index, threshold in enumerate(thresholds):
        best_allowed = min(float(threshold), 1 - 1e-10)
        taken = np.zeros(n_true, dtype=bool)
        for d_index, det in enumerate(order):
            column = np.where(taken, -1.0, iou[:, det])
            best = column.max()
            if best < best_allowed:
                continue
            winner = n_true - 1 - int(np.argmax(column[::-1] == best))
            taken[winner] = True
            matched[t_index, d_index] = True
    return matched


def coco_mask_ap(
    truths,
    preds,
    true_classes=None,
    pred_classes=None,
    pred_scores=None,
    max_detections: int = COCO_MAX_DETECTIONS,
    *,
    _images: list[_Image] | None = None,
) -> dict:
    """COCO mask AP as ``COCOeval(gt, dt, "segm")`` computes it (area range "all", ``maxDets`` 100).

    Per image and class, the detections (highest score first; equal scores keep ascending id order) are cut to
    ``max_detections`` and matched greedily at each IoU threshold .50:.05:.95 (IoU ≥ t). Per class, the
    detections of all images (image order, then score order; a stable sort by score) give the precision/recall
    curve; precision is made monotone and read at the 101 recall points 0:.01:1 (0 past the last recall
    reached). AP averages that over recall points, thresholds and the classes that have truth objects.

    Crowd annotations (``iscrowd``) are not handled: every truth object is a normal one (no truth is ignored and
    no detection is excused by a crowd region). Area ranges other than "all" are not computed.

    Args:
        truths, preds: sequences of integer H×W instance-id images, one pair per image.
        true_classes, pred_classes: per image, id → class (dict, or array indexed by id); None: all class 1.
        pred_scores: per image, id → score; None: every prediction scores 1.0 (ties keep id order).
        max_detections: detections kept per image and class.

    Returns:
        ``{"ap", "ap50", "ap75"}``: floats 0..1, NaN when no class has a truth object (COCOeval prints -1);
        ``"per_class"``: {class: AP}; ``"precision"``: float64 T×R×K (COCOeval's ``eval["precision"]`` for
        area "all" and 100 detections, -1 for classes without truth); ``"classes"``: the K classes.
    """
    images = _images if _images is not None else _prepare(truths, preds, None, true_classes, pred_classes, pred_scores)
    thresholds = COCO_IOU_THRESHOLDS
    classes = sorted({int(c) for image in images for c in np.concatenate([image.true_classes, image.pred_classes])})
    precision = -np.ones((len(thresholds), len(COCO_RECALL_THRESHOLDS), len(classes)))
    per_class: dict[int, float] = {}
    for k_index, cls in enumerate(classes):
        scores, matches, n_truth = [], [], 0
        for image in images:
            rows = np.flatnonzero(image.true_classes == cls)
            cols = np.flatnonzero(image.pred_classes == cls)
            if rows.size == 0 and cols.size == 0:
                continue
            order = cols[np.argsort(-image.pred_scores[cols], kind="mergesort")][:max_detections]
            iou = image.match.iou[np.ix_(rows, np.arange(image.match.n_pred))]
            matches.append(_coco_greedy(iou, order, thresholds))
            scores.append(image.pred_scores[order])
            n_truth += rows.size
        if n_truth == 0:
            continue
        all_scores = np.concatenate(scores)
        order = np.argsort(-all_scores, kind="mergesort")
        matched = np.concatenate(matches, axis=1)[:, order]
        tp_sum = np.cumsum(matched, axis=1).astype(np.float64)
        fp_sum = np.cumsum(~matched, axis=1).astype(np.float64)
        for t_index in range(len(thresholds)):
            tp, fp = tp_sum[t_index], fp_sum[t_index]
            recall = tp / n_truth
            # np.spacing(1) as COCOeval adds it: identical values, not just close ones.
            prec = tp / (fp + tp + np.spacing(1))
            prec = np.maximum.accumulate(prec[::-1])[::-1] if prec.size else prec
            at = np.searchsorted(recall, COCO_RECALL_THRESHOLDS, side="left")
            values = np.zeros(len(COCO_RECALL_THRESHOLDS))
            inside = at < prec.size
            values[inside] = prec[at[inside]]
            precision[t_index, :, k_index] = values
        per_class[cls] = float(precision[:, :, k_index].mean())

    def summary(block: np.ndarray) -> float:
        valid = block[block > -1]
        return float(np.mean(valid)) if valid.size else float("nan")

    return {
        "ap": summary(precision),
        "ap50": summary(precision[np.flatnonzero(thresholds == 0.5)]),
        "ap75": summary(precision[np.flatnonzero(thresholds == 0.75)]),
        "per_class": per_class,
        "precision": precision,
        "classes": classes,
    }


# ----------------------------------------------------------------------------------------------------------------
# Kaggle DSB 2018


def dsb_image_score(match: InstanceMatch) -> float:
    """Kaggle DSB 2018 score of one image: the mean over t = 0.5, 0.55, ..., 0.95 of TP / (TP + FP + FN),
    a hit being a truth/prediction pair with IoU > t (strictly).

    Empty cases: no truth and no prediction scores 1 (nothing to find, nothing wrong); truth without
    prediction, or prediction without truth, scores 0 (the formula gives it).
    """
    if match.n_true == 0 and match.n_pred == 0:
        return 1.0
    values = []
    for threshold in DSB_THRESHOLDS:
        tp = int(np.count_nonzero(match.iou > threshold))  # unique above 0.5: each hit is one match
        values.append(tp / (match.n_true + match.n_pred - tp))
    return float(np.mean(values))


def dsb_score(truths, preds) -> dict:
    """Kaggle DSB 2018 stage-1/2 metric: :func:`dsb_image_score` per image, then the mean over images.

    Classes and scores play no part. Returns ``{"dsb": mean, "per_image": [scores]}``; NaN for no images.
    """
    scores = [dsb_image_score(match_instances(t, p)) for t, p in zip(truths, preds, strict=True)]
    return {"dsb": float(np.mean(scores)) if scores else float("nan"), "per_image": scores}


# ----------------------------------------------------------------------------------------------------------------
# StarDist


def _stardist_ratio(numerator: float, denominator: float, tp: int) -> float:
    # StarDist's precision/recall/accuracy/f1 are 0 whenever there is no true positive.
    return numerator / denominator if tp > 0 else 0.0


def _stardist_divide(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def stardist_matching(
    truths, preds, thresholds: Sequence[float] = (0.5,), *, _images: list[_Image] | None = None
) -> list[dict]:
    """StarDist's ``matching_dataset(y_true, y_pred, thresh, by_image=False)``: counts pooled over images.

    Per image and threshold τ, objects match one-to-one with IoU ≥ τ (:func:`match_iou`); TP, FP, FN, the
    object counts and the sum of matched IoUs are summed over all images, then:
    precision = TP/(TP+FP), recall = TP/(TP+FN), accuracy ("AP" in the StarDist papers) = TP/(TP+FP+FN),
    f1 = 2TP/(2TP+FP+FN) — all 0 when TP = 0 —, mean_matched_score = ΣIoU/TP, mean_true_score = ΣIoU/n_true,
    panoptic_quality = ΣIoU/(TP + FP/2 + FN/2) — 0 when the denominator is 0. Classes play no part.

    Returns:
        One dict per threshold with keys ``thresh, tp, fp, fn, n_true, n_pred, precision, recall, accuracy, f1,
        mean_true_score, mean_matched_score, panoptic_quality``.
    """
    matches = (
        [image.match for image in _images]
        if _images is not None
        else [match_instances(t, p) for t, p in zip(truths, preds, strict=True)]
    )
    rows = []
    for threshold in thresholds:
        tp = fp = fn = n_true = n_pred = 0
        iou_sum = 0.0
        for match in matches:
            at = match.at(threshold)
            tp, fp, fn = tp + at.tp, fp + at.fp, fn + at.fn
            n_true, n_pred = n_true + at.n_true, n_pred + at.n_pred
            iou_sum += float(at.matched_iou.sum())
        rows.append(
            {
                "thresh": float(threshold),
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "n_true": n_true,
                "n_pred": n_pred,
                "precision": _stardist_ratio(tp, tp + fp, tp),
                "recall": _stardist_ratio(tp, tp + fn, tp),
                "accuracy": _stardist_ratio(tp, tp + fp + fn, tp),
                "f1": _stardist_ratio(2 * tp, 2 * tp + fp + fn, tp),
                "mean_true_score": _stardist_divide(iou_sum, n_true),
                "mean_matched_score": _stardist_divide(iou_sum, tp),
                "panoptic_quality": _stardist_divide(iou_sum, tp + fp / 2 + fn / 2),
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Panoptic quality


def panoptic_quality(
    truths, preds, true_classes=None, pred_classes=None, voids=None, *, _images: list[_Image] | None = None
) -> dict:
    """Panoptic quality PQ = SQ × RQ per class (Kirillov et al. 2019), averaged over classes, as ``panopticapi``.

    Per image, a truth and a predicted object of the **same class** match when IoU > 0.5 (unique). Void pixels
    (``voids``: bool H×W per image, e.g. VOC's 255 border) belong to no object: they are left out of truth
    objects, and the IoU's union does not count a prediction's void pixels. An unmatched prediction whose
    pixels lie more than 50 % on void is not a false positive. Background (id 0) is not void: a prediction on
    background is a false positive.

    Per class c, TP/FP/FN and the sum of matched IoUs are pooled over all images; PQ_c = ΣIoU / (TP + FP/2 +
    FN/2), SQ_c = ΣIoU / TP (0 without TP), RQ_c = TP / (TP + FP/2 + FN/2). ``pq``, ``sq``, ``rq`` are the means
    over the classes with TP + FP + FN > 0 (so ``pq`` is not ``sq × rq`` in general); NaN when there is none.

    Returns:
        ``{"pq", "sq", "rq", "per_class": {class: {"pq", "sq", "rq", "tp", "fp", "fn", "iou_sum"}}}``.
    """
    images = _images if _images is not None else _prepare(truths, preds, None, true_classes, pred_classes, None, voids)
    totals: dict[int, list[float]] = {}
    for image in images:
        match = image.match
        inter = image.void_free_intersections
        union = image.void_free_true_areas[:, None] + match.pred_areas[None, :] - inter - image.pred_void[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        same_class = image.true_classes[:, None] == image.pred_classes[None, :]
        iou = np.where(same_class, iou, 0.0)
        rows, cols = np.nonzero(iou > 0.5)
        matched_true = np.zeros(match.n_true, dtype=bool)
        matched_pred = np.zeros(match.n_pred, dtype=bool)
        matched_true[rows], matched_pred[cols] = True, True
        for row, col in zip(rows.tolist(), cols.tolist()):
            entry = totals.setdefault(int(image.true_classes[row]), [0, 0, 0, 0.0])
            entry[0] += 1
            entry[3] += float(iou[row, col])
        # Truth objects entirely on void have no pixels left: they are not objects to find.
        for row in np.flatnonzero(~matched_true & (image.void_free_true_areas > 0)).tolist():
            totals.setdefault(int(image.true_classes[row]), [0, 0, 0, 0.0])[2] += 1
        for col in np.flatnonzero(~matched_pred).tolist():
            if image.pred_void[col] / match.pred_areas[col] > 0.5:
                continue
            totals.setdefault(int(image.pred_classes[col]), [0, 0, 0, 0.0])[1] += 1
    per_class = {}
    for cls in sorted(totals):
        tp, fp, fn, iou_sum = totals[cls]
        if tp + fp + fn == 0:
            continue
        denominator = tp + 0.5 * fp + 0.5 * fn
        per_class[cls] = {
            "pq": iou_sum / denominator,
            "sq": iou_sum / tp if tp else 0.0,
            "rq": tp / denominator,
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
            "iou_sum": float(iou_sum),
        }

    def mean(key: str) -> float:
        return float(np.mean([v[key] for v in per_class.values()])) if per_class else float("nan")

    return {"pq": mean("pq"), "sq": mean("sq"), "rq": mean("rq"), "per_class": per_class}


# ----------------------------------------------------------------------------------------------------------------
# Everything at once


def instance_scores(
    truths,
    preds,
    ids: Sequence[str] | None = None,
    true_classes=None,
    pred_classes=None,
    pred_scores=None,
    voids=None,
    stardist_thresholds: Sequence[float] = (0.5,),
    max_detections: int = COCO_MAX_DETECTIONS,
    *,
    _images: list[_Image] | None = None,
) -> dict:
    """Every instance metric of a data set, from one overlap computation per image.

    Args:
        truths, preds: sequences of integer H×W instance-id images (0 = background), one pair per image.
        ids: image names for the rows; default "0", "1", ...
        true_classes, pred_classes: per image, id → class ≥ 1 (dict or array indexed by id); None: class 1.
        pred_scores: per image, id → confidence (COCO AP's ranking); None: all 1.0.
        voids: per image a bool H×W void mask or None (PQ only).
        stardist_thresholds: τ values of the StarDist rows.
        max_detections: COCO detections kept per image and class.

    Returns:
        JSON-ready dict: ``ap``, ``ap50``, ``ap75`` (COCO), ``ap_per_class``, ``dsb``, ``pq``, ``sq``, ``rq``,
        ``pq_per_class``, ``stardist`` (one dict per τ), ``n_images``, ``n_true``, ``n_pred`` and ``images``:
        one row per image with ``id, n_true, n_pred, tp, fp, fn`` (class-agnostic, IoU > 0.5), ``mean_iou``
        (mean IoU of those matches, NaN without any) and ``dsb``. Undefined numbers are NaN.
    """
    # _images: prepared one at a time by a caller that streams images (score.py), so no label image is held.
    images = (
        _images if _images is not None else _prepare(truths, preds, ids, true_classes, pred_classes, pred_scores, voids)
    )
    coco = coco_mask_ap(None, None, max_detections=max_detections, _images=images)
    pq = panoptic_quality(None, None, _images=images)
    rows = []
    for image in images:
        at_half = image.match.at(0.5, strict=True)
        matched = at_half.matched_iou
        rows.append(
            {
                "id": image.id,
                "n_true": image.match.n_true,
                "n_pred": image.match.n_pred,
                "tp": at_half.tp,
                "fp": at_half.fp,
                "fn": at_half.fn,
                "mean_iou": float(matched.mean()) if matched.size else float("nan"),
                "dsb": dsb_image_score(image.match),
            }
        )
    return {
        "n_images": len(images),
        "n_true": int(sum(row["n_true"] for row in rows)),
        "n_pred": int(sum(row["n_pred"] for row in rows)),
        "ap": coco["ap"],
        "ap50": coco["ap50"],
        "ap75": coco["ap75"],
        "ap_per_class": {str(k): v for k, v in coco["per_class"].items()},
        "dsb": float(np.mean([row["dsb"] for row in rows])) if rows else float("nan"),
        "pq": pq["pq"],
        "sq": pq["sq"],
        "rq": pq["rq"],
        "pq_per_class": {str(k): v for k, v in pq["per_class"].items()},
        "stardist": stardist_matching(None, None, stardist_thresholds, _images=images),
        "images": rows,
    }


# ----------------------------------------------------------------------------------------------------------------
# COCO JSON with RLE masks (pycocotools.mask)


def encode_instances(labels: LabelLike) -> list[tuple[int, dict]]:
    """COCO RLE of each object of an instance-id image: ``[(id, {"size": [H, W], "counts": str}), ...]`` in id
    order (compressed RLE, column-major as pycocotools encodes it; ``counts`` decoded to text for JSON)."""
    from pycocotools import mask as mask_utils

    labels = as_instance_labels(labels)
    encoded = []
    for object_id in np.unique(labels[labels != 0]).tolist():
        rle = mask_utils.encode(np.asfortranarray(labels == object_id, dtype=np.uint8))
        rle["counts"] = rle["counts"].decode("ascii")
        encoded.append((int(object_id), rle))
    return encoded


def _annotation(rle: dict) -> dict:
    from pycocotools import mask as mask_utils

    binary = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return {
        "segmentation": rle,
        "area": float(mask_utils.area(binary)),
        "bbox": [float(v) for v in mask_utils.toBbox(binary)],
    }


def coco_ground_truth(
    truths, classes=None, class_names: Mapping[int, str] | None = None, file_names: Sequence[str] | None = None
) -> dict:
    """A COCO instances data set (the dict a ``instances_*.json`` file holds) of instance-id truth images.

    Images get ids 1..N in the given order (COCOeval sorts images by id, so its order is this one); annotations
    are numbered 1.. in image order, then object id order, each with an RLE ``segmentation``, its ``area``,
    ``bbox`` (pycocotools' ``area``/``toBbox``), ``iscrowd`` 0 and ``category_id`` = the object's class.
    ``categories`` lists every class that appears (names from ``class_names``, else "class <c>").
    """
    images, annotations, seen = [], [], set()
    for index, truth in enumerate(truths):
        truth = as_instance_labels(truth, f"truth {index}")
        height, width = truth.shape
        images.append(
            {
                "id": index + 1,
                "height": height,
                "width": width,
                "file_name": file_names[index] if file_names is not None else f"{index + 1}.png",
            }
        )
        for object_id, rle in encode_instances(truth):
            cls = 1 if classes is None or classes[index] is None else int(classes[index][object_id])
            seen.add(cls)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": cls,
                    "iscrowd": 0,
                    **_annotation(rle),
                }
            )
    names = class_names or {}
    categories = [{"id": c, "name": names.get(c, f"class {c}")} for c in sorted(seen | set(names))]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_results(preds, classes=None, scores=None) -> list[dict]:
    """COCO results (the list a detections JSON holds) of instance-id prediction images: one entry per object,
    image ids 1..N in the given order, objects in id order, with ``segmentation`` (RLE), ``score`` (1.0 without
    scores), ``category_id`` (1 without classes), ``area`` and ``bbox``."""
    results = []
    for index, pred in enumerate(preds):
        for object_id, rle in encode_instances(as_instance_labels(pred, f"prediction {index}")):
            cls = 1 if classes is None or classes[index] is None else int(classes[index][object_id])
            score = 1.0 if scores is None or scores[index] is None else float(scores[index][object_id])
            results.append({"image_id": index + 1, "category_id": cls, "score": score, **_annotation(rle)})
    return results


def write_coco_results(path: str | Path, preds, classes=None, scores=None) -> Path:
    """Write :func:`coco_results` as a JSON file (atomically); ``pycocotools.coco.COCO.loadRes`` reads it."""
    from pixelwise.fileio import atomic_write_text

    return atomic_write_text(path, json.dumps(coco_results(preds, classes, scores)))


def read_coco_results(path: str | Path) -> dict[int, tuple[np.ndarray, dict[int, int], dict[int, float]]]:
    """Read a COCO results JSON (compressed or uncompressed RLE ``segmentation``) back into instance-id images.

    Returns:
        ``{image_id: (labels, classes, scores)}``: int32 H×W ids 1..K in file order, and id → category / score.
        Results may overlap where label images cannot: a shared pixel goes to the higher-scoring object (the
        first in the file on equal scores), and an object left with no pixel keeps its id and entries.

    Raises:
        PixelwiseError: unreadable JSON, or an entry without ``image_id``/``segmentation`` with a size.
    """
    from pycocotools import mask as mask_utils

    from pixelwise.data.instances_io import decode_rle
    from pixelwise.errors import PixelwiseError

    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PixelwiseError(f"{path}: not a readable COCO results JSON ({err}); write it again") from None
    if not isinstance(entries, list):
        raise PixelwiseError(
            f"{path}: a COCO results file holds a JSON list of detections, not a {type(entries).__name__}; write a list"
        )
    grouped: dict[int, list[dict]] = {}
    for number, entry in enumerate(entries):
        segmentation = entry.get("segmentation") if isinstance(entry, dict) else None
        if not isinstance(segmentation, dict) or "size" not in segmentation or "image_id" not in entry:
            raise PixelwiseError(
                f"{path}: detection {number} lacks image_id or an RLE segmentation with size; write RLE masks"
            )
        grouped.setdefault(int(entry["image_id"]), []).append(entry)
    out = {}
    for image_id, group in grouped.items():
        height, width = (int(v) for v in group[0]["segmentation"]["size"])
        labels = np.zeros((height, width), dtype=np.int32)
        classes, scores = {}, {}
        ranked = sorted(range(len(group)), key=lambda k: (float(group[k].get("score", 1.0)), -k))
        for k in ranked:  # lowest score first, so higher scores paint over it
            entry = group[k]
            rle = dict(entry["segmentation"])
            if isinstance(rle["counts"], list):
                rle = mask_utils.frPyObjects(rle, height, width)
            elif isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            labels[decode_rle(rle)] = k + 1
            classes[k + 1] = int(entry.get("category_id", 1))
            scores[k + 1] = float(entry.get("score", 1.0))
        out[image_id] = (labels, classes, scores)
    return out
