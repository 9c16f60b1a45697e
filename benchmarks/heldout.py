"""A run's held-out test images and its segmenter: what the robustness benchmarks (framing, appearance) share.

Each of them takes a run folder, re-reads the images of its saved test split (``split.json``, never used for
training or choices), changes them, and scores ``pixelwise.load(run)`` on each version.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import pixelwise
from pixelwise.data.imageio import read_image, read_mask
from pixelwise.data.layouts import find_pairs
from pixelwise.data.sets import find_sets
from pixelwise.data.split import load_split
from pixelwise.runs import RunFolder


def run_arguments(doc: str) -> argparse.Namespace:
    """The command line every held-out benchmark takes: RUN [--data] [--json] [--no-tta]."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, help="the run's data set (default: config.json's)")
    parser.add_argument("--json", type=Path, help="also write the results (a key per run) into this JSON file")
    parser.add_argument("--set", help="a run on several data sets: only this set's test images (its folder name)")
    parser.add_argument(
        "--no-tta", action="store_true", help="one network pass an image (default: pixelwise.load's TTA)"
    )
    return parser.parse_args()


def run_pairs(recipe, data: Path | None) -> dict:
    """``{pair id: Pair}`` of the run's own data set(s) (the embedded synthetic set when the recipe has none), or
    of ``data`` when given (ids as ``find_pairs`` names them)."""
    index = find_pairs(data) if data else find_sets(recipe.data_roots(), layout=recipe.layout)
    return {p.id: p for p in index.pairs}


class HeldOut:
    """A binary run's config, segmenter and test images (uint8 H×W×3 image, bool H×W truth), read lazily."""

    def __init__(self, args: argparse.Namespace):
        self.run: Path = args.run
        folder = RunFolder(self.run)
        self.config = folder.load_trained_config()  # recipe (what was asked) + record (what training learned)
        if self.config.record.num_classes != 2:
            sys.exit(f"{self.run} is not a binary run")
        self._pairs = run_pairs(self.config.recipe, args.data)
        self.test_ids = load_split(folder.split_path)["test"]
        if getattr(args, "set", None):
            self.test_ids = [i for i in self.test_ids if self._pairs[i].source == args.set]
        if not self.test_ids:
            sys.exit(f"{self.run} has no test split")
        self.segmenter = pixelwise.load(self.run, tta=not args.no_tta)

    def images(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for image_id in self.test_ids:
            pair = self._pairs[image_id]
            yield read_image(pair.image), read_mask(pair.mask) > 0


def save_result(path: Path | None, run: Path, entry: dict) -> None:
    """Store ``entry`` under the run's name in the JSON file ``path`` (kept entries of other runs)."""
    if path is None:
        return
    results = json.loads(path.read_text()) if path.exists() else {}
    results[run.name] = entry
    path.write_text(json.dumps(results, indent=2) + "\n")
