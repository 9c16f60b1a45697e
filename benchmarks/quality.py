"""Reproduce the recipe table of docs/experiments.md on the development sets (ISIC-2017 lesions, ccp-people).

The experiments are data: benchmarks/quality_experiments.json, one entry per experiment with named fields
(``name``, ``dataset``, ``what``, ``train`` arguments, ``evaluate`` variants, ``env``, ``added``: the commit that
added it, whose code gave its arguments their meaning). Every experiment is one `pixelwise train`
(time-budgeted) and one or more `pixelwise evaluate` on the run's held-out test split (20 %, seed 0: the same
images for every experiment, never used for tuning; the threshold is chosen on the 10 % validation split).
Results are appended to benchmarks/results/quality.json, each new row with the commit (`git rev-parse HEAD`),
the run's full config.json and the machine; finished experiments are skipped, so the script can be re-run after
an interruption. The markdown tables of docs/experiments.md are regenerated from the JSON each time.

    .venv/bin/python benchmarks/quality.py                 # everything (several hours on 2 cores)
    .venv/bin/python benchmarks/quality.py --only default lesson-unet
    .venv/bin/python benchmarks/quality.py --list
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pixelwise.runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "isic": ROOT.parent / "shared" / "data" / "isic2017-train-256",
    "people": ROOT.parent / "shared" / "data" / "ccp-people",
    # ccp-people's 59 clothing/skin/hair labels, merged into 8 classes (benchmarks/ccp_parsing_merge.txt)
    "parsing": ROOT.parent / "shared" / "data" / "ccp-people" / "parsing.csv",
    # DSB 2018 stage-1 nuclei as Kaggle ships them (one PNG per nucleus): instance segmentation
    "dsb": ROOT.parent / "shared" / "data" / "dsb2018-nuclei",
    # selfies, head-and-shoulders and half-body portraits (no licence stated: measurements only, never in the repo)
    "portraits": ROOT.parent / "shared" / "data" / "picsart-portraits",
}
EXPERIMENTS_FILE = ROOT / "benchmarks" / "quality_experiments.json"
RUNS = ROOT / "benchmarks" / "runs"
RESULTS = ROOT / "benchmarks" / "results" / "quality.json"
FRAMING = ROOT / "benchmarks" / "results" / "framing.json"
TABLE = ROOT / "docs" / "experiments.md"
METRICS = ("dice", "jaccard", "threshold_jaccard", "accuracy", "sensitivity", "specificity", "hd95")


@dataclass(frozen=True)
class Experiment:
    """One entry of quality_experiments.json; paths in ``train`` are relative to the repository root."""

    name: str
    what: str
    train: list[str]
    evaluate: list[list[str]] = field(default_factory=lambda: [[]])
    dataset: str = "isic"
    env: dict[str, str] = field(default_factory=dict)
    added: str = ""
    note: str = ""


def load_experiments(path: Path = EXPERIMENTS_FILE) -> dict[str, Experiment]:
    entries = json.loads(path.read_text())["experiments"]
    experiments = {entry["name"]: Experiment(**entry) for entry in entries}
    if len(experiments) != len(entries):
        sys.exit(f"{path}: an experiment name appears twice")
    unknown = {e.dataset for e in experiments.values()} - set(DATASETS)
    if unknown:
        sys.exit(f"{path}: unknown dataset {', '.join(sorted(unknown))}; use one of {', '.join(DATASETS)}")
    return experiments


def pixelwise(args: list[str], env: dict | None = None) -> None:
    command = [str(ROOT / ".venv" / "bin" / "pixelwise"), *args]
    print("$", " ".join(f"{k}={v}" for k, v in (env or {}).items()), shlex.join(command), flush=True)
    # From the repository root: the experiments' relative paths (merge file, --split RUN) resolve there.
    subprocess.run(command, check=True, env={**os.environ, **(env or {})}, cwd=ROOT)


def machine() -> dict:
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
    }


def commit() -> dict:
    """The code a row was measured with: HEAD, and whether the working tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": dirty}


def run_experiment(experiment: Experiment, data: Path, results: dict) -> None:
    env = experiment.env or None
    data = data if experiment.dataset == "isic" else DATASETS[experiment.dataset]
    run = RunFolder(RUNS / experiment.name)
    config = run.load_config() if run.config_path.exists() else None
    if config is None or config.record is None or config.record.train_seconds is None:  # not trained to its end
        if run.state_json_path.exists():
            pixelwise(["train", "--resume", str(run.path)], env)
        else:
            pixelwise(["train", "--data", str(data), "--out", str(run.path), "--seed", "0", *experiment.train], env)
    config = run.load_trained_config()
    record = config.record
    load = os.getloadavg()[0]
    for variant in experiment.evaluate:
        key = experiment.name + ("" if not variant else " " + " ".join(variant))
        if key in results:
            continue
        # A variant without --tta says --no-tta, so a row means the same whatever evaluate's default is.
        pixelwise(["evaluate", str(run.path), *variant, *([] if "--tta" in variant else ["--no-tta"])])
        summary = json.loads((run.eval_folder("test") / "summary.json").read_text())
        results[key] = {
            "experiment": experiment.name,
            "dataset": experiment.dataset,
            "what": experiment.what,
            "evaluate": variant,
            "command": "".join(f"{k}={v} " for k, v in (env or {}).items())
            + "pixelwise train --data DATA --seed 0 "
            + shlex.join(experiment.train),
            "train_seconds": record.train_seconds,
            "best_epoch": record.best_epoch,
            "kept_epoch": record.kept_epoch or record.best_epoch,
            "epochs_run": _epochs_run(run),
            "threshold": record.threshold,
            "test_images": summary.get("n_images", summary.get("images")),
            "mean": {k: summary["mean"].get(k) for k in METRICS},
            **({"multiclass": _multiclass(summary["multiclass"])} if "multiclass" in summary else {}),
            **({"instances": summary["instances"]} if "instances" in summary else {}),
            **(
                {"per_set": {name: numbers["mean"] for name, numbers in summary["per_set"].items()}}
                if "per_set" in summary
                else {}
            ),
            "load_average_after": round(load, 2),
            "machine": machine(),
            **commit(),
            "config": config.to_dict(),  # every option as the run resolved it, whatever the defaults become
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        write_table(results)
    if experiment.dataset == "people":  # the same run on re-framed held-out photos
        only_people = ["--set", DATASETS["people"].name] if config.recipe.more_data else []  # full-body framings
        # Said aloud: it keeps both cores busy for 10+ minutes after the evaluation's table, and a training
        # started beside it by hand is measured under contention.
        print(f"framing: {run.path.name} on re-framed held-out photos (benchmarks/framing.py, TTA)", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "framing.py"), str(run.path), "--json", str(FRAMING)]
            + only_people,
            check=False,
        )  # a failure here must not stop the queue of trainings
        write_framing_table()


def _multiclass(pooled: dict) -> dict:
    """The pooled multi-class numbers of an evaluation's summary.json (see docs/metrics.md)."""
    keys = ("mean_iou", "mean_iou_foreground", "mean_class_accuracy", "global_accuracy")
    return {**{k: pooled[k] for k in keys}, "per_class_iou": {c["name"]: c["iou"] for c in pooled["per_class"]}}


def _epochs_run(run: RunFolder) -> int:
    lines = run.metrics_path.read_text().strip().splitlines()
    return len(lines) - 1


def write_table(results: dict) -> None:
    lines = [
        "| data | experiment | evaluate | what | train s | epochs (kept) | Dice | Jaccard | thr. Jaccard | accuracy "
        "| sensitivity | specificity | HD95 px |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, r in results.items():
        if "multiclass" in r or "instances" in r:  # tables of their own (instances: docs/experiments.md prose)
            continue
        m = r["mean"]
        lines.append(
            f"| {r.get('dataset', 'isic')} | {r['experiment']} | {' '.join(r['evaluate']) or '–'} | {r['what']} | "
            f"{r['train_seconds']:.0f} | "
            f"{r['epochs_run']} ({r.get('kept_epoch', r['best_epoch'])}) | {m['dice']:.4f} | {m['jaccard']:.4f} | "
            f"{m['threshold_jaccard']:.4f} | {m['accuracy']:.4f} | {m['sensitivity']:.4f} | "
            f"{m['specificity']:.4f} | {m['hd95']:.2f} |"
        )
    _replace_between("quality table", "\n".join(lines))
    multi = {k: r for k, r in results.items() if "multiclass" in r}
    if multi:
        names = list(next(iter(multi.values()))["multiclass"]["per_class_iou"])
        lines = [
            "| data | experiment | what | train s | epochs (kept) | mean IoU | class-avg acc. | global acc. | "
            + " | ".join(f"IoU {n}" for n in names)
            + " |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " |",
        ]
        for r in multi.values():
            c = r["multiclass"]
            lines.append(
                f"| {r['dataset']} | {r['experiment']} | {r['what']} | {r['train_seconds']:.0f} | "
                f"{r['epochs_run']} ({r.get('kept_epoch', r['best_epoch'])}) | {c['mean_iou']:.3f} | "
                f"{c['mean_class_accuracy']:.3f} | {c['global_accuracy']:.3f} | "
                + " | ".join(f"{c['per_class_iou'].get(n, float('nan')):.3f}" for n in names)
                + " |"
            )
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
    lines = [
        "| data | trained on | tested on | " + " | ".join(FRAMINGS) + " | re-framed (mean of 4) |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in FRAMINGS) + " | ---: |",
    ]
    for name, entry in json.loads(FRAMING.read_text()).items():
        dice = {k: entry["framings"][k]["dice"] for k in FRAMINGS if k in entry["framings"]}
        if len(dice) != len(FRAMINGS):
            continue
        moved = sum(dice[k] for k in FRAMINGS[1:]) / (len(FRAMINGS) - 1)
        lines.append(
            f"| people | `{name}` (ccp-people train) | its 200 held-out photos, re-framed (Dice) | "
            + " | ".join(f"{dice[k]:.3f}" for k in FRAMINGS)
            + f" | {moved:.3f} |"
        )
    _replace_between("framing table", "\n".join(lines))


def _replace_between(marker: str, table: str) -> None:
    """Put ``table`` between ``<!-- marker -->`` and ``<!-- /marker -->`` in docs/experiments.md."""
    text = TABLE.read_text() if TABLE.exists() else ""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in text or end not in text:
        text += f"\n{start}\n{end}\n"
    text = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end) :]
    TABLE.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATASETS["isic"], help="ISIC-2017 development set")
    parser.add_argument("--only", nargs="*", help="experiments to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list experiments and exit")
    args = parser.parse_args()
    experiments = load_experiments()
    if args.list:
        for experiment in experiments.values():
            print(f"{experiment.name:24s} {experiment.dataset:8s} {experiment.what}: {shlex.join(experiment.train)}")
        return
    if not args.data.is_dir():
        sys.exit(f"development set {args.data} not found: pass --data PATH to the ISIC-2017 training set")
    unknown = [name for name in args.only or [] if name not in experiments]
    if unknown:
        sys.exit(f"unknown experiment {', '.join(unknown)}; see --list")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.only or list(experiments):
        started = time.time()
        run_experiment(experiments[name], args.data.resolve(), results)
        print(f"{name}: done in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
