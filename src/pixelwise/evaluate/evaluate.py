"""``pixelwise evaluate``: run a trained model on a split (or any data set) and measure it.

Predictions are scored at each mask's original size (probabilities are upsampled from the network's
size), with the same metric code as ``score`` and training validation. Truth masks are read as the run was
trained: with its colour map and void values, mapped to its classes (merged labels; void pixels count in no
metric). Outputs go to ``RUN/eval-<name>/``: ``metrics.csv`` (per image), ``summary.json``, ``instances.csv``,
``report.html``, and for multi-class runs ``per_class.csv`` and ``confusion.csv`` (pooled over the images).

:func:`evaluate_run` reads top to bottom: ``_plan_evaluation`` (which images, predicted by which model),
``_predict_and_score``, ``_summarize_evaluation``, ``_validation_threshold_curve`` (binary runs on their own data:
predicts the validation split once more, logged; ``threshold_curve=False`` skips it), ``_write_eval_files``,
``_write_eval_report``, then ``_terminal_tables``, which the caller prints (:class:`EvalResult`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixelwise.config import PREDICT_TTA, Recipe, RunConfig
from pixelwise.data.cache import load_arrays
from pixelwise.data.classes import IGNORE, ClassMap, is_binary
from pixelwise.data.imageio import parse_colors, read_image, read_mask, resize_nearest
from pixelwise.data.layouts import Pair, find_pairs
from pixelwise.data.objects import object_ious, summarize_object_ious
from pixelwise.data.sets import SEPARATOR, find_sets, set_names
from pixelwise.data.split import load_split
from pixelwise.errors import PixelwiseError
from pixelwise.evaluate.report import (
    ClassCase,
    ReportCase,
    ReportInputs,
    select_cases,
    select_class_cases,
    write_report,
)
from pixelwise.evaluate.score import (
    format_class_table,
    format_summary_table,
    write_class_csv,
    write_confusion_csv,
    write_rows_csv,
    write_score_json,
)
from pixelwise.masks.instances import count_instances, instances_from_mask, write_instances_csv
from pixelwise.masks.postprocess import PostProcess
from pixelwise.metrics import (
    THRESHOLD_GRID,
    choose_threshold,
    class_summary,
    confusion_matrix,
    image_metrics,
    multiclass_image_metrics,
    summarize,
    threshold_sweep,
)
from pixelwise.predict.engine import make_predictor
from pixelwise.predict.predictor import RunPredictor
from pixelwise.predict.segment import image_labels, labels_at_image_size
from pixelwise.reporting import progress
from pixelwise.runs import RunFolder

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "train", "all")  # "all": every pair of --data


@dataclass
class EvalResult:
    """What :func:`evaluate_run` measured and wrote.

    Attributes:
        folder: ``RUN/eval-<name>/``, where the files went.
        rows: one metric row per image (``metrics.csv``).
        summary: what ``summary.json`` holds besides the rows: means, std, medians, the settings, and for
            multi-class runs the pooled per-class numbers.
        tables: rich tables for a terminal (the summary; per class for multi-class runs), printed by the CLI.
    """

    folder: Path
    rows: list[dict]
    summary: dict
    tables: list = field(default_factory=list)


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


@dataclass
class EvalPlan:
    """Which images an evaluation scores, which model predicts each, and where the results go.

    Attributes:
        folder: the run.
        config: the run's configuration (its recipe's ``cache_dir`` replaced by the caller's).
        predictor: the run's predictor (a k-fold run's whole ensemble): its threshold is the run's.
        root: the data set's folder.
        split: the part of the run's split scored, or ``all`` (every pair of ``root``).
        same_data: True when ``root`` is the data the run was trained on (its split applies).
        by_id: image ID → pair, every pair of ``root`` with a mask.
        groups: (predictor, image IDs) per model: one group, or one per fold (out-of-fold evaluation).
        cache: where decoded arrays are cached.
        truths: how truth masks are read.
        out: ``RUN/eval-<name>/``.
    """

    folder: RunFolder
    config: RunConfig
    predictor: RunPredictor
    root: Path
    split: str
    same_data: bool
    by_id: dict[str, Pair]
    groups: list[tuple[RunPredictor, list[str]]]
    cache: Path
    truths: TruthReader
    out: Path

    @property
    def multiclass(self) -> bool:
        return not self.truths.class_map.is_binary

    @property
    def draws_threshold_curve(self) -> bool:
        """The validation split's threshold curve applies: a binary run (one model) on its own data."""
        return self.same_data and not self.multiclass and not self.config.is_ensemble


@dataclass
class Scored:
    """Per-image outcome of ``_predict_and_score``.

    Attributes:
        rows: one metric row per image, in group order.
        labels: image ID → uint8 H×W predicted class indices at the truth mask's size (post-processed).
        confusions: multi-class runs: image ID → the image's C×C confusion matrix (void left out); else empty.
        objects: ``(class, size bucket, IoU)`` of every truth object (:func:`~pixelwise.data.objects.object_ious`).
    """

    rows: list[dict] = field(default_factory=list)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    confusions: dict[str, np.ndarray] = field(default_factory=dict)
    objects: list[tuple[int, str, float]] = field(default_factory=list)


def _same_data(recipe: Recipe, data: Path | None) -> bool:
    """True when ``--data`` is left out or names one of the run's own data sets."""
    return data is None or _own_set(recipe, data) is not None


def _own_set(recipe: Recipe, data: Path | None) -> str | None:
    """The set ``--data`` names among the run's own data sets: its name in a multi-set run (ids ``NAME/ID``), ""
    for a one-set run's data; None when ``--data`` is left out or is another data set."""
    if data is None or recipe.data is None:
        return None
    roots = [Path(path) for path in recipe.data_paths]
    target = Path(data).resolve()
    for name, root in zip(set_names(roots), roots):
        if root.resolve() == target:
            return name if len(roots) > 1 else ""
    return None


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


def evaluate_run(
    run: Path,
    data: Path | None = None,
    split: str | None = None,
    *,
    tta: str = PREDICT_TTA,
    engine: str = "torch",
    precision: str = "fp32",
    post: PostProcess = PostProcess(),
    nsd_tolerance: float = 2.0,
    pixel_size_mm: float | None = None,
    cache_dir: Path | None = None,
    threshold_curve: bool = True,
) -> EvalResult:
    """Evaluate a run on its saved split (default ``test``) or on all pairs of ``data``; see the module doc.

    Args:
        run: the run folder.
        data: evaluate on every pair of this data set instead of the run's saved split.
        split: part of the run's split (``test``, ``val``, ``train``) or ``all``.
        tta: test-time augmentation mode; ``engine``: ``torch`` or ``onnx``; ``precision``: ``fp32`` or ``bf16``.
        post: post-processing of the predicted masks (binary runs).
        nsd_tolerance: normalised surface Dice tolerance, pixels; ``pixel_size_mm``: to report HD95 in mm too.
        cache_dir: where decoded arrays are cached (default: the user's cache). A ``cache_dir`` written in the
            run's ``config.json`` is not used: a run folder from someone else must not choose where pixelwise
            writes.
        threshold_curve: predict the validation split to draw the report's threshold curve (binary runs on their
            own data); False skips that prediction, and the report says the curve was not drawn.
    """
    plan = _plan_evaluation(run, data, split, tta=tta, engine=engine, precision=precision, cache_dir=cache_dir)
    if plan.config.record.task == "instances":  # objects, scored with the instance metrics
        from pixelwise.evaluate.instance_eval import evaluate_instances

        return EvalResult(*evaluate_instances(plan, post, {"tta": tta, "engine": engine, "precision": precision}))
    scored = _predict_and_score(plan, post, nsd_tolerance, pixel_size_mm)
    summary = _summarize_evaluation(plan, scored, tta=tta, engine=engine, precision=precision, post=post)
    instance_rows = [
        row
        for image_id, labels in scored.labels.items()
        for row in instances_from_mask(labels > 0, image_id, min_area=post.min_area)
    ]
    draw_curve = threshold_curve and plan.draws_threshold_curve
    sweep = _validation_threshold_curve(plan) if draw_curve else None
    written = _write_eval_files(plan, scored, summary, instance_rows)
    _write_eval_report(
        plan,
        scored,
        summary,
        count_instances(instance_rows, scored.labels),
        sweep,
        curve_skipped=plan.draws_threshold_curve and not threshold_curve,
    )
    log.info("wrote %s/%s and report.html", plan.out, ", ".join(written))
    return EvalResult(plan.out, scored.rows, summary, _terminal_tables(plan, summary))


def _plan_evaluation(
    run: Path, data: Path | None, split: str | None, *, tta: str, engine: str, precision: str, cache_dir: Path | None
) -> EvalPlan:
    """Step 1: the data set, the images of ``split`` and the model that predicts each (out-of-fold for k-fold
    runs: each fold's test images by that fold's own model).

    Raises:
        PixelwiseError: an unknown or empty split, a split of another data set, images missing from the data.
    """
    folder = RunFolder(run)
    run = folder.path
    predictor = make_predictor(run, engine, tta, precision)
    config = predictor.config
    recipe = config.recipe.replace(cache_dir=str(cache_dir) if cache_dir else None)
    same = _same_data(recipe, data)
    only = _own_set(recipe, data)  # one set of a multi-set run: its images of the split only
    root = Path(data) if data is not None else recipe.data_root()
    index = find_sets(recipe.data_roots(), layout=recipe.layout) if same else find_pairs(root)
    if config.record.task == "instances" and index.pairs and not index.pairs[0].instances:
        # class masks: each connected region of a class is one object, as the run was trained
        index.pairs = [dataclasses.replace(pair, instances="regions") for pair in index.pairs]
    by_id = {p.id: p for p in index.pairs if p.mask is not None}
    split = split or ("test" if same else "all")
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
    if only:
        groups = [(model, [i for i in ids if i.startswith(only + SEPARATOR)]) for model, ids in groups]
    missing = [i for _, ids in groups for i in ids if i not in by_id]
    if missing:
        raise PixelwiseError(
            f"{len(missing)} images of split '{split}' are not in {root} (e.g. {missing[0]}); "
            f"pass the --data the run was trained on"
        )
    if not any(ids for _, ids in groups):
        raise PixelwiseError(f"split '{split}' of {run} is empty: choose another --split or pass --data")
    return EvalPlan(
        folder,
        config,
        predictor,
        root,
        split,
        same,
        by_id,
        groups,
        recipe.cache_path(),
        TruthReader.of(config),
        folder.eval_folder((f"{split}-{_slug(only)}" if only else split) if same else _slug(root)),
    )


def _predict_and_score(plan: EvalPlan, post: PostProcess, nsd_tolerance: float, pixel_size_mm: float | None) -> Scored:
    """Step 2: each group's images through its model, each prediction scored against its truth at the truth's
    size. Squashed runs predict the cached arrays at the run's size in batches; tiled runs read each image at
    its own size and go through :func:`~pixelwise.predict.segment.image_labels`, the path of ``predict``."""
    scored = Scored()
    num_classes = plan.truths.class_map.num_classes
    for predictor, ids in plan.groups:
        pairs = [plan.by_id[i] for i in ids]
        for pair, labels in progress(_group_labels(plan, predictor, pairs), "scoring", total=len(pairs)):
            truth = plan.truths.read(pair.mask)
            pred = post.apply(labels(*truth.shape), num_classes)
            scored.labels[pair.id] = pred
            scored.objects += object_ious(pred, truth, num_classes)
            scored.rows.append(_row(pair, pred, truth, num_classes, nsd_tolerance, pixel_size_mm))
            if plan.multiclass:  # per image, for the pooled matrix and the per-class worst cases
                scored.confusions[pair.id] = confusion_matrix(pred, truth, num_classes)
    return scored


def _group_labels(plan: EvalPlan, predictor: RunPredictor, pairs: list[Pair]):
    """Per pair ``(pair, labels(height, width) -> uint8 H×W class indices before post-processing)``."""
    if predictor.config.record.is_tiled:
        for pair in pairs:
            labels, _ = image_labels(predictor, [read_image(pair.image)])[0]
            yield pair, lambda h, w, labels=labels: labels if labels.shape == (h, w) else resize_nearest(labels, h, w)
        return
    images, _ = load_arrays(pairs, plan.config.record.size, plan.cache, progress=True, **plan.truths.loading)
    probs = predictor.probabilities(images)
    refine = predictor.config.record.refine_edges  # its masks are refined on the image at its own size
    for pair, prob in zip(pairs, probs):
        yield (
            pair,
            lambda h, w, prob=prob, pair=pair: labels_at_image_size(
                predictor.config, prob, h, w, read_image(pair.image) if refine else None
            ),
        )


def _summarize_evaluation(
    plan: EvalPlan, scored: Scored, *, tta: str, engine: str, precision: str, post: PostProcess
) -> dict:
    """Step 3: means over the images, the settings that produced them, per-class numbers (multi-class runs)
    and per-label means (data sets whose images carry a label)."""
    summary = {
        **summarize(scored.rows),
        "threshold": plan.predictor.threshold,
        "data": str(plan.root.resolve()),
        "split": plan.split,
        "n_images": len(scored.rows),
        "tta": tta,
        "engine": engine,
        "precision": precision,
        "postprocess": post.__dict__,
    }
    if plan.config.record.is_tiled:
        summary["scale"] = plan.config.record.scale
        summary["tiles"] = plan.config.record.tiles
    summary["by_object_size"] = summarize_object_ious(scored.objects)
    if plan.multiclass:
        summary["multiclass"] = class_summary(sum(scored.confusions.values()), plan.truths.class_map.names)
    by_label = _per_label(scored.rows)
    if by_label:
        summary["per_label"] = by_label
    if any(row.get("set") for row in scored.rows):
        summary["per_set"] = _per_set(scored, plan)
    return summary


def _per_set(scored: Scored, plan: EvalPlan) -> dict[str, dict]:
    """A multi-set run's numbers on each data set's images (:mod:`pixelwise.data.sets`): ``summarize`` of its
    rows, and for multi-class runs its pooled class numbers (``multiclass``)."""
    per_set = {}
    for name in sorted({row["set"] for row in scored.rows if row.get("set")}):
        rows = [row for row in scored.rows if row.get("set") == name]
        per_set[name] = summarize(rows)
        if plan.multiclass:
            pooled = sum(scored.confusions[row["id"]] for row in rows)
            per_set[name]["multiclass"] = class_summary(pooled, plan.truths.class_map.names)
    return per_set


def _validation_threshold_curve(plan: EvalPlan) -> list[dict[str, float]] | None:
    """Step 4 (optional): mean validation Dice and Jaccard against the threshold, for the report's curve. It
    predicts the run's validation images once more: None when the split has none."""
    split = load_split(plan.folder.split_path)
    pairs = [plan.by_id[i] for i in split.get("val", []) if i in plan.by_id]
    if not pairs:
        return None
    log.info("predicting %d validation images for the threshold curve", len(pairs))
    if plan.config.record.is_tiled:  # images of their own sizes: one sweep each, averaged
        return _tiled_threshold_curve(plan, pairs)
    images, masks = load_arrays(pairs, plan.config.record.size, plan.cache, progress=False, **plan.truths.loading)
    probs = plan.predictor.probabilities(images)[:, 0]
    classes = plan.truths.class_map.apply(masks)
    return threshold_sweep(probs, classes == 1, THRESHOLD_GRID, ignore=classes == IGNORE)


def _tiled_threshold_curve(plan: EvalPlan, pairs: list[Pair]) -> list[dict[str, float]]:
    """The threshold curve of a tiled run: each validation image's probabilities at its own size (through
    :func:`~pixelwise.predict.segment.image_labels`), swept alone; the per-image means are averaged (so
    ``pooled_dice`` is a mean over images here)."""
    sweeps = []
    for pair in pairs:
        _, probs = image_labels(plan.predictor, [read_image(pair.image)], keep_probabilities=True)[0]
        classes = plan.truths.read(pair.mask)
        foreground = probs[1]
        if foreground.shape != classes.shape:
            classes = resize_nearest(classes, *foreground.shape)
        sweeps.append(threshold_sweep(foreground, classes == 1, THRESHOLD_GRID, ignore=classes == IGNORE))
    return [
        {key: float(np.mean([sweep[i][key] for sweep in sweeps])) for key in sweeps[0][i]}
        for i in range(len(sweeps[0]))
    ]


def _write_eval_files(plan: EvalPlan, scored: Scored, summary: dict, instance_rows: list[dict]) -> list[str]:
    """Step 5: the CSV and JSON files of ``eval-<name>/``; returns their names."""
    out = plan.out
    write_rows_csv(out / "metrics.csv", scored.rows)
    write_score_json(
        out / "summary.json", scored.rows, summary["mean"], extra={k: v for k, v in summary.items() if k != "mean"}
    )
    write_instances_csv(out / "instances.csv", instance_rows)
    written = ["metrics.csv", "summary.json", "instances.csv"]
    if plan.multiclass:
        write_class_csv(out / "per_class.csv", summary["multiclass"])
        write_confusion_csv(out / "confusion.csv", summary["multiclass"])
        written += ["per_class.csv", "confusion.csv"]
    return written


def _write_eval_report(
    plan: EvalPlan,
    scored: Scored,
    summary: dict,
    instance_counts: dict[str, int],
    sweep: list[dict[str, float]] | None,
    curve_skipped: bool,
) -> Path:
    """Step 6: ``report.html``, with the best, median and worst images (and each class's worst image)."""
    config, rows, multiclass = plan.config, scored.rows, plan.multiclass
    metric_row = {row["id"]: row for row in rows}
    cases = []
    for image_id in [i for ids in select_cases(rows).values() for i in ids]:
        pair = plan.by_id[image_id]
        truth = plan.truths.read(pair.mask)
        cases.append(
            ReportCase(
                image_id,
                read_image(pair.image),
                (truth > 0) & (truth != IGNORE),
                scored.labels[image_id] > 0,
                metric_row[image_id]["dice"],
            )
        )
    chosen = choose_threshold(sweep) if sweep else None
    training_csv = plan.folder.metrics_path
    inputs = ReportInputs(
        title=f"pixelwise evaluation: {plan.folder.path.name} on {plan.split}",
        summary=summary,
        rows=rows,
        cases=cases,
        training_csv=training_csv if training_csv.exists() else None,
        kept_epoch=config.record.kept_epoch if not config.is_ensemble else None,
        threshold_sweep=sweep,
        chosen_threshold=chosen if chosen is not None else plan.predictor.threshold,
        threshold_curve_skipped=curve_skipped,
        label_of={r["id"]: r["label"] for r in rows if r.get("label")} or None,
        set_of={r["id"]: r["set"] for r in rows if r.get("set")} or None,
        instance_counts=instance_counts,
        multiclass=summary.get("multiclass"),
        class_colors=plan.truths.class_map.colors if multiclass else None,
        class_cases=_class_cases(scored, plan.by_id, plan.truths) if multiclass else None,
    )
    return write_report(plan.out / "report.html", inputs)


def _terminal_tables(plan: EvalPlan, summary: dict) -> list:
    """Step 7: the summary table (and the per-class table of multi-class runs), for the caller to print."""
    tables = [format_summary_table(summary, title=f"{plan.folder.path.name} on {plan.split}")]
    for name, numbers in summary.get("per_set", {}).items():
        tables.append(format_summary_table(numbers, title=f"data set {name}"))
    if plan.multiclass:
        tables.append(
            format_class_table(summary["multiclass"], title=f"per class, pooled over {summary['n_images']} images")
        )
    return tables


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
    if pair.source:
        row["set"] = pair.source
    return row


def _class_cases(scored: Scored, by_id: dict[str, Pair], truths: TruthReader) -> list[ClassCase]:
    """For each foreground class, its worst image (see :func:`select_class_cases`), read for the report."""
    cases, read = [], {}
    for class_index, (image_id, iou) in select_class_cases(scored.confusions).items():
        if image_id not in read:
            pair = by_id[image_id]
            read[image_id] = (read_image(pair.image), truths.read(pair.mask))
        image, truth = read[image_id]
        cases.append(ClassCase(class_index, image_id, image, truth, scored.labels[image_id], iou))
    return cases


def _per_label(rows: list[dict]) -> dict:
    labels = sorted({r["label"] for r in rows if r.get("label")})
    return {label: summarize([r for r in rows if r.get("label") == label])["mean"] for label in labels}


def _slug(path: Path | str) -> str:
    """A folder name for ``eval-<name>``: a data set's folder name (or a set name), other characters as ``_``."""
    name = path.resolve().name if isinstance(path, Path) else path
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "data"
