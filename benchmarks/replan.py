"""Re-choose a finished run's threshold (an instance run's decode thresholds, a binary run's edge refinement) with
today's rules, into a copy of the run.

``train`` ends by choosing the probability threshold on the validation split
(``train.loop.choose_threshold_on_validation``: today on TTA-averaged probabilities). This script applies that
rule to the weights of an older run, so the rule's effect is measured on the same weights:

    .venv/bin/python benchmarks/replan.py benchmarks/runs/isic-zoom benchmarks/runs/isic-zoom-replanned
    .venv/bin/pixelwise evaluate benchmarks/runs/isic-zoom-replanned

``--last-step`` keeps the last optimiser step's weights (from ``train_state.safetensors``) instead of the kept
ones: in an ``--ema`` run these are the weights a run without ``--ema`` would have reached on the same
trajectory, so both can be scored from one run (a paired comparison, free of the machine's speed).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from pixelwise.fileio import file_sha1
from pixelwise.models import build_model
from pixelwise.runs import RunFolder, load_weights, read_tensors, save_tensors
from pixelwise.train.data import prepare_data
from pixelwise.train.loop import (
    choose_decode_on_validation,
    choose_refine_on_validation,
    choose_threshold_on_validation,
    recorded_data,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished (single-model) run folder")
    parser.add_argument("out", type=Path, help="the copy to write (must not exist)")
    parser.add_argument("--last-step", action="store_true", help="use the last step's weights from the train state")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new folder")
    console = Console(stderr=True)
    source = RunFolder(args.run)
    config = source.load_trained_config()
    shutil.copytree(source.path, args.out, ignore=shutil.ignore_patterns("eval-*"))
    copy = RunFolder(args.out)
    if args.last_step:
        state, _ = read_tensors(copy.state_path, "train state")
        save_tensors(copy.weights_path, {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
    record = config.record
    # The copied split.json and the recorded classes, size and plan: the run's own validation images, as trained.
    data = prepare_data(config.recipe, copy, **recorded_data(config.recipe, record))
    model = build_model(config.recipe.model, data.num_classes, pretrained=False)
    load_weights(model, copy.weights_path)
    cpu = torch.device("cpu")
    threshold = choose_threshold_on_validation(model, data, record, cpu)
    decode = choose_decode_on_validation(model, data, record, cpu)
    refine = choose_refine_on_validation(config.recipe, model, data, record.replace(threshold=threshold), cpu)
    chosen = record.replace(
        threshold=threshold, decode=decode, refine_edges=refine, weights_sha1=file_sha1(copy.weights_path)
    )
    copy.write_config(replace(config, record=chosen))
    # config.json has no free-form field: what this copy is goes beside it.
    (copy.path / "replan.json").write_text(
        json.dumps(
            {
                "replanned_from": str(args.run),
                "threshold_before": record.threshold,
                "decode_before": record.decode,
                "refine_edges_before": record.refine_edges,
                **({"weights": "the last step's (train_state.safetensors)"} if args.last_step else {}),
            },
            indent=2,
        )
        + "\n"
    )
    console.print(
        f"threshold {record.threshold:.2f} → {threshold:.2f}, decode {record.decode} → {decode}, "
        f"refine_edges {record.refine_edges} → {refine}: {args.out}"
    )


if __name__ == "__main__":
    main()
