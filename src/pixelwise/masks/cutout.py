"""Cutouts and new backgrounds for a binary run's foreground (a person, a lesion, a product).

The network sees the image at a low resolution, so its probability, brought back to the image's size, is a
smooth ramp a few pixels wide that knows nothing of hair or fine edges. :func:`alpha_matte` refines it with a
guided filter (He, Sun & Tang, "Guided Image Filtering", ECCV 2010): inside each window the output is a linear
function of the image, fitted to the probability, so its edges follow the image's own edges. Away from the
mask's border the alpha is exactly the hard mask (0 or 1), so a cutout never keeps a faint veil of background.

* :func:`alpha_matte`: image + foreground probability → ``float32`` H×W alpha in 0..1;
* :func:`refined_mask`: the alpha > 0.5, the mask of runs that chose to refine their edges;
* :func:`cutout_rgba`: image + alpha → ``uint8`` H×W×4 (straight, not premultiplied, alpha);
* :func:`replace_background`: image + alpha + ``"blur"``, a colour or another image → ``uint8`` H×W×3;
* :func:`parse_background`, :func:`parse_colour`: what ``predict --background`` accepts.

Box filters are ``scipy.ndimage.uniform_filter`` (O(1) per pixel whatever the radius); on large images the
filter's coefficients are computed on a subsampled grid and upsampled ("Fast Guided Filter", He & Sun 2015).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageColor
from scipy import ndimage

from pixelwise.data.classes import is_binary
from pixelwise.errors import PixelwiseError

RGB = tuple[int, int, int]
#: What :func:`replace_background` takes: ``"blur"``, a colour (``"#rrggbb"``, ``"r,g,b"``, a name, an RGB
#: tuple), an image file's path, or a ``uint8`` H×W×3 RGB array.
BackgroundInput = Union[str, Path, RGB, np.ndarray, "Background"]

#: Default regularisation of the guided filter, for a guide in 0..1: small enough that an edge of contrast
#: ~0.1 (std² ≈ 0.0025 across it) steers the alpha, large enough that noise and flat texture do not.
DEFAULT_EPS = 1e-3
#: Stretch of the filtered alpha around 0.5. Beside an edge the probability blurs, the filter's two levels are
#: the probability's means on either side in the window (about 0.2 and 0.8), not 0 and 1: ×2 restores them while
#: edges the image itself shows soft stay soft (synthetic, r = 6: mean |alpha − true matte| 0.068 → 0.010 for a
#: sharp edge, 0.034 → 0.018 for a σ = 2 px soft one; 1 = no stretch).
DEFAULT_CONTRAST = 2.0
#: Side of the coarsest grid the fast guided filter works on, relative to the radius (He & Sun: s ≈ r/4).
SUBSAMPLE_PER_RADIUS = 4
#: Message of every refusal on a multi-class run.
BINARY_ONLY = "cutouts need a binary run (background + one foreground class)"


def default_radius(height: int, width: int) -> int:
    """The guided filter's window radius for an image: about 1 % of its longer side, at least 2 pixels.

    The window must span the probability's ramp (a few network pixels, i.e. the image side over the network
    side) to put the edge where the image has it; 1 % covers a 256-pixel network on any image size.
    """
    return max(2, round(max(height, width) / 100))


def require_binary(num_classes: int) -> None:
    """Refuse a multi-class run in one line (:data:`BINARY_ONLY`)."""
    if not is_binary(num_classes):
        raise PixelwiseError(f"{BINARY_ONLY}; this run has {num_classes} classes")


def foreground_probability(probabilities: np.ndarray) -> np.ndarray:
    """A binary run's foreground probability ``float32`` H×W from H×W or 2×H×W (``[1 - p, p]``) input.

    Raises:
        PixelwiseError: K×H×W with K > 2 (a multi-class run).
        ValueError: any other shape.
    """
    p = np.asarray(probabilities)
    if p.ndim == 3:
        require_binary(p.shape[0])
        p = p[1]
    if p.ndim != 2:
        raise ValueError(f"probability has shape {np.shape(probabilities)}: pass H×W (or 2×H×W)")
    return p.astype(np.float32, copy=False)


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)² window per pixel (over the first two axes), borders mirrored."""
    size = (2 * radius + 1, 2 * radius + 1) + (1,) * (x.ndim - 2)
    return ndimage.uniform_filter(x, size=size, mode="reflect")


def _resize(x: np.ndarray, height: int, width: int, resample) -> np.ndarray:
    """A float32 H×W or H×W×C array resized per channel through Pillow's 32-bit float images."""
    if x.ndim == 3:
        return np.stack([_resize(x[..., c], height, width, resample) for c in range(x.shape[2])], axis=-1)
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(x, dtype=np.float32), mode="F").resize((width, height), resample),
        dtype=np.float32,
    )


def guided_filter(
    guide: np.ndarray, source: np.ndarray, radius: int, eps: float = DEFAULT_EPS, subsample: int = 1
) -> np.ndarray:
    """He et al.'s guided filter: ``source`` smoothed so that its edges follow ``guide``'s.

    Args:
        guide: ``float32`` H×W (grey) or H×W×3 (colour) image, values about 0..1.
        source: ``float32`` H×W, the signal to filter (here a probability, 0..1).
        radius: window radius r, pixels of the full-size image (windows are (2r+1)²).
        eps: regularisation ε: windows whose guide varies less than √ε are averaged, not followed.
        subsample: s ≥ 1: the linear coefficients are fitted on a grid s times coarser with radius r/s and
            upsampled bilinearly (the fast guided filter), ~s² times less work for nearly the same output.

    Returns:
        ``float32`` H×W, unclipped (it may leave 0..1 slightly near strong edges).
    """
    height, width = source.shape
    guide = np.asarray(guide, dtype=np.float32)
    source = np.asarray(source, dtype=np.float32)
    coarse_guide, coarse_source, r = guide, source, radius
    if subsample > 1:
        small = (max(1, round(height / subsample)), max(1, round(width / subsample)))
        coarse_guide = _resize(guide, *small, Image.BOX)
        coarse_source = _resize(source, *small, Image.BOX)
        r = max(1, round(radius / subsample))
    a, b = (_colour_coefficients if guide.ndim == 3 else _grey_coefficients)(coarse_guide, coarse_source, r, eps)
    mean_a, mean_b = _box(a, r), _box(b, r)
    if subsample > 1:
        mean_a, mean_b = _resize(mean_a, height, width, Image.BILINEAR), _resize(mean_b, height, width, Image.BILINEAR)
    return (mean_a * guide).sum(axis=-1) + mean_b if guide.ndim == 3 else mean_a * guide + mean_b


def _grey_coefficients(guide, source, r, eps):
    mean_i, mean_p = _box(guide, r), _box(source, r)
    cov_ip = _box(guide * source, r) - mean_i * mean_p
    var_i = _box(guide * guide, r) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    return a, mean_p - a * mean_i


def _colour_coefficients(guide, source, r, eps):
    """Per window, the 3-vector a = (Σ + εU)⁻¹ cov(I, p) and b = mean(p) − a·mean(I) (He et al., eq. 14)."""
    mean_i = _box(guide, r)  # H×W×3
    mean_p = _box(source, r)
    cov_ip = _box(guide * source[..., None], r) - mean_i * mean_p[..., None]
    # The symmetric 3×3 covariance per pixel, as its six distinct entries.
    pairs = {
        (j, k): _box(guide[..., j] * guide[..., k], r) - mean_i[..., j] * mean_i[..., k] + (eps if j == k else 0)
        for j in range(3)
        for k in range(j, 3)
    }
    rr, rg, rb, gg, gb, bb = (pairs[(0, 0)], pairs[(0, 1)], pairs[(0, 2)], pairs[(1, 1)], pairs[(1, 2)], pairs[(2, 2)])
    # The inverse by its adjugate: closed form, vectorised over the pixels (no per-pixel solve).
    inv_rr, inv_rg, inv_rb = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
    inv_gg, inv_gb, inv_bb = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
    det = rr * inv_rr + rg * inv_rg + rb * inv_rb
    cr, cg, cb = cov_ip[..., 0], cov_ip[..., 1], cov_ip[..., 2]
    a = (
        np.stack(
            [
                inv_rr * cr + inv_rg * cg + inv_rb * cb,
                inv_rg * cr + inv_gg * cg + inv_gb * cb,
                inv_rb * cr + inv_gb * cg + inv_bb * cb,
            ],
            axis=-1,
        )
        / det[..., None]
    )
    return a, mean_p - (a * mean_i).sum(axis=-1)


def _centre_threshold(p: np.ndarray, threshold: float) -> np.ndarray:
    """Map probabilities piecewise linearly so that the run's threshold lands on 0.5 (0 and 1 stay)."""
    t = float(np.clip(threshold, 1e-6, 1 - 1e-6))
    return np.where(p <= t, p * (0.5 / t), 0.5 + (p - t) * (0.5 / (1 - t))).astype(np.float32)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image has dtype {image.dtype} and shape {image.shape}: pass uint8 H×W×3 RGB")
    return image


def _check_alpha(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    alpha = np.asarray(alpha, dtype=np.float32)
    if alpha.shape != image.shape[:2]:
        raise ValueError(f"alpha has shape {alpha.shape}, the image {image.shape[:2]}: pass H×W at the image's size")
    return np.clip(alpha, 0.0, 1.0)


def alpha_matte(
    image: np.ndarray,
    probability: np.ndarray,
    radius: int | None = None,
    eps: float = DEFAULT_EPS,
    threshold: float = 0.5,
    mask: np.ndarray | None = None,
    colour: bool = True,
    contrast: float = DEFAULT_CONTRAST,
) -> np.ndarray:
    """The foreground's alpha matte: the probability's edge moved onto the image's edges.

    Args:
        image: ``uint8`` H×W×3 RGB, the guide.
        probability: ``float32`` H×W foreground probability in 0..1 at the image's size (or a binary run's
            2×H×W ``[1 - p, p]``, as ``Segmentation.probabilities``).
        radius: guided filter window radius in pixels (default :func:`default_radius`: ~1 % of the longer
            side). Larger follows edges further from the network's; smaller stays closer to it.
        eps: guided filter regularisation for a 0..1 guide (default :data:`DEFAULT_EPS`); larger → smoother
            alpha, closer to the probability; smaller → harder edges that follow weaker image edges.
        threshold: the run's threshold: probabilities are remapped so that it becomes the alpha's 0.5.
        mask: the hard mask (bool or 0/1 H×W; default ``probability > threshold``), e.g. after post-processing.
            Farther than 2·radius from its border the alpha is exactly this mask.
        colour: guide with the three colour channels (He et al.'s colour filter) rather than their mean; it
            tells apart edges between colours of equal brightness.
        contrast: the filtered alpha is stretched by this factor around 0.5 (:data:`DEFAULT_CONTRAST`).

    Returns:
        ``float32`` H×W in 0..1 (1 = foreground).

    Raises:
        PixelwiseError: a multi-class probability (K×H×W, K > 2).
        ValueError: shapes that do not match the image, a radius < 1 or eps ≤ 0.
    """
    image = _check_image(image)
    p = foreground_probability(probability)
    height, width = image.shape[:2]
    if p.shape != (height, width):
        raise ValueError(f"probability has shape {p.shape}, the image {(height, width)}: resize it to the image")
    radius = default_radius(height, width) if radius is None else int(radius)
    if radius < 1 or not eps > 0:
        raise ValueError(f"radius {radius} and eps {eps}: the radius must be ≥ 1 and eps > 0")
    hard = (p > threshold) if mask is None else np.asarray(mask).astype(bool)
    if hard.shape != (height, width):
        raise ValueError(f"mask has shape {hard.shape}, the image {(height, width)}: pass H×W at the image's size")
    if hard.all() or not hard.any():
        return hard.astype(np.float32)
    band_radius = 2 * radius
    # The border band: windows holding both classes (a square band, exact where it matters, O(1) per pixel).
    share = _box(hard.astype(np.float32), band_radius)
    band = (share > 1e-4) & (share < 1 - 1e-4)
    rows, cols = np.flatnonzero(band.any(axis=1)), np.flatnonzero(band.any(axis=0))
    # Filter only the band's bounding box plus the filter's reach (2r: boxes of boxes).
    reach = 2 * radius + 1
    box = (
        slice(max(rows[0] - reach, 0), min(rows[-1] + reach + 1, height)),
        slice(max(cols[0] - reach, 0), min(cols[-1] + reach + 1, width)),
    )
    guide = image[box].astype(np.float32) / 255.0
    if not colour:
        guide = guide.mean(axis=-1)
    subsample = max(1, radius // SUBSAMPLE_PER_RADIUS)
    refined = guided_filter(guide, _centre_threshold(p[box], threshold), radius, eps, subsample)
    alpha = hard.astype(np.float32)
    alpha[box] = np.where(band[box], np.clip((refined - 0.5) * contrast + 0.5, 0.0, 1.0), alpha[box])
    return alpha


def refined_mask(image: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """A binary run's mask with its edges refined at the image's resolution: :func:`alpha_matte` > 0.5.

    What a ``refine_edges`` run (``RunRecord.refine_edges``, chosen on validation) predicts. The network's
    probability, stretched from its input size to the image's, puts the edge where a few coarse pixels blur it;
    the matte moves it onto the image's own edge (ccp-people's 550×840 photos from a 128-px network: mean Dice
    0.957 → 0.961, docs/experiments.md).

    Args:
        image: ``uint8`` H×W×3 RGB, the guide.
        probability: ``float32`` H×W foreground probability at the image's size (or ``[1 - p, p]``).
        threshold: the run's threshold.

    Returns:
        ``bool`` H×W foreground.
    """
    return alpha_matte(image, probability, threshold=threshold) > 0.5


def refined_classes(
    image: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray,
    radius: int | None = None,
    eps: float = DEFAULT_EPS,
) -> np.ndarray:
    """A multi-class run's labels with their borders refined at the image's resolution: each class's probability
    filtered with the image as the guide (:func:`guided_filter`, colour), then the argmax, only in the band where
    ``labels`` change within the filter's reach; ``labels`` elsewhere.

    Args:
        image: ``uint8`` H×W×3 RGB, the guide.
        probabilities: ``float32`` K×H×W class probabilities at the image's size.
        labels: ``uint8`` H×W, their argmax (what is refined).
        radius, eps: as :func:`alpha_matte`.

    Returns:
        ``uint8`` H×W class indices.
    """
    image = _check_image(image)
    height, width = labels.shape
    radius = default_radius(height, width) if radius is None else int(radius)
    size = 4 * radius + 1  # a box of boxes reaches 2r
    band = ndimage.maximum_filter(labels, size) != ndimage.minimum_filter(labels, size)
    if not band.any():
        return labels
    guide = image.astype(np.float32) / 255.0
    subsample = max(1, radius // SUBSAMPLE_PER_RADIUS)
    filtered = np.stack([guided_filter(guide, p, radius, eps, subsample) for p in probabilities])
    return np.where(band, filtered.argmax(axis=0), labels).astype(np.uint8)


def cutout_rgba(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The image with ``alpha`` as its fourth channel: ``uint8`` H×W×4 (straight alpha, 0 = transparent).

    Args:
        image: ``uint8`` H×W×3 RGB.
        alpha: ``float`` H×W in 0..1 (clipped), e.g. from :func:`alpha_matte`.
    """
    image = _check_image(image)
    alpha = _check_alpha(image, alpha)
    return np.dstack([image, np.rint(alpha * 255).astype(np.uint8)])


def parse_colour(text: str) -> RGB:
    """``"#rrggbb"`` (or ``#rgb``), ``"r,g,b"`` (0..255 each) or a CSS colour name (``white``, ``green``...) →
    ``(r, g, b)``.

    Raises:
        PixelwiseError: anything else, in one line.
    """
    spec = text.strip()
    if re.fullmatch(r"\s*\d+\s*,\s*\d+\s*,\s*\d+\s*", spec):
        values = tuple(int(v) for v in spec.split(","))
        if all(0 <= v <= 255 for v in values):
            return values  # type: ignore[return-value]
        raise PixelwiseError(f"colour {text!r}: each of r,g,b must be 0..255")
    if re.fullmatch(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})", spec) or re.fullmatch(r"[A-Za-z]+", spec):
        try:
            return ImageColor.getrgb(spec)[:3]  # type: ignore[return-value]
        except ValueError:
            pass
    raise PixelwiseError(f"colour {text!r} is not a colour: write #rrggbb, r,g,b (0..255) or a name such as white")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@dataclass(frozen=True, eq=False)
class Background:
    """What replaces the background: ``kind`` ``"blur"``, ``"colour"`` (with ``colour``) or ``"image"`` (with
    ``image``, ``uint8`` h×w×3 at its own size). Made by :func:`parse_background`."""

    kind: str
    colour: RGB | None = None
    image: np.ndarray | None = None

    def canvas(self, image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """The new background at ``image``'s size: ``float32`` H×W×3 in 0..255."""
        height, width = image.shape[:2]
        if self.kind == "colour":
            return np.broadcast_to(np.asarray(self.colour, np.float32), (height, width, 3))
        if self.kind == "image":
            return cover(self.image, height, width).astype(np.float32)
        return blurred_background(image, alpha)


def parse_background(spec: BackgroundInput) -> Background:
    """A :data:`BackgroundInput` → :class:`Background`; an image file is read here, once.

    Strings: ``"blur"``; an existing file; a colour (:func:`parse_colour`). A string that names an image file
    (an image suffix or a folder in it) but does not exist is reported as a missing file, not a bad colour.

    Raises:
        PixelwiseError: a bad colour, a missing or unreadable image file.
        TypeError, ValueError: another type, or an array that is not ``uint8`` H×W×3.
    """
    if isinstance(spec, Background):
        return spec
    if isinstance(spec, np.ndarray):
        return Background("image", image=_check_image(spec))
    if isinstance(spec, tuple):
        if len(spec) != 3 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in spec):
            raise PixelwiseError(f"colour {spec!r}: pass three integers 0..255")
        return Background("colour", colour=tuple(int(v) for v in spec))  # type: ignore[arg-type]
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"background {type(spec).__name__}: pass 'blur', a colour, an image path or a uint8 array")
    text = str(spec)
    if isinstance(spec, str) and text.strip().lower() == "blur":
        return Background("blur")
    path = Path(text)
    if path.is_file():
        from pixelwise.data.imageio import read_image

        return Background("image", image=read_image(path))
    if isinstance(spec, Path) or path.suffix.lower() in IMAGE_SUFFIXES or "/" in text or "\\" in text:
        raise PixelwiseError(f"background image {text} not found: pass an existing image file, blur or a colour")
    return Background("colour", colour=parse_colour(text))


def cover(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (``uint8`` h×w×3) scaled to cover height×width, aspect kept, and centre-cropped to it."""
    h, w = image.shape[:2]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[top : top + height, left : left + width]


def blur_sigma(height: int, width: int) -> float:
    """Gaussian sigma of the ``blur`` background: 2 % of the longer side (a portrait-mode look)."""
    return max(2.0, 0.02 * max(height, width))


def blurred_background(image: np.ndarray, alpha: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """The image Gaussian-blurred with the foreground left out of the average (normalised convolution), so the
    subject's colours do not smear a halo around it. ``float32`` H×W×3 in 0..255.

    Blurred on a grid subsampled to keep the kernel about 4 px wide (the cost stays small on large images), then
    resized back; where the background is nowhere near (inside a large subject), the plain blur is used.
    """
    height, width = image.shape[:2]
    sigma = blur_sigma(height, width) if sigma is None else sigma
    step = max(1, int(sigma // 4))
    small = (max(1, round(height / step)), max(1, round(width / step)))
    weight = 1.0 - np.asarray(alpha, np.float32)
    rgb = image.astype(np.float32)
    rgb_small, weight_small = _resize(rgb, *small, Image.BOX), _resize(weight, *small, Image.BOX)
    s = (sigma / step, sigma / step, 0)
    plain = ndimage.gaussian_filter(rgb_small, s, mode="reflect")
    weighted = ndimage.gaussian_filter(rgb_small * weight_small[..., None], s, mode="reflect")
    norm = ndimage.gaussian_filter(weight_small, sigma / step, mode="reflect")[..., None]
    blurred = np.where(norm > 0.05, weighted / np.maximum(norm, 1e-6), plain)
    return np.clip(_resize(blurred, height, width, Image.BILINEAR), 0, 255)


def replace_background(image: np.ndarray, alpha: np.ndarray, background: BackgroundInput) -> np.ndarray:
    """The foreground over a new background: ``alpha · image + (1 − alpha) · background``, per sRGB channel.

    Args:
        image: ``uint8`` H×W×3 RGB.
        alpha: ``float`` H×W in 0..1 (clipped), e.g. from :func:`alpha_matte`.
        background: ``"blur"`` (the image blurred around the foreground, :func:`blurred_background`), a colour
            (``"#rrggbb"``, ``"r,g,b"``, a name such as ``"white"``, an ``(r, g, b)`` tuple), an image (path or
            ``uint8`` h×w×3 array: scaled to cover the image and centre-cropped), or a :class:`Background`.

    Returns:
        ``uint8`` H×W×3 RGB.

    Raises:
        PixelwiseError: a bad colour, a missing or unreadable background image.
    """
    image = _check_image(image)
    alpha = _check_alpha(image, alpha)
    canvas = parse_background(background).canvas(image, alpha)
    a = alpha[..., None]
    return np.clip(np.rint(a * image + (1.0 - a) * canvas), 0, 255).astype(np.uint8)
