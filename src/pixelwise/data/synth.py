"""The embedded default data set: procedurally generated, dermoscopy-like images with lesion masks.

Every sample is drawn from its own generator, seeded from ``(seed, index)``, so a set is reproducible
byte for byte and growing ``n`` never changes the earlier samples. All geometry is defined in
normalised coordinates (the image spans -1..1 on both axes) and per-pixel noise comes from child
generators, so one seed gives the same scene at any ``size``; only pixel-level texture differs.

What makes the set hard for a darkness threshold (the baselines score mean Dice well below 0.8):

* skin tone, redness and brightness vary between images, and lighting varies inside an image;
* about a third of the lesions are low-contrast: a little darker than the skin, but browner;
* dark hairs cross lesion and skin; a dermoscope's dark circular vignette fills the corners;
  some images carry a ruler with thin dark ticks.

What keeps it learnable for a small CNN: the lesion is one compact blob (plus at most a few small
satellites, which are part of the mask) with a brown hue, uneven pigment and a pigment network, while
the distractors have their own shapes (hairs are long thin curves, the vignette is a ring at the rim,
ruler ticks are thin and regular, lighting is smooth).
"""

from __future__ import annotations

import cmath
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from pixelwise import reporting
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write_json, save_png

SYNTH_VERSION = 1
MANIFEST_NAME = "synth.json"
STEM_PREFIX = "synth_"
MIN_SIZE, MAX_SIZE = 32, 2048
# Lesion area as a fraction of the image; masks outside these bounds are redrawn.
MIN_LESION_FRACTION, MAX_LESION_FRACTION = 0.05, 0.40
# Hairs and ruler marks are drawn at this multiple of the output size, then box-filtered (anti-aliasing).
_SUPERSAMPLE = 4

_SKIN_LIGHT = np.array([0.93, 0.77, 0.69], dtype=np.float32)
_SKIN_DARK = np.array([0.66, 0.47, 0.37], dtype=np.float32)
# Pigment colours are relative to the skin (per-channel factors), so a lesion is browner and darker
# than its own skin whatever the skin tone: light (tan) brown and dark brown.
_PIGMENT_LIGHT = np.array([0.86, 0.74, 0.58], dtype=np.float32)
_PIGMENT_DARK = np.array([0.42, 0.30, 0.20], dtype=np.float32)
_PIGMENT_BLUE_GREY = np.array([0.36, 0.36, 0.44], dtype=np.float32)  # blue-white veil


# ----------------------------------------------------------------------------------------------
# Fields


def _pixel_centres(size: int) -> np.ndarray:
    """Pixel-centre coordinates along one axis, float32 of shape (size,), spanning -1..1."""
    return ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)


@lru_cache(maxsize=64)
def _rbf_basis(size: int, cells: int) -> np.ndarray:
    """Gaussian radial-basis weights, float32 (size, cells + 2): pixel i's weight for grid node j."""
    nodes = np.linspace(-1.0 - 2.0 / cells, 1.0 + 2.0 / cells, cells + 2, dtype=np.float32)
    spacing = float(nodes[1] - nodes[0])
    offsets = (_pixel_centres(size)[:, None] - nodes[None, :]) / spacing
    basis = np.exp(-0.5 * offsets**2).astype(np.float32)
    basis.setflags(write=False)
    return basis


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field, float32 (size, size), zero mean and unit std; about ``cells`` bumps across.

    Coarse fields (``cells`` <= 12) are ``B @ G @ B.T`` for a white-noise grid ``G`` and Gaussian basis
    ``B``, so their shape does not depend on ``size``; finer ones are blurred per-pixel white noise.
    The products use ``einsum`` rather than ``@``: a multi-threaded BLAS call on such tiny matrices
    is up to 20x slower on a busy machine.
    """
    if cells <= 12:
        basis = _rbf_basis(size, cells)
        coarse = rng.standard_normal((cells + 2, cells + 2), dtype=np.float32)
        field = np.einsum("ij,kj->ik", np.einsum("ij,jk->ik", basis, coarse), basis)
    else:
        white = _pixel_rng(rng).standard_normal((size, size), dtype=np.float32)
        field = ndimage.gaussian_filter(white, 0.7 * size / cells, mode="reflect", truncate=3.0)
    field -= field.mean()
    return field / (field.std() + 1e-6)


def _pixel_rng(rng: np.random.Generator) -> np.random.Generator:
    """A child generator for per-pixel noise; takes one draw from ``rng`` whatever the image size.

    So the scene (lesion, hairs, colours, ...) drawn from ``rng`` after it does not depend on ``size``.
    """
    return np.random.default_rng(int(rng.integers(0, 2**63)))


def _voronoi_network(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pigment network: the edges of a jittered-grid Voronoi diagram (a honeycomb-like mesh).

    Returns ``(lines, globules)``, float32 (size, size) in 0..1: line darkness, highest on cell
    borders, and dark dots at a random subset of the cell centres.
    """
    cells = int(rng.integers(14, 22))
    cell = 2.0 / cells
    # One jittered site per grid cell, with a one-cell margin so every pixel has 3x3 neighbours.
    width = cells + 2
    grid = np.arange(-1, cells + 1, dtype=np.float32)
    site_x = (-1.0 + (grid[None, :] + 0.5 + rng.uniform(-0.4, 0.4, (width, width))) * cell).astype(np.float32).ravel()
    site_y = (-1.0 + (grid[:, None] + 0.5 + rng.uniform(-0.4, 0.4, (width, width))) * cell).astype(np.float32).ravel()
    has_globule = (rng.random((width, width)) < rng.uniform(0.0, 0.3)).ravel()
    col = np.clip(((xx + 1.0) / cell).astype(np.int32), 0, cells - 1) + 1
    row = np.clip(((yy + 1.0) / cell).astype(np.int32), 0, cells - 1) + 1
    home = row * width + col
    # Running nearest and second-nearest squared site distance over the 3x3 neighbourhood.
    nearest = np.full(xx.shape, np.inf, np.float32)
    second = np.full(xx.shape, np.inf, np.float32)
    globule_site = np.zeros(xx.shape, bool)
    for offset in (-width - 1, -width, -width + 1, -1, 0, 1, width - 1, width, width + 1):
        site = home + offset
        distance = (xx - site_x[site]) ** 2 + (yy - site_y[site]) ** 2
        closer = distance < nearest
        second = np.minimum(second, np.maximum(nearest, distance))
        nearest = np.minimum(nearest, distance)
        globule_site = np.where(closer, has_globule[site], globule_site)
    nearest, second = np.sqrt(nearest), np.sqrt(second)
    lines = np.exp(-(((second - nearest) / (rng.uniform(0.15, 0.3) * cell)) ** 2))
    globules = globule_site * np.clip(1.5 - nearest / (0.22 * cell), 0, 1)
    return lines.astype(np.float32), globules.astype(np.float32)


def _supersampled_canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A black 8-bit canvas at ``_SUPERSAMPLE`` times ``size`` and a drawing handle for it."""
    canvas = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    return canvas, ImageDraw.Draw(canvas)


def _to_canvas(points: np.ndarray, size: int) -> list[tuple[float, float]]:
    """Normalised (x, y) points (-1..1), shape (K, 2), to supersampled-canvas pixel coordinates."""
    scale = size * _SUPERSAMPLE / 2.0
    return [(float(x), float(y)) for x, y in (points + 1.0) * scale]


def _canvas_alpha(canvas: Image.Image, size: int) -> np.ndarray:
    """Box-downsample a supersampled canvas to an anti-aliased coverage map, float32 (size, size) in 0..1."""
    small = canvas.resize((size, size), resample=Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# ----------------------------------------------------------------------------------------------
# Scene parts


def _lesion_mask(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw one irregular lesion (plus optional satellites) that lies mostly inside the frame.

    Returns the mask, bool (size, size), covering MIN..MAX_LESION_FRACTION of the image, and the
    lesion centre, float32 (2,) as normalised (x, y).
    """
    size = xx.shape[0]
    for _ in range(30):
        area = rng.uniform(0.07, 0.33)
        aspect = rng.uniform(0.6, 1.0)
        # An ellipse with semi-axes r0 and r0*aspect covers pi*r0^2*aspect of the 4-unit image.
        r0 = math.sqrt(area * 4.0 / (math.pi * aspect))
        reach = max(0.0, 0.92 - r0)
        centre = rng.uniform(-reach, reach, 2).astype(np.float32) if reach > 0 else np.zeros(2, np.float32)
        angle = rng.uniform(0, math.pi)
        cos_a, sin_a = math.cos(angle), math.sin(angle)
        dx, dy = xx - centre[0], yy - centre[1]
        u = dx * cos_a + dy * sin_a
        v = (-dx * sin_a + dy * cos_a) / aspect
        distance = np.sqrt(u**2 + v**2)
        # Irregular border: low radial harmonics (lobes) plus a smooth noise field (fine wiggles).
        # cos(k*theta + phase) = Re(unit^k * e^{i*phase}) with unit = e^{i*theta}: no trigonometry per pixel.
        unit = (u + 1j * v).astype(np.complex64) / (distance + 1e-6)
        irregularity = rng.uniform(0.04, 0.28)
        radius = np.ones_like(u)
        power = unit
        for k in range(2, 7):
            power = power * unit
            amplitude = rng.uniform(0, irregularity / math.sqrt(k))
            radius += (cmath.rect(amplitude, rng.uniform(0, 2 * math.pi)) * power).real
        rho = distance / (r0 * np.clip(radius, 0.4, None))
        rho += rng.uniform(0.03, 0.13) * smooth_noise(rng, size, 10)
        mask = rho < 1.0
        mask |= _satellites(rng, xx, yy, centre, r0)
        fraction = mask.mean()
        edge_pixels = mask[0].sum() + mask[-1].sum() + mask[:, 0].sum() + mask[:, -1].sum()
        if MIN_LESION_FRACTION <= fraction <= MAX_LESION_FRACTION and edge_pixels <= 0.08 * size:
            return mask, centre
    # Practically unreachable; a plain centred ellipse keeps the contract if it ever happens.
    return (xx / 0.6) ** 2 + (yy / 0.45) ** 2 < 1.0, np.zeros(2, np.float32)


def _satellites(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, centre: np.ndarray, r0: float) -> np.ndarray:
    """Zero to three small round blobs just outside the main lesion, bool (size, size)."""
    blobs = np.zeros(xx.shape, dtype=bool)
    if rng.random() >= 0.25:
        return blobs
    for _ in range(int(rng.integers(1, 4))):
        direction = rng.uniform(0, 2 * math.pi)
        distance = r0 * rng.uniform(1.0, 1.3)
        cx = float(centre[0]) + distance * math.cos(direction)
        cy = float(centre[1]) + distance * math.sin(direction)
        blobs |= (xx - cx) ** 2 + (yy - cy) ** 2 < rng.uniform(0.04, 0.07) ** 2
    return blobs


def _skin(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Skin background with tone, redness and texture variation.

    Returns ``(skin, tone)``: float32 (size, size, 3) in about 0..1, and the base RGB tone, float32 (3,).
    """
    tone = rng.uniform(0, 1) ** 1.5
    base = (1 - tone) * _SKIN_LIGHT + tone * _SKIN_DARK
    base = base * rng.uniform(0.93, 1.05) + 0.015 * rng.standard_normal(3, dtype=np.float32)
    # Blotchy brightness, fine grain (pores, surface lines), then patches of redness (erythema).
    grain = ndimage.gaussian_filter(_pixel_rng(rng).standard_normal((size, size), dtype=np.float32), 0.7)
    shade = 1 + 0.05 * smooth_noise(rng, size, 4) + rng.uniform(0.02, 0.05) / (grain.std() + 1e-6) * grain
    skin = base * shade[..., None]
    redness = np.clip(smooth_noise(rng, size, 5), 0, None) * rng.uniform(0.0, 0.06)
    skin[..., 0] += redness
    skin[..., 1] -= 0.5 * redness
    return skin, base


def _paint_lesion(
    rng: np.random.Generator,
    image: np.ndarray,
    skin_tone: np.ndarray,
    mask: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
) -> np.ndarray:
    """Blend pigment into ``image`` (float32 HxWx3) over ``mask``; uneven, networked, soft-edged.

    A third of the lesions are low-contrast: weak opacity of a light tan, nearly as bright as the
    skin, recognisable by hue, border and network rather than by darkness.
    """
    size = mask.shape[0]
    low_contrast = rng.random() < 0.33
    opacity = rng.uniform(0.35, 0.55) if low_contrast else rng.uniform(0.55, 0.95)
    darkness_mix = rng.uniform(0.0, 0.25) if low_contrast else rng.uniform(0.15, 1.0)

    # Pigment network (a honeycomb of dark lines) and globules (dark dots inside some of its holes).
    # Computed only over the lesion's bounding box (plus the soft border): the costliest field.
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    margin = max(2, size // 20)
    box = (
        slice(max(0, rows[0] - margin), rows[-1] + margin + 1),
        slice(max(0, cols[0] - margin), cols[-1] + margin + 1),
    )
    lines, globules = np.zeros((2, size, size), np.float32)
    lines[box], globules[box] = _voronoi_network(rng, xx[box], yy[box])
    # The network is clear in places and fades in others.
    network = lines * np.clip(0.6 + 0.5 * smooth_noise(rng, size, 4), 0, 1)
    dots = globules * rng.uniform(0.3, 1.0)

    # Colour: mix light and dark brown unevenly (blotches plus network), sometimes a blue-grey veil.
    mix = darkness_mix + 0.25 * smooth_noise(rng, size, 5) + rng.uniform(0.3, 0.8) * network + dots
    light, dark = skin_tone * _PIGMENT_LIGHT, skin_tone * _PIGMENT_DARK
    pigment = light + np.clip(mix, 0, 1)[..., None] * (dark - light)
    if not low_contrast and rng.random() < 0.2:
        veil = np.clip(smooth_noise(rng, size, 4) - 0.8, 0, 1)[..., None]
        pigment += veil * (_PIGMENT_BLUE_GREY - pigment)

    # Opacity: soft border and uneven density.
    soft = ndimage.gaussian_filter(mask.astype(np.float32), rng.uniform(0.4, 1.8) * size / 128)
    density = np.clip(0.8 + rng.uniform(0.1, 0.3) * smooth_noise(rng, size, 6) + dots, 0.35, 1.0)
    alpha = (opacity * soft * density)[..., None]
    return image + alpha * (pigment - image)


def _paint_hairs(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Draw 0..14 long, thin, dark, gently curved hairs anywhere over ``image`` (float32 HxWx3)."""
    size = image.shape[0]
    if rng.random() < 0.35:
        return image
    canvas, draw = _supersampled_canvas(size)
    steps = np.linspace(0, 1, 16, dtype=np.float32)[:, None]
    for _ in range(int(rng.integers(1, 15))):
        start = rng.uniform(-1.1, 1.1, 2).astype(np.float32)
        direction = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.7, 2.6)
        end = start + length * np.array([np.cos(direction), np.sin(direction)], np.float32)
        bend = rng.uniform(-0.25, 0.25) * length * np.array([-np.sin(direction), np.cos(direction)], np.float32)
        control = (start + end) / 2 + bend
        curve = (1 - steps) ** 2 * start + 2 * (1 - steps) * steps * control + steps**2 * end  # quadratic Bezier
        width_px = max(0.7, rng.uniform(0.8, 1.9) * size / 128)
        shade = int(255 * rng.uniform(0.6, 1.0))
        draw.line(_to_canvas(curve, size), fill=shade, width=max(1, round(width_px * _SUPERSAMPLE)), joint="curve")
    alpha = _canvas_alpha(canvas, size)[..., None]
    hair_colour = rng.uniform(0.04, 0.22) * np.array([1.0, 0.85, 0.7], np.float32)
    return image * (1 - alpha) + hair_colour * alpha


def _paint_ruler(rng: np.random.Generator, image: np.ndarray, lesion_centre: np.ndarray) -> np.ndarray:
    """Sometimes draw a ruler (a base line with regular thin ticks) near the edge away from the lesion."""
    size = image.shape[0]
    if rng.random() >= 0.3:
        return image
    # Put the ruler on the side of the image farthest from the lesion, parallel to that edge.
    side = int(np.argmax([lesion_centre[1] + 1, 1 - lesion_centre[1], lesion_centre[0] + 1, 1 - lesion_centre[0]]))
    offset = rng.uniform(0.68, 0.85)
    along = np.linspace(-0.75, 0.75, 2, dtype=np.float32) + rng.uniform(-0.15, 0.15)
    spacing = rng.uniform(0.06, 0.1)
    tick = rng.uniform(0.05, 0.08)
    inward = 1 if side in (0, 2) else -1  # ticks point towards the image centre
    base = -offset if side in (0, 2) else offset

    def point(a: float, b: float) -> tuple[float, float]:
        # (a along the edge, b across it) -> (x, y); sides 0/1 are top/bottom, 2/3 left/right.
        return (a, b) if side < 2 else (b, a)

    canvas, draw = _supersampled_canvas(size)
    width = max(1, round(max(0.7, rng.uniform(0.7, 1.2) * size / 128) * _SUPERSAMPLE))
    to_canvas = lambda pts: _to_canvas(np.array(pts, np.float32), size)  # noqa: E731
    draw.line(to_canvas([point(along[0], base), point(along[1], base)]), fill=255, width=width)
    for k, a in enumerate(np.arange(along[0], along[1], spacing)):
        length = tick * (1.8 if k % 5 == 0 else 1.0)
        draw.line(to_canvas([point(a, base), point(a, base + inward * length)]), fill=255, width=width)
    alpha = _canvas_alpha(canvas, size)[..., None] * rng.uniform(0.7, 1.0)
    return image * (1 - alpha) + rng.uniform(0.05, 0.3) * alpha


def _lighting(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Uneven illumination: gain, a linear gradient, a radial fall-off and smooth blotches; float32 (size, size)."""
    direction = rng.uniform(0, 2 * math.pi)
    gradient = rng.uniform(0.0, 0.28) * (math.cos(direction) * xx + math.sin(direction) * yy)
    falloff = rng.uniform(0.0, 0.18) * (xx**2 + yy**2) / 2
    blotches = rng.uniform(0.0, 0.07) * smooth_noise(rng, xx.shape[0], 3)
    return rng.uniform(0.82, 1.08) * (1 + gradient - falloff + blotches)


def _vignette(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The dermoscope's dark circular field stop, float32 (size, size): 1 inside, near 0 outside.

    The circle always encloses the lesion, so the vignette never hides a part of the mask.
    """
    if rng.random() >= 0.65:
        return np.ones_like(xx)
    centre = rng.uniform(-0.12, 0.12, 2).astype(np.float32)
    distance = np.sqrt((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2)
    lesion_reach = float(distance[mask].max()) + 0.06
    radius = max(lesion_reach, rng.uniform(0.92, 1.35))
    softness = rng.uniform(0.015, 0.07)
    return (1.0 / (1.0 + np.exp(-(radius - distance) / softness))).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Public API


def synth_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate one dermoscopy-like image and its lesion mask.

    Args:
        rng: the generator that decides everything about this sample (same state -> same sample).
        size: image height and width in pixels.

    Returns:
        ``(image, mask)``: image uint8 (size, size, 3) RGB; mask uint8 (size, size) in {0, 1}, 1 = lesion,
        covering 5..40 % of the image.
    """
    xx, yy = np.meshgrid(_pixel_centres(size), _pixel_centres(size))
    mask, lesion_centre = _lesion_mask(rng, xx, yy)
    image, skin_tone = _skin(rng, size)
    image = _paint_lesion(rng, image, skin_tone, mask, xx, yy)
    image = _paint_hairs(rng, image)
    image = _paint_ruler(rng, image, lesion_centre)
    image *= _lighting(rng, xx, yy)[..., None]
    field_stop = _vignette(rng, xx, yy, mask)[..., None]
    image = image * field_stop + rng.uniform(0.01, 0.08) * (1 - field_stop)
    # Sensor noise.
    image += rng.uniform(0.006, 0.02) * _pixel_rng(rng).standard_normal(image.shape, dtype=np.float32)
    image_u8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return image_u8, mask.astype(np.uint8)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for sample ``index`` of the set with ``seed``: independent of ``n`` and of other samples."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def stem_for(index: int, n: int) -> str:
    """File stem of sample ``index`` in a set of ``n``: ``synth_0000`` (wider when n > 10000)."""
    return f"{STEM_PREFIX}{index:0{max(4, len(str(n - 1)))}d}"


def make_synth_dataset(out: Path, n: int, size: int, seed: int, progress: bool = True) -> Path:
    """Write ``n`` synthetic samples as ``out/images/synth_XXXX.png`` (RGB) and ``out/masks/synth_XXXX.png`` (0/255).

    Deterministic: the same ``seed`` and ``size`` give byte-identical files, and sample ``i`` does not
    depend on ``n``. ``out/synth.json`` records the parameters; a folder that already holds this exact
    set is returned as is (an interrupted one is completed), any other non-empty folder is refused.

    Returns:
        ``out``.

    Raises:
        PixelwiseError: bad ``n``/``size``/``seed``, or ``out`` is a file or a non-empty folder that is
            not this synth set.
    """
    out = Path(out)
    check_parameters(n, size, seed)
    manifest = {"generator": "pixelwise.data.synth", "version": SYNTH_VERSION, "n": n, "size": size, "seed": seed}
    stems = {stem_for(i, n) for i in range(n)}

    def all_written() -> bool:
        return all({p.stem for p in (out / sub).glob(f"{STEM_PREFIX}*.png")} == stems for sub in ("images", "masks"))

    def write_sample(index: int) -> None:
        image, mask = synth_sample(sample_rng(seed, index), size)
        stem = stem_for(index, n)
        save_png(out / "images" / f"{stem}.png", image)
        save_png(out / "masks" / f"{stem}.png", mask * np.uint8(255))

    what = f"synth {n}×{size}px" if progress else None
    return write_synth_set(out, manifest, n, all_written, write_sample, what)


def write_synth_set(
    out: Path,
    manifest: dict,
    n: int,
    all_written: Callable[[], bool],
    write_sample: Callable[[int], None],
    progress: str | None,
) -> Path:
    """The resumable writing every embedded set shares: ``out`` as is when it already holds the set
    (:func:`_existing_set_is_complete`), else ``synth.json`` marked incomplete, ``write_sample(i)`` for i in
    0..n-1 (with a progress bar titled ``progress``, None for none), then ``synth.json`` marked complete."""
    if _existing_set_is_complete(out, manifest, all_written):
        return out
    atomic_write_json(out / MANIFEST_NAME, {**manifest, "complete": False})
    indices = range(n)
    if progress:
        indices = reporting.progress(indices, progress, total=n)
    for index in indices:
        write_sample(index)
    atomic_write_json(out / MANIFEST_NAME, {**manifest, "complete": True})
    return out


def check_parameters(n: int, size: int, seed: int) -> None:
    """Refuse a bad ``--n``, ``--size`` or ``--seed`` of ``data synth`` in one line."""
    if n < 1:
        raise PixelwiseError(f"--n must be at least 1 (got {n}); pass the number of images to generate, e.g. --n 400")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise PixelwiseError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels (got {size}); e.g. --size 128")
    if seed < 0:
        raise PixelwiseError(f"--seed must be 0 or more (got {seed}); e.g. --seed 0")


def _existing_set_is_complete(out: Path, manifest: dict, all_written: Callable[[], bool]) -> bool:
    """True if ``out`` already holds exactly this set (its ``synth.json`` is ``manifest``, complete, and
    ``all_written()``); False if it is absent, empty or an interrupted run of this set (to be completed).
    Raises PixelwiseError for anything else."""
    if out.exists() and not out.is_dir():
        raise PixelwiseError(f"{out} is a file, not a folder; give a new or empty folder as OUT")
    if not out.exists() or not any(out.iterdir()):
        return False
    try:
        found = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found = None
    if not isinstance(found, dict) or {k: found.get(k) for k in manifest} != manifest:
        if isinstance(found, dict) and found.get("generator") == manifest["generator"]:
            held = ", ".join(f"{key}={found.get(key)}" for key in ("n", "size", "seed", "version"))
            raise PixelwiseError(
                f"{out} is not empty and holds a different synth set ({held}); "
                f"give a new or empty folder as OUT, or delete {out}"
            )
        raise PixelwiseError(f"{out} is not empty and is not a synth set; give a new or empty folder as OUT")
    if not found.get("complete"):
        return False
    return all_written()
