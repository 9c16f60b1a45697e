"""The training loop, explicit from top to bottom.

``train(recipe, run)`` reads the data, splits it, trains with AdamW and a warm-up + cosine schedule,
validates every epoch (the weights' moving average with ``ema``), keeps the last epoch's weights (with
``keep="best"`` the best validation epoch's), stops early when validation stops improving (only with
``patience``), and leaves a run folder that ``evaluate``, ``predict`` and ``--resume`` understand.

The :class:`~pixelwise.config.Recipe` (what was asked) never changes; what the run learns goes into its
:class:`~pixelwise.config.RunRecord` (classes, input size, normalisation, precision, then the threshold and the
kept epoch), written to ``config.json`` beside the recipe when the data is loaded and again at the end.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from pixelwise.config import PREDICT_TTA, Recipe, RunConfig, RunRecord
from pixelwise.data.augment import BatchAugment, build_augment
from pixelwise.data.classes import IGNORE, activate, is_instance_target, labels_from_probabilities
from pixelwise.data.sets import epoch_length, epoch_order
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write_text, file_sha1, remove_stale_temporaries
from pixelwise.losses import build_loss
from pixelwise.metrics import (
    THRESHOLD_GRID,
    choose_threshold,
    confusion_counts,
    confusion_matrix,
    metrics_from_confusion,
    overlap_metrics,
    threshold_sweep,
)
from pixelwise.models import build_model, model_spec
from pixelwise.predict.tiles import plan_tiles, tiled_labels
from pixelwise.predict.tta import tta_probabilities
from pixelwise.reporting import LOGGER
from pixelwise.runs import RunFolder, load_weights, read_tensors, save_weights
from pixelwise.runtime import (
    ThreadGovernor,
    autocast,
    batched_probabilities,
    model_input,
    network_input,
    pick_device,
    to_unit,
    use_fast_mode,
)
from pixelwise.train.checkpoint import LoopState, load_train_state, save_train_state
from pixelwise.train.data import TrainData, prepare_data
from pixelwise.train.distributed import Distributed, check_batch, device_for, init_distributed, rank_slices
from pixelwise.train.ema import WeightAverage
from pixelwise.train.optim import build_optimizer
from pixelwise.train.patches import PatchSampler, centre_crops
from pixelwise.train.plan import InputPlan
from pixelwise.train.progress import EpochProgress
from pixelwise.train.schedule import WarmupCosine, build_schedule

log = logging.getLogger(__name__)

METRICS_COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds", "images_per_s")


def model_probabilities(model: torch.nn.Module, record: RunRecord, device: torch.device):
    """The model as a function float32 0..1 N×3×H×W → probabilities, the way training runs it."""

    def predict_unit(unit: torch.Tensor) -> torch.Tensor:
        with autocast(device, record.fast):
            return activate(model(network_input(unit, record.mean, record.std, record.fast)))

    return predict_unit


def train_step(
    model,
    optimizer,
    loss_fn,
    augment,
    images: torch.Tensor,
    masks: torch.Tensor,
    record: RunRecord,
    device: torch.device,
) -> torch.Tensor:
    """One optimisation step: augment on the device, normalise, bf16 forward, loss, backward, update.

    Args:
        images: uint8 N×3×S×S; masks: uint8 N×S×S class indices (any device; moved to ``device``).
        augment: a :class:`~pixelwise.data.augment.BatchAugment` (identity for preset ``none``).
        record: the run's normalisation (``mean``, ``std``) and precision (``fast``).

    Returns:
        the batch loss (0-dim tensor).
    """
    images = to_unit(images.to(device, non_blocking=True))
    masks = masks.to(device, non_blocking=True)
    images, masks = augment(images, masks)
    x = network_input(images, record.mean, record.std, record.fast)
    with autocast(device, record.fast):
        logits = model(x)
    loss = loss_fn(logits, masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


@dataclass
class Validation:
    loss: float
    dice: float  # binary: mean per-image Dice; multi-class: pooled mean foreground-class Dice
    per_set: dict[str, float] = field(default_factory=dict)  # the same Dice on each data set's images


class DiceTally:
    """Validation Dice added up batch by batch, over all images and over each data set's
    (:mod:`pixelwise.data.sets`): per-image Dice sums for binary runs, pooled confusion matrices for multi-class.
    Every count is exact in float64, so the tallies of several processes can be added (:meth:`result`)."""

    def __init__(self, data: TrainData):
        self.multiclass = not data.class_map.is_binary
        self.num_classes = data.num_classes
        self.set_names = data.set_names
        self.sets = data.val_sets
        groups = 1 + len(self.set_names)  # 0: every image; 1 + s: data set s
        self.dice_sums = np.zeros(groups)
        self.images = np.zeros(groups)
        self.pooled = np.zeros((groups, self.num_classes, self.num_classes), dtype=np.int64)

    def add(self, index: torch.Tensor, labels: torch.Tensor, truth: torch.Tensor) -> None:
        """``labels``/``truth``: uint8 N×H×W class indices of validation images ``index`` (int64 (N,)), on any
        device: the counting runs there and only counts come back."""
        group = np.zeros(len(index), dtype=np.int64) if self.sets is None else 1 + self.sets[index].numpy()
        if self.multiclass:
            self.pooled[0] += confusion_matrix(labels, truth, self.num_classes, ignore=IGNORE)
            for g in np.unique(group[group > 0]):
                chosen = torch.from_numpy(group == g).to(labels.device)
                self.pooled[g] += confusion_matrix(labels[chosen], truth[chosen], self.num_classes, ignore=IGNORE)
            return
        labels = labels.clone()
        labels[truth == IGNORE] = IGNORE  # void pixels (and a tiled run's padding) count in no metric
        dice = per_image_dice(labels, truth).astype(np.float64)
        self.dice_sums[0] += dice.sum()
        self.images[0] += len(dice)
        np.add.at(self.dice_sums, group[group > 0], dice[group > 0])
        np.add.at(self.images, group[group > 0], 1)

    def result(self, loss_sum: float, count: int, ddp: Distributed) -> Validation:
        """The summed tallies of every process as a :class:`Validation` (loss: mean of ``loss_sum`` over
        ``count`` validation images)."""
        sums = ddp.sum([loss_sum, *self.dice_sums.tolist(), *self.images.tolist(), *self.pooled.ravel().tolist()])
        groups = len(self.dice_sums)
        dice_sums, images = np.asarray(sums[1 : 1 + groups]), np.asarray(sums[1 + groups : 1 + 2 * groups])
        pooled = np.asarray(sums[1 + 2 * groups :], dtype=np.int64).reshape(self.pooled.shape)

        def dice(g: int) -> float:
            if self.multiclass:
                value = metrics_from_confusion(pooled[g])["mean_dice"]
                return 0.0 if np.isnan(value) else float(value)
            return float(dice_sums[g] / images[g]) if images[g] else 0.0

        per_set = {name: dice(1 + s) for s, name in enumerate(self.set_names)}
        return Validation(sums[0] / count, dice(0), per_set)


@torch.no_grad()
def validate(
    model, data: TrainData, loss_fn, record: RunRecord, device, ddp: Distributed = Distributed()
) -> Validation:
    """Validation loss and Dice at threshold 0.5, the score that picks the kept epoch.

    Binary: the mean of per-image Dice (the ISIC convention). Multi-class: the mean over classes 1..C-1 of
    each class's Dice pooled over the whole validation split (one confusion matrix), the convention of the
    reported mean IoU; a per-image mean would be dominated by the many classes absent from each image.

    With several processes each rank validates every N-th image and the float64 sums are added over ranks,
    so the result equals a single process's on the same weights.
    """
    model.eval()
    if data.is_tiled:
        return validate_tiled(model, data, loss_fn, record, device, ddp)
    shard = torch.arange(ddp.rank, len(data.val_images), ddp.world)
    tally, loss_sum = DiceTally(data), 0.0
    for start in range(0, len(shard), 32):
        index = shard[start : start + 32]
        x = model_input(data.val_images[index], record.mean, record.std, device, record.fast)
        y = data.val_masks[index].to(device)
        with autocast(device, record.fast):
            logits = model(x)
        loss_sum += loss_fn(logits, y).item() * len(x)
        tally.add(index, labels_from_probabilities(activate(logits), 0.5), y)
    return tally.result(loss_sum, len(data.val_images), ddp)


#: Tiles per network call when a tiled run predicts its validation images.
TILE_BATCH = 8


def tiled_predict_probs(model: torch.nn.Module, record: RunRecord, device: torch.device, tta: str = "none"):
    """``predict_probs`` of :func:`~pixelwise.predict.tiles.tiled_labels` for the model being trained: uint8
    N×3×t×t tiles → float32 N×K×t×t probabilities on the CPU (averaged over the ``tta`` views)."""
    predict_unit = model_probabilities(model, record, device)
    return lambda tiles: batched_probabilities(
        lambda x: tta_probabilities(predict_unit, x, tta), tiles, device, TILE_BATCH
    )


def tiled_val_image(data: TrainData, index: int) -> tuple[np.ndarray, torch.Tensor]:
    """Validation image ``index`` of a tiled run without its padding: ``(image uint8 h×w×3, truth uint8 h×w)``
    at the run's scale."""
    height, width = data.val_sizes[index].tolist()
    image = data.val_images[index, :, :height, :width].permute(1, 2, 0).contiguous().numpy()
    return image, data.val_masks[index, :height, :width]


def tiled_val_labels(data: TrainData, index: int, predict_probs, record: RunRecord, probability: bool = False):
    """Validation image ``index`` of a tiled run, whole, through the tiles prediction uses (the run's
    :class:`~pixelwise.predict.tiles.TilePlan`, Gaussian blend) at the run's scale: ``(labels uint8 h×w, truth
    uint8 h×w, probability float32 h×w or None)``; threshold 0.5 (binary)."""
    image, truth = tiled_val_image(data, index)
    out = tiled_labels(predict_probs, image, record.tile_plan(), TILE_BATCH, 0.5, return_probability=probability)
    labels, prob = out if probability else (out, None)
    return torch.from_numpy(labels), truth, prob


@torch.no_grad()
def validate_tiled(model, data: TrainData, loss_fn, record: RunRecord, device, ddp: Distributed) -> Validation:
    """:func:`validate` of a tiled run: Dice on whole validation images predicted tile by tile (as ``predict``
    does, at the run's scale; one pass, threshold 0.5), the loss on each image's centred crop of tile side.
    Binary: mean per-image Dice; multi-class: pooled mean foreground Dice (as :func:`validate`)."""
    shard = list(range(ddp.rank, len(data.val_images), ddp.world))
    predict_probs = tiled_predict_probs(model, record, device)
    tally, loss_sum = DiceTally(data), 0.0
    crops, crop_masks = centre_crops(data.val_images, data.val_masks, data.val_sizes, data.size)
    for start in range(0, len(shard), 32):
        index = torch.tensor(shard[start : start + 32])
        x = model_input(crops[index], record.mean, record.std, device, record.fast)
        with autocast(device, record.fast):
            logits = model(x)
        loss_sum += loss_fn(logits, crop_masks[index].to(device)).item() * len(index)
    for index in shard:
        labels, truth, _ = tiled_val_labels(data, index, predict_probs, record)
        tally.add(torch.tensor([index]), labels[None], truth[None])
    return tally.result(loss_sum, len(data.val_images), ddp)


def per_image_dice(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-image Dice (N,) of binary class-index masks (N×H×W, class 1 = foreground)."""
    return overlap_metrics(confusion_counts(pred == 1, truth == 1))["dice"]


def steps_per_epoch(n_train: int, batch_size: int, world: int = 1) -> int:
    """Optimiser steps in an epoch. One process: a last batch of one image is skipped (BatchNorm needs two).
    Several: only whole global batches (every rank takes the same number of steps)."""
    if world > 1:
        return max(1, n_train // batch_size)
    return max(1, n_train // batch_size + (n_train % batch_size >= 2))


def run_epoch(
    model,
    optimizer,
    loss_fn,
    augment,
    images: torch.Tensor,
    masks: torch.Tensor,
    record: RunRecord,
    device: torch.device,
    order: torch.Tensor,
    batch_size: int,
    on_step=None,
    sampler: PatchSampler | None = None,
) -> tuple[float, int]:
    """One pass over ``images``/``masks`` (uint8 N×3×S×S, N×S×S) in ``order``, ``batch_size`` at a time
    (per process: the recipe's batch size divided by the number of processes).

    ``on_step(loss_total, seen)`` is called after each step (the schedule and the progress bar hang there);
    ``loss_total`` is a 0-dim tensor on ``device``, so nothing waits for the device unless the callee reads it.
    ``sampler`` (tiled runs): each step trains on one crop per drawn image
    (:class:`~pixelwise.train.patches.PatchSampler`) instead of the whole arrays.

    Returns:
        ``(loss_sum, seen)``: the summed per-image loss and the number of images trained on.
    """
    model.train()
    loss_total, seen = torch.zeros((), device=device), 0
    for first in range(0, len(order), batch_size):
        index = order[first : first + batch_size]
        if len(index) < 2 and len(order) >= 2:  # BatchNorm needs more than one image
            continue
        batch_images, batch_masks = (
            (images[index], masks[index]) if sampler is None else sampler.crops(images, masks, index)
        )
        loss = train_step(model, optimizer, loss_fn, augment, batch_images, batch_masks, record, device)
        loss_total += loss.detach() * len(index)
        seen += len(index)
        if on_step is not None:
            on_step(loss_total, seen)
    return float(loss_total), seen


def choose_threshold_on_validation(model, data: TrainData, record: RunRecord, device: torch.device) -> float:
    """The probability threshold with the best mean validation Dice (binary runs; 0.5 for multi-class).

    The probabilities are the ones ``predict`` makes by default (:data:`~pixelwise.config.PREDICT_TTA`):
    averaging views smooths them, which moves the best threshold (ISIC: 0.35 one pass, 0.45 averaged).
    Keeping only the largest region is not chosen here: validation photos of one person cannot show what it
    costs on a photo of two (docs/experiments.md).
    """
    if not data.class_map.is_binary:
        return 0.5
    model.eval()
    if data.is_tiled:  # whole validation images through the tiles, at the run's scale; padding is void
        predict_probs = tiled_predict_probs(model, record, device, PREDICT_TTA)
        probs = torch.zeros(data.val_masks.shape, dtype=torch.float32)
        for index in range(len(data.val_images)):
            _, truth, prob = tiled_val_labels(data, index, predict_probs, record, probability=True)
            probs[index, : prob.shape[0], : prob.shape[1]] = torch.from_numpy(prob)
        masks = data.val_masks.cpu()
        sweep = threshold_sweep(probs, masks == 1, THRESHOLD_GRID, ignore=masks == IGNORE)
        return float(choose_threshold(sweep))
    predict_unit = model_probabilities(model, record, device)
    probs = batched_probabilities(
        lambda x: tta_probabilities(predict_unit, x, PREDICT_TTA), data.val_images, device, 32
    )[:, 0]
    sweep = threshold_sweep(probs, data.val_masks == 1, THRESHOLD_GRID, ignore=data.val_masks == IGNORE)
    return float(choose_threshold(sweep))


def evenly_spread(count: int, limit: int) -> np.ndarray:
    """At most ``limit`` of the indices ``0..count-1``, evenly spread and sorted (float64, whole numbers): the
    validation images a choice made after training looks at."""
    return np.unique(np.linspace(0, count - 1, min(limit, count)).round())


#: At most this many validation images (evenly spread), read at their own size, choose ``refine_edges``.
REFINE_IMAGES = 100
#: What the refinement must add on them to be kept (binary: mean Dice; multi-class: pooled mean IoU): a smaller
#: gain is noise at 100 images (the 240×320 portraits: +0.0002 Dice on 298 test images; the 550×840 ccp-people
#: photos: +0.004).
REFINE_MIN_GAIN = 0.001


def choose_refine_on_validation(
    recipe: Recipe, model, data: TrainData, record: RunRecord, device: torch.device
) -> bool:
    """Squashed semantic runs: whether refining the mask's edges on the image at its own resolution
    (:func:`~pixelwise.predict.segment.refine_labels`) raises the validation score by :data:`REFINE_MIN_GAIN`
    — binary runs their mean per-image Dice, multi-class runs their pooled mean IoU.

    Each of at most :data:`REFINE_IMAGES` validation images is read at its own size with its truth, its
    probabilities are those ``predict`` makes (:data:`~pixelwise.config.PREDICT_TTA` views, the run's threshold in
    ``record``), and its mask is scored both ways. It pays where the network's output is stretched furthest
    (large photos, a small input). Tiled and instance runs never refine.
    """
    from pixelwise.data.cache import read_training_mask
    from pixelwise.data.imageio import parse_colors, read_image
    from pixelwise.predict.segment import labels_at_image_size

    if data.is_tiled or record.task != "semantic" or not data.val_pairs:
        return False
    model.eval()
    chosen = evenly_spread(len(data.val_pairs), REFINE_IMAGES)
    index = torch.from_numpy(chosen.astype(np.int64))
    predict_unit = model_probabilities(model, record, device)
    probs = batched_probabilities(
        lambda x: tta_probabilities(predict_unit, x, PREDICT_TTA), data.val_images[index], device, 32
    )
    config = RunConfig(recipe, record.replace(refine_edges=True))
    colors = parse_colors(recipe.colors) if recipe.colors else None
    void = tuple(data.class_map.ignored_values)
    k, binary = data.num_classes, data.class_map.is_binary
    dice_gains, matrices = [], np.zeros((2, k, k), np.int64)  # multi-class: [plain, refined] pooled
    for i, prob in zip(chosen.astype(int).tolist(), probs):
        pair = data.val_pairs[i]
        image = read_image(pair.image)
        truth = data.class_map.apply(read_training_mask(pair, colors, void))
        if truth.shape != image.shape[:2]:
            continue
        both = [labels_at_image_size(config, prob.float(), *truth.shape, picture) for picture in (None, image)]
        if binary:
            valid = truth != IGNORE  # void pixels count for neither mask
            preds = np.stack([np.where(valid, labels, 0) for labels in both])
            plain, refined = per_image_dice(preds, np.stack([np.where(valid, truth, 0)] * 2))
            dice_gains.append(refined - plain)
        else:
            for way, labels in enumerate(both):
                matrices[way] += confusion_matrix(labels, truth, k)
    if binary:
        if not dice_gains:
            return False
        gain, what, count = float(np.mean(dice_gains)), "mean Dice", len(dice_gains)
    else:
        if not matrices[0].any():
            return False
        plain, refined = (metrics_from_confusion(m)["mean_iou"] for m in matrices)
        gain, what, count = refined - plain, "pooled mean IoU", len(chosen)
    log.info(f"edge refinement: validation {what} {gain:+.4f} on {count} images at their own size")
    return gain >= REFINE_MIN_GAIN


#: Views averaged for the decode thresholds' validation probabilities: TTA smooths probabilities as ``predict``'s
#: does, at a quarter of the default's 16 passes (on DSB 2018 flips and d4-zoom scored within 0.003 DSB).
DECODE_TTA = "flips"
#: At most this many validation images choose them (evenly spread): 24 decodes of each are the cost (the minimum
#: scores filter each decode's objects, no watershed of their own).
DECODE_IMAGES = 100


def choose_decode_on_validation(model, data: TrainData, record: RunRecord, device: torch.device) -> dict | None:
    """Instance runs: where the watershed's seeds come from, its seed and foreground thresholds and the objects'
    minimum score (:data:`~pixelwise.masks.instance_decode.SEED_SOURCES` × ``SEED_GRID`` × ``FOREGROUND_GRID`` ×
    ``MIN_SCORE_GRID``) with the best DSB 2018 score on the validation split, ``{"seed", "foreground",
    "min_score", "seeds"}``; None for semantic runs or without validation objects.

    The truth's objects are the validation targets decoded (border pixels join the neighbouring interior, as the
    encoding placed them); probabilities are ``DECODE_TTA``-averaged, at the run's scale (tiled runs: whole
    images through the tiles), on at most ``DECODE_IMAGES`` images. Ties keep the choice that comes first in the
    grids.
    """
    from pixelwise.evaluate.instance_metrics import dsb_score
    from pixelwise.masks.instance_decode import (
        FOREGROUND_GRID,
        MIN_SCORE_GRID,
        SEED_GRID,
        SEED_SOURCES,
        decode_instances,
        decode_labels,
    )

    if record.task != "instances" or not len(data.val_images):
        return None
    model.eval()
    truths, probabilities = [], []
    chosen = evenly_spread(len(data.val_images), DECODE_IMAGES)
    if data.is_tiled:
        predict_probs = tiled_predict_probs(model, record, device, DECODE_TTA)
        for index in chosen.astype(int).tolist():
            image, truth = tiled_val_image(data, index)
            _, probs = tiled_labels(predict_probs, image, record.tile_plan(), TILE_BATCH, return_probabilities=True)
            probabilities.append(probs)
            truths.append(truth.numpy())
    else:
        predict_unit = model_probabilities(model, record, device)
        index = torch.from_numpy(chosen.astype(np.int64))
        probs = batched_probabilities(
            lambda x: tta_probabilities(predict_unit, x, DECODE_TTA), data.val_images[index], device, 32
        )
        probabilities = [p.float().numpy() for p in probs]
        truths = [m.numpy() for m in data.val_masks[index].cpu()]
    truths = [decode_labels(t, record.num_classes).labels for t in truths]
    if not any(t.any() for t in truths):
        return None
    best, best_score = None, -1.0
    for seeds, seed, foreground in itertools.product(SEED_SOURCES, SEED_GRID, FOREGROUND_GRID):
        decoded = [
            decode_instances(p, seed_threshold=seed, foreground_threshold=foreground, seeds=seeds)
            for p in probabilities
        ]
        for min_score in MIN_SCORE_GRID:  # dropping low-score objects needs no second watershed
            score = dsb_score(truths, [objects.above(min_score).labels for objects in decoded])["dsb"]
            if score > best_score + 1e-9:
                best = {"seed": seed, "foreground": foreground, "min_score": min_score, "seeds": seeds}
                best_score = score
    log.info(
        f"instance decode: {best['seeds']} seeds, seed {best['seed']:g}, foreground {best['foreground']:g}, "
        f"objects scoring ≥ {best['min_score']:g} (validation DSB score {best_score:.4f})"
    )
    return best


def train(recipe: Recipe, run: Path, resume: bool = False) -> Path:
    """Train one model (or one per fold) into ``run``; returns the run folder. Messages go to the
    ``pixelwise.train.loop`` logger and the epoch bars to :mod:`pixelwise.reporting` (both quiet unless the
    caller, e.g. the CLI, turns them on).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this; see :mod:`pixelwise.train.distributed`.
    """
    recipe.validate()
    init_weights = initial_weights(recipe)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    check_batch(recipe.batch_size, world)  # before the group forms: every rank refuses alike
    ddp = init_distributed()
    if not ddp.is_main:  # rank 0 alone reports (each torchrun rank is a process of its own)
        logging.getLogger(LOGGER).setLevel(logging.WARNING)
    try:
        folder = RunFolder(run)
        if not recipe.is_ensemble:
            train_one(recipe, folder, resume, ddp, init_weights)
        else:
            train_folds(recipe, folder, resume, ddp, init_weights)
        # Every rank done before any tears its connections down: a gloo rank that closes while a peer still
        # talks to it can abort the peer (seen in CI as SIGABRT at exit).
        ddp.barrier("end of training")
        return folder.path
    finally:
        ddp.close()


def train_folds(recipe: Recipe, folder: RunFolder, resume: bool, ddp: Distributed, init_weights: Path | None) -> None:
    """``recipe.folds`` members, one per cross-validation fold, each a complete run under ``folder``."""
    if ddp.is_main:
        folder.write_config(RunConfig(recipe))
    for fold in range(recipe.folds):
        log.info(f"[bold]fold {fold + 1}/{recipe.folds}")
        fold_recipe = recipe.replace(fold=fold)
        if recipe.budget_seconds:
            fold_recipe = fold_recipe.replace(budget_seconds=recipe.budget_seconds / recipe.folds)
        member = folder.fold(fold)
        if resume and member.weights_path.exists() and member.train_finished():
            continue
        train_one(fold_recipe, member, resume and member.state_json_path.exists(), ddp, init_weights)
    if ddp.is_main:
        records = [member.load_config().record for member in folder.members(recipe)]
        ensemble = ensemble_record(records)
        folder.write_config(RunConfig(recipe, ensemble))


def ensemble_record(records: list[RunRecord]) -> RunRecord:
    """The record of a fold ensemble from its members': the classes, input plan, normalisation and task of the
    first (all folds share them); the choices made on validation merged, since each fold chose on its own
    validation split — thresholds averaged (binary threshold, instance decode), ``refine_edges`` when most chose it.
    """
    from pixelwise.masks.instance_decode import SEED_SOURCES

    first = records[0]
    decodes = [r.decode for r in records]
    decode = None
    if all(decodes):
        keys = [key for key in ("seed", "foreground", "min_score") if all(key in d for d in decodes)]
        decode = {key: float(np.mean([d[key] for d in decodes])) for key in keys}
        default = SEED_SOURCES[0]  # what a decode without "seeds" uses
        sources = [d.get("seeds", default) for d in decodes]
        if any(source != default for source in sources):  # the seed source most folds chose (ties: the first's)
            decode["seeds"] = max(dict.fromkeys(sources), key=sources.count)
    return RunRecord(
        num_classes=first.num_classes,
        classes=first.classes,
        size=first.size,
        scale=first.scale,
        tiles=first.tiles,
        batch_size=first.batch_size,
        plan=first.plan,
        mean=first.mean,
        std=first.std,
        fast=first.fast,
        task=first.task,
        threshold=float(np.mean([r.threshold for r in records])),
        decode=decode,
        refine_edges=2 * sum(r.refine_edges for r in records) > len(records),
    )


def initial_weights(recipe: Recipe) -> Path | None:
    """The weights ``--init RUN`` starts from (checked before anything is written), or None."""
    if recipe.init is None:
        return None
    source = RunFolder(recipe.init)
    source_config = source.load_trained_config()
    source_model = source_config.recipe.model
    if source_model != recipe.model:
        raise PixelwiseError(
            f"--init {recipe.init} holds a {source_model}, but --model is {recipe.model}: pass --model {source_model}"
        )
    if source_config.is_ensemble:
        raise PixelwiseError(f"--init {recipe.init} is a k-fold ensemble: pass one of its fold_<i> folders")
    return source.model_folders(source_config)[0].weights_path


@dataclass
class Training:
    """What one training run steps: the network, its optimiser, loss and augmentation (on ``device``).

    ``model`` is the plain network (validated and saved); ``trained`` is what the steps call: ``model`` itself,
    or its DistributedDataParallel wrapper under ``torchrun``.
    """

    model: torch.nn.Module
    trained: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: object
    augment: BatchAugment


def build_training(
    recipe: Recipe,
    num_classes: int,
    device: torch.device,
    *,
    pretrained: bool = True,
    class_weights: torch.Tensor | None = None,
    ddp: Distributed = Distributed(),
    tiled: bool = False,
) -> Training:
    """The network, optimiser, loss and augmentation of ``recipe``, built once for ``train`` and ``bench``.

    Args:
        num_classes: classes including background (2 = binary: one sigmoid channel).
        pretrained: start the encoder from its ImageNet weights (False when weights are loaded next).
        class_weights: float32 (num_classes,) cross-entropy weights, or None.
        tiled: the run trains on crops (its augmentation leaves out side-by-side pairs: :func:`build_augment`).
    """
    model = build_model(recipe.model, num_classes, pretrained=pretrained)
    if ddp.active and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # Weights stay contiguous even in fast mode: channels_last inputs alone select the fast convolution
    # kernels, while channels_last weights push AdamW off its fused path (17x slower steps, measured).
    model = model.to(device)
    # DDP broadcasts rank 0's initial weights and averages gradients; `model` stays the plain network for
    # validation and checkpoints.
    # channels_last inputs give 1×1 convolutions channels_last gradients; DDP copies them into its buckets
    # correctly and says so once per run (measured: no slower at these sizes), which only alarms users.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    trained = (
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if ddp.active
        else model
    )
    optimizer = build_optimizer(model, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.encoder_lr_scale)
    loss_fn = build_loss(recipe.loss, num_classes, class_weights=class_weights)
    return Training(model, trained, optimizer, loss_fn, build_augment(recipe.augment, tiled).to(device))


def new_record(recipe: Recipe, data: TrainData, device: torch.device) -> RunRecord:
    """The record a new run starts with: the data's classes and size, its network's normalisation (pretrained
    encoders differ) and the precision this device trains in."""
    spec = model_spec(recipe.model)
    plan = data.plan
    return RunRecord(
        num_classes=data.num_classes,
        classes=data.class_map.to_dict(),
        size=data.size,
        scale=plan.scale if data.is_tiled else None,
        tiles=plan_tiles(plan.size).to_dict() if data.is_tiled else None,
        batch_size=plan.batch_size if plan is not None else None,
        plan=(plan.reason or None) if plan is not None else None,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        fast=use_fast_mode(recipe.fast, device),
        class_weights=None if data.class_weights is None else tuple(round(w, 4) for w in data.class_weights.tolist()),
        task="instances" if is_instance_target(data.class_map) else "semantic",
    )


def train_one(
    recipe: Recipe, run: RunFolder, resume: bool, ddp: Distributed = Distributed(), init_weights: Path | None = None
) -> RunConfig:
    """Train one model into ``run``: data, model, the epochs, then the threshold. Returns the run's config."""
    device = training_device(ddp)
    torch.manual_seed(recipe.seed)
    if recipe.fast and not use_fast_mode(True, device):
        log.info("this CPU has no native bf16 (AMX / AVX-512 BF16): training in fp32")
    resume = resume and can_resume(run)
    earlier = run.load_config().record if resume else None  # what this run recorded before it was interrupted
    if ddp.is_main:
        for path in remove_stale_temporaries(run.path):  # left by a kill -9 during a write
            log.info(f"removed {path.name}, a partial file an interrupted write left behind")
    data = training_data(recipe, run, earlier, device, ddp)

    record = new_record(recipe, data, device)
    if earlier is not None:  # the normalisation the network was trained with so far
        record = record.replace(mean=earlier.mean, std=earlier.std)
    training = build_training(
        recipe,
        data.num_classes,
        device,
        pretrained=init_weights is None and not resume,
        class_weights=data.class_weights,
        ddp=ddp,
        tiled=data.is_tiled,
    )
    if init_weights is not None and not resume:
        load_init_weights(training.model, init_weights)
    record = record.replace(augment_params=training.augment.to_dict())  # the preset's exact ops, saved with the run
    batch_size = run_batch_size(record, recipe, ddp)
    steps = steps_per_epoch(
        epoch_length(len(data.train_images), data.train_sets, recipe.data_weights), batch_size, ddp.world
    )
    schedule = build_schedule(
        recipe.schedule,
        training.optimizer,
        warmup_steps=int(recipe.warmup_epochs * steps),
        total_steps=recipe.epochs * steps,
    )
    average = WeightAverage(training.model) if recipe.ema else None

    loop = resumed_loop(run, training, average, schedule, steps, ddp) if resume else new_loop(recipe, run, ddp, data)
    if loop.finished:
        log.info(f"{run.path} had already finished ({loop.epoch} epochs); nothing to do")
        return run.load_config()
    if ddp.is_main:
        run.write_config(RunConfig(recipe, record))
    train_epochs(recipe, run, data, training, record, schedule, loop, average, steps, device, ddp, batch_size)
    if ddp.is_main:
        record = finish_record(recipe, run, data, training.model, record, loop, device, ddp)
    ddp.barrier("threshold and config")
    return RunConfig(recipe, record)


def run_batch_size(record: RunRecord, recipe: Recipe, ddp: Distributed) -> int:
    """Images (tiled runs: crops) per optimisation step: the plan's, else the recipe's; a multiple of the
    process count."""
    batch = record.batch_size or recipe.batch_size
    return max(2, -(-batch // ddp.world) * ddp.world)


def training_device(ddp: Distributed) -> torch.device:
    """The device this process trains on (its own GPU under torchrun), with cuDNN's autotuner on for CUDA."""
    device = device_for(ddp) if ddp.active else pick_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def can_resume(run: RunFolder) -> bool:
    """False for a run killed before its first epoch ended: nothing to continue, it starts again in place."""
    if run.state_json_path.exists():
        return True
    log.info(f"{run.path} never finished an epoch: starting it again in place")
    return False


def recorded_data(recipe: Recipe, record: RunRecord) -> dict:
    """Keyword arguments of :func:`~pixelwise.train.data.prepare_data` that load a recorded run's data as it was
    trained: its classes, its size and its plan (squash or tiles at its scale)."""
    plan = InputPlan(record.scale, record.size, record.batch_size or recipe.batch_size, record.plan or "")
    return dict(known=record.class_map(), known_size=record.size, known_plan=plan)


def training_data(
    recipe: Recipe, run: RunFolder, earlier: RunRecord | None, device: torch.device, ddp: Distributed
) -> TrainData:
    """The checked, split, loaded data; rank 0 checks it, fills the cache and writes split.json, the other ranks
    then read them. ``earlier``: a resumed run's record (its classes and size are kept)."""
    known = recorded_data(recipe, earlier) if earlier is not None else {}
    data = prepare_data(recipe, run, **known) if ddp.is_main else None
    ddp.barrier("data check and split")
    if data is None:
        data = prepare_data(recipe, run, **known)
    if device.type == "cuda":  # the uint8 arrays live on the GPU: batches (crops) are cut there, no copies per step
        data = replace(data, train_images=data.train_images.to(device), train_masks=data.train_masks.to(device))
    return data


def metrics_columns(data: TrainData) -> tuple[str, ...]:
    """metrics.csv's columns: :data:`METRICS_COLUMNS`, then ``val_dice_NAME`` for each data set of a run on
    several."""
    return METRICS_COLUMNS + tuple(f"val_dice_{name}" for name in data.set_names)


def new_loop(recipe: Recipe, run: RunFolder, ddp: Distributed, data: TrainData) -> LoopState:
    """The counters of a new run, and its metrics.csv with the header only."""
    if ddp.is_main:
        atomic_write_text(run.metrics_path, ",".join(metrics_columns(data)) + "\n")
    return LoopState(epochs=recipe.epochs, world_size=ddp.world)


def resumed_loop(
    run: RunFolder, training: Training, average: WeightAverage | None, schedule, steps: int, ddp: Distributed
) -> LoopState:
    """An interrupted run's counters, weights, optimiser moments and schedule position, from its train state."""
    loop = load_train_state(run, training.model, training.optimizer, average)
    if loop.finished:
        return loop
    if loop.world_size != ddp.world:
        log.info(
            f"resuming a run of {loop.world_size} process(es) on {ddp.world}: the global batch is the "
            f"same, the per-process slices differ"
        )
        loop.world_size = ddp.world
    schedule.total_steps = loop.epochs * steps
    schedule.set_step(loop.step)
    log.info(
        f"resuming {run.path} at epoch {loop.epoch + 1}/{loop.epochs} "
        f"(best val Dice {loop.best_dice:.4f} at epoch {loop.best_epoch + 1})"
    )
    if ddp.is_main:
        _truncate_metrics(run.metrics_path, loop.epoch)
    return loop


def train_epochs(
    recipe: Recipe,
    run: RunFolder,
    data: TrainData,
    training: Training,
    record: RunRecord,
    schedule,
    loop: LoopState,
    average: WeightAverage | None,
    steps: int,
    device: torch.device,
    ddp: Distributed,
    batch_size: int | None = None,
) -> None:
    """The epochs: train, validate, fit the schedule to the budget, save weights, state and metrics row.
    ``batch_size``: images (tiled runs: crops, :class:`~pixelwise.train.patches.PatchSampler`) per step over all
    processes; default the recipe's."""
    model = training.model
    batch_size = batch_size or recipe.batch_size
    sampler = PatchSampler(data.train_masks, data.train_sizes, data.size, data.num_classes) if data.is_tiled else None

    def threads_changed(threads: int, other_cores: float) -> None:
        log.info(
            f"other programs use {other_cores:.1f} of {os.cpu_count()} cores: training on {threads} "
            f"thread(s) (set PIXELWISE_THREADS to choose)"
        )

    governor = ThreadGovernor(enabled=device.type == "cpu" and not ddp.active, on_change=threads_changed)
    n_train = len(data.train_images)
    with EpochProgress(budget_seconds=recipe.budget_seconds, shown=ddp.is_main) as progress:
        while loop.epoch < loop.epochs:
            epoch = loop.epoch
            # Seeded per epoch, so a resumed run sees the same shuffles and augmentations; every rank draws the
            # same permutation, then augments with a seed of its own.
            torch.manual_seed(recipe.seed * 100_003 + epoch)
            order = epoch_order(n_train, data.train_sets, recipe.data_weights)
            if ddp.active:
                order = rank_slices(order, batch_size, ddp)
                torch.manual_seed(recipe.seed * 100_003 + epoch + 7_919 * ddp.rank)
            started = time.perf_counter()
            progress.start_epoch(epoch, loop.epochs, steps)

            def on_step(loss_total: torch.Tensor, seen: int) -> None:
                schedule.step()
                loop.step += 1
                if average is not None:
                    average.update(model)
                governor.check()
                elapsed = time.perf_counter() - started
                progress.advance(lambda: float(loss_total) / seen, seen / elapsed, loop.train_seconds + elapsed)

            loss_sum, seen = run_epoch(
                training.trained,
                training.optimizer,
                training.loss_fn,
                training.augment,
                data.train_images,
                data.train_masks,
                record,
                device,
                order.to(data.train_images.device),
                batch_size // ddp.world,
                on_step,
                sampler,
            )
            ddp.sync_buffers(model)  # BatchNorm statistics: rank 0's everywhere before validating and saving
            # The kept network: the moving average of the weights (with --ema), else the trained weights.
            kept = model if average is None else average.module
            if average is not None:
                ddp.sync_buffers(kept)
            val = validate(kept, data, training.loss_fn, record, device, ddp)
            seconds = time.perf_counter() - started
            loop.train_seconds += seconds
            loop.epoch_seconds.append(seconds)
            lr = training.optimizer.param_groups[0]["lr"]
            row = (epoch + 1, loss_sum / max(seen, 1), val.loss, val.dice, lr, seconds, seen * ddp.world / seconds)
            row += tuple(val.per_set[name] for name in data.set_names)
            improved = val.dice > loop.best_dice
            if improved:
                loop.best_dice, loop.best_epoch = val.dice, epoch
            loop.epoch = epoch + 1
            if recipe.budget_seconds:
                _fit_to_budget(loop, recipe.budget_seconds, schedule, steps)
                if loop.epoch == 2 and (note := budget_note(loop.epochs, recipe.budget_seconds)):
                    log.info(note)  # once, when the pace is first measured without the warm-up epoch
            if stops_early(loop, recipe.patience):
                log.info(f"early stop: no better validation Dice for {recipe.patience} epochs")
                loop.epochs = loop.epoch
            loop.finished = loop.epoch >= loop.epochs
            # Rank 0's clock decides how many epochs remain; every rank follows it (or they would deadlock).
            synced = ddp.broadcast(loop)
            loop.__dict__.update(synced.__dict__)  # the caller holds this object
            schedule.total_steps = max(loop.epochs, 1) * steps
            if ddp.is_main:
                _append_metrics(run.metrics_path, row)
                if improved or recipe.keep == "last":
                    save_weights(kept, run.weights_path)
                save_train_state(run, model, training.optimizer, loop, average)
            progress.end_epoch(row, improved)


def finish_record(
    recipe: Recipe,
    run: RunFolder,
    data: TrainData,
    model: torch.nn.Module,
    record: RunRecord,
    loop: LoopState,
    device: torch.device,
    ddp: Distributed,
) -> RunRecord:
    """The end of training (rank 0): the threshold (then the instance decode, the edge refinement) chosen on the
    validation split with the kept weights, and what the run kept, written to config.json."""
    load_weights(model, run.weights_path)
    kept_epoch = loop.epoch if recipe.keep == "last" else loop.best_epoch + 1
    record = record.replace(threshold=choose_threshold_on_validation(model, data, record, device))
    record = record.replace(
        decode=choose_decode_on_validation(model, data, record, device),
        refine_edges=choose_refine_on_validation(recipe, model, data, record, device),
        kept_epoch=kept_epoch,
        best_epoch=loop.best_epoch + 1,
        best_val_dice=loop.best_dice,
        train_seconds=round(loop.train_seconds, 1),
        device=str(device),
        processes=ddp.world,
        weights_sha1=file_sha1(run.weights_path),
    )
    run.write_config(RunConfig(recipe, record))
    log.info(
        f"kept the weights of epoch {kept_epoch} ({recipe.keep}); best validation Dice "
        f"{loop.best_dice:.4f} at epoch {loop.best_epoch + 1}; threshold {record.threshold:.2f}"
        f"{' (edges refined at full size)' if record.refine_edges else ''}; "
        f"run folder: {run.path}"
    )
    return record


def load_init_weights(model: torch.nn.Module, path: Path) -> None:
    """Load another run's weights into ``model``; a head of another class count keeps its fresh weights."""
    state, _ = read_tensors(path, "weights")
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = [k for k in own if k not in fitting]
    if len(fitting) < len(own) // 2:
        raise PixelwiseError(
            f"--init {path.parent}: its weights do not fit this model ({len(skipped)} of {len(own)} "
            f"tensors differ); start from a run of the same --model"
        )
    model.load_state_dict({**own, **fitting})
    note = f" ({len(skipped)} tensors of another shape, e.g. the class head, start fresh)" if skipped else ""
    log.info(f"starting from the weights of {path}{note}")


def stops_early(loop: LoopState, patience: int | None) -> bool:
    """True when ``patience`` epochs passed without a better validation Dice. ``None`` (the default) never
    stops: a schedule must anneal before its result is judged, and a run's length must not depend on noise."""
    return patience is not None and loop.epoch - 1 - loop.best_epoch >= patience


#: Epochs a budgeted run of the default recipe needs before more stop paying (docs/experiments.md: ISIC
#: thresholded Jaccard 0.795-0.796 at 34-45 epochs, 0.781 at 23 and 0.784 at 19 on slower machines).
ENOUGH_EPOCHS = 30


def budget_note(epochs: int, budget_seconds: float) -> str | None:
    """A note when ``budget_seconds`` fits fewer than :data:`ENOUGH_EPOCHS` epochs at the measured pace.

    The run still finishes its schedule within the budget; the note tells the user what a longer budget buys.
    """
    if epochs >= ENOUGH_EPOCHS or epochs < 1:
        return None
    minutes = math.ceil(budget_seconds * ENOUGH_EPOCHS / epochs / 60)
    return (
        f"note: this machine fits {epochs} epochs in the {budget_seconds / 60:.3g}-minute budget; the default "
        f"recipe measured better with {ENOUGH_EPOCHS} or more (about --budget {minutes}m here)"
    )


def _fit_to_budget(loop: LoopState, budget: float, schedule: WarmupCosine, steps_per_epoch: int) -> None:
    """Set the number of epochs (and so the cosine decay) to what fits in the remaining budget.

    The first epoch is slower (allocator warm-up, caches), so later epochs estimate the pace
    once there are two or more.
    """
    times = loop.epoch_seconds
    pace = float(np.median(times[1:])) if len(times) > 1 else times[0]
    remaining = budget - loop.train_seconds
    loop.epochs = loop.epoch + max(0, int(remaining // pace))
    schedule.total_steps = max(loop.epochs, 1) * steps_per_epoch


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drop rows of epochs after the saved state (an interruption between the two writes)."""
    lines = path.read_text().splitlines(keepends=True)
    kept = [lines[0]] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= epochs_done]
    atomic_write_text(path, "".join(kept))


def _append_metrics(path: Path, row: tuple) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    atomic_write_text(path, path.read_text() + buffer.getvalue())
