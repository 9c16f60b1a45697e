"""Does refining a multi-class run's edges at the image's resolution raise its mean IoU?

A squashed run's class probabilities, stretched from the network's input back to the image, put every class
border where a few coarse pixels blur it. Binary runs may refine theirs with a guided filter
(``RunRecord.refine_edges``, ``pixelwise.masks.cutout.refined_mask``); this benchmark measures the multi-class
analogue before it is built: each class's probability filtered with the image as the guide (He et al.'s colour
guided filter, the same radius and eps), then the argmax, only in the band where the coarse labels change.

For every image of the run's saved test split, at the image's own resolution, it pools the confusion matrix of
(a) the labels ``predict`` writes and (b) the refined labels, and prints the per-class and mean IoU of both:

    .venv/bin/python benchmarks/refine_multiclass.py RUN [--no-tta] [--limit 50] [--radius R] [--eps 1e-3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from heldout import run_pairs

import pixelwise
from pixelwise.data.imageio import parse_colors, read_image, read_mask
from pixelwise.data.split import load_split
from pixelwise.masks.cutout import DEFAULT_EPS, default_radius, refined_classes
from pixelwise.metrics import confusion_matrix, metrics_from_confusion
from pixelwise.runs import RunFolder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a multi-class squashed run folder")
    parser.add_argument("--limit", type=int, help="only the first N test images")
    parser.add_argument("--no-tta", action="store_true", help="one network pass an image")
    parser.add_argument("--radius", type=int, help="guided filter radius (default: ~1 %% of the longer side)")
    parser.add_argument("--eps", type=float, default=DEFAULT_EPS, help="guided filter eps")
    args = parser.parse_args()

    segmenter = pixelwise.load(args.run, tta=not args.no_tta)
    config, class_map = segmenter.config, segmenter.class_map
    if class_map.is_binary:
        sys.exit(f"{args.run}: a binary run (benchmarks/cutout_edges.py measures those)")
    colors = parse_colors(config.recipe.colors) if config.recipe.colors else None
    pairs = run_pairs(config.recipe, None)
    ids = list(load_split(RunFolder(args.run).split_path)["test"])[: args.limit]
    k = class_map.num_classes
    matrices = {"predict": np.zeros((k, k), np.int64), "refined": np.zeros((k, k), np.int64)}
    seconds = 0.0
    for image_id in ids:
        pair = pairs[image_id]
        image = read_image(pair.image)
        truth = class_map.apply(read_mask(pair.mask, colors, tuple(class_map.ignored_values)))
        result = segmenter.predict(image, probabilities=True)
        start = time.perf_counter()
        radius = args.radius or default_radius(*image.shape[:2])
        refined = refined_classes(image, result.probabilities, result.mask, radius, args.eps)
        seconds += time.perf_counter() - start
        for name, labels in (("predict", result.mask), ("refined", refined)):
            matrices[name] += confusion_matrix(labels, truth, k)
    print(
        f"{args.run}: {len(ids)} test images at their own size, TTA {'off' if args.no_tta else 'on'}; "
        f"refinement {seconds / max(len(ids), 1):.2f} s an image"
    )
    print(f"{'class':<16} {'predict':>8} {'refined':>8}")
    scores = {name: metrics_from_confusion(m) for name, m in matrices.items()}
    for c, name in enumerate(class_map.names):
        print(f"{name:<16} {scores['predict']['iou'][c]:>8.4f} {scores['refined']['iou'][c]:>8.4f}")
    for key in ("mean_iou", "mean_class_accuracy", "global_accuracy"):
        print(f"{key:<16} {scores['predict'][key]:>8.4f} {scores['refined'][key]:>8.4f}")


if __name__ == "__main__":
    main()
