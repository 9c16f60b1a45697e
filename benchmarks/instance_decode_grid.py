"""How the seeded watershed's seed source, its two thresholds and the objects' minimum score move an instance run's
scores, on one split of its data.

The class probabilities of each image are computed once (the path ``evaluate`` takes, with ``--tta-mode``), then
decoded with every seed source × seed threshold × foreground threshold, and each decode's objects kept above every
minimum score; DSB 2018 score and StarDist's pooled accuracy at IoU 0.5 are printed for each choice. Choose on
``--split val``, report on ``--split test``.

    .venv/bin/python benchmarks/instance_decode_grid.py benchmarks/runs/dsb-default --split val --tta-mode flips
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from pixelwise.data.imageio import read_image
from pixelwise.data.instances_io import read_pair_instances
from pixelwise.evaluate.evaluate import _plan_evaluation
from pixelwise.evaluate.instance_metrics import dsb_score, stardist_matching
from pixelwise.masks.instance_decode import MIN_SCORE_GRID, SEED_SOURCES, decode_instances
from pixelwise.predict.segment import image_labels

SEEDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
FOREGROUNDS = (0.3, 0.4, 0.5, 0.6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--tta-mode", default="none")
    parser.add_argument("--json", type=Path, help="write the grid here")
    args = parser.parse_args()
    plan = _plan_evaluation(
        args.run, None, args.split, tta=args.tta_mode, engine="torch", precision="fp32", cache_dir=None
    )
    colors, void = plan.truths.colors, tuple(plan.truths.class_map.ignored_values)
    truths, probabilities = [], []
    start = time.perf_counter()
    for predictor, ids in plan.groups:
        for image_id in ids:
            pair = plan.by_id[image_id]
            ((_, probs),) = image_labels(predictor, [read_image(pair.image)], keep_probabilities=True)
            probabilities.append(probs)
            truths.append(read_pair_instances(pair, colors, void, with_image=False).labels)
    print(f"{len(truths)} images of {args.split} predicted in {time.perf_counter() - start:.0f} s ({args.tta_mode})")
    rows = []
    for seeds, seed, foreground in itertools.product(SEED_SOURCES, SEEDS, FOREGROUNDS):
        decoded = [
            decode_instances(p, seed_threshold=seed, foreground_threshold=foreground, seeds=seeds)
            for p in probabilities
        ]
        for min_score in MIN_SCORE_GRID:
            preds = [objects.above(min_score).labels for objects in decoded]
            accuracy = stardist_matching(truths, preds)[0]["accuracy"]
            dsb = dsb_score(truths, preds)["dsb"]
            rows.append(
                {"seeds": seeds, "seed": seed, "foreground": foreground, "min_score": min_score, "dsb": dsb}
                | {"acc50": accuracy}
            )
            print(
                f"{seeds:9s} seed {seed:.1f}  foreground {foreground:.1f}  score ≥ {min_score:.2f}  "
                f"DSB {dsb:.4f}  acc@0.5 {accuracy:.4f}"
            )
    best = max(rows, key=lambda r: r["dsb"])
    print(
        f"best DSB: {best['seeds']} seeds, seed {best['seed']}, foreground {best['foreground']}, "
        f"score ≥ {best['min_score']}: "
        f"{best['dsb']:.4f} / {best['acc50']:.4f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"run": str(args.run), "split": args.split, "tta": args.tta_mode, "rows": rows})
        )


if __name__ == "__main__":
    main()
