"""How a run's network sees its images, planned from the data (``--scale auto``, the default; nnU-Net's
"experiment planning" on this codebase's scale): one squashed square, or tiles at a scale.

- **squash** (the runs before tiles): every image resized to ``size``×``size`` (:func:`~pixelwise.config.
  planned_size`: 128 px for two classes, 160 for more) and the mask resized back. Cheap, and right when the
  objects are large: a lesion filling a dermoscopy photo stays dozens of pixels wide.
- **tiles**: images resized by ``scale`` (aspect kept), training on random crops of side ``size`` and
  predicting with overlapping tiles (:mod:`pixelwise.predict.tiles`). Needed when squashing would leave a
  class's typical object under :data:`MIN_SQUASHED_PX` pixels thick (poles in road scenes, straps and
  accessories in people photos, nuclei).

The rule, on the statistics of :func:`~pixelwise.data.objects.measure_objects` (a seeded sample of the training
masks at their own resolution):

1. the squash factor is ``size / max(H, W)`` of the median image (stretching squashes both axes; the longer one
   most). For each foreground class with objects, its median thickness times that factor is what the network
   would see. If every class keeps at least :data:`MIN_SQUASHED_PX` px (instance runs:
   :data:`MIN_SQUASHED_PX_INSTANCES`, for the border between touching objects): squash.
2. Else tiles. The scale is the smallest of :data:`SCALES` at which the thinnest class's median object is at
   least :data:`TARGET_PX` px thick (1.0 when none is: never upsampled by the plan), lowered while the
   training and validation arrays (uint8, padded to a common size) would pass :data:`ARRAY_BUDGET_BYTES`.
3. The tile side is :data:`TILE_SIDE` (the recipe's ``--size`` when given), at most the scaled images' longer
   median side rounded up to 32; the batch keeps the squash plan's pixels per step (at least 2 crops).

:func:`plan_input` returns the plan and one line saying why, which training logs and records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pixelwise.config import Recipe, parse_scale, planned_size
from pixelwise.data.objects import ObjectStats

#: Thinnest typical object (median thickness, px) a squashed image may leave: below it the class vanishes.
#: 2 px, not more: on ccp-people parsing (accessories 3.4 px thick when squashed to 160) tiles at scale 0.5 reached
#: best val Dice 0.315 in a 15-minute 2-core budget (9 epochs of 90 s) against 0.59 for the squash (46 epochs):
#: on a CPU budget the squash's many more epochs win until objects all but vanish (docs/experiments.md,
#: "Native resolution", 2026-12-06). Tiles stay one option away: --scale 0.5.
MIN_SQUASHED_PX = 2.0
#: The same for instance runs (``--task instances``), whose thinnest class is the border drawn between touching
#: objects: a border that survives as 2–3 px loses the small objects. On DSB 2018 nuclei (border 3 px thick at
#: native resolution) the squash to 256 px (border kept at 3 px) lost to tiles at scale 1 on every instance
#: metric in a 15-minute budget: AP 0.432 vs 0.473, PQ 0.647 vs 0.680, recall@0.5 0.726 vs 0.792
#: (docs/experiments.md, "Instances at native resolution", 2026-12-06).
MIN_SQUASHED_PX_INSTANCES = 4.0
#: Thickness (px) the plan's scale aims to keep for the thinnest class's median object.
TARGET_PX = 8.0
#: Scales the plan chooses from (never above 1: the plan does not upsample).
SCALES = (0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1.0)
#: Default tile side (px): nnU-Net's 2D patches are of this order; a multiple of 32 (the encoders' stride).
TILE_SIDE = 256
#: Memory the planned arrays (train + validation images and masks, uint8) may take.
ARRAY_BUDGET_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class InputPlan:
    """How the network sees images.

    Attributes:
        scale: None = squash to ``size``×``size``; a factor = resize by it, tiles of side ``size``.
        size: the square input side (squash) or the tile side (tiles), px.
        batch_size: images (squash) or crops (tiles) per optimisation step.
        reason: one line saying why (logged, saved in the record).
    """

    scale: float | None
    size: int
    batch_size: int
    reason: str

    @property
    def is_tiled(self) -> bool:
        return self.scale is not None


def _round32(value: float) -> int:
    return int(math.ceil(value / 32.0) * 32)


def _tile_side(recipe: Recipe, stats: ObjectStats, scale: float) -> int:
    if recipe.size:
        return recipe.size
    longer = max(stats.median_height, stats.median_width) * scale
    return max(64, min(TILE_SIDE, _round32(longer))) if longer else TILE_SIDE


def _array_bytes(stats: ObjectStats, scale: float, images: int) -> float:
    """uint8 RGB + mask planes of ``images`` padded images at ``scale`` (the median size stands for the max)."""
    return 4.0 * images * stats.median_height * stats.median_width * scale * scale


def plan_input(recipe: Recipe, stats: ObjectStats, num_classes: int, images: int, instances: bool = False) -> InputPlan:
    """The input plan of ``recipe`` for data measured as ``stats`` (see the module doc for the rule).

    Args:
        recipe: ``scale`` (``auto``, ``squash`` or a factor), ``size`` (0 = planned), ``fit``, ``batch_size``.
        stats: object statistics of the training masks at their own resolution.
        num_classes: classes including background.
        images: training + validation images (for the memory bound of the arrays).
        instances: an instance run's targets (background, border, interiors): squash only while every class
            keeps :data:`MIN_SQUASHED_PX_INSTANCES` px.
    """
    forced = parse_scale(recipe.scale)
    squash_side = recipe.size or planned_size(num_classes)
    if forced == "squash" or (forced == "auto" and recipe.fit != "stretch"):
        why = "--scale squash" if forced == "squash" else f"--fit {recipe.fit} places images in one square"
        return InputPlan(None, squash_side, recipe.batch_size, f"plan: squash to {squash_side} px ({why})")
    if isinstance(forced, float):
        tile = _tile_side(recipe, stats, forced)
        return InputPlan(
            forced, tile, recipe.batch_size, f"plan: tiles of {tile} px at scale {forced:g} (--scale {forced:g})"
        )
    height, width = stats.median_height, stats.median_width
    size_text = f"{width:.0f}×{height:.0f}"
    measured = [row for row in stats.classes if row.objects]
    if not measured or not height:
        return InputPlan(
            None, squash_side, recipe.batch_size, f"plan: squash to {squash_side} px (no foreground objects measured)"
        )
    factor = squash_side / max(height, width)
    thinnest = min(measured, key=lambda row: row.median_thickness)
    squashed = thinnest.median_thickness * factor
    if squashed >= (MIN_SQUASHED_PX_INSTANCES if instances else MIN_SQUASHED_PX):
        return InputPlan(
            None,
            squash_side,
            recipe.batch_size,
            f"plan: squash to {squash_side} px — the thinnest class '{thinnest.name}' stays {squashed:.0f} px "
            f"thick ({thinnest.median_thickness:.0f} px in {size_text} images)",
        )
    scale = next((s for s in SCALES if thinnest.median_thickness * s >= TARGET_PX), 1.0)
    lowered = ""
    while _array_bytes(stats, scale, images) > ARRAY_BUDGET_BYTES and scale > SCALES[0]:
        scale = max(s for s in SCALES if s < scale)
        lowered = f"; scale lowered to keep the arrays under {ARRAY_BUDGET_BYTES / 1024**3:.0f} GiB"
    tile = _tile_side(recipe, stats, scale)
    batch = max(2, round(recipe.batch_size * squash_side**2 / tile**2))
    return InputPlan(
        scale,
        tile,
        batch,
        f"plan: tiles of {tile} px at scale {scale:.2g}, {batch} crops per step — objects of class "
        f"'{thinnest.name}' are {thinnest.median_thickness:.1f} px thick ({thinnest.pixel_fraction:.1%} of the "
        f"pixels); squashing {size_text} to {squash_side} would leave them {squashed:.1f} px{lowered}",
    )
