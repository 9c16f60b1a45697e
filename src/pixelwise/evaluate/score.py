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
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pixelwise.data.imageio import decode_mask, is_image_file
from pixelwise.data.naming import is_overlay, strip_mask_suffix
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write_json, atomic_write_text, json_safe
from pixelwise.metrics import METRIC_KEYS, image_metrics, summarize

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
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    unmatched_predictions: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_file(p)
                   and not (role == "prediction" and is_overlay(p.stem)))
    if not files:
        raise PixelwiseError(f"{folder}: no mask images (PNG, BMP, ...) in the {role} folder")
    return files


def pair_masks(truth_files: Iterable[Path], pred_files: Iterable[Path]) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
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
) -> ScoreResult:
    """Score every truth mask in ``truth_dir`` against its prediction in ``pred_dir``.

    Args:
        truth_dir: folder of truth masks (non-recursive).
        pred_dir: folder of predicted masks (non-recursive).
        nsd_tolerance: normalised surface Dice tolerance, pixels.
        pixel_size_mm: pixel side in mm; adds ``hd95_mm`` to every row.
        progress: show a progress bar on the terminal.

    Raises:
        PixelwiseError: missing/empty folders, unpaired truths, unreadable masks, size mismatches.
    """
    truth_dir, pred_dir = Path(truth_dir), Path(pred_dir)
    if nsd_tolerance < 0:
        raise PixelwiseError(f"--nsd-tolerance {nsd_tolerance}: must be >= 0 pixels")
    if pixel_size_mm is not None and not pixel_size_mm > 0:
        raise PixelwiseError(f"--pixel-size {pixel_size_mm}: must be a positive size in mm")
    pairs, unmatched = pair_masks(_mask_files(truth_dir, "truth"), _mask_files(pred_dir, "prediction"))
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for image_id, truth_file, pred_file in _progress(pairs, progress, "scoring"):
        truth, truth_notes = _read_binary_mask_with_notes(truth_file)
        pred, pred_notes = _read_binary_mask_with_notes(pred_file)
        notes += truth_notes + pred_notes
        if pred.shape != truth.shape:
            raise PixelwiseError(
                f"{pred_file}: prediction is {pred.shape[1]}×{pred.shape[0]} but truth {truth_file.name} is "
                f"{truth.shape[1]}×{truth.shape[0]}; predict at the original image size"
            )
        row: dict[str, Any] = {"id": image_id}
        row.update(image_metrics(pred, truth, nsd_tolerance=nsd_tolerance, pixel_size_mm=pixel_size_mm))
        row["truth_file"] = truth_file.name
        row["prediction_file"] = pred_file.name
        rows.append(row)
    keys = METRIC_KEYS + (("hd95_mm",) if pixel_size_mm is not None else ())
    return ScoreResult(rows=rows, summary=summarize(rows, keys=keys), unmatched_predictions=unmatched, notes=notes)


def _progress(items: list, enabled: bool, description: str):
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, transient=True)


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
    path: str | Path, rows: list[dict[str, Any]], mean: dict[str, float], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``{"images": [{"id", metrics...}], "mean": {metrics...}}`` (atomically), NaN as null.

    ``extra`` entries (e.g. ``std``, ``median``, ``pooled_dice``) are added at the top level.
    """
    columns = metric_columns(rows) or list(mean)
    document: dict[str, Any] = {
        "images": [{"id": row["id"], **{key: json_safe(row.get(key)) for key in columns}} for row in rows],
        "mean": {key: json_safe(value) for key, value in mean.items()},
    }
    for key, value in (extra or {}).items():
        document[key] = {k: json_safe(v) for k, v in value.items()} if isinstance(value, dict) else json_safe(value)
    return atomic_write_json(path, document)


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
    table.add_row("pooled dice", _fmt(summary["pooled_dice"]), "", "")
    return table


def _fmt(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"
