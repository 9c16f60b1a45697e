"""How sure is a difference? Bootstrap confidence intervals for one run's test metric and for two runs' difference.

Every run of ``benchmarks/quality.py`` on a data set scores the same held-out test images (seed 0), and
``pixelwise evaluate`` writes one row per image (``RUN/eval-test/metrics.csv``). Resampling the images with
replacement gives a 95 % interval for a run's mean, and — pairing the images — for the difference of two runs,
which is narrower because both runs find the same images hard.

    .venv/bin/python benchmarks/paired.py benchmarks/runs/isic-s22 benchmarks/runs/isic-s23-lovasz
    .venv/bin/python benchmarks/paired.py RUN_A RUN_B RUN_C --metric dice

The first run is the reference; each other run is compared with it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from pixelwise.runs import RunFolder


def per_image(run: Path, metric: str) -> dict[str, float]:
    """image id → the metric of ``run``'s test evaluation (NaN rows, e.g. HD95 of an empty mask, left out)."""
    path = RunFolder(run).eval_folder("test") / RunFolder.METRICS
    if not path.exists():
        sys.exit(f"{path} not found: run `pixelwise evaluate {run}` first")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and metric not in rows[0]:
        sys.exit(f"{path} has no column '{metric}'; it has {', '.join(rows[0])}")
    values = {row["id"]: float(row[metric] or "nan") for row in rows}
    return {key: value for key, value in values.items() if np.isfinite(value)}


def bootstrap_interval(values: np.ndarray, draws: int, seed: int = 0) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles of the mean of ``values`` (float 1-D) resampled with replacement."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (draws, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "runs", type=Path, nargs="+", help="run folders with eval-test/metrics.csv; the first is the reference"
    )
    parser.add_argument(
        "--metric", default="threshold_jaccard", help="a column of metrics.csv (default threshold_jaccard)"
    )
    parser.add_argument("--draws", type=int, default=5000)
    args = parser.parse_args()
    scores = {run: per_image(run, args.metric) for run in args.runs}
    reference = args.runs[0]
    for run, values in scores.items():
        array = np.array(list(values.values()))
        low, high = bootstrap_interval(array, args.draws)
        print(
            f"{run.name}: {args.metric} {array.mean():.4f} over {len(array)} images, "
            f"95 % interval [{low:.4f}, {high:.4f}]"
        )
    for run in args.runs[1:]:
        shared = sorted(set(scores[reference]) & set(scores[run]))
        if not shared:
            sys.exit(f"{run} and {reference} share no test image: not the same split")
        difference = np.array([scores[run][key] - scores[reference][key] for key in shared])
        low, high = bootstrap_interval(difference, args.draws)
        verdict = "higher" if low > 0 else "lower" if high < 0 else "not distinguishable"  # HD95: lower is better
        print(
            f"{run.name} − {reference.name}: {difference.mean():+.4f} over {len(shared)} paired images, "
            f"95 % interval [{low:+.4f}, {high:+.4f}]: {verdict}"
        )


if __name__ == "__main__":
    main()
