"""Robustness to framing: a person model scored on re-framed copies of its own held-out test photos.

ccp-people holds only full-body, upright, centred photos of one person; users bring portraits, half-body shots,
people off-centre and groups. This script makes those framings from the run's held-out test split (never used
for training or choices), applies the same cut to image and truth mask, and scores the run on each with the
Python API (``pixelwise.load``):

- ``full``: the photo as it is (the run's own test number);
- ``half-body``: from the top of the image down to 55 % of the person's height (portrait-like, ~4:3 or wider);
- ``head-shoulders``: the top 30 % of the person, a box 1.3× the person's width (close to square);
- ``off-centre``: the photo cut at 35 % of the person's width from its left edge (the person leaves the frame);
- ``pair``: the photo beside its mirror image (two people, landscape, ~1.3:1).

    .venv/bin/python benchmarks/framing.py benchmarks/runs/people-effnet_lite0 [--json results.json]

Prints per framing the mean Dice and Jaccard over the test images (binary person masks), and the image shapes.
"""

from __future__ import annotations

import numpy as np
from heldout import HeldOut, run_arguments, save_result


def person_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def framings(image: np.ndarray, mask: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The framings of one photo: name → (image H×W×3, bool truth H×W)."""
    top, bottom, left, right = person_box(mask)
    height, width = mask.shape
    person_h, person_w = bottom - top, right - left
    centre = (left + right) // 2
    out = {"full": (image, mask)}
    cut = top + int(0.55 * person_h)
    out["half-body"] = (image[:cut], mask[:cut])
    cut = top + int(0.30 * person_h)
    half = int(0.65 * person_w)
    x0, x1 = max(0, centre - half), min(width, centre + half)
    y0 = max(0, top - person_h // 20)  # a little headroom above the hair
    out["head-shoulders"] = (image[y0:cut, x0:x1], mask[y0:cut, x0:x1])
    x0 = left + int(0.35 * person_w)
    out["off-centre"] = (image[:, x0:], mask[:, x0:])
    out["pair"] = (np.concatenate([image, image[:, ::-1]], axis=1), np.concatenate([mask, mask[:, ::-1]], axis=1))
    return out


def dice_jaccard(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    inter, total = float((pred & truth).sum()), float(pred.sum() + truth.sum())
    union = total - inter
    return (2 * inter / total if total else 1.0), (inter / union if union else 1.0)


def main() -> None:
    args = run_arguments(__doc__)
    held_out = HeldOut(args)
    config, segmenter = held_out.config, held_out.segmenter
    scores: dict[str, list[tuple[float, float]]] = {}
    aspects: dict[str, list[float]] = {}
    for image, truth in held_out.images():
        if not truth.any():
            continue
        for name, (crop, crop_truth) in framings(image, truth).items():
            pred = segmenter.predict(np.ascontiguousarray(crop)).mask > 0
            scores.setdefault(name, []).append(dice_jaccard(pred, crop_truth))
            aspects.setdefault(name, []).append(crop.shape[1] / crop.shape[0])
    rows = {
        name: {
            "images": len(values),
            "dice": round(float(np.mean([v[0] for v in values])), 4),
            "jaccard": round(float(np.mean([v[1] for v in values])), 4),
            "median_width_over_height": round(float(np.median(aspects[name])), 2),
        }
        for name, values in scores.items()
    }
    print(f"{args.run} (fit {config.recipe.fit}, size {config.record.size}, TTA {segmenter.tta})")
    for name, row in rows.items():
        print(
            f"  {name:15s} {row['images']:4d} images  w/h {row['median_width_over_height']:.2f}  "
            f"Dice {row['dice']:.4f}  Jaccard {row['jaccard']:.4f}"
        )
    save_result(
        args.json,
        args.run,
        {"fit": config.recipe.fit, "size": config.record.size, "tta": segmenter.tta, "framings": rows},
    )


if __name__ == "__main__":
    main()
