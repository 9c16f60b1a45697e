"""Object and class size statistics of a data set's masks: what decides whether images can be squashed into
one small square or must be seen at (nearly) their own resolution in tiles (:mod:`pixelwise.train.plan`), and
the object size buckets of ``evaluate``'s report.

An *object* is a connected region (8-neighbourhood) of one class in one mask. Its *thickness* is its area
divided by the longer side of its bounding box: the mean width of a pole or a strap, the diameter-ish of a
blob. Squashing an image scales a thickness by the squash factor; when that leaves a class's typical object
under a few pixels, the network cannot see it.

Size buckets (:func:`size_bucket`) are COCO's, on the object's area at the image's own resolution: small
< 32² px, medium < 96² px, large otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pixelwise.data.cache import read_training_mask
from pixelwise.data.classes import IGNORE, ClassMap
from pixelwise.data.layouts import Pair

#: COCO's object size thresholds (area in pixels at the image's resolution): small < 32², medium < 96².
SMALL_AREA = 32 * 32
MEDIUM_AREA = 96 * 96
SIZE_BUCKETS = ("small", "medium", "large")
#: 8-connectivity: a diagonal pole is one object, not a staircase of many.
CONNECTIVITY = np.ones((3, 3), dtype=bool)


def size_bucket(area: int) -> str:
    """``small`` (area < 32² px), ``medium`` (< 96² px) or ``large``: COCO's buckets."""
    return "small" if area < SMALL_AREA else "medium" if area < MEDIUM_AREA else "large"


def objects_of(mask: np.ndarray, class_index: int) -> tuple[np.ndarray, int]:
    """Connected regions of ``class_index`` in a uint8 H×W class-index mask: ``(int32 H×W region ids, count)``,
    ids 1..count, 0 elsewhere."""
    regions, count = ndimage.label(mask == class_index, structure=CONNECTIVITY)
    return regions, int(count)


def object_shapes(mask: np.ndarray, class_index: int) -> list[tuple[int, float]]:
    """``(area px, thickness px)`` of each object of ``class_index`` in a uint8 H×W class-index mask."""
    regions, count = objects_of(mask, class_index)
    if not count:
        return []
    areas = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    shapes = []
    for area, box in zip(areas, ndimage.find_objects(regions)):
        longer = max(box[0].stop - box[0].start, box[1].stop - box[1].start)
        shapes.append((int(area), float(area) / max(longer, 1)))
    return shapes


@dataclass(frozen=True)
class ClassObjects:
    """One foreground class's objects over the measured masks.

    Attributes:
        name: the class's name. images: masks containing it. pixel_fraction: its share of the measured
        (non-void) pixels, 0..1. objects: connected regions counted. median_area: px. median_thickness,
        low_thickness: the median and the 10th percentile of the objects' thickness, px (0 when no objects).
    """

    name: str
    images: int
    pixel_fraction: float
    objects: int
    median_area: float
    median_thickness: float
    low_thickness: float


@dataclass(frozen=True)
class ObjectStats:
    """Image sizes and per-class object sizes of a sample of masks (:func:`measure_objects`).

    Attributes:
        masks: masks measured. median_height, median_width: px. median_aspect: median width / height.
        classes: one row per foreground class (class 1 first).
    """

    masks: int
    median_height: float
    median_width: float
    median_aspect: float
    classes: list[ClassObjects] = field(default_factory=list)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def measure_objects(masks: Iterable[np.ndarray], names: Sequence[str]) -> ObjectStats:
    """Object statistics of uint8 H×W class-index masks (any sizes; :data:`IGNORE` = void, not counted).

    Args:
        masks: class-index masks at their images' own resolution.
        names: one name per class, background first (``len(names)`` = class count K ≥ 2).
    """
    num_classes = len(names)
    heights, widths = [], []
    pixels = np.zeros(num_classes, np.int64)
    images = np.zeros(num_classes, np.int64)
    shapes: list[list[tuple[int, float]]] = [[] for _ in range(num_classes)]
    for mask in masks:
        heights.append(mask.shape[0])
        widths.append(mask.shape[1])
        counts = np.bincount(mask.ravel(), minlength=256)
        pixels += counts[:num_classes]
        for class_index in range(1, num_classes):
            if counts[class_index]:
                images[class_index] += 1
                shapes[class_index] += object_shapes(mask, class_index)
    total = max(int(pixels.sum()), 1)
    rows = []
    for class_index in range(1, num_classes):
        found = shapes[class_index]
        areas = np.array([a for a, _ in found], np.float64)
        thickness = np.array([t for _, t in found], np.float64)
        rows.append(
            ClassObjects(
                name=names[class_index],
                images=int(images[class_index]),
                pixel_fraction=float(pixels[class_index]) / total,
                objects=len(found),
                median_area=float(np.median(areas)) if found else 0.0,
                median_thickness=float(np.median(thickness)) if found else 0.0,
                low_thickness=float(np.percentile(thickness, 10)) if found else 0.0,
            )
        )
    if not heights:
        return ObjectStats(0, 0.0, 0.0, 1.0, rows)
    aspect = np.median(np.asarray(widths, np.float64) / np.asarray(heights, np.float64))
    return ObjectStats(len(heights), float(np.median(heights)), float(np.median(widths)), float(aspect), rows)


#: Masks :func:`measure_pairs` reads (a seeded sample): enough for medians, read in seconds.
PLAN_SAMPLE = 64


def measure_pairs(
    pairs: Sequence[Pair], class_map: ClassMap, colors: dict | None = None, seed: int = 0, limit: int = PLAN_SAMPLE
) -> ObjectStats:
    """:func:`measure_objects` of up to ``limit`` masks of ``pairs`` (a seeded sample; pairs without a mask are
    skipped), read at their own resolution under ``class_map`` (merged classes, void → IGNORE)."""
    chosen = [pair for pair in pairs if pair.mask is not None]
    if len(chosen) > limit:
        picks = np.random.default_rng(seed).choice(len(chosen), limit, replace=False)
        chosen = [chosen[i] for i in sorted(picks)]
    void = tuple(class_map.ignored_values)
    masks = (class_map.apply(read_training_mask(pair, colors, void)) for pair in chosen)  # instance data: targets
    return measure_objects(masks, class_map.names)


def format_object_stats(stats: ObjectStats) -> list[str]:
    """Lines for ``data check``: image sizes, then each class's pixel share and object sizes."""
    lines = [
        f"object sizes ({stats.masks} masks measured): images {stats.median_width:.0f}×{stats.median_height:.0f} "
        f"px (median), aspect {stats.median_aspect:.2f}"
    ]
    for row in stats.classes:
        lines.append(
            f"  {row.name}: {row.pixel_fraction:.2%} of pixels, in {row.images} masks, {row.objects} objects, "
            f"median area {row.median_area:.0f} px ({size_bucket(int(row.median_area))}), thickness "
            f"{row.median_thickness:.1f} px (10 % under {row.low_thickness:.1f})"
        )
    return lines


def object_ious(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> list[tuple[int, str, float]]:
    """Per truth object: ``(class, size bucket, IoU)``.

    A truth object R of class c (a connected region; void pixels are in none) is compared with P, the union of
    the predicted regions of class c that touch it: IoU = |R ∩ P| / |R ∪ P| (0 for a missed object). A
    prediction that merges two objects counts its whole extent against each, so merging is penalised.

    Args:
        pred, truth: uint8 H×W class indices of the same shape (truth :data:`IGNORE` on void pixels).
    """
    out = []
    valid = truth != IGNORE
    for class_index in range(1, num_classes):
        truth_regions, count = objects_of(truth, class_index)
        if not count:
            continue
        pred_regions, pred_count = objects_of(np.where(valid, pred, 0), class_index)
        truth_area = np.bincount(truth_regions.ravel(), minlength=count + 1)
        pred_area = np.bincount(pred_regions.ravel(), minlength=pred_count + 1)
        # One joint histogram of (truth region, predicted region) pixel pairs: overlaps without a mask per object.
        joint = np.bincount(
            (truth_regions.astype(np.int64) * (pred_count + 1) + pred_regions).ravel(),
            minlength=(count + 1) * (pred_count + 1),
        ).reshape(count + 1, pred_count + 1)
        for region in range(1, count + 1):
            touched = np.flatnonzero(joint[region, 1:]) + 1
            inter = int(joint[region, touched].sum())
            union = int(truth_area[region]) + int(pred_area[touched].sum()) - inter
            out.append((class_index, size_bucket(int(truth_area[region])), inter / union if union else 0.0))
    return out


def summarize_object_ious(items: Iterable[tuple[int, str, float]]) -> dict:
    """``{bucket: {"objects": n, "mean_iou": x or None}}`` for small, medium and large (COCO's thresholds,
    :data:`SMALL_AREA`, :data:`MEDIUM_AREA`), pooled over the images and classes given."""
    by_bucket: dict[str, list[float]] = {bucket: [] for bucket in SIZE_BUCKETS}
    for _, bucket, iou in items:
        by_bucket[bucket].append(iou)
    return {
        bucket: {"objects": len(values), "mean_iou": float(np.mean(values)) if values else None}
        for bucket, values in by_bucket.items()
    }
