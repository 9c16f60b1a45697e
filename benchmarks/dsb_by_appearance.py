"""An instance run's DSB 2018 numbers split by how the images look: fluorescence (grey, dark background) against
the rest (H&E and brightfield), from the per-image rows ``evaluate`` wrote.

StarDist's paper reports its DSB 2018 numbers on a fluorescence-only subset; this makes ours comparable. An image
counts as fluorescence when its three channels are equal (mean difference under 2 grey levels) and its mean
brightness is under 100 of 255.

    .venv/bin/python benchmarks/dsb_by_appearance.py benchmarks/runs/dsb-default/eval-test
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image


def appearance(image: np.ndarray) -> str:
    """``fluorescence`` or ``other`` for an RGB uint8 H×W×3 image (module doc)."""
    pixels = image.astype(np.float32)
    grey = np.abs(pixels[..., 0] - pixels[..., 1]).mean() < 2 and np.abs(pixels[..., 1] - pixels[..., 2]).mean() < 2
    return "fluorescence" if grey and pixels.mean() < 100 else "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_folder", type=Path, help="RUN/eval-test (metrics.csv and summary.json)")
    args = parser.parse_args()
    data = Path(json.loads((args.eval_folder / "summary.json").read_text())["data"])
    with (args.eval_folder / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    groups: dict[str, list[dict]] = {}
    for row in rows:
        image = np.asarray(Image.open(data / row["id"] / "images" / f"{row['id']}.png").convert("RGB"))
        groups.setdefault(appearance(image), []).append(row)
    print("| images | n | DSB score | StarDist AP@0.5 (TP/(TP+FP+FN)) | TP / FP / FN |")
    print("| --- | --- | --- | --- | --- |")
    for name, group in sorted(groups.items()) + [("all", rows)]:
        tp, fp, fn = (sum(int(r[k]) for r in group) for k in ("tp", "fp", "fn"))
        dsb = np.mean([float(r["dsb"]) for r in group])
        print(f"| {name} | {len(group)} | {dsb:.3f} | {tp / max(tp + fp + fn, 1):.3f} | {tp} / {fp} / {fn} |")


if __name__ == "__main__":
    main()
