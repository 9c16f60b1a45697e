"""``pixelwise evaluate``: run a trained model on a split (or any data set) and measure it.

Predictions are scored at each mask's original size (probabilities are upsampled from the network's
size), with the same metric code as ``score`` and training validation. Outputs go to
``RUN/eval-<name>/``: ``metrics.csv`` (per image), ``summary.json``, ``instances.csv``, ``report.html``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track

from pixelwise.config import TrainConfig
from pixelwise.data.cache import load_arrays
from pixelwise.data.imageio import read_image, read_mask
from pixelwise.data.layouts import Pair, find_pairs
from pixelwise.data.split import load_split
from pixelwise.errors import PixelwiseError
from pixelwise.evaluate.report import ReportCase, select_cases, write_report
from pixelwise.evaluate.score import format_summary_table, write_rows_csv, write_score_json
from pixelwise.masks.instances import count_instances, instances_from_mask, write_instances_csv
from pixelwise.masks.labels import labels_at_size
from pixelwise.masks.postprocess import PostProcess
from pixelwise.metrics import (METRIC_KEYS, THRESHOLD_GRID, choose_threshold, confusion_matrix, image_metrics,
                               metrics_from_confusion, summarize, threshold_sweep)
from pixelwise.predict.engine import make_predictor
from pixelwise.predict.predictor import RunPredictor
from pixelwise.runs import RunFolder

SPLITS = ("test", "val", "train", "all")  # "all": every pair of --data


@dataclass
class EvalResult:
    folder: Path
    rows: list[dict]
    summary: dict


def _same_data(config: TrainConfig, data: Path | None) -> bool:
    return data is None or (config.data is not None and Path(config.data).resolve() == Path(data).resolve())


def _split_ids(run: Path, config: TrainConfig, split: str) -> list[list[str]]:
    """Ids of ``split`` per model folder (one list, or one per fold: out-of-fold evaluation)."""
    if split not in SPLITS:
        raise PixelwiseError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    out = []
    for member in RunFolder(run).members(config):
        path = member.split_path
        if not path.exists():
            raise PixelwiseError(f"{path} is missing: pass --data to evaluate on a whole data set instead of a split")
        out.append(load_split(path)[split])
    return out


def evaluate_run(run: Path, data: Path | None = None, split: str | None = None, *, tta: str = "none",
                 engine: str = "torch", precision: str = "fp32", post: PostProcess = PostProcess(),
                 nsd_tolerance: float = 2.0, pixel_size_mm: float | None = None,
                 cache_dir: Path | None = None, console: Console | None = None) -> EvalResult:
    """Evaluate a run on its saved split (default ``test``) or on all pairs of ``data``; see the module doc.

    ``cache_dir``: where decoded arrays are cached (default: the user's cache). A ``cache_dir`` written in the
    run's ``config.json`` is not used: a run folder from someone else must not choose where pixelwise writes.
    """
    console = console or Console(stderr=True)
    folder = RunFolder(run)
    run = folder.path
    predictor = make_predictor(run, engine, tta, precision)
    config = predictor.config
    config.cache_dir = str(cache_dir) if cache_dir else None
    same = _same_data(config, data)
    root = Path(data) if data is not None else config.data_root(console)
    index = find_pairs(root, layout=config.layout if same else None)
    by_id = {p.id: p for p in index.pairs if p.mask is not None}
    split = split or ("test" if same else "all")
    cache = config.cache_path()

    # Which images, predicted by which model: one group per fold for out-of-fold evaluation.
    if split == "all":
        groups = [(predictor, list(by_id))]
    else:
        if not same:
            raise PixelwiseError(f"--split {split} refers to the run's own data; with another --data use --split all")
        id_lists = _split_ids(run, config, split)
        if config.is_ensemble:  # each fold's test images by that fold's own model, whatever the engine
            groups = [(make_predictor(run, engine, tta, precision, fold=i), ids) for i, ids in enumerate(id_lists)]
        else:
            groups = [(predictor, [i for ids in id_lists for i in ids])]
    missing = [i for _, ids in groups for i in ids if i not in by_id]
    if missing:
        raise PixelwiseError(f"{len(missing)} images of split '{split}' are not in {root} (e.g. {missing[0]}); "
                             f"pass the --data the run was trained on")
    if not any(ids for _, ids in groups):
        raise PixelwiseError(f"split '{split}' of {run} is empty: choose another --split or pass --data")

    rows, labels_by_id, confusion_sum = [], {}, None
    for group_predictor, ids in groups:
        pairs = [by_id[i] for i in ids]
        images, _ = load_arrays(pairs, config.size, cache, progress=True)
        probs = group_predictor.probabilities(images)
        for pair, prob in track(list(zip(pairs, probs)), description="scoring", console=console, transient=True):
            truth = read_mask(pair.mask)
            pred = post.apply(labels_at_size(prob, truth.shape[0], truth.shape[1], group_predictor.threshold),
                              config.num_classes)
            labels_by_id[pair.id] = pred
            rows.append(_row(pair, pred, truth, config.num_classes, nsd_tolerance, pixel_size_mm))
            if config.num_classes > 2:
                cm = confusion_matrix(pred, truth, config.num_classes)
                confusion_sum = cm if confusion_sum is None else confusion_sum + cm

    summary = summarize(rows)
    out = folder.eval_folder(split if same else _slug(root))
    result_summary = {**summary, "threshold": predictor.threshold, "data": str(root.resolve()), "split": split,
                      "images": len(rows), "tta": tta, "engine": engine, "precision": precision,
                      "postprocess": post.__dict__}
    if confusion_sum is not None:
        result_summary["multiclass"] = metrics_from_confusion(confusion_sum)
    by_label = _per_label(rows)
    if by_label:
        result_summary["per_label"] = by_label

    instance_rows = []
    for image_id, pred in labels_by_id.items():
        instance_rows += instances_from_mask(pred > 0, image_id, min_area=post.min_area)
    counts = count_instances(instance_rows, labels_by_id)

    sweep, chosen = None, None
    if same and config.num_classes == 2 and not config.is_ensemble:
        sweep, chosen = _validation_sweep(predictor, folder, by_id, cache)

    write_rows_csv(out / "metrics.csv", rows)
    write_score_json(out / "summary.json", rows, summary["mean"],
                     extra={k: v for k, v in result_summary.items() if k != "mean"})
    write_instances_csv(out / "instances.csv", instance_rows)
    cases = []
    for image_id in [i for ids in select_cases(rows).values() for i in ids]:
        pair = by_id[image_id]
        truth = read_mask(pair.mask) > 0
        row = next(r for r in rows if r["id"] == image_id)
        cases.append(ReportCase(image_id, read_image(pair.image), truth, labels_by_id[image_id] > 0, row["dice"]))
    training_csv = folder.metrics_path if folder.metrics_path.exists() else None
    write_report(out / "report.html", title=f"pixelwise evaluation: {run.name} on {split}",
                 summary=result_summary, rows=rows, cases=cases, training_csv=training_csv,
                 threshold_sweep=sweep, chosen_threshold=chosen if chosen is not None else predictor.threshold,
                 label_of={r["id"]: r["label"] for r in rows if r.get("label")} or None,
                 instance_counts=counts)
    Console().print(format_summary_table(summary, title=f"{run.name} on {split}"))
    console.print(f"wrote {out}/metrics.csv, summary.json, instances.csv and report.html")
    return EvalResult(out, rows, result_summary)


def _row(pair: Pair, pred: np.ndarray, truth: np.ndarray, num_classes: int, tol: float, px: float | None) -> dict:
    row = {"id": pair.id}
    if num_classes == 2:
        row.update(image_metrics(pred > 0, truth > 0, nsd_tolerance=tol, pixel_size_mm=px))
    else:  # per-image means over foreground classes; details in summary.json
        per_class = [image_metrics(pred == c, truth == c, nsd_tolerance=tol, pixel_size_mm=px)
                     for c in range(1, num_classes)]
        row.update({k: float(np.nanmean([m[k] for m in per_class])) for k in METRIC_KEYS})
    if pair.label:
        row["label"] = pair.label
    return row


def _per_label(rows: list[dict]) -> dict:
    labels = sorted({r["label"] for r in rows if r.get("label")})
    return {label: summarize([r for r in rows if r.get("label") == label])["mean"] for label in labels}


def _validation_sweep(predictor: RunPredictor, run: RunFolder, by_id: dict[str, Pair], cache: Path):
    split = load_split(run.split_path)
    pairs = [by_id[i] for i in split.get("val", []) if i in by_id]
    if not pairs:
        return None, None
    images, masks = load_arrays(pairs, predictor.config.size, cache, progress=False)
    probs = predictor.probabilities(images)[:, 0]
    sweep = threshold_sweep(probs, masks.bool(), THRESHOLD_GRID)
    return sweep, choose_threshold(sweep)


def _slug(path: Path) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in path.resolve().name) or "data"
