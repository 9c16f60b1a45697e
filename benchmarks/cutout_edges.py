"""Edge quality of cutouts: does the guided-filter alpha (pixelwise.masks.cutout) put a binary run's edges
closer to the truth than its hard mask?

For every image of the run's saved test split (``split.json`` ids: the run's own, else the data folder's),
at the image's own resolution:

* (a) the hard mask: the run's probability, resized to the image, thresholded (what ``predict`` writes);
* (b) the matte: ``Segmentation.alpha() > 0.5`` (the probability refined by a guided filter on the image).

and prints, averaged over images, the boundary F-score at ``--tolerance`` pixels (the harmonic mean of the
fractions of each boundary within the tolerance of the other: boundary precision and recall), the normalised
surface Dice at the same tolerance (``pixelwise.metrics.distance_metrics``), the mean boundary distance, and
the mean absolute difference from the truth of the mask (0/1: its error rate) and of the alpha itself (soft: the
matting SAD per pixel; a binary truth treats every edge as sharp).
No training is run:

    .venv/bin/python benchmarks/cutout_edges.py RUN [DATA] [--no-tta] [--limit 50] [--radius 8] [--eps 1e-3]

Without DATA the run's own data set(s) are read (a run on several: the means also per set).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from heldout import run_pairs

import pixelwise
from pixelwise.data.imageio import parse_colors, read_image, read_mask
from pixelwise.data.split import load_split
from pixelwise.metrics import confusion_counts, distance_metrics, overlap_metrics, surface_distances
from pixelwise.runs import RunFolder


def boundary_scores(pred: np.ndarray, truth: np.ndarray, tolerance: float) -> dict[str, float]:
    """Boundary F-score, its precision and recall, NSD and mean boundary distance of two bool H×W masks
    (NaN when either is empty)."""
    nan = float("nan")
    if not pred.any() or not truth.any():
        return {"bf": nan, "precision": nan, "recall": nan, "nsd": nan, "mean_distance": nan}
    pred_to_truth, truth_to_pred = surface_distances(pred, truth)
    precision = float(np.mean(pred_to_truth <= tolerance))
    recall = float(np.mean(truth_to_pred <= tolerance))
    bf = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    nsd = distance_metrics(pred, truth, nsd_tolerance=tolerance)["nsd"]
    return {
        "bf": bf,
        "precision": precision,
        "recall": recall,
        "nsd": nsd,
        "mean_distance": float(np.concatenate([pred_to_truth, truth_to_pred]).mean()),
    }


def test_ids(run: Path, data: Path | None, split_file: Path | None) -> list[str]:
    for path in (split_file, RunFolder(run).split_path, data / "split.json" if data else None):
        if path is not None and path.is_file():
            return list(load_split(path)["test"])
    sys.exit(f"no split.json in {run} or {data}: pass --split-file")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a binary run folder")
    parser.add_argument("data", type=Path, nargs="?", help="its data folder (default: the run's own data sets)")
    parser.add_argument("--split-file", type=Path, help="split.json to read the test ids from (default: the run's)")
    parser.add_argument("--tolerance", type=float, default=2.0, help="pixels (default 2)")
    parser.add_argument("--radius", type=int, help="guided filter radius (default: ~1 %% of the longer side)")
    parser.add_argument("--eps", type=float, help="guided filter eps (default: pixelwise.masks.cutout's)")
    parser.add_argument("--limit", type=int, help="only the first N test images")
    parser.add_argument("--no-tta", action="store_true", help="one network pass an image")
    parser.add_argument("--json", type=Path, help="also write the per-image rows and the means here")
    args = parser.parse_args()

    segmenter = pixelwise.load(args.run, tta=not args.no_tta)
    if not segmenter.class_map.is_binary:
        sys.exit(f"{args.run}: cutouts need a binary run")
    recipe, class_map = segmenter.config.recipe, segmenter.class_map
    colors = parse_colors(recipe.colors) if recipe.colors else None
    pairs = {i: p for i, p in run_pairs(recipe, args.data).items() if p.mask is not None}
    ids = test_ids(args.run, args.data, args.split_file)[: args.limit]
    missing = [i for i in ids if i not in pairs]
    if missing:
        sys.exit(f"{len(missing)} test ids are not in {args.data} (e.g. {missing[0]}): pass the run's data folder")

    rows, matte_seconds, megapixels = [], 0.0, 0.0
    for image_id in ids:
        pair = pairs[image_id]
        image = read_image(pair.image)
        truth = class_map.apply(read_mask(pair.mask, colors, tuple(class_map.ignored_values))) == 1
        result = segmenter.predict(image, probabilities=True)
        start = time.perf_counter()
        alpha = result.alpha(args.radius, args.eps)
        matte_seconds += time.perf_counter() - start
        megapixels += image.shape[0] * image.shape[1] / 1e6
        for method, mask, soft in (
            ("hard mask", result.mask == 1, result.mask == 1),
            ("alpha > 0.5", alpha > 0.5, alpha),
        ):
            rows.append(
                {
                    "id": image_id,
                    "set": pair.source or "",
                    "method": method,
                    **boundary_scores(mask, truth, args.tolerance),
                    "dice": float(overlap_metrics(confusion_counts(mask, truth))["dice"][0]),
                    "mae": float(np.abs(soft.astype(np.float32) - truth).mean()),
                }
            )

    tol = f"{args.tolerance:g} px"
    data_name = args.data or " + ".join(recipe.data_paths)
    print(
        f"{args.run} on {len(ids)} test images of {data_name}, at each image's resolution "
        f"(TTA {'off' if args.no_tta else 'on'}); matte: {matte_seconds / max(megapixels, 1e-9):.3f} s/MP"
    )
    print(
        f"{'method':<12} {'BF@' + tol:>10} {'precision':>10} {'recall':>8} {'NSD@' + tol:>10} {'mean dist':>10} "
        f"{'MAE':>8} {'Dice':>8}"
    )
    means = {}
    for data_set in ["", *sorted({r["set"] for r in rows} - {""})]:
        for method in ("hard mask", "alpha > 0.5"):
            scored = [r for r in rows if r["method"] == method and (not data_set or r["set"] == data_set)]
            name = f"{data_set}: {method}" if data_set else method
            means[name] = {
                key: float(np.nanmean([r[key] for r in scored])) if scored else float("nan")
                for key in ("bf", "precision", "recall", "nsd", "mean_distance", "mae", "dice")
            }
            m = means[name]
            print(
                f"{name:<12} {m['bf']:>10.4f} {m['precision']:>10.4f} {m['recall']:>8.4f} {m['nsd']:>10.4f} "
                f"{m['mean_distance']:>10.3f} {m['mae']:>8.4f} {m['dice']:>8.4f}"
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "run": str(args.run),
                    "data": str(data_name),
                    "tolerance": args.tolerance,
                    "means": means,
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
