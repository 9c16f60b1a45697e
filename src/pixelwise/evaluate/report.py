"""``report.html``: one self-contained HTML file (no scripts, figures embedded as base64 PNG).

Sections: summary table (and per-diagnosis rows), training curves, histogram of per-image Dice, best /
median / worst cases with truth (green) and prediction (red) contours, Dice and Jaccard against the
probability threshold, instances per image, and the per-image table.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pixelwise.fileio import atomic_write_text
from pixelwise.masks.overlay import PREDICTION_RGB, TRUTH_RGB, hex_colour
from pixelwise.metrics import METRIC_KEYS, summarize

TRUTH_COLOUR = hex_colour(TRUTH_RGB)
PRED_COLOUR = hex_colour(PREDICTION_RGB)
#: Longest side of a case picture in the report, pixels (keeps the HTML small for large photographs).
CASE_DISPLAY_SIDE = 384

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


def training_curves_figure(columns: dict[str, list[float]]):
    """Loss and validation Dice per epoch (whatever of them the CSV has); None when nothing to plot."""
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
        if np.isfinite(dice).any():
            best = int(np.nanargmax(dice))
            ax.scatter([epochs[best]], [dice[best]], color="#d62728", zorder=3,
                       label=f"best {dice[best]:.4f} (epoch {epochs[best]:g})")
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
    ax.set(xlabel="probability threshold (foreground where p > threshold)", ylabel="validation score",
           title="Dice and Jaccard against the threshold", xlim=(0, 1))
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
    ax.set(xlabel="instances (connected regions) in the prediction", ylabel="images", xticks=ks,
           title="instances per image")
    ax.margins(y=0.15)
    figure.tight_layout()
    return figure


def _display_arrays(case: ReportCase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and masks at most :data:`CASE_DISPLAY_SIDE` on the long side, masks at the image's size."""
    from PIL import Image

    image = np.asarray(case.image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    height, width = image.shape[:2]
    scale = min(1.0, CASE_DISPLAY_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != (width, height):
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))

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
.key { display: inline-block; width: 1.6em; height: 0.3em; vertical-align: middle; margin: 0 0.3em; }
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
    return 2 if key.startswith("hd95") else 4


def _metric_keys(summary: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    keys = [key for key in METRIC_KEYS if key in summary.get("mean", {}) or any(key in row for row in rows)]
    if "hd95_mm" in summary.get("mean", {}) or any("hd95_mm" in row for row in rows):
        keys.append("hd95_mm")
    return keys


def _summary_table(summary: dict[str, Any], rows: list[dict[str, Any]], keys: list[str]) -> str:
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
    pooled = summary.get("pooled_dice", fallback.get("pooled_dice"))
    lines.append(f"<tr><td>pooled Dice (all pixels of all images)</td><td>{_fmt(pooled)}</td><td></td><td></td><td></td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _label_table(rows: list[dict[str, Any]], label_of: dict[str, str], keys: list[str]) -> str:
    labels = sorted({label for label in label_of.values() if label})
    shown = [key for key in ("dice", "jaccard", "threshold_jaccard", "sensitivity", "specificity", "hd95") if key in keys]
    head = "".join(f"<th>{_METRIC_LABELS.get(key, key)}</th>" for key in shown)
    lines = [f"<table><tr><th>diagnosis</th><th>images</th>{head}</tr>"]
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


def _image_table(rows, keys, label_of, instance_counts) -> str:
    shown = [key for key in ("dice", "jaccard", "sensitivity", "specificity", "hd95", "nsd") if key in keys]
    head = "".join(f"<th>{key}</th>" for key in shown)
    label_head = "<th>diagnosis</th>" if label_of else ""
    count_head = "<th>instances</th>" if instance_counts is not None else ""
    lines = [f"<table><tr><th>image</th>{label_head}{head}{count_head}</tr>"]
    ordered = sorted(rows, key=lambda row: (_sort_value(row.get("dice")), str(row["id"])))
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


def write_report(
    path: str | Path,
    *,
    title: str,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    cases: list[ReportCase],
    training_csv: Path | None = None,
    threshold_sweep: list[dict[str, float]] | None = None,
    chosen_threshold: float | None = None,
    label_of: dict[str, str] | None = None,
    instance_counts: dict[str, int] | None = None,
) -> Path:
    """Write the evaluation report as one self-contained HTML file (atomically).

    Args:
        path: output file, e.g. ``run/eval-test/report.html``.
        title: page title.
        summary: :func:`pixelwise.metrics.summarize` output, optionally with ``threshold``, ``data``,
            ``split`` entries (shown in the header).
        rows: per-image metric rows (``id`` + metric keys).
        cases: images for the best/median/worst grid (see :func:`select_cases`); grouped by their
            rank in ``rows``.
        training_csv: the run's per-epoch ``metrics.csv`` (epoch, train_loss, val_loss, val_dice, lr, ...).
        threshold_sweep: :func:`pixelwise.metrics.threshold_sweep` on the validation split.
        chosen_threshold: the threshold used for the masks.
        label_of: image ID → diagnosis (e.g. PH2), adds per-diagnosis rows.
        instance_counts: image ID → number of predicted instances.

    Returns:
        ``path``.
    """
    keys = _metric_keys(summary, rows)
    parts: list[str] = []
    header = [f"<p class='note'>{len(rows)} images; written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"]
    if summary.get("data"):
        header.append(f"; data: <code>{html.escape(str(summary['data']))}</code>")
    if summary.get("split"):
        header.append(f"; split: {html.escape(str(summary['split']))}")
    if chosen_threshold is not None:
        header.append(f"; probability threshold: <b>{_fmt_threshold(chosen_threshold)}</b>")
    header.append("</p>")
    parts.append("".join(header))

    parts.append("<h2>Summary</h2>")
    parts.append(_summary_table(summary, rows, keys))
    parts.append(
        "<p class='note'>Per-image metrics, then averaged over images (ISIC convention). An image whose truth and "
        "prediction are both empty scores Dice = Jaccard = 1; with no truth positives, sensitivity is 1. "
        "Thresholded Jaccard counts an image's Jaccard as 0 below 0.65. HD95 and surface Dice are missing (not 0) "
        "when either mask is empty; the 'missing' column counts those images. Pooled Dice is computed from the "
        "pixel counts of all images together, for comparison with papers that report it.</p>"
    )
    if label_of:
        parts.append("<h2>By diagnosis</h2>")
        parts.append(_label_table(rows, label_of, keys))

    if training_csv is not None:
        parts.append("<h2>Training</h2>")
        try:
            figure = training_curves_figure(read_training_csv(training_csv))
        except OSError as err:
            figure = None
            parts.append(f"<p class='note'>could not read {html.escape(str(training_csv))}: {html.escape(str(err))}</p>")
        if figure is not None:
            parts.append(_img_tag(figure, "training curves"))
        else:
            parts.append("<p class='note'>no loss or validation Dice columns in the training log.</p>")

    parts.append("<h2>Per-image Dice</h2>")
    parts.append(_img_tag(dice_histogram_figure([_as_float(row.get("dice")) for row in rows]), "Dice histogram"))

    if cases:
        parts.append("<h2>Best, median and worst cases</h2>")
        parts.append(
            f"<p class='note'><span class='key' style='background:{TRUTH_COLOUR}'></span>truth"
            f"<span class='key' style='background:{PRED_COLOUR}'></span>prediction</p>"
        )
        by_id = {case.id: case for case in cases}
        groups = {name: [by_id[i] for i in ids if i in by_id] for name, ids in select_cases(rows).items()}
        placed = {case.id for group in groups.values() for case in group}
        extra = [case for case in cases if case.id not in placed]  # cases not in rows still get shown
        ordered = {"best": groups["best"], "median": groups["median"], "worst": groups["worst"]}
        if extra:
            ordered["other"] = extra
        figure = cases_figure(ordered)
        if figure is not None:
            parts.append(_img_tag(figure, "best, median and worst cases"))

    if threshold_sweep:
        parts.append("<h2>Probability threshold</h2>")
        best = max(threshold_sweep, key=lambda entry: entry["dice"])
        text = "Mean Dice and Jaccard on the validation split for each threshold."
        if chosen_threshold is not None:
            text += (f" Chosen threshold: <b>{_fmt_threshold(chosen_threshold)}</b> "
                     f"(best mean Dice {_fmt(best['dice'])} at {_fmt_threshold(best['threshold'])}).")
        parts.append(f"<p>{text}</p>")
        parts.append(_img_tag(threshold_figure(threshold_sweep, chosen_threshold), "threshold sweep"))
        parts.append(f"<details><summary>values</summary>{_sweep_table(threshold_sweep, chosen_threshold)}</details>")

    if instance_counts is not None:
        parts.append("<h2>Instances</h2>")
        total = sum(instance_counts.values())
        single = sum(1 for count in instance_counts.values() if count == 1)
        parts.append(
            f"<p>{total} instances (connected regions) in {len(instance_counts)} predicted masks; "
            f"{single} masks have exactly one region, as ISIC truth masks do.</p>"
        )
        parts.append(_img_tag(instance_count_figure(instance_counts), "instances per image"))

    parts.append("<h2>Per image</h2>")
    parts.append(
        "<details><summary>all images, worst Dice first</summary>"
        + _image_table(rows, keys, label_of or {}, instance_counts)
        + "</details>"
    )

    document = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    return atomic_write_text(path, document)


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
