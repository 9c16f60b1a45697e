"""Multi-scale test-time augmentation, measured on a finished run's own weights (a paired comparison).

The default TTA (``d4-zoom``, :mod:`pixelwise.predict.tta`) averages the 8 dihedral views at the run's input size
and at 1.25× it. This script re-scores a run with other scales in place of (1, 1.25): it copies the run,
re-chooses the probability threshold on the validation split with those probabilities (train's rule), and scores
the copy's validation and test splits with ``pixelwise evaluate --tta``, all in this process. Choose scales on
the validation scores (``eval-val``); the test scores (``eval-test``) are for the report. ``--scales 1`` is
plain ``d4``:

    .venv/bin/python benchmarks/scale_tta.py benchmarks/runs/isic-dwfp32 benchmarks/runs/isic-dwfp32-d4 --scales 1
    .venv/bin/python benchmarks/scale_tta.py benchmarks/runs/isic-dwfp32 benchmarks/runs/isic-dwfp32-ms --scales 1 1.25

Compare the copies' ``eval-val/summary.json``, then ``eval-test`` (same weights, different views).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from unittest import mock

import torch
from rich.console import Console

from pixelwise.cli import app
from pixelwise.config import PREDICT_TTA
from pixelwise.models import build_model
from pixelwise.predict import tta
from pixelwise.runs import RunFolder, load_weights
from pixelwise.train.data import prepare_data
from pixelwise.train.loop import choose_threshold_on_validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished single-model run")
    parser.add_argument("out", type=Path, help="the copy to write (must not exist)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.25])
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new folder")
    shutil.copytree(args.run, args.out, ignore=shutil.ignore_patterns("eval-*"))
    copy = RunFolder(args.out)
    config = copy.load_trained_config()
    with mock.patch.dict(tta.TTA_SCALES, {PREDICT_TTA: tuple(args.scales)}):
        data = prepare_data(config, copy, Console(stderr=True))
        model = build_model(config.model, data.num_classes, pretrained=False)
        load_weights(model, copy.weights_path)
        before = config.threshold
        config.threshold = choose_threshold_on_validation(model, data, config, torch.device("cpu"))
        config.extra = {**config.extra, "tta_scales": args.scales, "replanned_from": str(args.run)}
        copy.write_config(config)
        print(f"threshold {before:.2f} → {config.threshold:.2f} with scales {args.scales}")
        for split in ("val", "test"):
            app(["evaluate", str(args.out), "--split", split, "--tta"], standalone_mode=False)


if __name__ == "__main__":
    main()
