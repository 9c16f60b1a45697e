"""Instance segmentation as a three-part semantic task: every object's interior, the border, the background.

The DSB 2018 winners' "U-Net 3-class" design (docs/experiments.md, "Instance segmentation: which design"): an
instance-id image (int H×W, 0 = background, 1..N objects) is **encoded** into target classes that the whole
semantic path trains unchanged (losses, class weights, TTA, ONNX; a softmax over them):

* 0 background;
* 1 border (:data:`~pixelwise.data.classes.BORDER_CLASS`): each object's edge pixels and background pixels
  lying between two objects — what keeps touching objects apart;
* 2.. the interior of an object of class 1, 2, ... (``1 + class``).

**Decoding** turns the predicted probabilities back into objects by a seeded watershed: seeds are the connected
regions where the interior probability passes ``seed_threshold``; they flood the foreground (background
probability below 0.5) downhill on the interior probability, so each border pixel joins the seed it is closest
to in probability; seeds under ``MIN_SEED_AREA`` pixels are specks, not seeds (or, ``seeds="distance"``, the
seeds are the peaks of those regions' distance to their edge, one per bulb of two merged interiors). Foreground
regions that hold no seed (objects too small for an interior) become objects of their own. Objects below
``min_area`` pixels are dropped, and so are objects scoring under ``min_score``; each object's score is the mean
interior probability of its seed (of all its pixels when it has none) and its class the interior class with the
most probability over its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pixelwise.choices import Choice, table
from pixelwise.data.classes import BORDER_CLASS, IGNORE
from pixelwise.masks.overlay import instance_overlay

#: Bump when :func:`encode_targets` changes: cached training arrays of instance data are keyed by it.
ENCODING_VERSION = 1
#: First interior class; an object of class c (≥ 1) has interior class ``BORDER_CLASS + c``.
FIRST_INTERIOR = BORDER_CLASS + 1
#: Seeds: connected pixels whose summed interior probability is above this.
SEED_THRESHOLD = 0.5
#: Foreground: pixels whose background probability is below 1 − this.
FOREGROUND_THRESHOLD = 0.5
#: The thresholds training tries on its validation split (``train.loop.choose_decode_on_validation``); the run
#: records the pair with the best DSB 2018 score (``RunRecord.decode``).
SEED_GRID = (0.5, 0.6, 0.7, 0.8)
FOREGROUND_GRID = (0.3, 0.4, 0.5)
#: Objects whose score (mean interior probability of the seed) is below this are dropped; 0 keeps every object.
MIN_SCORE = 0.0
#: The minimum scores training tries with each threshold pair (StarDist tunes its probability threshold on
#: validation the same way). On DSB 2018's validation split (dsb-default's weights, flips, 2026-12-06) dropping
#: objects under 0.9 raised the DSB score 0.538 → 0.557 and StarDist's accuracy at IoU 0.5 0.674 → 0.732: most
#: of what it drops is foreground no seed reached (stained tissue, specks), whose score is low.
MIN_SCORE_GRID = (0.0, 0.8, 0.85, 0.9, 0.93)
#: Where seeds come from (``decode_instances(seeds=...)``): ``regions``, each connected region of interior
#: probability above the seed threshold; ``distance``, each peak of that region's distance to its edge (a
#: Gaussian-smoothed Euclidean distance transform, peaks at least ``DISTANCE_PEAK_HEIGHT`` px above their
#: surroundings), so a dumbbell of two touching nuclei whose interiors merged gets one seed per bulb. Peaks split
#: long or branched objects too (a person's head and torso), so training chooses between them on validation.
SEED_SOURCES = ("regions", "distance")
#: Smoothing (px) of the distance transform and the peak height (px) of ``distance`` seeds. On DSB 2018's
#: validation split (dsb-default's weights, flips, score ≥ 0.8) the six best settings tried were all distance
#: seeds with σ 1–1.5 (DSB 0.569–0.571, σ 1.5 with height 0.5 the best) against 0.557 for the best region seeds
#: (docs/experiments.md, "Instances: a minimum object score and distance seeds").
DISTANCE_SIGMA = 1.5
DISTANCE_PEAK_HEIGHT = 0.5
#: Seeds of fewer pixels are no seeds: a speck of interior probability inside one nucleus split it in two. On
#: DSB 2018's validation split (dsb-default, 2026-12-06) 8 px cut splits and raised the DSB score 0.503 → 0.510
#: and StarDist's accuracy at IoU 0.5 0.610 → 0.628 (docs/experiments.md, "Instances: where the errors
#: are").
MIN_SEED_AREA = 8


@dataclass(frozen=True)
class TaskSpec(Choice):
    """A ``--task``: what a run learns to give per image."""


#: ``--task``: one row per task.
TASKS = table(
    TaskSpec("auto", "instances for instance data (DSB 2018, Penn-Fudan, VOC SegmentationObject), else semantic"),
    TaskSpec("semantic", "one class per pixel (masks of class indices)"),
    TaskSpec(
        "instances",
        "every object its own mask: interior/border/background classes decoded by a seeded watershed; "
        "on class masks each connected region of a class is one object",
    ),
)


# ----------------------------------------------------------------------------------------------------------------
# Encoding (training targets)


def encode_targets(
    labels: np.ndarray, classes: dict[int, int] | None = None, void: np.ndarray | None = None, width: int = 1
) -> np.ndarray:
    """Instance ids → target classes (module doc): 0 background, 1 border, ``1 + class`` interior, 255 void.

    Args:
        labels: integer H×W instance ids, 0 = background (negative values are void, as
            :func:`resize_instances` marks letterbox bands).
        classes: object id → class ≥ 1; None: every object class 1.
        void: bool H×W pixels that count in no loss (VOC border, COCO crowd), or None.
        width: border width in pixels (the edge band of each object; background gaps up to ``2·width`` between
            two objects are border too).

    Returns:
        uint8 H×W. An object too small to keep an interior after its edge is taken keeps all of its pixels as
        interior, so every object is present in the targets.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    void_mask = labels < 0
    if void is not None:
        void_mask = void_mask | np.asarray(void, dtype=bool)
    ids = np.where(void_mask, 0, labels).astype(np.int64)
    size = 2 * width + 1
    high = ndimage.maximum_filter(ids, size=size, mode="nearest")
    low = ndimage.minimum_filter(ids, size=size, mode="nearest")
    big = int(ids.max()) + 1 if ids.size else 1
    low_object = ndimage.minimum_filter(np.where(ids > 0, ids, big), size=size, mode="nearest")
    inside = ids > 0
    edge = inside & ((high != ids) | (low != ids))
    gap = ~inside & (low_object != big) & (low_object != high)
    top = int(ids.max()) if ids.size else 0
    class_of = np.ones(top + 1, dtype=np.int64)
    if classes is not None:
        for object_id, cls in classes.items():
            if 0 < object_id <= top:
                class_of[object_id] = int(cls)
    class_of[0] = 0
    # Objects whose every pixel is edge keep them all as interior.
    kept_interior = np.bincount(ids[inside & ~edge], minlength=top + 1)
    no_interior = kept_interior == 0
    edge &= ~no_interior[ids]
    targets = np.zeros(ids.shape, dtype=np.uint8)
    targets[inside] = (BORDER_CLASS + class_of[ids[inside]]).astype(np.uint8)
    targets[edge | gap] = BORDER_CLASS
    targets[void_mask] = IGNORE
    return targets


def resize_instances(labels: np.ndarray, size: int, fit: str = "stretch") -> np.ndarray:
    """Instance ids at the network's S×S, placed as the image is (:func:`~pixelwise.data.imageio.fit_box`):
    int32, nearest neighbour, letterbox bands −1 (void for :func:`encode_targets`)."""
    from pixelwise.data.imageio import fit_box, resize_nearest

    top, left, rows, cols = fit_box(labels.shape[0], labels.shape[1], size, fit)
    resized = resize_nearest(np.asarray(labels, dtype=np.int32), rows, cols)
    if (rows, cols) == (size, size):
        return resized
    out = np.full((size, size), -1, dtype=np.int32)
    out[top : top + rows, left : left + cols] = resized
    return out


def pack_instances(
    image: np.ndarray,
    labels: np.ndarray,
    classes: dict[int, int] | None,
    void: np.ndarray | None,
    size: int,
    fit: str = "stretch",
) -> np.ndarray:
    """One training pair of instance data: uint8 4×S×S, planes 0-2 the resized RGB image, plane 3 the targets
    encoded **at the network's size** (so the border stays one pixel wide whatever the image's scale)."""
    from pixelwise.data.imageio import resize_image

    packed = np.empty((4, size, size), dtype=np.uint8)
    packed[:3] = resize_image(image, size, fit)
    ids = np.asarray(labels, dtype=np.int32)
    if void is not None:
        ids = np.where(void, -1, ids)
    packed[3] = encode_targets(resize_instances(ids, size, fit), classes)
    return packed


def pack_instances_scaled(
    image: np.ndarray, labels: np.ndarray, classes: dict[int, int] | None, void: np.ndarray | None, scale: float
) -> np.ndarray:
    """As :func:`pack_instances` for tiled runs: the pair resized by ``scale`` (aspect kept,
    :func:`~pixelwise.data.imageio.resize_scaled`), uint8 4×H'×W', targets encoded at that size."""
    from pixelwise.data.imageio import resize_nearest, resize_scaled

    scaled = resize_scaled(image, scale)
    packed = np.empty((4, *scaled.shape[:2]), dtype=np.uint8)
    packed[:3] = scaled.transpose(2, 0, 1)
    ids = np.asarray(labels, dtype=np.int32)
    if void is not None:
        ids = np.where(void, -1, ids)
    packed[3] = encode_targets(resize_nearest(ids, *scaled.shape[:2]), classes)
    return packed


# ----------------------------------------------------------------------------------------------------------------
# Decoding (predictions)


@dataclass(frozen=True, eq=False)
class InstanceSet:
    """The objects of one image.

    Attributes:
        labels: H×W instance ids, 0 = background, objects 1..N: uint16 (int32 beyond 65535 objects).
        classes: object id → class ≥ 1 (index into the run's object classes + 1).
        scores: object id → confidence in 0..1 (mean interior probability).
        class_names: object class names, ``class_names[c - 1]`` names class c.
    """

    labels: np.ndarray
    classes: dict[int, int] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    class_names: tuple[str, ...] = ("object",)

    @property
    def count(self) -> int:
        return len(self.classes)

    def rows(self, image_id: str = "image") -> list[dict[str, Any]]:
        """One row per object (``instances.csv``): ``image, instance, class, area_px, bbox_x, bbox_y, bbox_width,
        bbox_height, centroid_x, centroid_y, score``."""
        from scipy import ndimage

        if not self.count:
            return []
        ids = sorted(self.classes)
        boxes = ndimage.find_objects(self.labels.astype(np.int64, copy=False), max_label=max(ids))
        flat = self.labels.ravel().astype(np.int64, copy=False)
        areas = np.bincount(flat, minlength=max(ids) + 1)
        ys, xs = np.indices(self.labels.shape)
        sum_y = np.bincount(flat, weights=ys.ravel(), minlength=max(ids) + 1)
        sum_x = np.bincount(flat, weights=xs.ravel(), minlength=max(ids) + 1)
        rows = []
        for object_id in ids:
            box = boxes[object_id - 1]
            if box is None:
                continue
            cls = self.classes[object_id]
            rows.append(
                {
                    "image": image_id,
                    "instance": object_id,
                    "class": self.class_names[cls - 1] if 0 < cls <= len(self.class_names) else str(cls),
                    "area_px": int(areas[object_id]),
                    "bbox_x": int(box[1].start),
                    "bbox_y": int(box[0].start),
                    "bbox_width": int(box[1].stop - box[1].start),
                    "bbox_height": int(box[0].stop - box[0].start),
                    "centroid_x": round(float(sum_x[object_id] / areas[object_id]), 2),
                    "centroid_y": round(float(sum_y[object_id] / areas[object_id]), 2),
                    "score": round(float(self.scores.get(object_id, 1.0)), 4),
                }
            )
        return rows

    def above(self, min_score: float) -> InstanceSet:
        """These objects without those scoring under ``min_score``, renumbered 1..M in their order."""
        dropped = {k for k, score in self.scores.items() if score < min_score}
        if not dropped:
            return self
        kept = [k for k in sorted(self.classes) if k not in dropped]
        table_ = np.zeros(int(self.labels.max()) + 1, dtype=np.int64)
        table_[kept] = np.arange(1, len(kept) + 1)
        labels = table_[self.labels].astype(self.labels.dtype)
        return InstanceSet(
            labels,
            {new: self.classes[old] for new, old in enumerate(kept, 1)},
            {new: self.scores[old] for new, old in enumerate(kept, 1)},
            self.class_names,
        )

    def png_bytes(self) -> bytes:
        """The instance-id PNG (``<stem>_instances.png``): 8-bit greyscale up to 255 objects, else 16-bit."""
        from pixelwise.fileio import encode_png

        if self.labels.size and int(self.labels.max()) > 65535:
            raise ValueError(f"{int(self.labels.max())} objects: an instance-id PNG holds at most 65535")
        dtype = np.uint8 if not self.labels.size or int(self.labels.max()) <= 255 else np.uint16
        return encode_png(self.labels.astype(dtype))

    def overlay(self, image: np.ndarray, opacity: float = 0.4) -> np.ndarray:
        """uint8 H×W×3: ``image`` with each object filled in its own colour
        (:func:`~pixelwise.data.classes.instance_colour`) at ``opacity`` and outlined in it
        (:func:`~pixelwise.masks.overlay.instance_overlay`)."""
        return instance_overlay(image, self.labels, opacity)

    def overlay_png_bytes(self, image: np.ndarray) -> bytes:
        from pixelwise.fileio import encode_png

        return encode_png(self.overlay(image))

    def coco(self, image_id: int = 1) -> list[dict[str, Any]]:
        """COCO results of these objects (RLE masks, ``score``, ``category_id`` = class), ``image_id`` as given."""
        from pixelwise.evaluate.instance_metrics import coco_results

        results = coco_results([self.labels], [self.classes], [self.scores])
        for entry in results:
            entry["image_id"] = image_id
        return results


def decode_instances(
    probabilities: np.ndarray,
    min_area: int = 0,
    seed_threshold: float = SEED_THRESHOLD,
    foreground_threshold: float = FOREGROUND_THRESHOLD,
    class_names: tuple[str, ...] = ("object",),
    min_score: float = MIN_SCORE,
    seeds: str = "regions",
) -> InstanceSet:
    """Target-class probabilities → objects by a seeded watershed (module doc).

    Args:
        probabilities: float32 K×H×W in 0..1 (K ≥ 3: background, border, one interior per object class), summing
            to 1 over K, at the image's own size.
        min_area: objects with fewer pixels are dropped.
        seed_threshold: seeds are connected pixels whose interior probability (summed over the object classes)
            is above it.
        foreground_threshold: the watershed floods pixels whose background probability is below
            ``1 - foreground_threshold``.
        class_names: the object classes' names (for :meth:`InstanceSet.rows`).
        min_score: objects whose score is below it are dropped (:meth:`InstanceSet.above`).
        seeds: one of :data:`SEED_SOURCES`: the interior's connected regions, or its distance peaks.

    Returns:
        An :class:`InstanceSet`, objects numbered 1..N in raster order of their first pixel.

    Raises:
        ValueError: fewer than 3 channels (not an instance run's output).
    """
    probs = np.asarray(probabilities, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] < FIRST_INTERIOR + 1:
        raise ValueError(f"expected K×H×W probabilities with K ≥ 3 (background, border, interior), got {probs.shape}")
    interiors = probs[FIRST_INTERIOR:]
    interior = interiors.sum(axis=0)
    foreground = probs[0] < 1.0 - foreground_threshold
    if seeds not in SEED_SOURCES:
        raise ValueError(f"seeds must be one of {SEED_SOURCES}, got {seeds!r}")
    return _flood(interior, foreground, interiors, seed_threshold, min_area, class_names, seeds).above(min_score)


def decode_labels(labels: np.ndarray, num_classes: int, min_area: int = 0, class_names=("object",)) -> InstanceSet:
    """Objects from target class indices alone (uint8 H×W, e.g. an engine that gives labels only): the
    one-hot probabilities of ``labels`` decoded by :func:`decode_instances`."""
    labels = np.asarray(labels)
    onehot = np.zeros((num_classes, *labels.shape), dtype=np.float32)
    for cls in range(num_classes):
        onehot[cls] = labels == cls
    onehot[0] += labels >= num_classes  # void (255) and other values: no object
    return decode_instances(onehot, min_area=min_area, class_names=class_names)


def _flood(
    interior: np.ndarray,
    foreground: np.ndarray,
    interiors: np.ndarray,
    seed_threshold: float,
    min_area: int,
    class_names: tuple[str, ...],
    seed_source: str = "regions",
) -> InstanceSet:
    from scipy import ndimage
    from skimage.segmentation import watershed

    eight = np.ones((3, 3), dtype=bool)
    core = (interior > seed_threshold) & foreground
    if seed_source == "distance":
        seeds, count = _distance_seeds(core)
    else:
        seeds, count = ndimage.label(core, structure=eight)
        if count:
            seeds, count = _drop_small(seeds, count, MIN_SEED_AREA)
    if count:
        flooded = watershed(-interior, markers=seeds, mask=foreground, connectivity=2)
    else:
        flooded = np.zeros(interior.shape, dtype=np.int32)
    # Foreground that no seed reached: objects without an interior of their own.
    orphans, extra = ndimage.label(foreground & (flooded == 0), structure=eight)
    if extra:
        flooded = np.where(orphans > 0, orphans + count, flooded)
    total = count + extra
    flat = flooded.ravel().astype(np.int64)
    areas = np.bincount(flat, minlength=total + 1)
    keep = areas >= max(1, min_area)
    keep[0] = False
    # Renumber the kept objects 1..N in raster order of their first pixel.
    first = np.full(total + 1, flat.size, dtype=np.int64)
    np.minimum.at(first, flat, np.arange(flat.size))
    order = [int(k) for k in np.argsort(first, kind="stable") if keep[k]]
    table_ = np.zeros(total + 1, dtype=np.int64)
    table_[order] = np.arange(1, len(order) + 1)
    renumbered = table_[flat].reshape(flooded.shape)
    dtype = np.uint16 if len(order) <= 65535 else np.int32
    labels = renumbered.astype(dtype)
    if not order:
        return InstanceSet(labels, {}, {}, class_names)
    index = np.arange(1, len(order) + 1)
    # Score: the mean interior probability of the object's seed (all its pixels when it has none).
    in_seed = np.where(interior > seed_threshold, renumbered, 0)
    seed_pixels = np.bincount(in_seed.ravel(), minlength=len(order) + 1)[1:]
    scores = np.where(
        seed_pixels > 0,
        ndimage.sum(interior, labels=in_seed, index=index) / np.maximum(seed_pixels, 1),
        ndimage.mean(interior, labels=renumbered, index=index),
    )
    class_mass = np.stack([ndimage.sum(channel, labels=renumbered, index=index) for channel in interiors])
    classes = {int(k): int(class_mass[:, k - 1].argmax()) + 1 for k in index}
    return InstanceSet(
        labels, classes, {int(k): float(np.clip(s, 0.0, 1.0)) for k, s in zip(index, scores)}, class_names
    )


def _distance_seeds(core: np.ndarray) -> tuple[np.ndarray, int]:
    """Seeds at the peaks of ``core``'s smoothed distance to its edge (``SEED_SOURCES``): ``(labels, count)``.
    A core region too thin for a peak gets no seed: a neighbour's seed floods it, or it is foreground no seed
    reached (an object of its own, as in region decoding).

    Each core region is handled in its own bounding box (with a margin for the smoothing): the regional maxima of
    a whole 1024² image cost ~40× more than those of its few hundred small boxes."""
    from scipy import ndimage
    from skimage.morphology import h_maxima

    eight = np.ones((3, 3), dtype=bool)
    regions, count = ndimage.label(core, structure=eight)
    peaks = np.zeros(core.shape, dtype=bool)
    margin = int(np.ceil(3 * DISTANCE_SIGMA)) + 1
    for index, box in enumerate(ndimage.find_objects(regions), start=1):
        box = tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in box)
        region = regions[box] == index
        distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(region), DISTANCE_SIGMA)
        peaks[box] |= h_maxima(distance, DISTANCE_PEAK_HEIGHT).astype(bool) & region
    labels, count = ndimage.label(peaks, structure=eight)
    return labels.astype(np.int32), count


def _drop_small(labels: np.ndarray, count: int, min_area: int) -> tuple[np.ndarray, int]:
    """Connected regions ``1..count`` of ``labels`` with at least ``min_area`` pixels, renumbered ``1..kept``."""
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    keep = areas >= min_area
    keep[0] = False
    table_ = np.zeros(count + 1, dtype=labels.dtype)
    table_[keep] = np.arange(1, int(keep.sum()) + 1)
    return table_[labels], int(keep.sum())


# ----------------------------------------------------------------------------------------------------------------
# Data statistics (``data check``)


def touching_pairs(labels: np.ndarray) -> int:
    """Pairs of distinct objects of an instance-id image that touch (8-neighbours)."""
    labels = np.asarray(labels, dtype=np.int64)
    pairs: set[tuple[int, int]] = set()
    shifted = (
        (labels[:, :-1], labels[:, 1:]),
        (labels[:-1, :], labels[1:, :]),
        (labels[:-1, :-1], labels[1:, 1:]),
        (labels[:-1, 1:], labels[1:, :-1]),
    )
    for a, b in shifted:
        hit = (a != b) & (a > 0) & (b > 0)
        if hit.any():
            low, high = np.minimum(a[hit], b[hit]), np.maximum(a[hit], b[hit])
            pairs.update(zip(low.tolist(), high.tolist()))
    return len(pairs)


def object_areas(labels: np.ndarray) -> np.ndarray:
    """int64 (N,): pixels of each object present, in id order."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel())
    counts[0] = 0
    return counts[counts > 0]
