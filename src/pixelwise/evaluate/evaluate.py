"""``pixelwise evaluate``: run a trained model on a split (or any data set) and measure it.

Predictions are scored at each mask's original size (probabilities are upsampled from the network's
size), with the same metric code as ``score`` and training validation. Truth masks are read as the run was
trained: with its colour map and void values, mapped to its classes (merged labels; void pixels count in no
metric). Outputs go to ``RUN/eval-<name>/``: ``metrics.csv`` (per image), ``summary.json``, ``instances.csv``,
``report.html``, and for multi-class runs ``per_class.csv`` and ``confusion.csv`` (pooled over the images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track

from pixelwise.config import PREDICT_TTA, Recipe, RunConfig
from pixelwise.data.cache import load_arrays
from pixelwise.data.classes import IGNORE, ClassMap, is_binary
from pixelwise.data.imageio import parse_colors, read_image, read_mask
from pixelwise.data.layouts import Pair, find_pairs
from pixelwise.data.split import load_split
from pixelwise.errors import PixelwiseError
from pixelwise.evaluate.report import ClassCase, ReportCase, select_cases, select_class_cases, write_report
from pixelwise.evaluate.score import (format_class_table, format_summary_table, write_class_csv, write_confusion_csv,
                                      write_rows_csv, write_score_json)
from pixelwise.masks.instances import count_instances, instances_from_mask, write_instances_csv
from pixelwise.masks.labels import labels_at_size
from pixelwise.masks.postprocess import PostProcess
from pixelwise.metrics import (THRESHOLD_GRID, choose_threshold, class_summary, confusion_matrix, image_metrics,
                               multiclass_image_metrics, summarize, threshold_sweep)
from pixelwise.predict.engine import make_predictor
from pixelwise.predict.predictor import RunPredictor
from pixelwise.runs import RunFolder

SPLITS = ("test", "val", "train", "all")  # "all": every pair of --data


@dataclass
class EvalResult:
    folder: Path
    rows: list[dict]
    summary: dict


@dataclass(frozen=True)
class TruthReader:
    """Reads truth masks as the run was trained: colour map, void values, and mask value → class table."""

    class_map: ClassMap
    colors: dict | None
    fit: str = "stretch"  # how the run placed images in its square input

    @classmethod
    def of(cls, config: RunConfig) -> "TruthReader":
        colors = config.recipe.colors
        return cls(config.class_map(), parse_colors(colors) if colors else None, config.recipe.fit)

    @property
    def loading(self) -> dict:
        """Keyword arguments of :func:`~pixelwise.data.cache.load_arrays` for the run's masks."""
        return {"colors": self.colors, "void": tuple(self.class_map.ignored_values), "fit": self.fit}

    def read(self, path: Path) -> np.ndarray:
        """uint8 H×W class indices of the mask file, :data:`~pixelwise.data.classes.IGNORE` on void pixels."""
        return self.class_map.apply(read_mask(path, self.colors, tuple(self.class_map.ignored_values)))


def _same_data(recipe: Recipe, data: Path | None) -> bool:
    return data is None or (recipe.data is not None and Path(recipe.data).resolve() == Path(data).resolve())


def _split_ids(run: Path, config: RunConfig, split: str) -> list[list[str]]:
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


def evaluate_run(run: Path, data: Path | None = None, split: str | None = None, *, tta: str = PREDICT_TTA,
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
    recipe = config.recipe.replace(cache_dir=str(cache_dir) if cache_dir else None)
    class_map = config.class_map()
    same = _same_data(recipe, data)
    root = Path(data) if data is not None else recipe.data_root(console)
    index = find_pairs(root, layout=recipe.layout if same else None)
    by_id = {p.id: p for p in index.pairs if p.mask is not None}
    split = split or ("test" if same else "all")
    cache = recipe.cache_path()
    truths = TruthReader.of(config)
    multiclass = not class_map.is_binary
    num_classes = class_map.num_classes

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

    rows, labels_by_id, confusions = [], {}, {}
    for group_predictor, ids in groups:
        pairs = [by_id[i] for i in ids]
        images, _ = load_arrays(pairs, config.record.size, cache, progress=True, **truths.loading)
        probs = group_predictor.probabilities(images)
        for pair, prob in track(list(zip(pairs, probs)), description="scoring", console=console, transient=True):
            truth = truths.read(pair.mask)
            pred = post.apply(labels_at_size(prob, truth.shape[0], truth.shape[1], group_predictor.threshold,
                                             recipe.fit),
                              num_classes)
            labels_by_id[pair.id] = pred
            rows.append(_row(pair, pred, truth, num_classes, nsd_tolerance, pixel_size_mm))
            if multiclass:  # per image, for the pooled matrix and the per-class worst cases
                confusions[pair.id] = confusion_matrix(pred, truth, num_classes)

    summary = summarize(rows)
    out = folder.eval_folder(split if same else _slug(root))
    result_summary = {**summary, "threshold": predictor.threshold, "data": str(root.resolve()), "split": split,
                      "images": len(rows), "tta": tta, "engine": engine, "precision": precision,
                      "postprocess": post.__dict__}
    if multiclass:
        result_summary["multiclass"] = class_summary(sum(confusions.values()), truths.class_map.names)
    by_label = _per_label(rows)
    if by_label:
        result_summary["per_label"] = by_label

    instance_rows = []
    for image_id, pred in labels_by_id.items():
        instance_rows += instances_from_mask(pred > 0, image_id, min_area=post.min_area)
    counts = count_instances(instance_rows, labels_by_id)

    sweep, chosen = None, None
    if same and class_map.is_binary and not config.is_ensemble:
        sweep, chosen = _validation_sweep(predictor, folder, by_id, cache, truths)

    write_rows_csv(out / "metrics.csv", rows)
    write_score_json(out / "summary.json", rows, summary["mean"],
                     extra={k: v for k, v in result_summary.items() if k != "mean"})
    write_instances_csv(out / "instances.csv", instance_rows)
    if multiclass:
        write_class_csv(out / "per_class.csv", result_summary["multiclass"])
        write_confusion_csv(out / "confusion.csv", result_summary["multiclass"])
    cases = []
    for image_id in [i for ids in select_cases(rows).values() for i in ids]:
        pair = by_id[image_id]
        truth = truths.read(pair.mask)
        row = next(r for r in rows if r["id"] == image_id)
        cases.append(ReportCase(image_id, read_image(pair.image), (truth > 0) & (truth != IGNORE),
                                labels_by_id[image_id] > 0, row["dice"]))
    class_cases = _class_cases(confusions, by_id, labels_by_id, truths) if multiclass else None
    training_csv = folder.metrics_path if folder.metrics_path.exists() else None
    write_report(out / "report.html", title=f"pixelwise evaluation: {run.name} on {split}",
                 summary=result_summary, rows=rows, cases=cases, training_csv=training_csv,
                 kept_epoch=config.record.kept_epoch if not config.is_ensemble else None,
                 threshold_sweep=sweep, chosen_threshold=chosen if chosen is not None else predictor.threshold,
                 label_of={r["id"]: r["label"] for r in rows if r.get("label")} or None,
                 instance_counts=counts, multiclass=result_summary.get("multiclass"),
                 class_colors=truths.class_map.colors if multiclass else None, class_cases=class_cases)
    Console().print(format_summary_table(summary, title=f"{run.name} on {split}"))
    if multiclass:
        Console().print(format_class_table(result_summary["multiclass"],
                                           title=f"per class, pooled over {len(rows)} images"))
    written = "metrics.csv, summary.json, instances.csv, per_class.csv, confusion.csv" if multiclass else \
        "metrics.csv, summary.json, instances.csv"
    console.print(f"wrote {out}/{written} and report.html")
    return EvalResult(out, rows, result_summary)


def _row(pair: Pair, pred: np.ndarray, truth: np.ndarray, num_classes: int, tol: float, px: float | None) -> dict:
    """One image's metrics. ``pred``, ``truth``: uint8 H×W class indices (truth :data:`IGNORE` on void pixels).

    Binary: :func:`image_metrics` of the foreground (void pixels are negatives of both masks). Multi-class:
    per-image means over the foreground classes, void pixels excluded; pooled per-class numbers in summary.json.
    """
    row = {"id": pair.id}
    if is_binary(num_classes):
        void = truth == IGNORE
        row.update(image_metrics((pred > 0) & ~void, (truth > 0) & ~void, nsd_tolerance=tol, pixel_size_mm=px))
    else:
        row.update(multiclass_image_metrics(pred, truth, num_classes, nsd_tolerance=tol, pixel_size_mm=px))
    if pair.label:
        row["label"] = pair.label
    return row


def _class_cases(confusions: dict[str, np.ndarray], by_id: dict[str, Pair], labels_by_id: dict[str, np.ndarray],
                 truths: TruthReader) -> list[ClassCase]:
    """For each foreground class, its worst image (see :func:`select_class_cases`), read for the report."""
    cases, read = [], {}
    for class_index, (image_id, iou) in select_class_cases(confusions).items():
        if image_id not in read:
            pair = by_id[image_id]
            read[image_id] = (read_image(pair.image), truths.read(pair.mask))
        image, truth = read[image_id]
        cases.append(ClassCase(class_index, image_id, image, truth, labels_by_id[image_id], iou))
    return cases


def _per_label(rows: list[dict]) -> dict:
    labels = sorted({r["label"] for r in rows if r.get("label")})
    return {label: summarize([r for r in rows if r.get("label") == label])["mean"] for label in labels}


def _validation_sweep(predictor: RunPredictor, run: RunFolder, by_id: dict[str, Pair], cache: Path,
                      truths: TruthReader):
    split = load_split(run.split_path)
    pairs = [by_id[i] for i in split.get("val", []) if i in by_id]
    if not pairs:
        return None, None
    images, masks = load_arrays(pairs, predictor.config.record.size, cache, progress=False, **truths.loading)
    probs = predictor.probabilities(images)[:, 0]
    classes = truths.class_map.apply(masks)
    sweep = threshold_sweep(probs, classes == 1, THRESHOLD_GRID, ignore=classes == IGNORE)
    return sweep, choose_threshold(sweep)


def _slug(path: Path) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in path.resolve().name) or "data"
