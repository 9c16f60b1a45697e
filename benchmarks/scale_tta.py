"""Test-time augmentation modes, measured on a finished run's own weights (a paired comparison).

The default TTA (``d4-zoom``, :mod:`pixelwise.predict.tta`) averages the 8 dihedral views at the run's input size
and at 1.25× it. This script re-scores a run with another of the library's modes (``--mode``: ``none``, ``flips``,
``d4``, ``d4-zoom``): it copies the run, re-chooses the probability threshold on the validation split with that
mode's probabilities (train's rule: best mean validation Dice over ``THRESHOLD_GRID``), and evaluates the copy's
validation and test splits with that mode, all in this process. Choose on the validation scores (``eval-val``);
the test scores (``eval-test``) are for the report:

    .venv/bin/python benchmarks/scale_tta.py benchmarks/runs/isic-dwfp32 benchmarks/runs/isic-dwfp32-d4 --mode d4
    .venv/bin/python benchmarks/scale_tta.py benchmarks/runs/isic-dwfp32 benchmarks/runs/isic-dwfp32-ms

Compare the copies' ``eval-val/summary.json``, then ``eval-test`` (same weights, different views). Scales other
than the modes' own (1, or 1 and 1.25) need a hook the library does not offer; this script used to patch
``tta.TTA_SCALES`` for them and no longer does.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from pixelwise.config import PREDICT_TTA
from pixelwise.data.classes import IGNORE
from pixelwise.evaluate.evaluate import evaluate_run
from pixelwise.metrics import THRESHOLD_GRID, choose_threshold, threshold_sweep
from pixelwise.models import build_model
from pixelwise.predict.tta import TTA_MODES, tta_probabilities
from pixelwise.runs import RunFolder, load_weights
from pixelwise.runtime import batched_probabilities
from pixelwise.train.data import prepare_data
from pixelwise.train.loop import model_probabilities, recorded_data


def validation_threshold(model, data, record, mode: str, device: torch.device) -> float:
    """Train's threshold rule (``choose_threshold_on_validation``) on the probabilities of TTA ``mode``.

    Written out here because the library's rule takes no TTA mode (it uses ``PREDICT_TTA``)."""
    if data.num_classes != 2:
        return 0.5
    model.eval()
    predict_unit = model_probabilities(model, record, device)
    probs = batched_probabilities(lambda x: tta_probabilities(predict_unit, x, mode), data.val_images, device, 32)
    sweep = threshold_sweep(probs[:, 0], data.val_masks == 1, THRESHOLD_GRID, ignore=data.val_masks == IGNORE)
    return float(choose_threshold(sweep))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished single-model run")
    parser.add_argument("out", type=Path, help="the copy to write (must not exist)")
    parser.add_argument("--mode", choices=list(TTA_MODES), default=PREDICT_TTA, help=f"default {PREDICT_TTA}")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new folder")
    console = Console(stderr=True)
    source = RunFolder(args.run)
    source.load_trained_config()  # refuse a folder that is not a finished run before copying it
    shutil.copytree(source.path, args.out, ignore=shutil.ignore_patterns("eval-*"))
    copy = RunFolder(args.out)
    config = copy.load_trained_config()
    record = config.record
    device = torch.device("cpu")
    # The copied split.json and the recorded classes, size and plan: the run's own validation images, as trained.
    data = prepare_data(config.recipe, copy, **recorded_data(config.recipe, record))
    model = build_model(config.recipe.model, data.num_classes, pretrained=False)
    load_weights(model, copy.weights_path)
    threshold = validation_threshold(model, data, record, args.mode, device)
    copy.write_config(replace(config, record=record.replace(threshold=threshold)))
    # config.json has no free-form field: what this copy is goes beside it.
    (copy.path / "scale_tta.json").write_text(
        json.dumps(
            {"tta": args.mode, "replanned_from": str(source.path), "threshold_before": record.threshold}, indent=2
        )
        + "\n"
    )
    console.print(f"threshold {record.threshold:.2f} → {threshold:.2f} with TTA {args.mode}")
    for split in ("val", "test"):
        for table in evaluate_run(copy.path, split=split, tta=args.mode).tables:
            console.print(table)


if __name__ == "__main__":
    main()
