"""File-name rules shared by data sets, ``predict``'s outputs and ``score``: one rule, one module.

- A mask belongs to the image whose stem it carries, optionally followed by one of :data:`MASK_SUFFIXES`
  (any letter case): ``ISIC_0000000_segmentation.png`` and ``cat_seg.png`` are masks of ``ISIC_0000000``
  and ``cat``.
- ``predict`` writes ``<stem>_mask.png`` (the mask) and ``<stem>_overlay.png`` (a picture, never a mask).
"""

from __future__ import annotations

#: Suffixes a mask's stem may carry beyond its image's stem (compared case-insensitively).
MASK_SUFFIXES = ("_segmentation", "_mask", "_masks", "_seg", "_label", "_labels", "_gt", "-mask", "_lesion",
                 "_annotation")
#: What ``predict`` appends to an input's stem for its mask and its overlay picture.
PREDICTED_MASK_SUFFIX = "_mask"
OVERLAY_SUFFIX = "_overlay"


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


def is_overlay(stem: str) -> bool:
    """True for ``predict``'s overlay pictures (``<stem>_overlay``), which are not masks."""
    return stem.casefold().endswith(OVERLAY_SUFFIX)
