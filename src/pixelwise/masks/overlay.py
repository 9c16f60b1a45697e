"""Masks drawn over an image, for ``predict``'s overlays, the Python API, ``serve`` and report pictures.

* binary runs: the contour of the foreground in red (:func:`draw_contours`), as always;
* multi-class runs: each class filled with its colour at :data:`FILL_OPACITY` plus its contour, and a legend
  (colour swatch + class name) of the classes in the picture (:func:`class_overlay`).
* instance runs: each object filled and outlined in its own colour (:func:`instance_overlay`).

:func:`prediction_overlay` picks between the two; it is the one overlay of a prediction pixelwise draws.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from pixelwise.data.classes import PREDICTION_RGB, instance_colour, is_binary

RGB = tuple[int, int, int]

#: Opacity of the class colours over the image in multi-class overlays: the image stays readable beneath.
FILL_OPACITY = 0.45
#: Legend box: white text on black at this opacity, so it reads on any image.
LEGEND_BACKGROUND_OPACITY = 0.65


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """``(255, 0, 0)`` → ``"#ff0000"``, for HTML."""
    return "#" + "".join(f"{c:02x}" for c in rgb)


def contour(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Bool H×W mask → bool H×W band of pixels on the inside of its border, ``thickness`` wide."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    inner = ndimage.binary_erosion(mask, iterations=thickness, border_value=0)
    return mask & ~inner


def line_thickness(height: int, width: int) -> int:
    """Contour width in pixels: about 0.5 % of the image's shorter side, at least 1, so lines stay visible
    on large photographs."""
    return max(1, round(min(height, width) / 200))


def draw_contours(
    image: np.ndarray, masks_and_colors: list[tuple[np.ndarray, tuple[int, int, int]]], thickness: int | None = None
) -> np.ndarray:
    """Draw each mask's contour on a copy of ``image`` (uint8 H×W×3); later masks draw on top.

    ``thickness`` defaults to :func:`line_thickness`.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    if thickness is None:
        thickness = line_thickness(*out.shape[:2])
    for mask, color in masks_and_colors:
        out[contour(mask, thickness)] = color
    return out


def prediction_overlay(
    image: np.ndarray, labels: np.ndarray, names: Sequence[str], colors: Sequence[RGB]
) -> np.ndarray:
    """The overlay of one prediction, as ``predict`` writes it.

    Args:
        image: ``uint8`` H×W×3 RGB.
        labels: ``uint8`` H×W class indices ``0..K-1`` (0 = background).
        names, colors: one name and one RGB colour per class (``K = len(names)``).

    Returns:
        ``uint8`` H×W×3: binary runs (K = 2): the foreground's contour in :data:`PREDICTION_RGB`;
        multi-class runs: :func:`class_overlay`.
    """
    if is_binary(len(names)):
        return draw_contours(image, [(labels > 0, PREDICTION_RGB)])
    return class_overlay(image, labels, names, colors)


def class_overlay(
    image: np.ndarray, labels: np.ndarray, names: Sequence[str], colors: Sequence[RGB], opacity: float = FILL_OPACITY
) -> np.ndarray:
    """Classes filled with their colours at ``opacity``, their contours at full colour, and a legend.

    The background (class 0) is left as the image. The legend lists the classes present in ``labels``
    (background excluded), in class order, in the image corner where it hides the fewest class pixels.

    Args:
        image: ``uint8`` H×W×3 RGB.
        labels: ``uint8`` H×W class indices ``0..K-1``.
        names, colors: one name and one RGB colour per class.
        opacity: weight of the class colour in the fill, 0..1.

    Returns:
        ``uint8`` H×W×3, a new array.
    """
    present = [int(c) for c in np.unique(labels) if c != 0]
    out = fill_classes(image, labels, colors, opacity)
    out = draw_contours(out, [(labels == c, colors[c]) for c in present])
    return draw_legend(out, [(names[c], colors[c]) for c in present], occupied=labels != 0)


def instance_overlay(image: np.ndarray, labels: np.ndarray, opacity: float = FILL_OPACITY) -> np.ndarray:
    """Each object of an instance-id image filled in its own colour at ``opacity`` and outlined in it.

    Args:
        image: ``uint8`` H×W×3 RGB.
        labels: integer H×W instance ids, 0 = background; object ``k`` is drawn in
            :func:`~pixelwise.data.classes.instance_colour` ``(k)``, so two pictures that give an object the same id
            show it in the same colour.
        opacity: weight of the object colour in the fill, 0..1.

    Returns:
        ``uint8`` H×W×3, a new array. Touching objects each keep their own outline.
    """
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels).astype(np.int64, copy=False)
    top = int(labels.max()) if labels.size else 0
    if top == 0:
        return np.array(image, dtype=np.uint8, copy=True)
    palette = np.zeros((top + 1, 3), dtype=np.float32)
    for object_id in np.unique(labels[labels > 0]).tolist():
        palette[object_id] = instance_colour(object_id)
    out = np.asarray(image, dtype=np.float32).copy()
    inside = labels > 0
    out[inside] = (1 - opacity) * out[inside] + opacity * palette[labels[inside]]
    outline = find_boundaries(labels, mode="inner") & inside
    out[outline] = palette[labels[outline]]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def fill_classes(image: np.ndarray, labels: np.ndarray, colors: Sequence[RGB], opacity: float) -> np.ndarray:
    """``uint8`` H×W×3 copy of ``image`` with every non-background pixel blended with its class colour:
    ``(1 - opacity) · image + opacity · colour``."""
    palette = np.asarray(colors, dtype=np.float32)  # K×3
    out = np.array(image, dtype=np.float32, copy=True)
    foreground = labels != 0
    out[foreground] = (1.0 - opacity) * out[foreground] + opacity * palette[labels[foreground]]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def legend_font(height: int, width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at about 1/32 of the image's shorter side (10 to 64 px), readable at any size."""
    size = int(np.clip(round(min(height, width) / 32), 10, 64))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def draw_legend(
    image: np.ndarray, entries: Sequence[tuple[str, RGB]], occupied: np.ndarray | None = None
) -> np.ndarray:
    """Draw a legend box (one row per entry: colour swatch, then the name) onto a copy of ``image``.

    Args:
        image: ``uint8`` H×W×3 RGB.
        entries: ``(name, colour)`` per row; none → the image is returned unchanged (as a copy).
        occupied: optional bool H×W: pixels worth keeping visible; the box goes to the corner covering
            the fewest of them (top-left on ties or without it).

    Returns:
        ``uint8`` H×W×3. Rows that do not fit in a small image are cut off at its edge.
    """
    out = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGBA")
    if not entries:
        return np.asarray(out.convert("RGB"))
    font = legend_font(out.height, out.width)
    measure = ImageDraw.Draw(out)
    boxes = [measure.textbbox((0, 0), name, font=font) for name, _ in entries]
    line = max(max(b[3] for b in boxes), getattr(font, "size", 10))  # row height: the tallest text
    pad, gap = max(2, line // 3), max(2, line // 2)
    box_w = pad + line + gap + max(b[2] for b in boxes) + pad
    box_h = pad + len(entries) * line + (len(entries) - 1) * pad + pad
    left, top = _emptiest_corner(out.width, out.height, box_w, box_h, occupied)

    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    draw.rectangle(
        (left, top, left + box_w - 1, top + box_h - 1), fill=(0, 0, 0, round(255 * LEGEND_BACKGROUND_OPACITY))
    )
    for row, (name, colour) in enumerate(entries):
        y = top + pad + row * (line + pad)
        swatch = (left + pad, y, left + pad + line - 1, y + line - 1)
        draw.rectangle(swatch, fill=(*colour, 255), outline=(255, 255, 255, 255))
        draw.text((left + pad + line + gap, y), name, font=font, fill=(255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(out, layer).convert("RGB"))


def _emptiest_corner(width: int, height: int, box_w: int, box_h: int, occupied: np.ndarray | None) -> tuple[int, int]:
    """Top-left ``(x, y)`` of the ``box_w``×``box_h`` box in the image corner hiding the fewest ``occupied``
    pixels; top-left first on ties."""
    corners = [(0, 0), (width - box_w, 0), (0, height - box_h), (width - box_w, height - box_h)]
    corners = [(max(0, x), max(0, y)) for x, y in corners]
    if occupied is None:
        return corners[0]
    return min(corners, key=lambda xy: int(occupied[xy[1] : xy[1] + box_h, xy[0] : xy[0] + box_w].sum()))
