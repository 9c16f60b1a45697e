"""The training loop, explicit from top to bottom.

``train(config, run)`` reads the data, splits it, trains with AdamW and a warm-up + cosine schedule,
validates every epoch, keeps the best weights by validation Dice, stops early when validation stops
improving, and leaves a run folder that ``evaluate``, ``predict`` and ``--resume`` understand.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from pixelwise.data.augment import build_augment
from pixelwise.data.preprocess import labels_from_probabilities, normalize, probabilities, to_unit
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write_text
from pixelwise.losses import build_loss
from pixelwise.metrics import THRESHOLD_GRID, choose_threshold, confusion_counts, overlap_metrics, threshold_sweep
from pixelwise.models import build_model
from pixelwise.train import checkpoint
from pixelwise.train.config import TrainConfig
from pixelwise.train.data import TrainData, prepare_data
from pixelwise.train.progress import EpochProgress
from pixelwise.train.schedule import WarmupCosine

METRICS_COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds", "images_per_s")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AMX or AVX-512 BF16); elsewhere bf16 autocast is slower."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_fast_mode(requested: bool, device: torch.device) -> bool:
    """bf16 + channels_last only where it pays: CUDA, or a CPU with native bf16."""
    return requested and (device.type == "cuda" or cpu_has_fast_bf16())


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, fast: bool):
    """bf16 autocast when ``fast``: AMX/AVX-512-BF16 on CPU, tensor cores on CUDA."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast)


def model_input(images: torch.Tensor, config: TrainConfig, device: torch.device) -> torch.Tensor:
    """uint8 N×3×H×W (any device) → normalised float32 on ``device`` (channels_last when fast)."""
    x = normalize(to_unit(images.to(device, non_blocking=True)), config.mean, config.std)
    return x.contiguous(memory_format=torch.channels_last) if config.fast else x


@torch.no_grad()
def predict_probabilities(model, images: torch.Tensor, config: TrainConfig, device: torch.device,
                          batch_size: int = 32) -> torch.Tensor:
    """Probabilities (float32 N×K×H×W, on CPU) for uint8 images N×3×H×W at the training size."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = model_input(images[start:start + batch_size], config, device)
        with autocast(device, config.fast):
            out.append(probabilities(model(x)).cpu())
    return torch.cat(out)


OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "constant")


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) by default; plain Adam without decay to replay the lesson."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    raise PixelwiseError(f"unknown optimizer '{config.optimizer}': choose one of {', '.join(OPTIMIZERS)}")


def train_step(model, optimizer, loss_fn, augment, images: torch.Tensor, masks: torch.Tensor,
               config: TrainConfig, device: torch.device) -> torch.Tensor:
    """One optimisation step: augment on the device, normalise, bf16 forward, loss, backward, update.

    Args:
        images: uint8 N×3×S×S; masks: uint8 N×S×S class indices (any device; moved to ``device``).
        augment: a :class:`~pixelwise.data.augment.BatchAugment` (identity for preset ``none``).

    Returns:
        the batch loss (0-dim tensor).
    """
    images = to_unit(images.to(device, non_blocking=True))
    masks = masks.to(device, non_blocking=True)
    images, masks = augment(images, masks)
    x = normalize(images, config.mean, config.std)
    if config.fast:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, config.fast):
        logits = model(x)
    loss = loss_fn(logits, masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


@dataclass
class Validation:
    loss: float
    dice: float  # mean per-image Dice (binary) or mean foreground-class Dice (multi-class)


@torch.no_grad()
def validate(model, data: TrainData, loss_fn, config: TrainConfig, device) -> Validation:
    model.eval()
    losses, dices = [], []
    for start in range(0, len(data.val_images), 32):
        x = model_input(data.val_images[start:start + 32], config, device)
        y = data.val_masks[start:start + 32].to(device)
        with autocast(device, config.fast):
            logits = model(x)
        losses.append(loss_fn(logits, y).item() * len(x))
        labels = labels_from_probabilities(probabilities(logits), 0.5)
        dices.append(mean_dice_per_image(labels, y, data.num_classes))
    return Validation(float(np.sum(losses) / len(data.val_images)), float(np.concatenate(dices).mean()))


def mean_dice_per_image(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> np.ndarray:
    """Per-image Dice (N,), averaged over foreground classes when there are more than two."""
    per_class = [overlap_metrics(confusion_counts(pred == c, truth == c))["dice"] for c in range(1, num_classes)]
    return np.mean(per_class, axis=0)


def train(config: TrainConfig, run: Path, resume: bool = False, console: Console | None = None) -> Path:
    """Train one model (or one per fold) into ``run``; returns the run folder."""
    console = console or Console(stderr=True)
    run = Path(run)
    if config.is_ensemble:
        checkpoint.write_config(run, config.to_dict())
        for fold in range(config.folds):
            console.print(f"[bold]fold {fold + 1}/{config.folds}")
            fold_config = TrainConfig.from_dict({**config.to_dict(), "fold": fold})
            if config.budget_seconds:
                fold_config.budget_seconds = config.budget_seconds / config.folds
            fold_run = run / f"fold_{fold}"
            fold_resume = resume and (fold_run / checkpoint.STATE_JSON).exists()
            if resume and (fold_run / checkpoint.MODEL_FILE).exists() and checkpoint.train_finished(fold_run):
                continue
            fold_config = train_one(fold_config, fold_run, fold_resume, console)
        # The ensemble's threshold and classes: taken from the folds (their validation splits differ).
        fold_configs = [checkpoint.read_config(run / f"fold_{i}") for i in range(config.folds)]
        config.num_classes = fold_configs[0]["num_classes"]
        config.threshold = float(np.mean([c["threshold"] for c in fold_configs]))
        checkpoint.write_config(run, config.to_dict())
        return run
    train_one(config, run, resume, console)
    return run


def train_one(config: TrainConfig, run: Path, resume: bool, console: Console) -> TrainConfig:
    device = pick_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)
    if config.fast and not use_fast_mode(True, device):
        console.print("this CPU has no native bf16 (AMX / AVX-512 BF16): training in fp32")
        config.fast = False
    data = prepare_data(config, run, console)
    config.num_classes = data.num_classes

    # Weights stay contiguous even in fast mode: channels_last inputs alone select the fast convolution
    # kernels, while channels_last weights push AdamW off its fused path (17x slower steps, measured).
    model = build_model(config.model, data.num_classes).to(device)
    loss_fn = build_loss(config.loss, data.num_classes)
    augment = build_augment(config.augment).to(device)
    config.extra = {**config.extra, "augment_params": augment.to_dict()}  # the preset's exact ops, saved with the run
    optimizer = build_optimizer(model, config)
    # A last batch of one image is skipped (BatchNorm needs two), so it is not a step either.
    n_train = len(data.train_images)
    steps_per_epoch = max(1, n_train // config.batch_size + (n_train % config.batch_size >= 2))
    schedule = WarmupCosine(optimizer, warmup_steps=int(config.warmup_epochs * steps_per_epoch),
                            total_steps=config.epochs * steps_per_epoch, constant=config.schedule == "constant")

    loop = {"epoch": 0, "step": 0, "best_dice": -1.0, "best_epoch": -1, "epochs": config.epochs,
            "epoch_seconds": [], "train_seconds": 0.0, "finished": False}
    if resume:
        loop = checkpoint.load_train_state(run, model, optimizer)
        schedule.total_steps = loop["epochs"] * steps_per_epoch
        schedule.set_step(loop["step"])
        console.print(f"resuming {run} at epoch {loop['epoch'] + 1}/{loop['epochs']} "
                      f"(best val Dice {loop['best_dice']:.4f} at epoch {loop['best_epoch'] + 1})")
        _truncate_metrics(run / "metrics.csv", loop["epoch"])
        if loop["finished"]:
            console.print("this run had already finished; nothing to do")
            return TrainConfig.from_dict(checkpoint.read_config(run))
    else:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / "metrics.csv", ",".join(METRICS_COLUMNS) + "\n")
    checkpoint.write_config(run, config.to_dict())

    progress = EpochProgress(console, budget_seconds=config.budget_seconds)
    with progress:
        while loop["epoch"] < loop["epochs"]:
            epoch = loop["epoch"]
            # Seeded per epoch, so a resumed run sees the same shuffles and augmentations.
            torch.manual_seed(config.seed * 100_003 + epoch)
            order = torch.randperm(n_train)
            model.train()
            started = time.perf_counter()
            loss_sum, seen = 0.0, 0
            progress.start_epoch(epoch, loop["epochs"], steps_per_epoch)
            for first in range(0, n_train, config.batch_size):
                index = order[first:first + config.batch_size]
                if len(index) < 2 and n_train >= 2:  # BatchNorm needs more than one image
                    continue
                loss = train_step(model, optimizer, loss_fn, augment, data.train_images[index],
                                  data.train_masks[index], config, device)
                schedule.step()
                loop["step"] += 1
                loss_sum += loss.item() * len(index)
                seen += len(index)
                elapsed = time.perf_counter() - started
                progress.advance(loss_sum / seen, seen / elapsed, loop["train_seconds"] + elapsed)

            val = validate(model, data, loss_fn, config, device)
            seconds = time.perf_counter() - started
            loop["train_seconds"] += seconds
            loop["epoch_seconds"].append(seconds)
            lr = optimizer.param_groups[0]["lr"]
            row = (epoch + 1, loss_sum / max(seen, 1), val.loss, val.dice, lr, seconds, seen / seconds)
            _append_metrics(run / "metrics.csv", row)
            improved = val.dice > loop["best_dice"]
            if improved:
                loop["best_dice"], loop["best_epoch"] = val.dice, epoch
                checkpoint.save_weights(model, run / checkpoint.MODEL_FILE)
            progress.end_epoch(row, improved)
            loop["epoch"] = epoch + 1
            if config.budget_seconds:
                _fit_to_budget(loop, config.budget_seconds, schedule, steps_per_epoch)
            if epoch - loop["best_epoch"] >= config.patience:
                console.print(f"early stop: no better validation Dice for {config.patience} epochs")
                loop["epochs"] = loop["epoch"]
            loop["finished"] = loop["epoch"] >= loop["epochs"]
            checkpoint.save_train_state(run, model, optimizer, loop)

    # Choose the probability threshold on the validation split with the best weights.
    checkpoint.load_weights(model, run / checkpoint.MODEL_FILE)
    if data.num_classes == 2:
        probs = predict_probabilities(model, data.val_images, config, device)[:, 0]
        sweep = threshold_sweep(probs, data.val_masks.bool(), THRESHOLD_GRID)
        config.threshold = float(choose_threshold(sweep))
    config.extra = {**config.extra, "best_epoch": loop["best_epoch"] + 1, "best_val_dice": loop["best_dice"],
                    "train_seconds": round(loop["train_seconds"], 1), "device": str(device)}
    checkpoint.write_config(run, config.to_dict())
    console.print(f"best validation Dice {loop['best_dice']:.4f} at epoch {loop['best_epoch'] + 1}; "
                  f"threshold {config.threshold:.2f}; run folder: {run}")
    return config


def _fit_to_budget(loop: dict, budget: float, schedule: WarmupCosine, steps_per_epoch: int) -> None:
    """Set the number of epochs (and so the cosine decay) to what fits in the remaining budget.

    The first epoch is slower (allocator warm-up, caches), so later epochs estimate the pace
    once there are two or more.
    """
    times = loop["epoch_seconds"]
    pace = float(np.median(times[1:])) if len(times) > 1 else times[0]
    remaining = budget - loop["train_seconds"]
    loop["epochs"] = loop["epoch"] + max(0, int(remaining // pace))
    schedule.total_steps = max(loop["epochs"], 1) * steps_per_epoch


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drop rows of epochs after the saved state (an interruption between the two writes)."""
    lines = path.read_text().splitlines(keepends=True)
    kept = [lines[0]] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= epochs_done]
    atomic_write_text(path, "".join(kept))


def _append_metrics(path: Path, row: tuple) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    atomic_write_text(path, path.read_text() + buffer.getvalue())
