"""``report.html``: one self-contained HTML file (no scripts, figures embedded as base64 PNG).

Sections: summary table (and per-diagnosis rows), for instance runs the instance metrics (COCO AP, DSB score,
PQ), for multi-class runs the per-class table and the confusion-matrix heat map, training curves, histogram of
per-image Dice, best / median / worst cases with truth (green) and prediction (red) contours (instance runs: the
worst, median and best image by DSB score with every object in its own colour), for multi-class runs each class's
worst image as colour-filled class maps, Dice and Jaccard against the probability threshold, connected regions
per predicted mask (instance runs: predicted against true objects per image), and the per-image table.
:func:`write_report` takes one :class:`ReportInputs` and joins one builder per section (``_summary_section``,
``_cases_section``, ``_threshold_section``, ...), top to bottom.

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure`` + Agg canvas), which never
touches pyplot's global state, so reports can be written from any thread or process.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from pixelwise.data.classes import IGNORE, PREDICTION_RGB, TRUTH_RGB, voc_colour
from pixelwise.fileio import atomic_write_text
from pixelwise.masks.overlay import hex_colour, instance_overlay
from pixelwise.metrics import METRIC_KEYS, metrics_from_confusion, summarize

TRUTH_COLOUR = hex_colour(TRUTH_RGB)
PRED_COLOUR = hex_colour(PREDICTION_RGB)
#: Longest side of a case picture in the report, pixels (keeps the HTML small for large photographs).
CASE_DISPLAY_SIDE = 384
#: Colour of void pixels in class maps (PASCAL VOC's border colour).
VOID_RGB = (224, 224, 192)
#: Up to this many classes, the heat map writes each cell's percentage.
HEATMAP_ANNOTATED_CLASSES = 20

#: Instance runs: the per-image table's object columns (``instance_scores``' rows), key → heading.
_OBJECT_COLUMNS = {
    "n_true": "true objects",
    "n_pred": "predicted objects",
    "tp": "TP",
    "fp": "FP",
    "fn": "FN",
    "mean_iou": "matched IoU",
    "dsb": "DSB score",
}
_OBJECT_COUNTS = ("n_true", "n_pred", "tp", "fp", "fn")
#: Instance runs: the numbers of ``summary["instances"]`` the report shows, with how each is defined.
_INSTANCE_METRICS = (
    (
        "ap",
        "AP",
        "COCO mask average precision: precision over 101 recall points of the objects ranked by score, "
        "averaged over IoU thresholds 0.50, 0.55, …, 0.95 and over the classes with truth objects.",
    ),
    ("ap50", "AP50", "COCO mask AP at the single IoU threshold 0.50."),
    ("ap75", "AP75", "COCO mask AP at the single IoU threshold 0.75."),
    (
        "dsb",
        "DSB score",
        "Kaggle Data Science Bowl 2018: per image, TP/(TP+FP+FN) averaged over IoU thresholds "
        "t = 0.50, 0.55, …, 0.95 (a match needs IoU > t), then averaged over the images.",
    ),
    (
        "pq",
        "PQ",
        "panoptic quality: the sum of matched IoUs / (TP + FP/2 + FN/2), objects matched at IoU > 0.5 "
        "within their class, counts pooled over the images, then averaged over the classes.",
    ),
    (
        "sq",
        "SQ",
        "segmentation quality: the mean IoU of the matched pairs (IoU > 0.5), pooled over the images, then averaged "
        "over the classes.",
    ),
    (
        "rq",
        "RQ",
        "recognition quality: TP / (TP + FP/2 + FN/2) at IoU > 0.5 (an F1 score), pooled over the images, then "
        "averaged over the classes.",
    ),
)

_METRIC_LABELS = {
    "dice": "Dice",
    "jaccard": "Jaccard (IoU)",
    "threshold_jaccard": "thresholded Jaccard (ISIC 2018)",
    "accuracy": "accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "hd95": "HD95 (px)",
    "hd95_mm": "HD95 (mm)",
    "nsd": "normalised surface Dice",
}


@dataclass
class ReportCase:
    """One image shown in the best/median/worst grid.

    Attributes:
        id: image ID.
        image: uint8 H×W×3 RGB.
        truth: bool H×W truth mask (resized for display when its size differs from the image's).
        pred: bool H×W predicted mask.
        dice: the case's Dice, shown under the picture.
    """

    id: str
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray
    dice: float


@dataclass
class ClassCase:
    """The worst image of one class (multi-class runs), shown as colour-filled class maps.

    Attributes:
        class_index: the class c (1..C-1).
        id: image ID.
        image: uint8 H×W×3 RGB.
        truth: uint8 H×W truth class indices, :data:`~pixelwise.data.classes.IGNORE` on void pixels (resized
            for display when its size differs from the image's).
        pred: uint8 H×W predicted class indices.
        iou: the image's IoU of class c, shown under the picture.
    """

    class_index: int
    id: str
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray
    iou: float


@dataclass
class InstanceCase:
    """One image of an instance run, shown as its truth objects beside its predicted objects.

    Attributes:
        id: image ID.
        image: uint8 H×W×3 RGB.
        truth: integer H×W truth instance ids (0 = background), at the image's size.
        pred: integer H×W predicted instance ids; a predicted object matched to a truth object carries that object's
            id, so both are drawn in the same colour (:func:`~pixelwise.masks.overlay.instance_overlay`).
        score: the image's DSB score, shown above the pictures.
    """

    id: str
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray
    score: float


# --------------------------------------------------------------------------------------------
# Case selection
# --------------------------------------------------------------------------------------------


def select_cases(rows: list[dict[str, Any]], n_each: int = 3) -> dict[str, list[str]]:
    """IDs of the best, median and worst images by Dice, without repeats.

    Args:
        rows: per-image rows with ``id`` and ``dice`` (rows whose Dice is missing are skipped).
        n_each: images per group.

    Returns:
        ``{"best": [...], "median": [...], "worst": [...]}``: best in decreasing Dice, worst in
        increasing Dice (worst first), median around the middle of the ranking. With fewer than
        ``3 * n_each`` images the worst are taken first, then the best, then the median.
    """
    scored = [row for row in rows if row.get("dice") is not None and not math.isnan(float(row["dice"]))]
    ranked = [row["id"] for row in sorted(scored, key=lambda row: (float(row["dice"]), str(row["id"])))]
    worst = ranked[:n_each]
    best = [image_id for image_id in reversed(ranked) if image_id not in worst][:n_each]
    taken = set(worst) | set(best)
    middle = len(ranked) // 2
    # Walk outwards from the middle of the ranking: middle, middle-1, middle+1, ...
    by_distance = sorted(range(len(ranked)), key=lambda index: (abs(index - middle), index))
    median_indices = [index for index in by_distance if ranked[index] not in taken][:n_each]
    median = [ranked[index] for index in sorted(median_indices)]
    return {"best": best, "median": median, "worst": worst}


def select_class_cases(confusions: dict[str, np.ndarray]) -> dict[int, tuple[str, float]]:
    """Each foreground class's worst image: the lowest IoU of the class among images whose truth contains it.

    Args:
        confusions: image ID → the image's int C×C confusion matrix (rows truth, void left out).

    Returns:
        ``{class index: (image ID, IoU)}`` for the classes 1..C-1 present in some image's truth, in class order;
        ties go to the smaller ID.
    """
    worst: dict[int, tuple[str, float]] = {}
    for image_id in sorted(confusions, key=str):
        metrics = metrics_from_confusion(confusions[image_id])
        for class_index in np.flatnonzero(metrics["truth_pixels"][1:] > 0) + 1:
            iou = float(metrics["iou"][class_index])
            if int(class_index) not in worst or iou < worst[int(class_index)][1]:
                worst[int(class_index)] = (image_id, iou)
    return dict(sorted(worst.items()))


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _png_base64(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img_tag(figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png_base64(figure)}">'


def read_training_csv(path: str | Path) -> dict[str, list[float]]:
    """Numeric columns of a training ``metrics.csv`` (one row per epoch); blank cells become NaN."""
    columns: dict[str, list[float]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for key, text in row.items():
                if key is None:
                    continue
                try:
                    value = float(text) if text not in (None, "") else float("nan")
                except ValueError:
                    continue  # a non-numeric column (e.g. a phase name) is not plotted
                columns.setdefault(key, []).append(value)
    length = max((len(values) for values in columns.values()), default=0)
    return {key: values for key, values in columns.items() if len(values) == length}


def training_curves_figure(columns: dict[str, list[float]], kept_epoch: int | None = None):
    """Loss and validation Dice per epoch (whatever of them the CSV has); None when nothing to plot.

    ``kept_epoch`` (1-based, ``config.json``'s ``extra.kept_epoch``): the epoch whose weights the run kept, ringed
    on the Dice curve next to the best one (with ``--keep last`` they differ whenever validation peaked earlier).
    """
    losses = [key for key in ("train_loss", "val_loss") if key in columns]
    has_dice = "val_dice" in columns
    has_lr = "lr" in columns
    panels = int(bool(losses)) + int(has_dice) + int(has_lr)
    if not panels:
        return None
    epochs = columns.get("epoch") or list(range(1, len(next(iter(columns.values()))) + 1))
    figure = _new_figure(4.2 * panels, 3.2)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    panel = 0
    if losses:
        ax = axes[panel]
        for key, colour in zip(losses, ("#1f77b4", "#ff7f0e")):
            ax.plot(epochs, columns[key], marker=".", color=colour, label=key.replace("_", " "))
        ax.set(title="loss", xlabel="epoch")
        ax.legend(frameon=False)
        panel += 1
    if has_dice:
        ax = axes[panel]
        dice = np.asarray(columns["val_dice"], dtype=float)
        ax.plot(epochs, dice, marker=".", color="#2ca02c")
        for key in [key for key in columns if key.startswith("val_dice_")]:  # each data set of a multi-set run
            ax.plot(epochs, columns[key], linestyle="--", linewidth=1, label=key.removeprefix("val_dice_"))
        if np.isfinite(dice).any():
            best = int(np.nanargmax(dice))
            ax.scatter(
                [epochs[best]],
                [dice[best]],
                color="#d62728",
                zorder=3,
                label=f"best {dice[best]:.4f} (epoch {epochs[best]:g})",
            )
            kept = [i for i, epoch in enumerate(epochs) if epoch == kept_epoch]
            if kept and np.isfinite(dice[kept[0]]):
                ax.scatter(
                    [epochs[kept[0]]],
                    [dice[kept[0]]],
                    s=120,
                    facecolors="none",
                    edgecolors="#000000",
                    zorder=4,
                    label=f"kept {dice[kept[0]]:.4f} (epoch {kept_epoch})",
                )
            ax.legend(frameon=False, loc="lower right")
        ax.set(title="validation Dice", xlabel="epoch")
        panel += 1
    if has_lr:
        ax = axes[panel]
        ax.plot(epochs, columns["lr"], color="#7f7f7f")
        ax.set(title="learning rate", xlabel="epoch")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in axes:
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def dice_histogram_figure(dice: Iterable[float]):
    """Histogram of per-image Dice over 0..1 (20 bins) with the mean and median marked."""
    values = np.asarray([d for d in dice if d is not None and not math.isnan(d)], dtype=float)
    figure = _new_figure(6.0, 3.2)
    ax = figure.subplots()
    ax.hist(values, bins=np.linspace(0, 1, 21), color="#4c72b0", edgecolor="white")
    if values.size:
        ax.axvline(values.mean(), color="#d62728", label=f"mean {values.mean():.4f}")
        ax.axvline(np.median(values), color="#2ca02c", linestyle="--", label=f"median {np.median(values):.4f}")
        ax.legend(frameon=False, loc="upper left")
    ax.set(xlim=(0, 1), xlabel="Dice per image", ylabel="images", title=f"per-image Dice ({values.size} images)")
    ax.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return figure


def threshold_figure(sweep: list[dict[str, float]], chosen: float | None):
    """Mean Dice and Jaccard against the probability threshold, with the chosen threshold marked."""
    entries = sorted(sweep, key=lambda entry: entry["threshold"])
    thresholds = [entry["threshold"] for entry in entries]
    figure = _new_figure(6.0, 3.4)
    ax = figure.subplots()
    ax.plot(thresholds, [entry["dice"] for entry in entries], marker=".", label="mean Dice")
    ax.plot(thresholds, [entry["jaccard"] for entry in entries], marker=".", label="mean Jaccard")
    if chosen is not None:
        ax.axvline(chosen, color="#d62728", linestyle="--", label=f"chosen {_fmt_threshold(chosen)}")
    ax.set(
        xlabel="probability threshold (foreground where p > threshold)",
        ylabel="validation score",
        title="Dice and Jaccard against the threshold",
        xlim=(0, 1),
    )
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="best")
    figure.tight_layout()
    return figure


def instance_count_figure(counts: dict[str, int]):
    """Bar chart: how many images have 0, 1, 2, ... predicted instances."""
    tally = Counter(counts.values())
    ks = list(range(0, max(tally) + 1)) if tally else [0]
    figure = _new_figure(max(4.0, 0.5 * len(ks) + 2.0), 3.0)
    ax = figure.subplots()
    bars = ax.bar(ks, [tally.get(k, 0) for k in ks], color="#8172b2")
    ax.bar_label(bars, padding=2)
    ax.set(
        xlabel="instances (connected regions) in the prediction",
        ylabel="images",
        xticks=ks,
        title="instances per image",
    )
    ax.margins(y=0.15)
    figure.tight_layout()
    return figure


def object_count_figure(rows: list[dict[str, Any]]):
    """Scatter of predicted against true object counts per image (``n_true``, ``n_pred``), with the diagonal where
    they are equal; a point's area grows with the number of images at it."""
    from matplotlib.ticker import MaxNLocator

    pairs = Counter((int(row["n_true"]), int(row["n_pred"])) for row in rows)
    top = max([1, *(max(pair) for pair in pairs)])
    figure = _new_figure(4.6, 4.2)
    ax = figure.subplots()
    ax.plot([0, top], [0, top], color=TRUTH_COLOUR, linestyle="--", linewidth=1, label="predicted = true")
    if pairs:
        (xs, ys), sizes = zip(*pairs.keys()), [28 * count for count in pairs.values()]
        ax.scatter(xs, ys, s=sizes, color=PRED_COLOUR, alpha=0.6, label="images")
    margin = max(0.5, 0.05 * top)
    ax.set(
        xlim=(-margin, top + margin),
        ylim=(-margin, top + margin),
        xlabel="true objects",
        ylabel="predicted objects",
        title=f"objects per image ({len(rows)} images)",
    )
    ax.set_aspect("equal")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="upper left")
    figure.tight_layout()
    return figure


def _display_image(image: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 RGB at most :data:`CASE_DISPLAY_SIDE` on the long side (bilinear; grey images made RGB)."""
    from PIL import Image

    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    height, width = image.shape[:2]
    scale = min(1.0, CASE_DISPLAY_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != (width, height):
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    return image


def _display_arrays(case: ReportCase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and masks at most :data:`CASE_DISPLAY_SIDE` on the long side, masks at the image's size."""
    from PIL import Image

    image = _display_image(case.image)
    size = (image.shape[1], image.shape[0])

    def fit(mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape == (size[1], size[0]):
            return mask
        return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127

    return image, fit(case.truth), fit(case.pred)


def cases_figure(groups: dict[str, list[ReportCase]]):
    """Grid: one row per group (best / median / worst), each case with truth and prediction contours."""
    groups = {name: cases for name, cases in groups.items() if cases}
    if not groups:
        return None
    columns = max(len(cases) for cases in groups.values())
    first = next(iter(groups.values()))[0].image
    aspect = first.shape[0] / max(first.shape[1], 1)  # height / width, for rows without blank bands
    figure = _new_figure(3.0 * columns, (3.0 * aspect + 0.6) * len(groups))
    axes = figure.subplots(len(groups), columns, squeeze=False)
    for row, (name, cases) in enumerate(groups.items()):
        for column in range(columns):
            ax = axes[row][column]
            ax.set_axis_off()
            if column >= len(cases):
                continue
            case = cases[column]
            image, truth, pred = _display_arrays(case)
            ax.imshow(image, interpolation="bilinear")
            for mask, colour in ((truth, TRUTH_COLOUR), (pred, PRED_COLOUR)):
                if mask.any() and not mask.all():
                    ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.6)
            ax.set_title(f"{name}: {_short(case.id)}\nDice {_fmt(case.dice)}", fontsize=10)
    figure.tight_layout()
    return figure


def confusion_figure(cm, names: list[str]):
    """Heat map of the row-normalised confusion matrix: rows truth, columns prediction, class names on the axes.

    Args:
        cm: int C×C pooled confusion matrix (void left out).
        names: the C class names.

    Each row is divided by its sum (the class's truth pixels), so the diagonal is the per-class accuracy
    (recall); a class absent from the truth has an empty row.
    """
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.full_like(cm, np.nan), where=rows > 0)
    count = len(names)
    side = max(4.0, 0.45 * count + 2.5)
    figure = _new_figure(side + 1.0, side)
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the truth class's pixels")
    labels = [_short(name, 18) for name in names]
    ax.set_xticks(range(count), labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(count), labels)
    ax.set(xlabel="predicted class", ylabel="truth class", title="confusion matrix (each row sums to 1)")
    if count <= HEATMAP_ANNOTATED_CLASSES:
        for (t, p), value in np.ndenumerate(share):
            if np.isfinite(value) and value >= 0.005:
                ax.text(
                    p,
                    t,
                    f"{value:.0%}",
                    ha="center",
                    va="center",
                    fontsize=7 if count > 10 else 8,
                    color="white" if value > 0.6 else "#222",
                )
    figure.tight_layout()
    return figure


def class_colour_map(labels: np.ndarray, colors) -> np.ndarray:
    """uint8 H×W class indices → uint8 H×W×3 RGB filled with each class's colour (void: :data:`VOID_RGB`).

    Args:
        labels: class indices ``0..C-1``, :data:`~pixelwise.data.classes.IGNORE` for void pixels.
        colors: C RGB triples, index = class.
    """
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = VOID_RGB
    lut[: len(colors)] = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    return lut[np.asarray(labels, dtype=np.uint8)]


def _display_maps(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, dtype) -> tuple[np.ndarray, ...]:
    """Image at most :data:`CASE_DISPLAY_SIDE` on the long side, and two label maps (class indices or instance
    ids, cast to ``dtype``) resized to it, nearest neighbour."""
    from PIL import Image

    image = _display_image(image)
    size = (image.shape[1], image.shape[0])

    def fit(labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, dtype=dtype)
        if labels.shape == (size[1], size[0]):
            return labels
        return np.asarray(Image.fromarray(labels).resize(size, Image.NEAREST))

    return image, fit(truth), fit(pred)


def _display_labels(case: ClassCase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A class case's image and class maps (uint8) for display."""
    return _display_maps(case.image, case.truth, case.pred, np.uint8)


def _display_instances(case: InstanceCase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An instance case's image and instance ids (int32) for display."""
    return _display_maps(case.image, case.truth, case.pred, np.int32)


def instance_cases_figure(cases: dict[str, InstanceCase]):
    """One row per named case (worst, median, best): its truth objects and its predicted objects side by side,
    each object filled and outlined in its own colour; None without cases."""
    if not cases:
        return None
    first = next(iter(cases.values())).image
    aspect = first.shape[0] / max(first.shape[1], 1)
    figure = _new_figure(6.4, (3.0 * aspect + 0.75) * len(cases))
    axes = figure.subplots(len(cases), 2, squeeze=False)
    for row, (name, case) in enumerate(cases.items()):
        counts = [np.count_nonzero(np.unique(labels)) for labels in (case.truth, case.pred)]
        image, truth, pred = _display_instances(case)
        panels = (
            (truth, f"{name}: {_short(case.id, 22)}, DSB {_fmt(case.score)}\ntruth: {_objects(counts[0])}"),
            (pred, f"prediction: {_objects(counts[1])}"),
        )
        for column, (labels, title) in enumerate(panels):
            ax = axes[row][column]
            ax.set_axis_off()
            ax.imshow(instance_overlay(image, labels), interpolation="nearest")
            ax.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def class_cases_figure(cases: list[ClassCase], names: list[str], colors):
    """One row per class case: the image, its truth and its prediction as colour-filled class maps, and a
    legend of the classes shown (and void, when there is any); None without cases."""
    if not cases:
        return None
    from matplotlib.patches import Patch

    first = cases[0].image
    aspect = first.shape[0] / max(first.shape[1], 1)
    figure = _new_figure(8.4, (2.8 * aspect + 0.55) * len(cases))
    axes = figure.subplots(len(cases), 3, squeeze=False)
    shown, void = set(), False
    for row, case in enumerate(cases):
        image, truth, pred = _display_labels(case)
        void = void or bool((truth == IGNORE).any())
        shown |= {int(c) for c in np.union1d(np.unique(truth), np.unique(pred)) if c < len(names)}
        name = _short(names[case.class_index], 22)
        panels = (
            (image, f"{name}: {_short(case.id, 22)}"),
            (class_colour_map(truth, colors), "truth"),
            (class_colour_map(pred, colors), f"prediction, IoU {_fmt(case.iou)}"),
        )
        for column, (picture, title) in enumerate(panels):
            ax = axes[row][column]
            ax.set_axis_off()
            ax.imshow(picture, interpolation="nearest" if column else "bilinear")
            ax.set_title(title, fontsize=9)
    handles = [Patch(facecolor=np.asarray(colors[c]) / 255, edgecolor="#555", label=names[c]) for c in sorted(shown)]
    if void:
        handles.append(Patch(facecolor=np.asarray(VOID_RGB) / 255, edgecolor="#555", label="void (not scored)"))
    columns = min(len(handles), 6)
    legend_inches = 0.22 * math.ceil(len(handles) / columns) + 0.08
    figure.set_size_inches(8.4, figure.get_size_inches()[1] + legend_inches)
    figure.legend(handles=handles, loc="lower center", ncol=columns, frameon=False, fontsize=8)
    figure.tight_layout(rect=(0, legend_inches / figure.get_size_inches()[1], 1, 1))
    return figure


def _objects(count: int) -> str:
    return f"{count} object" if count == 1 else f"{count} objects"


def _short(text: str, limit: int = 28) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f5f5f5; }
img { max-width: 100%; }
.note { color: #555; font-size: 0.9em; }
td.what { text-align: left; color: #555; font-size: 0.9em; max-width: 42em; }
.key { display: inline-block; width: 1.6em; height: 0.3em; vertical-align: middle; margin: 0 0.3em; }
.swatch { display: inline-block; width: 1.2em; height: 1.2em; vertical-align: middle; border: 1px solid #888; }
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    return "–" if not math.isfinite(number) else f"{number:.{digits}f}"


def _fmt_threshold(value: float) -> str:
    return f"{round(float(value), 4):g}"


def _digits(key: str) -> int:
    if key in _OBJECT_COUNTS:
        return 0
    return 2 if key.startswith("hd95") else 4


def _metric_keys(summary: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    keys = [key for key in METRIC_KEYS if key in summary.get("mean", {}) or any(key in row for row in rows)]
    if "hd95_mm" in summary.get("mean", {}) or any("hd95_mm" in row for row in rows):
        keys.append("hd95_mm")
    return keys


def _summary_table(
    summary: dict[str, Any], rows: list[dict[str, Any]], keys: list[str], pooled_dice: bool = True
) -> str:
    # Take the caller's aggregates; fill whatever is missing from the rows (same definitions).
    fallback = summarize(rows, keys=keys) if rows else {"mean": {}, "std": {}, "median": {}, "missing": {}}
    part = {name: {**fallback.get(name, {}), **summary.get(name, {})} for name in ("mean", "std", "median", "missing")}
    lines = ["<table><tr><th>metric</th><th>mean</th><th>std</th><th>median</th><th>missing</th></tr>"]
    for key in keys:
        d = _digits(key)
        missing = part["missing"].get(key, 0)
        lines.append(
            f"<tr><td>{_METRIC_LABELS.get(key, key)}</td><td>{_fmt(part['mean'].get(key), d)}</td>"
            f"<td>{_fmt(part['std'].get(key), d)}</td><td>{_fmt(part['median'].get(key), d)}</td>"
            f"<td>{missing if missing else ''}</td></tr>"
        )
    if pooled_dice:  # multi-class runs show pooled numbers per class instead
        pooled = summary.get("pooled_dice", fallback.get("pooled_dice"))
        lines.append(
            f"<tr><td>pooled Dice (all pixels of all images)</td><td>{_fmt(pooled)}</td><td></td><td></td>"
            f"<td></td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _label_table(
    rows: list[dict[str, Any]], label_of: dict[str, str], keys: list[str], heading: str = "diagnosis"
) -> str:
    """Mean metrics of the images of each label (a diagnosis, or a data set), then of all."""
    labels = sorted({label for label in label_of.values() if label})
    shown = [
        key for key in ("dice", "jaccard", "threshold_jaccard", "sensitivity", "specificity", "hd95") if key in keys
    ]
    head = "".join(f"<th>{_METRIC_LABELS.get(key, key)}</th>" for key in shown)
    lines = [f"<table><tr><th>{heading}</th><th>images</th>{head}</tr>"]
    groups = [(label, [row for row in rows if label_of.get(str(row["id"])) == label]) for label in labels]
    groups.append(("all", rows))
    for label, members in groups:
        if not members:
            continue
        means = summarize(members, keys=shown)["mean"]
        cells = "".join(f"<td>{_fmt(means.get(key), _digits(key))}</td>" for key in shown)
        lines.append(f"<tr><td>{html.escape(label)}</td><td>{len(members)}</td>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _class_table(multiclass: dict[str, Any], colors) -> str:
    """Per-class rows of a :func:`pixelwise.metrics.class_summary` (name, colour, IoU, Dice, accuracy, pixel
    shares), then the means."""
    classes = multiclass["per_class"]
    truth_total = sum(entry["truth_pixels"] for entry in classes) or 1
    predicted_total = sum(entry["predicted_pixels"] for entry in classes) or 1
    lines = [
        "<table><tr><th>class</th><th></th><th>IoU</th><th>Dice</th><th>accuracy</th>"
        "<th>share of truth pixels</th><th>share of predicted pixels</th></tr>"
    ]
    for index, entry in enumerate(classes):
        colour = hex_colour(tuple(colors[index]) if colors is not None and index < len(colors) else voc_colour(index))
        lines.append(
            f"<tr><td>{index} {html.escape(entry['name'])}</td>"
            f"<td><span class='swatch' style='background:{colour}'></span></td>"
            f"<td>{_fmt(entry['iou'])}</td><td>{_fmt(entry['dice'])}</td><td>{_fmt(entry['accuracy'])}</td>"
            f"<td>{entry['truth_pixels'] / truth_total:.2%}</td>"
            f"<td>{entry['predicted_pixels'] / predicted_total:.2%}</td></tr>"
        )
    means = (
        ("mean IoU, all classes (mIoU)", "mean_iou", 2),
        ("mean IoU, classes 1..C-1", "mean_iou_foreground", 2),
        ("mean Dice, classes 1..C-1", "mean_dice", 3),
        ("class-average accuracy", "mean_class_accuracy", 4),
        ("global accuracy", "global_accuracy", 4),
    )
    for label, key, column in means:
        cells = "".join(f"<td>{_fmt(multiclass.get(key)) if c == column else ''}</td>" for c in range(2, 7))
        lines.append(f"<tr><th>{label}</th><th></th>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _sweep_table(sweep: list[dict[str, float]], chosen: float | None) -> str:
    lines = ["<table><tr><th>threshold</th><th>mean Dice</th><th>mean Jaccard</th></tr>"]
    for entry in sorted(sweep, key=lambda entry: entry["threshold"]):
        mark = " ◀ chosen" if chosen is not None and abs(entry["threshold"] - chosen) < 1e-9 else ""
        lines.append(
            f"<tr><td>{_fmt_threshold(entry['threshold'])}{mark}</td><td>{_fmt(entry['dice'])}</td>"
            f"<td>{_fmt(entry['jaccard'])}</td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _image_table(rows, keys, label_of, instance_counts, objects: bool = False) -> str:
    """Every image's row; ``objects`` (instance runs): object counts, matches and DSB score too, worst DSB first."""
    shown = [key for key in ("dice", "jaccard", "sensitivity", "specificity", "hd95", "nsd") if key in keys]
    if objects:
        shown += [key for key in _OBJECT_COLUMNS if any(key in row for row in rows)]
    head = "".join(f"<th>{_OBJECT_COLUMNS.get(key, key)}</th>" for key in shown)
    label_head = "<th>diagnosis</th>" if label_of else ""
    count_head = "<th>instances</th>" if instance_counts is not None else ""
    lines = [f"<table><tr><th>image</th>{label_head}{head}{count_head}</tr>"]
    rank = "dsb" if objects else "dice"
    ordered = sorted(rows, key=lambda row: (_sort_value(row.get(rank)), str(row["id"])))
    for row in ordered:
        image_id = str(row["id"])
        label = f"<td>{html.escape(label_of.get(image_id, ''))}</td>" if label_of else ""
        cells = "".join(f"<td>{_fmt(row.get(key), _digits(key))}</td>" for key in shown)
        count = f"<td>{instance_counts.get(image_id, '–')}</td>" if instance_counts is not None else ""
        lines.append(f"<tr><td>{html.escape(image_id)}</td>{label}{cells}{count}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _sort_value(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.inf
    return number if math.isfinite(number) else math.inf


@dataclass
class ReportInputs:
    """What a report shows: every number, picture and note of ``report.html`` comes from these fields.

    Attributes:
        title: page title.
        summary: :func:`pixelwise.metrics.summarize` output, optionally with ``threshold``, ``data``, ``split``
            entries (shown in the header).
        rows: per-image metric rows (``id`` + metric keys).
        cases: images for the best/median/worst grid (see :func:`select_cases`); grouped by their rank in ``rows``.
        training_csv: the run's per-epoch ``metrics.csv`` (epoch, train_loss, val_loss, val_dice, lr, ...).
        kept_epoch: the 1-based epoch whose weights the run kept (marked on the validation curve), if known.
        threshold_sweep: :func:`pixelwise.metrics.threshold_sweep` on the validation split.
        chosen_threshold: the threshold used for the masks.
        threshold_curve_skipped: True when the caller chose not to predict the validation split for the
            threshold curve; the report says so where the curve would be.
        label_of: image ID → diagnosis (e.g. PH2), adds per-diagnosis rows.
        set_of: image ID → data set of a run on several (``--data A --data B``), adds per-set rows.
        instance_counts: image ID → number of predicted instances.
        multiclass: multi-class runs: :func:`pixelwise.metrics.class_summary` of the pooled confusion matrix;
            adds the per-class table and the confusion-matrix heat map.
        class_colors: C RGB display colours of the classes (the run's class map), for swatches and class maps.
        class_cases: each class's worst image (see :func:`select_class_cases`), drawn as class maps.
        instance_cases: instance runs: group name (worst, median, best) → its image, truth and predicted objects
            side by side. The instance metrics themselves are ``summary["instances"]``
            (:func:`~pixelwise.evaluate.instance_metrics.instance_scores`), the object counts the rows' ``n_true``
            and ``n_pred``.
    """

    title: str
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    cases: list[ReportCase] = field(default_factory=list)
    training_csv: Path | None = None
    kept_epoch: int | None = None
    threshold_sweep: list[dict[str, float]] | None = None
    chosen_threshold: float | None = None
    threshold_curve_skipped: bool = False
    label_of: dict[str, str] | None = None
    set_of: dict[str, str] | None = None
    instance_counts: dict[str, int] | None = None
    multiclass: dict[str, Any] | None = None
    class_colors: Sequence[Sequence[int]] | None = None
    class_cases: list[ClassCase] | None = None
    instance_cases: dict[str, InstanceCase] | None = None

    @property
    def metric_keys(self) -> list[str]:
        """The metrics present in the summary or the rows, in :data:`~pixelwise.metrics.METRIC_KEYS` order."""
        return _metric_keys(self.summary, self.rows)


def write_report(path: str | Path, inputs: ReportInputs) -> Path:
    """Write the evaluation report as one self-contained HTML file (atomically).

    Args:
        path: output file, e.g. ``run/eval-test/report.html``.
        inputs: what the report shows.

    Returns:
        ``path``.
    """
    sections = (
        _header_section,
        _summary_section,
        _instance_scores_section,
        _object_size_section,
        _data_set_section,
        _diagnosis_section,
        _classes_section,
        _training_section,
        _dice_histogram_section,
        _cases_section,
        _instance_cases_section,
        _class_cases_section,
        _threshold_section,
        _regions_section,
        _object_counts_section,
        _per_image_section,
    )
    parts = [part for section in sections for part in section(inputs)]
    document = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(inputs.title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(inputs.title)}</h1>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    return atomic_write_text(path, document)


# Each section builder returns the section's HTML parts, none when the inputs have nothing for it.


def _header_section(inputs: ReportInputs) -> list[str]:
    """One line: images, date, data, split and the probability threshold."""
    summary = inputs.summary
    header = [f"<p class='note'>{len(inputs.rows)} images; written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"]
    if summary.get("data"):
        header.append(f"; data: <code>{html.escape(str(summary['data']))}</code>")
    if summary.get("split"):
        header.append(f"; split: {html.escape(str(summary['split']))}")
    if inputs.chosen_threshold is not None:
        header.append(f"; probability threshold: <b>{_fmt_threshold(inputs.chosen_threshold)}</b>")
    header.append("</p>")
    return ["".join(header)]


def _summary_section(inputs: ReportInputs) -> list[str]:
    """The metrics table (mean, std, median, missing) and how the numbers are computed."""
    multiclass = inputs.multiclass
    if inputs.summary.get("instances"):
        return [
            "<h2>Summary</h2>",
            _summary_table(inputs.summary, inputs.rows, inputs.metric_keys, pooled_dice=False),
            "<p class='note'>Dice of each image's foreground (all predicted objects together against all true "
            "objects), then averaged over images; how well the objects are told apart is in the numbers below.</p>",
        ]
    pooled_note = (
        " Multi-class: an image's value is the mean over the foreground classes 1..C-1 of each class "
        "against the rest (void pixels left out); the pooled per-class numbers follow."
        if multiclass
        else " Pooled Dice is computed from the pixel counts of all images together, for comparison with "
        "papers that report it."
    )
    return [
        "<h2>Summary</h2>",
        _summary_table(inputs.summary, inputs.rows, inputs.metric_keys, pooled_dice=not multiclass),
        "<p class='note'>Per-image metrics, then averaged over images (ISIC convention). An image whose truth and "
        "prediction are both empty scores Dice = Jaccard = 1; with no truth positives, sensitivity is 1. "
        "Thresholded Jaccard counts an image's Jaccard as 0 below 0.65. HD95 and surface Dice are missing (not 0) "
        f"when either mask is empty; the 'missing' column counts those images.{pooled_note}</p>",
    ]


def _instance_scores_section(inputs: ReportInputs) -> list[str]:
    """Instance runs: COCO AP, AP50, AP75, DSB score, PQ, SQ, RQ (and StarDist's pooled accuracy at IoU 0.5) over
    the images, each with how it is defined."""
    scores = inputs.summary.get("instances")
    if not scores:
        return []
    lines = ["<table><tr><th>metric</th><th>value</th><th>definition</th></tr>"]
    for key, label, definition in _INSTANCE_METRICS:
        lines.append(f"<tr><td>{label}</td><td>{_fmt(scores.get(key))}</td><td class='what'>{definition}</td></tr>")
    stardist = scores.get("stardist")
    if isinstance(stardist, dict) and "accuracy" in stardist:
        tau = _fmt_threshold(stardist.get("thresh", 0.5))
        lines.append(
            f"<tr><td>StarDist AP at τ = {tau}</td><td>{_fmt(stardist['accuracy'])}</td><td class='what'>StarDist's "
            f"“AP”: TP / (TP + FP + FN), objects matched at IoU ≥ {tau}, counts pooled over all images "
            f"(TP {stardist.get('tp')}, FP {stardist.get('fp')}, FN {stardist.get('fn')}).</td></tr>"
        )
    lines.append("</table>")
    counts = (
        f"{_fmt(scores.get('n_true'), 0)} true and {_fmt(scores.get('n_pred'), 0)} predicted objects in "
        f"{_fmt(scores.get('n_images'), 0)} images."
    )
    return [
        "<h2>Instances</h2>",
        f"<p>{counts}</p>",
        "\n".join(lines),
        "<p class='note'>A truth and a predicted object match when their IoU passes the threshold, each object "
        "matching at most one other. Undefined numbers (no truth objects at all) show as –. The summary above "
        "scores the union of the objects (foreground Dice).</p>",
    ]


def _object_size_section(inputs: ReportInputs) -> list[str]:
    """Mean IoU of the truth objects by size (``summary["by_object_size"]``, :func:`~pixelwise.data.objects.
    object_ious`): where squashing images loses small things, the small bucket shows it."""
    buckets = inputs.summary.get("by_object_size")
    if not buckets:
        return []
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(values.get('objects'), 0)}</td>"
        f"<td>{_fmt(values.get('mean_iou'))}</td></tr>"
        for name, values in buckets.items()
    )
    return [
        "<h2>By object size</h2>",
        f"<table><tr><th>objects</th><th>count</th><th>mean IoU</th></tr>{rows}</table>",
        "<p class='note'>An object is a connected region of one class in a truth mask, sized by its area at the "
        "image's resolution (COCO's buckets): small under 32² px, medium under 96² px, large otherwise. Its IoU "
        "is against the predicted regions of its class that touch it (0 when missed), pooled over images and "
        "classes.</p>",
    ]


def _data_set_section(inputs: ReportInputs) -> list[str]:
    """A run on several data sets: mean metrics on each set's images (multi-class: pooled mean IoU per set)."""
    if not inputs.set_of:
        return []
    parts = ["<h2>By data set</h2>", _label_table(inputs.rows, inputs.set_of, inputs.metric_keys, "data set")]
    pooled = {
        name: numbers["multiclass"]
        for name, numbers in inputs.summary.get("per_set", {}).items()
        if numbers.get("multiclass")
    }
    if pooled:
        lines = ["<table><tr><th>data set</th><th>mean IoU (pooled)</th><th>class-average accuracy</th></tr>"]
        for name, numbers in pooled.items():
            lines.append(
                f"<tr><td>{html.escape(name)}</td><td>{_fmt(numbers['mean_iou'], 4)}</td>"
                f"<td>{_fmt(numbers['mean_class_accuracy'], 4)}</td></tr>"
            )
        parts.append("\n".join(lines + ["</table>"]))
    return parts


def _diagnosis_section(inputs: ReportInputs) -> list[str]:
    """Mean metrics per diagnosis (data sets that label their images, e.g. PH2)."""
    if not inputs.label_of:
        return []
    return ["<h2>By diagnosis</h2>", _label_table(inputs.rows, inputs.label_of, inputs.metric_keys)]


def _classes_section(inputs: ReportInputs) -> list[str]:
    """Multi-class runs: the pooled per-class table and the confusion-matrix heat map."""
    multiclass = inputs.multiclass
    if not multiclass:
        return []
    return [
        "<h2>Per class</h2>",
        "<p class='note'>Pooled over the data set: each class's pixels of all images are counted together "
        "(confusion matrices summed, void pixels left out), as PASCAL VOC, Cityscapes and the SegNet paper do. "
        "Accuracy is the class's recall (its truth pixels predicted as it); mIoU averages every class present in "
        "truth or prediction, class 0 included; class-average accuracy averages the per-class accuracies; global "
        "accuracy is the fraction of all non-void pixels predicted right. The summary above averages "
        "per-image values over the foreground classes 1..C-1 instead.</p>",
        _class_table(multiclass, inputs.class_colors),
        "<h2>Confusion matrix</h2>",
        _img_tag(confusion_figure(multiclass["confusion_matrix"], multiclass["class_names"]), "confusion matrix"),
    ]


def _training_section(inputs: ReportInputs) -> list[str]:
    """Loss, validation Dice and learning rate per epoch, from the run's training log."""
    training_csv = inputs.training_csv
    if training_csv is None:
        return []
    parts = ["<h2>Training</h2>"]
    try:
        figure = training_curves_figure(read_training_csv(training_csv), inputs.kept_epoch)
    except OSError as err:
        figure = None
        parts.append(f"<p class='note'>could not read {html.escape(str(training_csv))}: {html.escape(str(err))}</p>")
    if figure is not None:
        parts.append(_img_tag(figure, "training curves"))
    else:
        parts.append("<p class='note'>no loss or validation Dice columns in the training log.</p>")
    return parts


def _dice_histogram_section(inputs: ReportInputs) -> list[str]:
    """Histogram of per-image Dice."""
    dice = [_as_float(row.get("dice")) for row in inputs.rows]
    return ["<h2>Per-image Dice</h2>", _img_tag(dice_histogram_figure(dice), "Dice histogram")]


def _cases_section(inputs: ReportInputs) -> list[str]:
    """Best, median and worst images with truth and prediction contours."""
    if not inputs.cases:
        return []
    parts = [
        "<h2>Best, median and worst cases</h2>",
        f"<p class='note'><span class='key' style='background:{TRUTH_COLOUR}'></span>truth"
        f"<span class='key' style='background:{PRED_COLOUR}'></span>prediction</p>",
    ]
    by_id = {case.id: case for case in inputs.cases}
    groups = {name: [by_id[i] for i in ids if i in by_id] for name, ids in select_cases(inputs.rows).items()}
    placed = {case.id for group in groups.values() for case in group}
    extra = [case for case in inputs.cases if case.id not in placed]  # cases not in rows still get shown
    ordered = {"best": groups["best"], "median": groups["median"], "worst": groups["worst"]}
    if extra:
        ordered["other"] = extra
    figure = cases_figure(ordered)
    if figure is not None:
        parts.append(_img_tag(figure, "best, median and worst cases"))
    return parts


def _instance_cases_section(inputs: ReportInputs) -> list[str]:
    """Instance runs: the worst, median and best image by DSB score, truth and prediction side by side."""
    cases = inputs.instance_cases or {}
    figure = instance_cases_figure(cases)
    if figure is None:
        return []
    chosen = "; ".join(
        f"{html.escape(name)}: <b>{html.escape(str(case.id))}</b> (DSB score {_fmt(case.score)})"
        for name, case in cases.items()
    )
    return [
        "<h2>Worst, median and best images by DSB score</h2>",
        f"<p>{chosen}.</p>",
        "<p class='note'>Left the truth, right the prediction, every object filled and outlined in its own colour. "
        "A predicted object matched to a truth object (IoU &gt; 0.5) takes that object's colour, so a colour found "
        "on one side only marks a missed or a false object.</p>",
        _img_tag(figure, "worst, median and best images"),
    ]


def _class_cases_section(inputs: ReportInputs) -> list[str]:
    """Multi-class runs: each class's worst image as colour-filled class maps."""
    if not (inputs.class_cases and inputs.multiclass):
        return []
    names = inputs.multiclass["class_names"]
    parts = [
        "<h2>Worst image per class</h2>",
        "<p class='note'>For each class, the image with the lowest IoU of that class among the images "
        "whose truth contains it: the image, its truth and the prediction, filled with the class "
        "colours.</p>",
    ]
    colors = inputs.class_colors if inputs.class_colors is not None else [voc_colour(i) for i in range(len(names))]
    figure = class_cases_figure(inputs.class_cases, names, colors)
    if figure is not None:
        parts.append(_img_tag(figure, "worst image per class"))
    return parts


def _threshold_section(inputs: ReportInputs) -> list[str]:
    """Validation Dice and Jaccard against the probability threshold; or why the curve is not drawn."""
    sweep, chosen = inputs.threshold_sweep, inputs.chosen_threshold
    if not sweep:
        if not inputs.threshold_curve_skipped:
            return []
        return [
            "<h2>Probability threshold</h2>",
            "<p class='note'>Threshold curve not drawn: this evaluation did not predict the validation images "
            "(--no-threshold-curve).</p>",
        ]
    best = max(sweep, key=lambda entry: entry["dice"])
    text = "Mean Dice and Jaccard on the validation split for each threshold."
    if chosen is not None:
        text += (
            f" Chosen threshold: <b>{_fmt_threshold(chosen)}</b> "
            f"(best mean Dice {_fmt(best['dice'])} at {_fmt_threshold(best['threshold'])})."
        )
    return [
        "<h2>Probability threshold</h2>",
        f"<p>{text}</p>",
        _img_tag(threshold_figure(sweep, chosen), "threshold sweep"),
        f"<details><summary>values</summary>{_sweep_table(sweep, chosen)}</details>",
    ]


def _regions_section(inputs: ReportInputs) -> list[str]:
    """Semantic runs: connected regions per predicted mask."""
    counts = inputs.instance_counts
    if counts is None:
        return []
    total = sum(counts.values())
    single = sum(1 for count in counts.values() if count == 1)
    return [
        "<h2>Connected regions</h2>",
        f"<p>{total} instances (connected regions) in {len(counts)} predicted masks; "
        f"{single} masks have exactly one region, as ISIC truth masks do.</p>",
        _img_tag(instance_count_figure(counts), "instances per image"),
    ]


def _object_counts_section(inputs: ReportInputs) -> list[str]:
    """Instance runs: predicted against true object counts per image."""
    if not inputs.summary.get("instances"):
        return []
    rows = [row for row in inputs.rows if "n_true" in row and "n_pred" in row]
    if not rows:
        return []
    more = sum(1 for row in rows if row["n_pred"] > row["n_true"])
    fewer = sum(1 for row in rows if row["n_pred"] < row["n_true"])
    return [
        "<h2>Objects per image</h2>",
        f"<p>The predicted count equals the true count in {len(rows) - more - fewer} of {len(rows)} images; "
        f"{more} have more predicted objects than true ones, {fewer} fewer.</p>",
        _img_tag(object_count_figure(rows), "predicted against true objects per image"),
    ]


def _per_image_section(inputs: ReportInputs) -> list[str]:
    """Every image's metrics (instance runs: with object counts), worst first, folded."""
    objects = bool(inputs.summary.get("instances"))
    table = _image_table(inputs.rows, inputs.metric_keys, inputs.label_of or {}, inputs.instance_counts, objects)
    order = "worst DSB score first" if objects else "worst Dice first"
    return ["<h2>Per image</h2>", f"<details><summary>all images, {order}</summary>" + table + "</details>"]


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
