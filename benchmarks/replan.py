"""Re-make a finished run's after-training choices with today's rule, into a copy of the run.

``train`` ends by choosing, on the validation split, the probability threshold and whether to keep only the
largest region (``train.loop.choose_postprocessing_on_validation``: today on TTA-averaged probabilities). This
script applies that rule to the weights of an older run, so the rule's effect is measured on the same weights:

    .venv/bin/python benchmarks/replan.py benchmarks/runs/isic-zoom benchmarks/runs/isic-zoom-replanned
    .venv/bin/pixelwise evaluate benchmarks/runs/isic-zoom-replanned
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from rich.console import Console

from pixelwise.fileio import file_sha1
from pixelwise.models import build_model
from pixelwise.runs import RunFolder, load_weights
from pixelwise.train.data import prepare_data
from pixelwise.train.loop import choose_postprocessing_on_validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished (single-model) run folder")
    parser.add_argument("out", type=Path, help="the copy to write (must not exist)")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new folder")
    console = Console(stderr=True)
    source = RunFolder(args.run)
    config = source.load_trained_config()
    shutil.copytree(args.run, args.out, ignore=shutil.ignore_patterns("eval-*"))
    copy = RunFolder(args.out)
    data = prepare_data(config, copy, console)  # reads the copied split.json
    model = build_model(config.model, data.num_classes, pretrained=False)
    load_weights(model, copy.weights_path)
    before = (config.threshold, config.keep_largest)
    config.threshold, config.keep_largest = choose_postprocessing_on_validation(model, data, config, torch.device("cpu"))
    config.extra = {**config.extra, "weights_sha1": file_sha1(copy.weights_path), "replanned_from": str(args.run)}
    copy.write_config(config)
    console.print(f"threshold {before[0]:.2f} → {config.threshold:.2f}, keep_largest {before[1]} → "
                  f"{config.keep_largest}: {args.out}")


if __name__ == "__main__":
    main()
