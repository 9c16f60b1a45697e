"""Synthetic instance data written in the DSB 2018 layout: discs on a textured background, some touching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def disc_labels(size: int, rng: np.random.Generator, count: int = 4) -> np.ndarray:
    """int32 size×size instance ids: ``count`` discs, the first two touching."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), dtype=np.int32)
    radius = size // 8
    cy, cx = int(rng.integers(radius + 2, size - 3 * radius - 2)), int(rng.integers(radius + 2, size // 2))
    centres = [(cy, cx), (cy, cx + 2 * radius)]  # touching along a vertical line
    while len(centres) < count:
        centres.append((int(rng.integers(radius, size - radius)), int(rng.integers(radius, size - radius))))
    for k, (y, x) in enumerate(centres, start=1):
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius
        labels[disc & (labels == 0)] = k
    return labels


def make_dsb(root: Path, n: int = 12, size: int = 64, seed: int = 0) -> Path:
    """``root/<id>/images/<id>.png`` (RGBA, as DSB) + ``root/<id>/masks/<k>.png`` (0/255, one object each)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        image_id = f"img{i:03d}"
        labels = disc_labels(size, rng)
        grey = 30 + rng.integers(0, 20, (size, size))
        grey = np.where(labels > 0, 200 - 15 * (labels % 3), grey).astype(np.uint8)
        rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
        (root / image_id / "images").mkdir(parents=True)
        (root / image_id / "masks").mkdir()
        Image.fromarray(rgba, "RGBA").save(root / image_id / "images" / f"{image_id}.png")
        for k in range(1, int(labels.max()) + 1):
            if (labels == k).any():
                Image.fromarray(((labels == k) * 255).astype(np.uint8)).save(root / image_id / "masks" / f"m{k}.png")
    return root


def make_pennfudan(root: Path, n: int = 2, size: int = 32) -> Path:
    """Penn-Fudan's ``PNGImages/`` + ``PedMasks/<stem>_mask.png`` (instance ids 0..N)."""
    rng = np.random.default_rng(1)
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    for i in range(n):
        labels = disc_labels(size, rng, count=3)
        Image.fromarray(np.dstack([(labels * 60).astype(np.uint8)] * 3)).save(root / "PNGImages" / f"P{i:03d}.png")
        Image.fromarray(labels.astype(np.uint8)).save(root / "PedMasks" / f"P{i:03d}_mask.png")
    return root


def make_voc_objects(root: Path, n: int = 2, size: int = 32) -> Path:
    """VOC2012's ``JPEGImages/``, ``SegmentationObject/`` and ``SegmentationClass/`` (class 15, person)."""
    rng = np.random.default_rng(2)
    for name in ("JPEGImages", "SegmentationObject", "SegmentationClass"):
        (root / name).mkdir(parents=True)
    for i in range(n):
        labels = disc_labels(size, rng, count=2)
        Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(root / "JPEGImages" / f"2007_{i:06d}.jpg")
        Image.fromarray(labels.astype(np.uint8)).save(root / "SegmentationObject" / f"2007_{i:06d}.png")
        Image.fromarray(((labels > 0) * 15).astype(np.uint8)).save(root / "SegmentationClass" / f"2007_{i:06d}.png")
    return root
