"""Reproduce the recipe table of docs/experiments.md on both development sets (ISIC-2017 lesions, ccp-people).

Every experiment is one `pixelwise train` (time-budgeted) and one or more `pixelwise evaluate` on the
run's held-out test split (20 %, seed 0: the same images for every experiment, never used for tuning;
the threshold is chosen on the 10 % validation split). Results are appended to
benchmarks/results/quality.json; finished experiments are skipped, so the script can be re-run after
an interruption. The markdown table is regenerated from the JSON each time.

    .venv/bin/python benchmarks/quality.py                 # everything (several hours on 2 cores)
    .venv/bin/python benchmarks/quality.py --only default lesson-unet
    .venv/bin/python benchmarks/quality.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"isic": ROOT.parent / "shared" / "data" / "isic2017-train-256",
            "people": ROOT.parent / "shared" / "data" / "ccp-people",
            # ccp-people's 59 clothing/skin/hair labels, merged into 8 classes (benchmarks/ccp_parsing_merge.txt)
            "parsing": ROOT.parent / "shared" / "data" / "ccp-people" / "parsing.csv"}
PARSING = ["--merge", str(ROOT / "benchmarks" / "ccp_parsing_merge.txt")]
DATA = DATASETS["isic"]
RUNS = ROOT / "benchmarks" / "runs"
RESULTS = ROOT / "benchmarks" / "results" / "quality.json"
FRAMING = ROOT / "benchmarks" / "results" / "framing.json"
TABLE = ROOT / "docs" / "experiments.md"

LESSON = ["--loss", "bce", "--augment", "none", "--size", "256", "--batch-size", "32", "--optimizer", "adam",
          "--schedule", "constant", "--warmup-epochs", "0", "--lr", "1e-3", "--epochs", "30", "--no-fast",
          "--patience", "1000"]

# name -> (train arguments, evaluation variants, what it tests)
EXPERIMENTS: dict[str, tuple[list[str], list[list[str]], str]] = {
    "lesson-segnet": (["--model", "segnet", *LESSON, "--budget", "15m"], [[]], "the lesson's protocol, SegNet"),
    "lesson-unet": (["--model", "unet", *LESSON, "--budget", "15m"], [[]], "the lesson's protocol, U-Net"),
    "default": (["--budget", "15m"],
                [[], ["--tta"], ["--fill-holes"], ["--keep-largest"], ["--tta", "--fill-holes", "--keep-largest"]],
                "pixelwise defaults, 15 minutes"),
    # 5-minute screens: one change at a time from the default recipe.
    "screen-unet": (["--model", "unet", "--budget", "5m"], [[]], "model: lesson U-Net"),
    "screen-res_unet": (["--model", "res_unet", "--budget", "5m"], [[]], "model: MONAI residual U-Net"),
    "screen-attention_unet": (["--model", "attention_unet", "--budget", "5m"], [[]], "model: attention U-Net"),
    "screen-segresnet": (["--model", "segresnet", "--budget", "5m"], [[]], "model: SegResNet"),
    "screen-resnet18_unet": (["--model", "resnet18_unet", "--budget", "5m"], [[]], "model: ResNet-18 U-Net"),
    "screen-size96": (["--size", "96", "--budget", "5m"], [[]], "input 96 px"),
    "screen-size160": (["--size", "160", "--budget", "5m"], [[]], "input 160 px"),
    "screen-aug-none": (["--augment", "none", "--budget", "5m"], [[]], "no augmentation"),
    "screen-aug-strong": (["--augment", "strong", "--budget", "5m"], [[]], "strong augmentation"),
    "screen-loss-bce": (["--loss", "bce", "--budget", "5m"], [[]], "loss: BCE only"),
    "screen-loss-dice": (["--loss", "dice", "--budget", "5m"], [[]], "loss: Dice only"),
    "screen-lr1e-3": (["--lr", "1e-3", "--budget", "5m"], [[]], "learning rate 1e-3"),
    "screen-lr1e-2": (["--lr", "1e-2", "--budget", "5m"], [[]], "learning rate 1e-2"),
    "screen-batch8": (["--batch-size", "8", "--budget", "5m"], [[]], "batch 8"),
    "screen-batch32": (["--batch-size", "32", "--budget", "5m"], [[]], "batch 32"),
    "screen-default": (["--budget", "5m"], [[]], "the default recipe, 5 minutes (reference for the screens)"),
    # Issue 9: the schedule anneals (no early stopping), and a pretrained encoder; both development sets.
    "anneal-res_unet": (["--budget", "15m"], [[]], "res_unet, 15 min, schedule runs to its end"),
    "anneal-effnet_lite0": (["--model", "effnet_lite0_unet", "--budget", "15m"], [[]],
                            "EfficientNet-Lite0 U-Net (ImageNet), 15 min"),
    "people-res_unet": (["--budget", "15m"], [[]], "res_unet, 15 min, schedule runs to its end", "people"),
    "people-effnet_lite0": (["--model", "effnet_lite0_unet", "--budget", "15m"], [[]],
                            "EfficientNet-Lite0 U-Net (ImageNet), 15 min", "people"),
    # Issue 10: multi-class. ccp-people parsing merged into 8 classes; the SegNet paper's table.
    "parsing-effnet_lite0": ([*PARSING, "--class-weights", "none", "--budget", "15m"], [[]],
                             "default network, CE + Dice, 15 min", "parsing"),
    "parsing-effnet_lite0-mfb": ([*PARSING, "--class-weights", "median-freq", "--budget", "15m"], [[]],
                                 "default network, median-frequency weighted CE + Dice, 15 min", "parsing"),
    # Issue 9: a budgeted run must not get worse on a faster machine: the same 5-minute budget on 1 and 2 threads.
    "speed-2threads": (["--budget", "5m"], [[]], "default recipe, 5 min, 2 threads", "isic", {"PIXELWISE_THREADS": "2"}),
    "speed-1thread": (["--budget", "5m"], [[]], "default recipe, 5 min, 1 thread (a slower machine)", "isic",
                      {"PIXELWISE_THREADS": "1"}),
    # Issue 9: aspect-preserving input. The people photos are 1.5:1; stretched vs letterboxed, each also scored
    # on re-framed copies of the held-out photos (benchmarks/framing.py: half-body, head-and-shoulders, ...).
    "people-stretch": (["--fit", "stretch", "--budget", "15m"], [[]], "default network, stretched to 128², 15 min",
                       "people"),
    "people-pad": (["--fit", "pad", "--budget", "15m"], [[]], "default network, letterboxed into 128², 15 min",
                   "people"),
    "people-zoom": (["--augment", "zoom", "--fit", "stretch", "--budget", "15m"], [[], ["--tta"]],
                    "default recipe + zoom-in crops (--augment zoom), 15 min", "people"),
    "people-zoom-pad": (["--augment", "zoom", "--fit", "pad", "--budget", "15m"], [[]],
                        "default recipe + zoom-in crops, letterboxed (--fit pad), 15 min", "people"),
    "isic-zoom": (["--augment", "zoom", "--budget", "15m"], [[], ["--tta"], ["--tta", "--keep-largest"]], "default recipe + zoom-in crops (--augment zoom), 15 min"),
    "parsing-zoom": ([*PARSING, "--class-weights", "none", "--augment", "zoom", "--budget", "15m"], [[], ["--tta"]],
                     "default network, CE + Dice, zoom augmentation (the new default), 15 min", "parsing"),
    "parsing-pad": ([*PARSING, "--class-weights", "none", "--fit", "pad", "--budget", "15m"], [[]],
                    "default network, CE + Dice, letterboxed, 15 min", "parsing"),
    # This session: test-time augmentation (chosen on the validation split of all three sets) and two larger plans.
    "isic-lite2": (["--model", "effnet_lite2_unet", "--budget", "15m"], [[], ["--tta"]],
                   "EfficientNet-Lite2 encoder, 15 min"),
    "parsing-size160": ([*PARSING, "--class-weights", "none", "--size", "160", "--budget", "15m"], [[], ["--tta"]],
                        "default network, 160 px input, 15 min", "parsing"),
    # Pairs: a quarter of the training samples show two side by side, squeezed (the "pair" framing).
    "people-pair": (["--augment", "zoom-pair", "--budget", "15m"], [["--tta"]],
                    "zoom + side-by-side pairs (the default since), 15 min", "people"),
    "isic-pair": (["--augment", "zoom-pair", "--budget", "15m"], [["--tta"]],
                  "zoom + side-by-side pairs (the default since), 15 min"),
    "parsing-pair": ([*PARSING, "--augment", "zoom-pair", "--budget", "15m"], [["--tta"]],
                     "zoom + side-by-side pairs, input 160 px (the multi-class plan), 15 min", "parsing"),
    # This session: thresholded Jaccard on ISIC (issue 9). A larger binary plan; a gentler rate for the ImageNet encoder.
    "isic-size160": (["--size", "160", "--budget", "15m"], [["--tta"]], "default recipe, 160 px input, 15 min"),
    "isic-enc0.1": (["--encoder-lr-scale", "0.1", "--budget", "15m"], [["--tta"]],
                    "default recipe, ImageNet encoder at 0.1 × the learning rate, 15 min"),
    "people-enc0.1": (["--encoder-lr-scale", "0.1", "--budget", "15m"], [["--tta"]],
                      "default recipe, ImageNet encoder at 0.1 × the learning rate, 15 min", "people"),
    "parsing-enc0.1": ([*PARSING, "--encoder-lr-scale", "0.1", "--budget", "15m"], [["--tta"]],
                       "default recipe, ImageNet encoder at 0.1 × the learning rate, 15 min", "parsing"),
    # Zooming out too (zoom preset's scale 0.6-1.6 instead of 0.8-1.6): small lesions and small people. Run with
    # that range in data/augment.py's _ZOOM; config.json's augment_params records it.
    "isic-zoomout": (["--budget", "15m"], [["--tta"]], "default recipe, zoom scale 0.6-1.6, 15 min"),
    "people-zoomout": (["--budget", "15m"], [["--tta"]], "default recipe, zoom scale 0.6-1.6, 15 min", "people"),
    # The default recipe again (isic-pair's command): how far two runs of one command differ on this VM.
    "isic-rerun": (["--augment", "zoom-pair", "--budget", "15m"], [["--tta"]],
                   "the default recipe again (isic-pair's command), 15 min"),
    # The default recipe after the depthwise convolutions of EfficientNet-Lite moved to fp32 in CPU training
    # (benchmarks/depthwise.py: 1.35x more images/s), so more epochs fit in the budget.
    "isic-dwfp32": (["--budget", "15m"], [["--tta"]], "default recipe, depthwise convs in fp32, 15 min"),
    "people-dwfp32": (["--budget", "15m"], [["--tta"]], "default recipe, depthwise convs in fp32, 15 min", "people"),
    "parsing-dwfp32": ([*PARSING, "--budget", "15m"], [["--tta"]], "default recipe, depthwise convs in fp32, 15 min",
                       "parsing"),
    # A moving average of the weights (train.ema) validated and kept instead of the last step's.
    "isic-ema": (["--ema", "--budget", "15m"], [["--tta"]], "default recipe + weight EMA, 15 min"),
    "people-ema": (["--ema", "--budget", "15m"], [["--tta"]], "default recipe + weight EMA, 15 min", "people"),
    "parsing-ema": ([*PARSING, "--ema", "--budget", "15m"], [["--tta"]], "default recipe + weight EMA, 15 min",
                    "parsing"),
    # Stop 21: the default recipe (depthwise fp32, d4-zoom TTA) once more on a VM at its usual speed (stop 20's
    # runs met a VM at half speed: 34 ISIC epochs in 15 minutes instead of ~50).
    "isic-s21": (["--budget", "15m"], [["--tta"]], "default recipe, VM at its usual speed, 15 min"),
    "people-s21": (["--budget", "15m"], [["--tta"]], "default recipe, VM at its usual speed, 15 min", "people"),
    "parsing-s21": ([*PARSING, "--budget", "15m"], [["--tta"]], "default recipe, VM at its usual speed, 15 min",
                    "parsing"),
    # Stop 22, on an Intel Xeon VM 2.3x slower than the AMD one (last epoch kept, 16-view TTA); the 160-px rows were not run.
    "isic-s22": (["--budget", "15m"], [["--tta"]], "default recipe, 15 min, on the Intel Xeon VM (2.3x slower steps)"),
    "isic-s22-30m": (["--budget", "30m"], [["--tta"]],
                     "default recipe, 30 min on the Intel Xeon VM (what the budget note suggests there)"),
    "people-s22": (["--budget", "15m"], [["--tta"]], "default recipe, 15 min, on the Intel Xeon VM", "people"),
    "isic-s22-enc0.1": (["--encoder-lr-scale", "0.1", "--budget", "15m"], [["--tta"]],
                        "ImageNet encoder at 0.1 × the learning rate, 15 min, Intel Xeon VM"),
    "people-s22-enc0.1": (["--encoder-lr-scale", "0.1", "--budget", "15m"], [["--tta"]],
                          "ImageNet encoder at 0.1 × the learning rate, 15 min, Intel Xeon VM", "people"),
    "isic-s22-160": (["--size", "160", "--budget", "15m"], [["--tta"]], "default recipe, 160 px input, 15 min"),
    "people-s22-160": (["--size", "160", "--budget", "15m"], [["--tta"]], "default recipe, 160 px input, 15 min",
                       "people"),
    # Stop 23 (Intel Xeon VM again): the Lovász extension of per-image Jaccard in place of soft Dice, and the
    # default command again; people-s23-lovasz was not run (ISIC showed no gain).
    "isic-s23-lovasz": (["--loss", "bce+lovasz", "--budget", "15m"], [["--tta"]],
                        "BCE + Lovász per-image Jaccard loss, 15 min, Intel Xeon VM"),
    "isic-s23-rerun": (["--budget", "15m"], [["--tta"]],
                      "default recipe again (isic-s22's command): the run-to-run noise floor, Intel Xeon VM"),
    # Stop 24: another training seed on the same images (train --split), for the seed's share of the noise.
    "isic-s24-seed1": (["--seed", "1", "--split", str(RUNS / "isic-s22"), "--budget", "15m"], [["--tta"]],
                       "default recipe, training seed 1 on isic-s22's split (same images), Intel Xeon VM"),
    "people-s23-lovasz": (["--loss", "bce+lovasz", "--budget", "15m"], [["--tta"]],
                          "BCE + Lovász per-image Jaccard loss, 15 min, Intel Xeon VM", "people"),
    "parsing-zoomout": ([*PARSING, "--budget", "15m"], [["--tta"]], "default recipe, zoom scale 0.6-1.6, 15 min",
                        "parsing"),
    "parsing-segnet": ([*PARSING, "--model", "segnet", "--budget", "15m"], [[]],
                       "the lesson's SegNet, default recipe, 15 min", "parsing"),
    "parsing-unet": ([*PARSING, "--model", "unet", "--budget", "15m"], [[]],
                     "the lesson's U-Net, default recipe, 15 min", "parsing"),
}

METRICS = ("dice", "jaccard", "threshold_jaccard", "accuracy", "sensitivity", "specificity", "hd95")


def pixelwise(args: list[str], env: dict | None = None) -> None:
    command = [str(ROOT / ".venv" / "bin" / "pixelwise"), *args]
    print("$", " ".join(f"{k}={v}" for k, v in (env or {}).items()), shlex.join(command), flush=True)
    subprocess.run(command, check=True, env={**os.environ, **(env or {})})


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def run_experiment(name: str, data: Path, results: dict) -> None:
    train_args, variants, what, *rest = EXPERIMENTS[name]
    dataset = rest[0] if rest else "isic"
    env = rest[1] if len(rest) > 1 else None
    data = data if dataset == "isic" else DATASETS[dataset]
    run = RUNS / name
    if not (run / "config.json").exists() or not json.loads((run / "config.json").read_text()).get("extra", {}).get("train_seconds"):
        if run.exists() and (run / "train_state.json").exists():
            pixelwise(["train", "--resume", str(run)], env)
        else:
            pixelwise(["train", "--data", str(data), "--out", str(run), "--seed", "0", *train_args], env)
    config = json.loads((run / "config.json").read_text())
    load = os.getloadavg()[0]
    for variant in variants:
        key = name + ("" if not variant else " " + " ".join(variant))
        if key in results:
            continue
        # A variant without --tta says --no-tta, so a row means the same whatever evaluate's default is.
        pixelwise(["evaluate", str(run), *variant, *([] if "--tta" in variant else ["--no-tta"])])
        summary = json.loads((run / "eval-test" / "summary.json").read_text())
        results[key] = {
            "experiment": name, "dataset": dataset, "what": what, "evaluate": variant,
            "command": "".join(f"{k}={v} " for k, v in (env or {}).items())
                       + "pixelwise train --data DATA --seed 0 " + shlex.join(train_args),
            "train_seconds": config["extra"]["train_seconds"], "best_epoch": config["extra"]["best_epoch"],
            "kept_epoch": config["extra"].get("kept_epoch", config["extra"]["best_epoch"]),
            "epochs_run": _epochs_run(run), "threshold": config["threshold"],
            "test_images": summary["images"], "mean": {k: summary["mean"][k] for k in METRICS},
            **({"multiclass": _multiclass(summary["multiclass"])} if "multiclass" in summary else {}),
            "load_average_after": round(load, 2), "machine": machine(),
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        write_table(results)
    if dataset == "people":  # the same run on re-framed held-out photos
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "framing.py"), str(run), "--json", str(FRAMING)],
                       check=False)  # a failure here must not stop the queue of trainings
        write_framing_table()


def _multiclass(pooled: dict) -> dict:
    """The pooled multi-class numbers of an evaluation's summary.json (see docs/metrics.md)."""
    keys = ("mean_iou", "mean_iou_foreground", "mean_class_accuracy", "global_accuracy")
    return {**{k: pooled[k] for k in keys},
            "per_class_iou": {c["name"]: c["iou"] for c in pooled["per_class"]}}


def _epochs_run(run: Path) -> int:
    lines = (run / "metrics.csv").read_text().strip().splitlines()
    return len(lines) - 1


def write_table(results: dict) -> None:
    lines = [
        "| data | experiment | evaluate | what | train s | epochs (kept) | Dice | Jaccard | thr. Jaccard | accuracy | sensitivity | specificity | HD95 px |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, r in results.items():
        if "multiclass" in r:
            continue
        m = r["mean"]
        lines.append(
            f"| {r.get('dataset', 'isic')} | {r['experiment']} | {' '.join(r['evaluate']) or '–'} | {r['what']} | {r['train_seconds']:.0f} | "
            f"{r['epochs_run']} ({r.get('kept_epoch', r['best_epoch'])}) | {m['dice']:.4f} | {m['jaccard']:.4f} | "
            f"{m['threshold_jaccard']:.4f} | {m['accuracy']:.4f} | {m['sensitivity']:.4f} | "
            f"{m['specificity']:.4f} | {m['hd95']:.2f} |"
        )
    _replace_between("quality table", "\n".join(lines))
    multi = {k: r for k, r in results.items() if "multiclass" in r}
    if multi:
        names = list(next(iter(multi.values()))["multiclass"]["per_class_iou"])
        lines = ["| data | experiment | what | train s | epochs (kept) | mean IoU | class-avg acc. | global acc. | "
                 + " | ".join(f"IoU {n}" for n in names) + " |",
                 "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " |"]
        for r in multi.values():
            c = r["multiclass"]
            lines.append(f"| {r['dataset']} | {r['experiment']} | {r['what']} | {r['train_seconds']:.0f} | "
                         f"{r['epochs_run']} ({r.get('kept_epoch', r['best_epoch'])}) | {c['mean_iou']:.3f} | "
                         f"{c['mean_class_accuracy']:.3f} | {c['global_accuracy']:.3f} | "
                         + " | ".join(f"{c['per_class_iou'].get(n, float('nan')):.3f}" for n in names) + " |")
        _replace_between("multiclass table", "\n".join(lines))
    write_framing_table()


FRAMINGS = ("full", "half-body", "head-shoulders", "off-centre", "pair")


def write_framing_table() -> None:
    """The cross-set rows: each people run on re-framed copies of its held-out photos (benchmarks/framing.py).

    We hold no second people set, so these framings stand in for the photos the default recipe has never seen
    (portraits, half-body shots, people cut off by the frame, groups); "re-framed" is the mean of the four.
    """
    if not FRAMING.exists():
        return
    lines = ["| data | trained on | tested on | " + " | ".join(FRAMINGS) + " | re-framed (mean of 4) |",
             "| --- | --- | --- | " + " | ".join("---:" for _ in FRAMINGS) + " | ---: |"]
    for name, entry in json.loads(FRAMING.read_text()).items():
        dice = {k: entry["framings"][k]["dice"] for k in FRAMINGS if k in entry["framings"]}
        if len(dice) != len(FRAMINGS):
            continue
        moved = sum(dice[k] for k in FRAMINGS[1:]) / (len(FRAMINGS) - 1)
        lines.append(f"| people | `{name}` (ccp-people train) | its 200 held-out photos, re-framed (Dice) | "
                     + " | ".join(f"{dice[k]:.3f}" for k in FRAMINGS) + f" | {moved:.3f} |")
    _replace_between("framing table", "\n".join(lines))


def _replace_between(marker: str, table: str) -> None:
    """Put ``table`` between ``<!-- marker -->`` and ``<!-- /marker -->`` in docs/experiments.md."""
    text = TABLE.read_text() if TABLE.exists() else ""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in text or end not in text:
        text += f"\n{start}\n{end}\n"
    text = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end):]
    TABLE.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="ISIC-2017 development set")
    parser.add_argument("--only", nargs="*", help="experiments to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list experiments and exit")
    args = parser.parse_args()
    if args.list:
        for name, (train_args, _, what, *_) in EXPERIMENTS.items():
            print(f"{name:24s} {what}: {shlex.join(train_args)}")
        return
    if not args.data.is_dir():
        sys.exit(f"development set {args.data} not found: pass --data PATH to the ISIC-2017 training set")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.only or list(EXPERIMENTS):
        if name not in EXPERIMENTS:
            sys.exit(f"unknown experiment {name}; see --list")
        started = time.time()
        run_experiment(name, args.data, results)
        print(f"{name}: done in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
