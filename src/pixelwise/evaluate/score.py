"""``pixelwise score TRUTH_DIR PRED_DIR``: score a folder of predicted masks against truth masks, no model.

Pairing rules (also in ``docs/metrics.md``):

* a truth mask's ID is its file stem without a mask suffix (:data:`pixelwise.data.naming.MASK_SUFFIXES`,
  the same rule as for data sets, any letter case): ``ISIC_0000000_segmentation.png`` → ``ISIC_0000000``;
* a prediction belongs to the truth whose ID equals its stem, or is followed in its stem by ``_``, ``-``
  or ``.``; when several IDs fit, the longest wins (so ``IMD1`` never takes ``IMD10_mask.png``);
* ``predict``'s overlay pictures (``<stem>_overlay.png``) are not predictions, so ``score`` reads a
  ``predict --out`` folder as it is;
* every truth needs exactly one prediction, otherwise the command fails naming it; predictions without a
  truth are listed and ignored.

Binary masks are scored with the ISIC conventions. Multi-class folders (indexed or palette masks whose values
are class indices 0..K-1, as ``predict`` writes them for multi-class runs) are scored per class: per-image means
over the foreground classes, and the pooled per-class IoU/Dice, mIoU, class-average and global accuracy of the
summed confusion matrix. ``--labels FILE`` names the classes (and K); ``--ignore-index V`` marks void truth values.

Instance folders (:func:`score_instances`): predictions named ``<ID>_instances.png`` (instance-id images) or a
COCO results JSON are scored object by object against any instance truth :func:`~pixelwise.data.instances_io.
open_instances` reads, or a plain folder of instance-id PNGs, with :mod:`pixelwise.evaluate.instance_metrics`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pixelwise.data.classes import IGNORE, ClassMap, class_map_for, is_binary
from pixelwise.data.imageio import decode_mask, is_image_file
from pixelwise.data.naming import instances_id, is_overlay, strip_mask_suffix
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write_json, atomic_write_text, json_safe
from pixelwise.metrics import (
    METRIC_KEYS,
    class_image_metrics,
    class_summary,
    confusion_matrix,
    image_metrics,
    mean_over_classes,
    summarize,
)
from pixelwise.reporting import progress as progress_bar

log = logging.getLogger(__name__)

#: Characters that may follow the ID in a prediction's stem.
ID_SEPARATORS = ("_", "-", ".")


@dataclass
class ScoreResult:
    """What :func:`score_folders` found.

    Attributes:
        rows: one dict per truth mask, sorted by ID: ``id``, the metrics of
            :func:`pixelwise.metrics.image_metrics`, ``truth_file`` and ``prediction_file`` (names).
        summary: :func:`pixelwise.metrics.summarize` of the rows.
        unmatched_predictions: prediction files that belong to no truth mask.
        notes: one-line repairs made while reading masks (e.g. JPEG masks snapped to binary).
        multiclass: for multi-class folders, :func:`pixelwise.metrics.class_summary` of the pooled confusion
            matrix (per-class IoU/Dice/accuracy with the class names, mIoU, class-average and global
            accuracy); None for binary masks.
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    unmatched_predictions: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    multiclass: dict[str, Any] | None = None


def mask_id(stem: str) -> str:
    """The image ID of a mask file stem: the stem without one trailing mask suffix.

    ``"ISIC_0000000_segmentation"`` → ``"ISIC_0000000"``, ``"IMD002_lesion"`` → ``"IMD002"``,
    ``"IMD002"`` → ``"IMD002"``. A stem that is only a suffix is kept as it is.
    """
    return strip_mask_suffix(stem)


def prediction_matches(pred_stem: str, image_id: str) -> bool:
    """True when a prediction stem equals ``image_id`` or starts with it followed by ``_``, ``-`` or ``.``."""
    if pred_stem == image_id:
        return True
    return pred_stem.startswith(image_id) and pred_stem[len(image_id)] in ID_SEPARATORS


def read_binary_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as a binary mask.

    Returns:
        bool H×W: foreground where the value is > 127 in 0/255 images, > 0 in 0/1, 1-bit,
        indexed and palette images (any non-background class counts as foreground).

    Raises:
        PixelwiseError: unreadable file, or a grey (non-binary) mask.
    """
    mask, _ = _read_binary_mask_with_notes(Path(path))
    return mask


def _read_binary_mask_with_notes(path: Path) -> tuple[np.ndarray, list[str]]:
    # decode_mask maps 0/255 to {0, 1} (> 127) and keeps 0/1, palette and small indices as classes.
    classes, notes = decode_mask(path)
    return classes > 0, [f"{path}: {note}" for note in notes]


def _mask_files(folder: Path, role: str) -> list[Path]:
    if not folder.exists():
        raise PixelwiseError(f"{folder}: {role} folder not found; check the path")
    if not folder.is_dir():
        raise PixelwiseError(f"{folder}: {role} path is a file, not a folder of masks")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and is_image_file(p)
        and not (role == "prediction" and (is_overlay(p.stem) or instances_id(p.stem) is not None))
    )
    if not files:
        raise PixelwiseError(f"{folder}: no mask images (PNG, BMP, ...) in the {role} folder")
    return files


def pair_masks(
    truth_files: Iterable[Path], pred_files: Iterable[Path]
) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
    """Pair truth and prediction files by ID.

    Returns:
        ``(pairs, unmatched_predictions)``: ``(id, truth_file, prediction_file)`` sorted by ID, and the
        predictions that belong to no truth.

    Raises:
        PixelwiseError: two truth files with the same ID, or a truth with no or several predictions.
    """
    truth_by_id: dict[str, Path] = {}
    for truth in truth_files:
        image_id = mask_id(truth.stem)
        if image_id in truth_by_id:
            raise PixelwiseError(
                f"{truth}: same image ID {image_id!r} as {truth_by_id[image_id].name}; keep one truth mask per image"
            )
        truth_by_id[image_id] = truth
    # Longest ID first, so a prediction goes to the most specific truth it fits.
    ids_longest_first = sorted(truth_by_id, key=len, reverse=True)
    preds_by_id: dict[str, list[Path]] = {image_id: [] for image_id in truth_by_id}
    unmatched: list[Path] = []
    for pred in pred_files:
        owner = next((i for i in ids_longest_first if prediction_matches(pred.stem, i)), None)
        if owner is None:
            unmatched.append(pred)
        else:
            preds_by_id[owner].append(pred)
    pairs = []
    for image_id in sorted(truth_by_id):
        candidates = preds_by_id[image_id]
        truth = truth_by_id[image_id]
        if not candidates:
            raise PixelwiseError(
                f"{truth}: no prediction for image {image_id!r}; name it {image_id}.png or {image_id}_<anything>.png"
            )
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            raise PixelwiseError(f"{truth}: {len(candidates)} predictions for image {image_id!r} ({names}); keep one")
        pairs.append((image_id, truth, candidates[0]))
    return pairs, unmatched


def score_folders(
    truth_dir: str | Path,
    pred_dir: str | Path,
    nsd_tolerance: float = 2.0,
    pixel_size_mm: float | None = None,
    progress: bool = True,
    labels: str | Path | None = None,
    ignore: Iterable[int] = (),
) -> ScoreResult:
    """Score every truth mask in ``truth_dir`` against its prediction in ``pred_dir``.

    Args:
        truth_dir: folder of truth masks (non-recursive).
        pred_dir: folder of predicted masks (non-recursive).
        nsd_tolerance: normalised surface Dice tolerance, pixels.
        pixel_size_mm: pixel side in mm; adds ``hd95_mm`` to every row.
        progress: show a progress bar on the terminal.
        labels: label file (``labels.txt``/``labels.json``) naming the classes 0..K-1 (and void values); the masks
            are then scored as K classes. Without it the masks decide: values above 1 make them multi-class,
            with K = the largest value + 1.
        ignore: truth values of void pixels (e.g. 255, or 11 for CamVid): left out of every metric.

    Returns:
        A :class:`ScoreResult`. Binary masks: one :func:`~pixelwise.metrics.image_metrics` row per image (ISIC
        conventions). Multi-class masks: per-image means over the foreground classes 1..K-1, and ``multiclass``.

    Raises:
        PixelwiseError: missing/empty folders, unpaired truths, unreadable masks, size mismatches, mask values
        that are not classes of ``labels``.
    """
    truth_dir, pred_dir = Path(truth_dir), Path(pred_dir)
    if nsd_tolerance < 0:
        raise PixelwiseError(f"--nsd-tolerance {nsd_tolerance}: must be >= 0 pixels")
    if pixel_size_mm is not None and not pixel_size_mm > 0:
        raise PixelwiseError(f"--pixel-size {pixel_size_mm}: must be a positive size in mm")
    for value in ignore:
        if not 0 <= int(value) <= 255:
            raise PixelwiseError(f"--ignore-index {value}: give a mask value from 0 to 255 (e.g. 255 or 11)")
    class_map = class_map_for(Path(labels), None, tuple(ignore))[0] if labels is not None else None
    void = tuple(class_map.ignored_values) if class_map is not None else tuple(sorted({int(v) for v in ignore}))
    pairs, unmatched = pair_masks(_mask_files(truth_dir, "truth"), _mask_files(pred_dir, "prediction"))
    images: list[_ScoredImage] = []
    notes: list[str] = []
    pooled = np.zeros((2, 2), dtype=np.int64)
    for image_id, truth_file, pred_file in _progress(pairs, progress, "scoring"):
        truth, truth_notes = _read_class_mask(truth_file, void, class_map, labels, "truth")
        pred, pred_notes = _read_class_mask(pred_file, void, class_map, labels, "prediction")
        notes += truth_notes + pred_notes
        if pred.shape != truth.shape:
            raise PixelwiseError(
                f"{pred_file}: prediction is {pred.shape[1]}×{pred.shape[0]} but truth {truth_file.name} is "
                f"{truth.shape[1]}×{truth.shape[0]}; predict at the original image size"
            )
        predicted_void = np.isin(pred, void) & (truth != IGNORE) if void else None
        if predicted_void is not None and predicted_void.any():
            raise PixelwiseError(
                f"{pred_file}: {int(predicted_void.sum())} pixels predicted as void value "
                f"{int(pred[predicted_void][0])} where the truth has a class; a prediction "
                f"must give every pixel a class"
            )
        scored = _score_image(image_id, truth, pred, nsd_tolerance, pixel_size_mm, has_void=bool(void))
        scored.row.update(truth_file=truth_file.name, prediction_file=pred_file.name)
        if class_map is not None and scored.top >= class_map.num_classes:
            raise PixelwiseError(
                f"{pred_file}: prediction has class {scored.top} but {labels} names "
                f"{class_map.num_classes} classes (0..{class_map.num_classes - 1}); "
                f"check the label file or the prediction"
            )
        pooled = _add_padded(pooled, scored.confusion)
        images.append(scored)
    keys = METRIC_KEYS + (("hd95_mm",) if pixel_size_mm is not None else ())
    num_classes = class_map.num_classes if class_map is not None else max(2, pooled.shape[0])
    if is_binary(num_classes):  # binary: exactly the ISIC rows (with their counts for the pooled Dice)
        rows = [image.row for image in images]
        return ScoreResult(rows=rows, summary=summarize(rows, keys=keys), unmatched_predictions=unmatched, notes=notes)
    rows = []
    for image in images:
        means = mean_over_classes(image.per_class, range(1, num_classes), pixel_size_mm=pixel_size_mm)
        files = {key: image.row[key] for key in ("truth_file", "prediction_file")}
        rows.append({"id": image.row["id"], **means, **files})
    names = class_map.names if class_map is not None else ClassMap.plain(num_classes).names
    pooled = _add_padded(np.zeros((num_classes, num_classes), dtype=np.int64), pooled)
    return ScoreResult(
        rows=rows,
        summary=summarize(rows, keys=keys),
        unmatched_predictions=unmatched,
        notes=notes,
        multiclass=class_summary(pooled, names),
    )


@dataclass
class _ScoredImage:
    """What one pair contributes before the class count is known.

    ``row``: the binary :func:`image_metrics` row (values 0/1 only; only the ID otherwise); ``per_class``: rows of
    the foreground classes present; ``confusion``: the image's confusion matrix (void left out), at least 2×2;
    ``top``: its largest class outside void pixels.
    """

    row: dict[str, Any]
    per_class: dict[int, dict]
    confusion: np.ndarray
    top: int


def _score_image(
    image_id: str, truth: np.ndarray, pred: np.ndarray, tol: float, px: float | None, has_void: bool
) -> _ScoredImage:
    """Per-image metrics of uint8 H×W class masks (truth :data:`IGNORE` on void pixels when ``has_void``)."""
    void = truth == IGNORE if has_void else None
    if void is not None and void.any():
        top = int(max(truth[~void].max(initial=0), pred[~void].max(initial=0)))
    else:
        void = None
        top = int(max(truth.max(initial=0), pred.max(initial=0)))
    row: dict[str, Any] = {"id": image_id}
    if top <= 1:  # binary: exactly the ISIC row; void pixels (if any) are negatives of both, as in evaluate
        binary_pred, binary_truth = pred > 0, truth > 0
        if void is not None:
            binary_pred &= ~void
            binary_truth &= ~void
        row.update(image_metrics(binary_pred, binary_truth, nsd_tolerance=tol, pixel_size_mm=px))
        per_class = {1: {k: v for k, v in row.items() if k != "id"}} if top == 1 else {}
        void_pixels = int(void.sum()) if void is not None else 0
        confusion = np.array([[row["tn"] - void_pixels, row["fp"]], [row["fn"], row["tp"]]], dtype=np.int64)
        return _ScoredImage(row, per_class, confusion, top)
    per_class = class_image_metrics(pred, truth, nsd_tolerance=tol, pixel_size_mm=px)
    return _ScoredImage(row, per_class, confusion_matrix(pred, truth, top + 1), top)


def _add_padded(total: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``total + part`` for square matrices of different sizes (the smaller padded with zeros)."""
    size = max(total.shape[0], part.shape[0])
    out = np.zeros((size, size), dtype=np.int64)
    out[: total.shape[0], : total.shape[0]] += total
    out[: part.shape[0], : part.shape[0]] += part
    return out


def _read_class_mask(
    path: Path, void: tuple[int, ...], class_map: ClassMap | None, labels, role: str
) -> tuple[np.ndarray, list[str]]:
    """A mask file as uint8 H×W class indices: truth void values become :data:`IGNORE`; with a label file,
    a truth value that is neither one of its classes nor void is an error naming the file."""
    mask, notes = decode_mask(path, None, void)
    notes = [f"{path}: {note}" for note in notes]
    if role == "truth":
        if class_map is not None:
            unknown = class_map.unknown_values(np.unique(mask))
            if unknown:
                raise PixelwiseError(
                    f"{path}: truth value {unknown[0]} is neither a class of {labels} "
                    f"(0..{class_map.num_classes - 1}) nor void; add it to {labels} or pass "
                    f"--ignore-index {unknown[0]}"
                )
            mask = class_map.apply(mask)
        elif void:
            mask = np.where(np.isin(mask, void), IGNORE, mask).astype(np.uint8)
    return mask, notes


def _progress(items: list, enabled: bool, description: str):
    # Bars only where the CLI turned them on (pixelwise.reporting); ``enabled=False`` silences them there too.
    return progress_bar(items, description) if enabled else iter(items)


# --------------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------------


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The metric keys present in the rows, in :data:`METRIC_KEYS` order, then ``hd95_mm`` if present."""
    present = [key for key in METRIC_KEYS if any(key in row for row in rows)]
    if any("hd95_mm" in row for row in rows):
        present.append("hd95_mm")
    return present


def write_rows_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write dict rows as CSV (atomically). Columns: the union of the rows' keys, in first-seen order.

    Floats keep full precision (``repr``); NaN and None are written as empty cells.
    """
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(key)) for key in columns])
    return atomic_write_text(path, buffer.getvalue())


def _csv_cell(value: Any) -> str:
    value = json_safe(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_score_json(
    path: str | Path,
    rows: list[dict[str, Any]],
    mean: dict[str, float],
    extra: dict[str, Any] | None = None,
    columns: list[str] | None = None,
) -> Path:
    """Write ``{"images": [{"id", metrics...}], "mean": {metrics...}}`` (atomically), NaN as null.

    ``extra`` entries (e.g. ``std``, ``median``, ``pooled_dice``) are added at the top level; ``columns``: the
    per-image keys (default: the known metrics present, :func:`metric_columns`).
    """
    columns = columns or metric_columns(rows) or list(mean)
    document: dict[str, Any] = {
        "images": [{"id": row["id"], **{key: json_safe(row.get(key)) for key in columns}} for row in rows],
        "mean": {key: json_safe(value) for key, value in mean.items()},
    }
    for key, value in (extra or {}).items():
        document[key] = {k: json_safe(v) for k, v in value.items()} if isinstance(value, dict) else json_safe(value)
    return atomic_write_json(path, document)


#: Columns of ``per_class.csv``.
CLASS_COLUMNS = ("index", "name", "iou", "dice", "accuracy", "truth_pixels", "predicted_pixels")


def write_class_csv(path: str | Path, multiclass: dict[str, Any]) -> Path:
    """Write ``per_class.csv`` (atomically): one row per class of a :func:`pixelwise.metrics.class_summary`.

    Columns :data:`CLASS_COLUMNS`; pooled over all images; undefined values (a class absent from truth and
    prediction) are empty cells.
    """
    rows = [{"index": index, **entry} for index, entry in enumerate(multiclass["per_class"])]
    return write_rows_csv(path, [{key: row.get(key) for key in CLASS_COLUMNS} for row in rows])


def write_confusion_csv(path: str | Path, multiclass: dict[str, Any]) -> Path:
    """Write ``confusion.csv`` (atomically): the pooled confusion matrix with the class names as header.

    Row = truth class (first cell its name), column = predicted class; void pixels are not counted.
    """
    names = multiclass["class_names"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["truth / prediction", *names])
    for name, counts in zip(names, multiclass["confusion_matrix"]):
        writer.writerow([name, *(int(count) for count in counts)])
    return atomic_write_text(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------
# Console output and the typer command
# --------------------------------------------------------------------------------------------


def format_summary_table(summary: dict[str, Any], title: str = "scores"):
    """A rich Table: one row per metric with mean ± std, median and missing count."""
    from rich.table import Table

    table = Table(title=f"{title} ({summary['n']} images)")
    table.add_column("metric")
    table.add_column("mean ± std", justify="right")
    table.add_column("median", justify="right")
    table.add_column("missing", justify="right")
    for key, mean in summary["mean"].items():
        table.add_row(
            key,
            f"{_fmt(mean)} ± {_fmt(summary['std'][key])}",
            _fmt(summary["median"][key]),
            str(summary["missing"][key]) if summary["missing"][key] else "",
        )
    if not (summary.get("pooled_dice") is None or math.isnan(summary["pooled_dice"])):  # multi-class rows: no counts
        table.add_row("pooled dice", _fmt(summary["pooled_dice"]), "", "")
    return table


def format_class_table(multiclass: dict[str, Any], title: str = "per class (pooled over all images)"):
    """A rich Table of a :func:`pixelwise.metrics.class_summary`: one row per class, then the means."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("class", "IoU", "Dice", "accuracy", "truth pixels", "pixel share"):
        table.add_column(column, justify="left" if column == "class" else "right")
    total = sum(entry["truth_pixels"] for entry in multiclass["per_class"]) or 1
    for entry in multiclass["per_class"]:
        table.add_row(
            entry["name"],
            _fmt(entry["iou"]),
            _fmt(entry["dice"]),
            _fmt(entry["accuracy"]),
            f"{entry['truth_pixels']:,}",
            f"{entry['truth_pixels'] / total:.2%}",
        )
    table.add_section()
    table.add_row("mean, all classes", _fmt(multiclass["mean_iou"]), "", "", "", "")
    table.add_row(
        "mean, classes ≥ 1", _fmt(multiclass["mean_iou_foreground"]), _fmt(multiclass["mean_dice"]), "", "", ""
    )
    table.add_row("class-average", "", "", _fmt(multiclass["mean_class_accuracy"]), "", "")
    table.add_row("global accuracy", "", "", _fmt(multiclass["global_accuracy"]), "", "")
    return table


def _fmt(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"


# --------------------------------------------------------------------------------------------
# Instance folders: objects, not pixels
# --------------------------------------------------------------------------------------------

#: Columns of the per-image instance rows (``--csv``), then the file names.
INSTANCE_ROW_KEYS = ("id", "n_true", "n_pred", "tp", "fp", "fn", "dsb", "mean_iou")
#: Data-set numbers of ``--json``'s ``"instances"`` and of the table, in order.
INSTANCE_SCORE_KEYS = ("ap", "ap50", "ap75", "dsb", "pq", "sq", "rq")
#: How many missing ids an error line names.
_IDS_SHOWN = 5


@dataclass
class InstanceScoreResult:
    """What :func:`score_instances` found.

    Attributes:
        rows: one dict per truth image, in the truth's order: :data:`INSTANCE_ROW_KEYS` (``tp``/``fp``/``fn``
            class-agnostic at IoU > 0.5, ``mean_iou`` of those matches, NaN without any), then ``truth_file``
            and ``prediction_file``.
        scores: :func:`~pixelwise.evaluate.instance_metrics.instance_scores` without its rows: ``ap``, ``ap50``,
            ``ap75``, ``dsb``, ``pq``, ``sq``, ``rq``, per-class dicts, ``stardist`` (the pooled dict at τ 0.5),
            ``n_images``, ``n_true``, ``n_pred``.
        layout: the truth's layout (:data:`~pixelwise.data.instances_io.INSTANCE_LAYOUTS` or ``"id-pngs"``).
        unmatched_predictions: prediction files (or ``--coco-results`` image ids) that belong to no truth.
        notes: one-line remarks from reading the truth (overlapping masks resolved, files skipped).
    """

    rows: list[dict[str, Any]]
    scores: dict[str, Any]
    layout: str
    unmatched_predictions: list[Path | str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def instance_predictions(pred_dir: str | Path) -> list[Path]:
    """The instance-id predictions of a folder: its ``<ID>_instances.png`` files, sorted (none when the folder
    does not exist). Their presence is what makes ``score`` score objects."""
    folder = Path(pred_dir)
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() == ".png"
        and instances_id(p.stem) is not None
    )


@dataclass
class _Truth:
    """One truth image: ``labels`` integer H×W ids (0 = background), ``classes`` id → class ≥ 1, ``void`` bool H×W
    or None, ``file`` what error lines name, ``coco_id`` the COCO image id (COCO truth) or position 1..N."""

    id: str
    labels: np.ndarray
    classes: dict[int, int]
    void: np.ndarray | None
    file: Path
    coco_id: int


class _TruthSet:
    """Instance truth read one image at a time: an :func:`open_instances` layout, or a folder of id PNGs."""

    def __init__(self, root: Path):
        from pixelwise.data.instances_io import open_instances

        self.root = root
        self.notes: list[str] = []
        self.category_ids: tuple[int, ...] = ()
        try:
            self.dataset = open_instances(root)
        except PixelwiseError:
            # No layout fits: a folder holding the id PNGs themselves is the plain form; otherwise the layout error
            # (naming what each layout expects) is the right message.
            files = _id_png_files(root) if root.is_dir() else []
            if not files:
                raise
            self.dataset = None
            self.layout = "id-pngs"
            self.files: dict[str, Path] = {}
            for path in files:
                image_id = _truth_id(path.stem)
                if image_id in self.files:
                    raise PixelwiseError(
                        f"{path}: same image ID {image_id!r} as {self.files[image_id].name}; keep "
                        "one truth file per image"
                    )
                self.files[image_id] = path
            self.ids = sorted(self.files)
            return
        self.layout = self.dataset.layout
        self.ids = self.dataset.ids
        self.category_ids = self.dataset.category_ids
        self.notes += self.dataset.problems

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, index: int) -> _Truth:
        from pixelwise.data.instances_io import _open_mask

        image_id = self.ids[index]
        if self.dataset is None:
            path = self.files[image_id]
            labels = _open_mask(path)
            ids = np.unique(labels[labels != 0]).tolist()
            if ids == [255]:
                self.notes.append(
                    f"{path}: only values 0 and 255, a binary mask read as one object; save object ids 1..N"
                )
            return _Truth(image_id, labels, {int(i): 1 for i in ids}, None, path, index + 1)
        sample = self.dataset.read(index)
        self.notes += [f"{sample.image_path}: {note}" for note in sample.notes]
        self.notes += [
            f"{a} and {b} share {pixels} pixels; given to the smaller object" for a, b, pixels in sample.overlaps
        ]
        coco_id = index + 1
        if self.layout == "coco":  # results name images by the JSON's own ids
            coco_id = int(self.dataset.entries[index].source[0]["id"])
        return _Truth(image_id, sample.labels, sample.classes, sample.void, sample.image_path, coco_id)


def _id_png_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() == ".png"
    )


def _truth_id(stem: str) -> str:
    """A plain truth PNG's image ID: its stem without ``_instances`` (so a prediction folder can be the truth) or
    one mask suffix."""
    return instances_id(stem) or strip_mask_suffix(stem)


def score_instances(
    truth: str | Path, pred_dir: str | Path | None = None, coco_results: str | Path | None = None, progress: bool = True
) -> InstanceScoreResult:
    """Score instance-id predictions against instance truth, object by object.

    Args:
        truth: any layout :func:`~pixelwise.data.instances_io.open_instances` reads (DSB 2018, instance-id PNG
            folders, VOC ``SegmentationObject``, COCO JSON), or a folder of instance-id PNGs ``<ID>.png``
            (8- or 16-bit, 0 = background, 1..N objects; a mask suffix or ``_instances`` after the ID is allowed).
        pred_dir: folder of ``<ID>_instances.png`` predictions (uint8, or uint16 beyond 255 objects; 0 =
            background). They carry no classes and no scores: objects are scored class-agnostic (every truth
            and predicted object class 1), every prediction with score 1.0.
        coco_results: instead of ``pred_dir``, a COCO results JSON with RLE masks (what
            :func:`~pixelwise.evaluate.instance_metrics.write_coco_results` writes): ``image_id`` is the COCO
            JSON's image id for COCO truth, else the truth image's position 1..N in ID order; ``category_id`` is
            the COCO category (COCO truth) or the class index; ``score`` ranks the detections of COCO AP. A truth
            image without detections is an empty prediction.
        progress: progress bar while reading (when the CLI turned bars on).

    Returns:
        An :class:`InstanceScoreResult`. Images are read and matched one at a time, so memory holds one pair of
        label images plus every image's small IoU matrix, whatever the folder's size.

    Raises:
        PixelwiseError: neither or both of ``pred_dir``/``coco_results``, no truth layout, truth images without a
            prediction (the first few IDs named), a prediction whose size differs from its truth (both files
            named), unreadable files.
    """
    from pixelwise.data.instances_io import _open_mask
    from pixelwise.evaluate.instance_metrics import _prepare, instance_scores, read_coco_results

    if pred_dir is None and coco_results is None:
        raise PixelwiseError(
            "no predictions given; pass PRED_DIR (masks or <ID>_instances.png files) or --coco-results FILE"
        )
    if pred_dir is not None and coco_results is not None:
        raise PixelwiseError(f"{pred_dir} and --coco-results {coco_results}: two sets of predictions; pass one")
    truth_set = _TruthSet(Path(truth))
    unmatched: list[Path | str] = []
    if pred_dir is not None:
        pred_dir = Path(pred_dir)
        if not pred_dir.is_dir():
            raise PixelwiseError(f"{pred_dir}: prediction folder not found; check the path")
        files = instance_predictions(pred_dir)
        if not files:
            raise PixelwiseError(
                f"{pred_dir}: no <ID>_instances.png predictions; write one instance-id PNG per truth image"
            )
        by_id: dict[str, Path] = {}
        for path in files:
            by_id.setdefault(instances_id(path.stem), path)
        known = set(truth_set.ids)
        unmatched = [path for image_id, path in by_id.items() if image_id not in known]
        missing = [image_id for image_id in truth_set.ids if image_id not in by_id]
        if missing:
            shown = ", ".join(missing[:_IDS_SHOWN]) + (
                f" and {len(missing) - _IDS_SHOWN} more" if len(missing) > _IDS_SHOWN else ""
            )
            raise PixelwiseError(
                f"{pred_dir}: no prediction for {len(missing)} of {len(truth_set)} truth images "
                f"({shown}); write <ID>_instances.png for each, e.g. {missing[0]}_instances.png"
            )
    else:
        coco_results = Path(coco_results)
        results = read_coco_results(coco_results)
    log.info(
        "scoring objects: %d %s truth images against %s",
        len(truth_set),
        truth_set.layout,
        pred_dir if pred_dir is not None else coco_results,
    )
    images, files_of = [], []
    coco_ids = set()
    for index in _progress(range(len(truth_set)), progress, "scoring objects"):
        truth = truth_set.read(index)
        true_classes = pred_classes = pred_scores = None  # PNG predictions: class-agnostic, every score 1.0
        if pred_dir is not None:
            pred_file = by_id[truth.id]
            pred = _open_mask(pred_file)
            where = pred_file
        else:
            coco_ids.add(truth.coco_id)
            where = f"{coco_results} image_id {truth.coco_id}"
            pred_file = coco_results
            empty = (np.zeros(truth.labels.shape, np.int32), {}, {})
            pred, pred_classes, pred_scores = results.get(truth.coco_id, empty)
            pred_classes = {k: _class_index(c, truth_set, coco_results) for k, c in pred_classes.items()}
            true_classes = truth.classes
        if pred.shape != truth.labels.shape:
            raise PixelwiseError(
                f"{where}: prediction is {pred.shape[1]}×{pred.shape[0]} but truth {truth.file} is "
                f"{truth.labels.shape[1]}×{truth.labels.shape[0]}; predict at the original image size"
            )
        images += _prepare(
            [truth.labels],
            [pred],
            [truth.id],
            None if true_classes is None else [true_classes],
            None if pred_classes is None else [pred_classes],
            None if pred_scores is None else [pred_scores],
            [truth.void],
        )
        files_of.append((truth.file, pred_file))
    if coco_results is not None:
        unmatched = [f"image_id {image_id}" for image_id in sorted(set(results) - coco_ids)]
    scores = instance_scores(None, None, _images=images)
    rows = [
        {
            **{key: row[key] for key in INSTANCE_ROW_KEYS},
            "truth_file": _relative(truth_file, truth_set.root),
            "prediction_file": pred_file.name,
        }
        for row, (truth_file, pred_file) in zip(scores.pop("images"), files_of)
    ]
    scores["stardist"] = scores["stardist"][0]  # the pooled numbers at τ 0.5
    return InstanceScoreResult(rows, scores, truth_set.layout, unmatched, truth_set.notes)


def _relative(path: Path, root: Path) -> str:
    """``path`` as written under the truth folder (``<id>/images/<id>.png``), else as it is."""
    try:
        return str(path.relative_to(root if root.is_dir() else root.parent))
    except ValueError:
        return str(path)


def _class_index(category: int, truth_set: _TruthSet, results: Path) -> int:
    """The class index of a COCO results ``category_id``: COCO truth numbers its categories 1..K."""
    if not truth_set.category_ids:
        return int(category)
    try:
        return truth_set.category_ids.index(int(category), 1)
    except ValueError:
        raise PixelwiseError(
            f"{results}: category_id {category} is not a category of {truth_set.root}; use the truth's category ids"
        ) from None


def write_instance_json(path: str | Path, result: InstanceScoreResult) -> Path:
    """Write ``{"instances": {ap, ap50, ap75, dsb, pq, sq, rq, stardist, n_images, n_true, n_pred, per-class},
    "layout", "images": [rows]}`` (atomically), NaN as null."""
    return atomic_write_json(path, {"instances": result.scores, "layout": result.layout, "images": result.rows})


def format_instance_table(scores: dict[str, Any], title: str = "objects"):
    """A rich Table of :attr:`InstanceScoreResult.scores`: the data-set numbers, then StarDist's at τ 0.5."""
    from rich.table import Table

    table = Table(
        title=f"{title} ({scores['n_images']} images, {scores['n_true']} true and {scores['n_pred']} predicted objects)"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("what", style="dim")
    what = {
        "ap": "COCO mask AP, IoU .50:.95",
        "ap50": "COCO AP at IoU .50",
        "ap75": "COCO AP at IoU .75",
        "dsb": "Kaggle DSB 2018, mean over images",
        "pq": "panoptic quality",
        "sq": "segmentation quality",
        "rq": "recognition quality",
    }
    for key in INSTANCE_SCORE_KEYS:
        table.add_row(key, _fmt(scores[key]), what[key])
    table.add_section()
    stardist = scores["stardist"]
    for key in ("precision", "recall", "f1", "accuracy", "mean_matched_score"):
        table.add_row(f"{key} @0.5", _fmt(stardist[key]), "StarDist, pooled over images")
    table.add_row("tp / fp / fn @0.5", f"{stardist['tp']} / {stardist['fp']} / {stardist['fn']}", "IoU ≥ 0.5")
    return table
