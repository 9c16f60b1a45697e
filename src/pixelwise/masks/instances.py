"""Instances from a semantic mask: each 8-connected foreground region is one instance.

A semantic mask says *which pixels* are lesion; instances say *how many lesions* and describe each one:
area, bounding box, centroid, equivalent diameter, perimeter and an asymmetry measure. Geometry is in
pixels, with x = column and y = row, origin at the top-left pixel's centre.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from scipy import ndimage

from pixelwise.masks.postprocess import label_regions

#: Columns of ``instances.csv``, in order.
INSTANCE_COLUMNS = (
    "image",
    "instance",
    "area_px",
    "area_percent",
    "bbox_x",
    "bbox_y",
    "bbox_width",
    "bbox_height",
    "centroid_x",
    "centroid_y",
    "equivalent_diameter",
    "perimeter",
    "asymmetry_major",
    "asymmetry_minor",
    "asymmetry",
)


def instances_from_mask(mask, image_id: str, min_area: int = 0, keep_largest: bool = False) -> list[dict[str, Any]]:
    """Describe each connected region of a binary mask.

    Args:
        mask: bool (or 0/1) H×W predicted mask.
        image_id: written in the ``image`` column.
        min_area: regions smaller than this many pixels are dropped (specks).
        keep_largest: keep only the largest region.

    Returns:
        One dict per region with the :data:`INSTANCE_COLUMNS`, regions numbered 1..K in raster order
        of their first pixel:

        * ``area_px``, ``area_percent`` (of the image's pixels);
        * ``bbox_x, bbox_y, bbox_width, bbox_height``: the first column/row and the size, pixels;
        * ``centroid_x, centroid_y``: mean column and row;
        * ``equivalent_diameter``: diameter of the disk of the same area, ``sqrt(4·area/π)``;
        * ``perimeter``: length of the region's outer border (marching-squares contour at 0.5 of the
          hole-filled region), pixels; see :func:`outer_perimeter` for its bias;
        * ``asymmetry_major`` / ``asymmetry_minor``: ``1 − Jaccard(region, its mirror image)`` about the
          principal axis through the centroid (0 = symmetric, up to 1); ``asymmetry``: their mean.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected an H×W mask, got shape {mask.shape}")
    labels, count = label_regions(mask)
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    kept = [label for label in range(1, count + 1) if areas[label] >= max(min_area, 1)]
    if keep_largest and kept:
        kept = [max(kept, key=lambda label: (areas[label], -label))]
    boxes = ndimage.find_objects(labels)
    rows = []
    for number, label in enumerate(kept, start=1):
        box = boxes[label - 1]
        region = labels[box] == label
        rows.append(_describe(region, box, image_id, number, mask.size))
    return rows


def _describe(region: np.ndarray, box: tuple[slice, slice], image_id: str, number: int, image_pixels: int) -> dict:
    """The instance columns of one region, given as its bool crop ``region`` at ``box``."""
    ys, xs = np.nonzero(region)
    area = int(ys.size)
    cy, cx = float(ys.mean()), float(xs.mean())
    asym_major, asym_minor = mirror_asymmetry(region)
    return {
        "image": image_id,
        "instance": number,
        "area_px": area,
        "area_percent": 100.0 * area / image_pixels,
        "bbox_x": int(box[1].start),
        "bbox_y": int(box[0].start),
        "bbox_width": int(box[1].stop - box[1].start),
        "bbox_height": int(box[0].stop - box[0].start),
        "centroid_x": cx + box[1].start,
        "centroid_y": cy + box[0].start,
        "equivalent_diameter": math.sqrt(4.0 * area / math.pi),
        "perimeter": outer_perimeter(region),
        "asymmetry_major": asym_major,
        "asymmetry_minor": asym_minor,
        "asymmetry": (asym_major + asym_minor) / 2.0,
    }


def outer_perimeter(region: np.ndarray) -> float:
    """Length in pixels of the outer border of one bool H×W region (holes filled first).

    The border is the 0.5 iso-contour (marching squares, via contourpy) of the zero-padded mask, a
    polygon through the edge midpoints between inside and outside pixels. Like every digital
    estimate it depends on the pixel grid: it is exact for axis-aligned rectangles (minus the cut
    corners) and overestimates smooth round borders by about 6 % (a disk of radius 40 px gives 267
    instead of 251). Compare perimeters computed the same way.
    """
    import contourpy

    filled = ndimage.binary_fill_holes(region)
    padded = np.pad(filled, 1).astype(np.float64)
    lines = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate).lines(0.5)
    total = 0.0
    for line in lines:
        points = np.asarray(line, dtype=np.float64)
        if len(points) > 1:
            total += float(np.hypot(*np.diff(points, axis=0).T).sum())
    return total


def principal_axes(region: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid ``(y, x)`` and unit major/minor axis directions ``(dy, dx)`` of a bool H×W region."""
    points = np.argwhere(region).astype(np.float64)
    centroid = points.mean(axis=0)
    centred = points - centroid
    covariance = centred.T @ centred / max(len(points), 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    return centroid, eigenvectors[:, 1], eigenvectors[:, 0]


def mirror_asymmetry(region: np.ndarray) -> tuple[float, float]:
    """``1 − Jaccard(region, mirror)`` for the mirrors about the major and the minor principal axis.

    Args:
        region: bool H×W, one region.

    Returns:
        ``(about_major, about_minor)`` in 0..1; 0 for a region symmetric about that axis. Mirroring
        samples the region at reflected pixel centres (bilinear, ≥ 0.5 is inside), so a perfectly
        symmetric but rotated digital shape scores a little above 0.
    """
    centroid, major, minor = principal_axes(region)
    # A canvas centred on the centroid that holds the region and any of its mirrors.
    points = np.argwhere(region)
    radius = int(math.ceil(np.sqrt(((points - centroid) ** 2).sum(axis=1)).max())) + 2
    top_left = np.floor(centroid).astype(int) - radius
    size = 2 * radius + 2
    canvas = np.zeros((size, size), dtype=np.float64)
    shifted = points - top_left
    canvas[shifted[:, 0], shifted[:, 1]] = 1.0
    inside = canvas >= 0.5
    centre = centroid - top_left
    grid = np.stack(np.mgrid[0:size, 0:size], axis=-1).reshape(-1, 2).astype(np.float64) - centre
    results = []
    for axis in (major, minor):
        # Reflection about the line through the centre along `axis`: d -> 2 (d·a) a − d.
        reflected = 2.0 * (grid @ axis)[:, None] * axis[None, :] - grid + centre
        mirrored = ndimage.map_coordinates(canvas, reflected.T, order=1, mode="constant", cval=0.0)
        mirrored = mirrored.reshape(size, size) >= 0.5
        union = np.count_nonzero(inside | mirrored)
        results.append(1.0 - np.count_nonzero(inside & mirrored) / union if union else 0.0)
    return float(results[0]), float(results[1])


def count_instances(rows: Iterable[dict[str, Any]], image_ids: Iterable[str]) -> dict[str, int]:
    """Instances per image, including 0 for images without any, in the order of ``image_ids``."""
    counts = {image_id: 0 for image_id in image_ids}
    for row in rows:
        counts[row["image"]] = counts.get(row["image"], 0) + 1
    return counts


#: Columns of an instance run's ``instances.csv`` (decoded objects: :meth:`InstanceSet.rows
#: <pixelwise.masks.instance_decode.InstanceSet.rows>`).
OBJECT_COLUMNS = (
    "image",
    "instance",
    "class",
    "area_px",
    "bbox_x",
    "bbox_y",
    "bbox_width",
    "bbox_height",
    "centroid_x",
    "centroid_y",
    "score",
)


def write_instances_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write instance rows to CSV (atomically) with the :data:`INSTANCE_COLUMNS` header, even when empty; rows of
    decoded objects (instance runs, with ``score``) with the :data:`OBJECT_COLUMNS` header."""
    import csv
    import io

    from pixelwise.fileio import atomic_write_text

    columns = OBJECT_COLUMNS if rows and "score" in rows[0] else INSTANCE_COLUMNS
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row[column]) for column in columns])
    return atomic_write_text(path, buffer.getvalue())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    return str(value)
