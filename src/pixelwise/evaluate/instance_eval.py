"""``pixelwise evaluate`` of an instance run (``--task instances``): objects scored against the truth's objects.

Each image goes through the path ``predict`` takes (:func:`~pixelwise.predict.segment.segment_images`: network,
TTA, class probabilities at the image's size, then the seeded-watershed decoding), and its objects are matched
with the truth's, read in place (:func:`~pixelwise.data.instances_io.read_pair_instances`). The numbers are
:func:`~pixelwise.evaluate.instance_metrics.instance_scores`' (COCO mask AP, AP50, AP75, DSB 2018, PQ/SQ/RQ,
StarDist's pooled counts): ``summary.json`` holds them under ``instances``; ``metrics.csv`` has one row per
image (objects true and predicted, TP/FP/FN at IoU > 0.5, mean matched IoU, DSB score, foreground Dice);
``instances.csv`` the predicted objects; ``report.html`` the same numbers, the worst, median and best image by DSB
score (truth beside prediction, each object in its own colour) and predicted against true object counts.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from pixelwise.data.imageio import read_image
from pixelwise.data.instances_io import read_pair_instances
from pixelwise.evaluate.instance_metrics import instance_scores, match_instances
from pixelwise.evaluate.report import InstanceCase, ReportInputs, select_cases, write_report
from pixelwise.evaluate.score import format_instance_table, write_rows_csv, write_score_json
from pixelwise.masks.instances import write_instances_csv
from pixelwise.masks.postprocess import PostProcess
from pixelwise.metrics import summarize
from pixelwise.predict.segment import segment_images
from pixelwise.reporting import progress

log = logging.getLogger(__name__)

#: Numbers of ``summary.json``'s ``instances`` shown first (the rest: per class, StarDist, counts).
HEADLINE = ("ap", "ap50", "ap75", "dsb", "pq", "sq", "rq")
#: Images predicted per network call.
BATCH = 8


def evaluate_instances(plan, post: PostProcess, settings: dict):
    """Evaluate an instance run on ``plan``'s images (:class:`~pixelwise.evaluate.evaluate.EvalPlan`); see the
    module doc. ``settings``: ``tta``, ``engine``, ``precision`` for the summary.

    Returns:
        ``(folder, rows, summary, tables)``: what :class:`~pixelwise.evaluate.evaluate.EvalResult` holds.

    Raises:
        PixelwiseError: the data is not instance data (no ``instances`` pairs), unreadable files.
    """
    from pixelwise.errors import PixelwiseError

    colors, void = plan.truths.colors, tuple(plan.truths.class_map.ignored_values)
    truths, preds, ids, true_classes, pred_classes, scores, voids = [], [], [], [], [], [], []
    object_rows: list[dict] = []
    for predictor, group in plan.groups:
        pairs = [plan.by_id[i] for i in group]
        for pair in pairs:
            if not pair.instances:
                raise PixelwiseError(
                    f"{pair.mask}: an instance run is evaluated on instance data (DSB 2018, instance-id PNGs, VOC "
                    "objects); pass such a --data"
                )
        batches = [pairs[k : k + BATCH] for k in range(0, len(pairs), BATCH)]
        for batch in progress(batches, "scoring objects", total=len(batches)):
            results = segment_images(predictor, [read_image(pair.image) for pair in batch], post)
            for pair, result in zip(batch, results):
                truth = read_pair_instances(pair, colors, void, with_image=False)
                truths.append(truth.labels)
                true_classes.append(truth.classes)
                voids.append(truth.void)
                preds.append(result.objects.labels)
                pred_classes.append(result.objects.classes)
                scores.append(result.objects.scores)
                ids.append(pair.id)
                object_rows += result.instances(pair.id, min_area=post.min_area)
    found = instance_scores(truths, preds, ids, true_classes, pred_classes, scores, voids)
    rows = found.pop("images")
    for row, truth, pred, void in zip(rows, truths, preds, voids):
        row["dice"] = _foreground_dice(truth, pred, void)
    found["stardist"] = found["stardist"][0]
    summary = {
        **summarize(rows, keys=("dice",)),
        "instances": found,
        "data": str(plan.root.resolve()),
        "split": plan.split,
        "n_images": len(rows),
        **settings,
        "postprocess": post.__dict__,
    }
    out = plan.out
    write_rows_csv(out / "metrics.csv", rows)
    write_score_json(
        out / "summary.json",
        rows,
        summary["mean"],
        extra={k: v for k, v in summary.items() if k != "mean"},
        columns=[key for key in rows[0] if key != "id"] if rows else None,
    )
    write_instances_csv(out / "instances.csv", object_rows)
    _report(plan, rows, summary, truths, preds)
    log.info("wrote %s/metrics.csv, summary.json, instances.csv and report.html", out)
    table = format_instance_table(found, title=f"{plan.folder.path.name} on {plan.split}")
    return out, rows, summary, [table]


def _foreground_dice(truth: np.ndarray, pred: np.ndarray, void: np.ndarray | None) -> float:
    """Dice of the objects' union (truth vs prediction), void pixels left out; NaN when both are empty."""
    keep = np.ones(truth.shape, dtype=bool) if void is None else ~void
    t, p = (truth > 0) & keep, (pred > 0) & keep
    total = int(t.sum()) + int(p.sum())
    return 2.0 * int((t & p).sum()) / total if total else float("nan")


def _coloured_like_truth(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``pred`` renumbered for the report's pictures: an object matched to a truth object (IoU > 0.5) takes that
    object's id, so both show in one colour; the others take ids above the truth's, in their own order."""
    match = match_instances(truth, pred, 0.5, strict=True)
    lookup = np.zeros(int(pred.max()) + 1 if pred.size else 1, dtype=np.int64)
    lookup[match.pred_ids[match.pred_index]] = match.true_ids[match.true_index]
    unmatched = np.setdiff1d(match.pred_ids, match.pred_ids[match.pred_index])
    first = (int(truth.max()) if truth.size else 0) + 1
    lookup[unmatched] = np.arange(first, first + unmatched.size)
    return lookup[np.asarray(pred, dtype=np.int64)]


def _report(plan, rows: list[dict], summary: dict, truths: list, preds: list) -> None:
    """``report.html``: ``summary["instances"]``, the worst, median and best image by DSB score (truth beside
    prediction, matched objects in one colour), and the object counts of ``rows``."""
    ranked = [{"id": row["id"], "dice": row["dsb"]} for row in rows if not math.isnan(row["dsb"])]
    index = {row["id"]: k for k, row in enumerate(rows)}
    chosen = select_cases(ranked, n_each=1)
    cases = {}
    for name in ("worst", "median", "best"):
        for image_id in chosen[name]:
            k = index[image_id]
            image = read_image(plan.by_id[image_id].image)
            pred = _coloured_like_truth(truths[k], preds[k])
            cases[name] = InstanceCase(image_id, image, truths[k], pred, rows[k]["dsb"])
    inputs = ReportInputs(
        title=f"pixelwise evaluation: {plan.folder.path.name} on {plan.split} (objects)",
        summary=summary,
        rows=rows,
        instance_cases=cases,
    )
    write_report(plan.out / "report.html", inputs)
