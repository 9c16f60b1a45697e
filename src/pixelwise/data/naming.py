"""File-name rules shared by data sets, ``predict``'s outputs and ``score``: one rule, one module.

- A mask belongs to the image whose stem it carries, optionally followed by one of :data:`MASK_SUFFIXES`
  (any letter case): ``ISIC_0000000_segmentation.png`` and ``cat_seg.png`` are masks of ``ISIC_0000000``
  and ``cat``.
- ``predict`` writes ``<stem>_mask.png`` (the mask) and ``<stem>_overlay.png`` (a picture, never a mask); for
  binary runs, on request, ``<stem>_cutout.png`` (RGBA) and ``<stem>_background.png``: pictures too.
- ``<stem>_instances.png`` is an instance-id image (0 = background, objects 1..N; uint16 beyond 255 objects):
  predictions carrying it make ``score`` score objects instead of pixels.
"""

from __future__ import annotations

#: Suffixes a mask's stem may carry beyond its image's stem (compared case-insensitively).
MASK_SUFFIXES = (
    "_segmentation",
    "_mask",
    "_masks",
    "_seg",
    "_label",
    "_labels",
    "_gt",
    "-mask",
    "_lesion",
    "_annotation",
)
#: What ``predict`` appends to an input's stem for its mask and its overlay picture.
PREDICTED_MASK_SUFFIX = "_mask"
OVERLAY_SUFFIX = "_overlay"
CUTOUT_SUFFIX = "_cutout"
BACKGROUND_SUFFIX = "_background"
#: Every picture ``predict`` writes beside a mask; none of them is a mask.
PICTURE_SUFFIXES = (OVERLAY_SUFFIX, CUTOUT_SUFFIX, BACKGROUND_SUFFIX)
#: What an instance-id prediction appends to its input's stem.
PREDICTED_INSTANCES_SUFFIX = "_instances"


def strip_mask_suffix(stem: str, known: set[str] | None = None, suffixes=MASK_SUFFIXES, key=str.casefold) -> str:
    """The image stem a mask stem belongs to.

    Args:
        stem: a mask file's stem.
        known: image stems (as ``key(stem)``) to prefer: a stem that is itself known is kept, and a suffix whose
            removal gives a known stem wins over the others. None: the first suffix that fits.
        suffixes: the suffixes allowed (ISIC's own layout allows only ``_segmentation``).
        key: how stems are compared (default: case-folded).

    Returns:
        ``stem`` without one trailing suffix, in its own letter case; ``stem`` itself when no suffix fits or
        when removing it would leave nothing.
    """
    folded = key(stem)
    if known is not None and folded in known:
        return stem
    fitting = [s for s in suffixes if folded.endswith(key(s)) and len(folded) > len(s)]
    if known is not None:
        fitting = sorted(fitting, key=lambda s: key(stem[: -len(s)]) not in known)  # known results first (stable)
    return stem[: -len(fitting[0])] if fitting else stem


def predicted_mask_name(stem: str) -> str:
    return f"{stem}{PREDICTED_MASK_SUFFIX}.png"


def overlay_name(stem: str) -> str:
    return f"{stem}{OVERLAY_SUFFIX}.png"


def cutout_name(stem: str) -> str:
    return f"{stem}{CUTOUT_SUFFIX}.png"


def background_name(stem: str) -> str:
    return f"{stem}{BACKGROUND_SUFFIX}.png"


def is_overlay(stem: str) -> bool:
    """True for ``predict``'s pictures (``<stem>_overlay``, ``_cutout``, ``_background``), which are not masks:
    ``score`` leaves them out of a prediction folder."""
    return stem.casefold().endswith(PICTURE_SUFFIXES)


def predicted_instances_name(stem: str) -> str:
    return f"{stem}{PREDICTED_INSTANCES_SUFFIX}.png"


def instances_id(stem: str) -> str | None:
    """The image stem of an instance-id prediction's stem (``cell_07_instances`` → ``cell_07``, any letter case of
    the suffix), or None when the stem does not carry :data:`PREDICTED_INSTANCES_SUFFIX`."""
    suffix = PREDICTED_INSTANCES_SUFFIX
    if stem.casefold().endswith(suffix) and len(stem) > len(suffix):
        return stem[: -len(suffix)]
    return None
