"""The embedded synthetic instance set (``pixelwise data synth --task instances``): fluorescence-like images of
nuclei, many touching, written in the DSB 2018 layout, so the instance path runs without a download.

Each image (``size``×``size``): a dark background with smooth uneven light; 6 to 30 nuclei, ellipses with radii of
3–12 % of the side, any orientation, each with its own brightness and a fine texture; about half are placed
against the previous nucleus so the two touch (a later nucleus takes only pixels no earlier one holds, as DSB's
masks never overlap, and is left out when earlier ones hide a quarter of it); the optics blur, then camera noise.
Written as Kaggle ships DSB 2018: ``OUT/<id>/images/<id>.png`` (RGBA, grey in R, G and B) and
``OUT/<id>/masks/<k>.png`` (0/255, one nucleus each).

Deterministic like the lesion set (:mod:`pixelwise.data.synth`): sample ``i`` is drawn from its own generator seeded
with ``(seed, i)``, so the same seed and size give byte-identical files and growing ``n`` keeps earlier samples.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from pixelwise.data.synth import check_parameters, sample_rng, smooth_noise, stem_for, write_synth_set
from pixelwise.fileio import save_png

SYNTH_NUCLEI_VERSION = 1
MIN_NUCLEI, MAX_NUCLEI = 6, 30
#: Radii as a fraction of the image side.
MIN_RADIUS, MAX_RADIUS = 0.03, 0.12
#: Chance that a nucleus is placed touching the previous one.
TOUCHING = 0.5
#: A nucleus keeping fewer pixels than this, or losing more than MAX_HIDDEN of its ellipse to earlier ones, is not
#: drawn.
MIN_PIXELS = 6
MAX_HIDDEN = 0.25


def nuclei_labels(rng: np.random.Generator, size: int) -> np.ndarray:
    """int32 size×size instance ids (0 background, 1..N nuclei, no overlaps) of one synthetic image."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    labels = np.zeros((size, size), dtype=np.int32)
    count = int(rng.integers(MIN_NUCLEI, MAX_NUCLEI + 1))
    previous = None
    next_id = 1
    for _ in range(count):
        ry, rx = (rng.uniform(MIN_RADIUS, MAX_RADIUS, 2) * size).astype(np.float32)
        ry = max(float(ry), 1.5)
        rx = max(float(rx), 1.5)
        angle = rng.uniform(0.0, math.pi)
        if previous is not None and rng.random() < TOUCHING:
            (py, px), reach = previous
            direction = rng.uniform(0.0, 2.0 * math.pi)
            distance = 0.95 * (reach + 0.5 * (rx + ry))  # a little overlap: the later one yields, the two touch
            cy, cx = py + distance * math.sin(direction), px + distance * math.cos(direction)
        else:
            cy, cx = rng.uniform(0.0, size, 2)
        cos, sin = math.cos(angle), math.sin(angle)
        u = (xx - cx) * cos + (yy - cy) * sin
        v = -(xx - cx) * sin + (yy - cy) * cos
        inside = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        free = inside & (labels == 0)
        # A nucleus mostly hidden behind earlier ones would be a sliver, not a nucleus: it is not drawn.
        if int(free.sum()) >= max(MIN_PIXELS, (1.0 - MAX_HIDDEN) * int(inside.sum())):
            labels[free] = next_id
            next_id += 1
        previous = ((cy, cx), 0.5 * (rx + ry))
    return labels


def render_nuclei(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """uint8 H×W grey fluorescence-like image of ``labels`` (instance ids)."""
    size = labels.shape[0]
    background = 18.0 + 10.0 * smooth_noise(rng, size, 4)
    brightness = np.concatenate([[0.0], rng.uniform(90.0, 200.0, int(labels.max()))]).astype(np.float32)
    texture = 1.0 + 0.12 * smooth_noise(rng, size, max(13, size // 6))
    signal = brightness[labels] * texture
    image = ndimage.gaussian_filter(np.where(labels > 0, signal, background).astype(np.float32), 0.8)
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def make_synth_nuclei(out: Path, n: int, size: int, seed: int, progress: bool = True) -> Path:
    """Write ``n`` synthetic nuclei images in the DSB 2018 layout under ``out`` (module doc).

    ``out/synth.json`` records the parameters; a folder that already holds this exact set is returned as is (an
    interrupted one is completed), any other non-empty folder is refused.

    Returns:
        ``out``.

    Raises:
        PixelwiseError: bad ``n``/``size``/``seed``, or ``out`` is a file or a non-empty folder that is not this set.
    """
    out = Path(out)
    check_parameters(n, size, seed)
    manifest = {
        "generator": "pixelwise.data.synth_nuclei",
        "version": SYNTH_NUCLEI_VERSION,
        "n": n,
        "size": size,
        "seed": seed,
    }
    stems = [stem_for(i, n) for i in range(n)]

    def all_written() -> bool:
        return all((out / stem / "images" / f"{stem}.png").exists() for stem in stems)

    def write_sample(index: int) -> None:
        rng = sample_rng(seed, index)
        labels = nuclei_labels(rng, size)
        grey = render_nuclei(rng, labels)
        stem = stems[index]
        for k in range(1, int(labels.max()) + 1):
            save_png(out / stem / "masks" / f"nucleus_{k:03d}.png", (labels == k).astype(np.uint8) * np.uint8(255))
        # The image last: its presence marks the sample written (an interrupted set is written again).
        save_png(out / stem / "images" / f"{stem}.png", np.dstack([grey, grey, grey, np.full_like(grey, 255)]))

    what = f"synth nuclei {n}×{size}px" if progress else None
    return write_synth_set(out, manifest, n, all_written, write_sample, what)
