"""Training data: find the pairs, check them, split them (or reuse the saved split), load arrays.

After this step every image and mask is a uint8 tensor in memory at the training size; batches are
sliced from those tensors, so the training loop never decodes a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from rich.console import Console

from pixelwise.config import TrainConfig
from pixelwise.data.cache import load_arrays
from pixelwise.data.check import check_dataset
from pixelwise.data.layouts import DatasetIndex, Pair, find_pairs
from pixelwise.data.split import load_split, make_split, save_split
from pixelwise.errors import PixelwiseError
from pixelwise.runs import RunFolder


@dataclass
class TrainData:
    train_images: torch.Tensor  # uint8 N×3×S×S
    train_masks: torch.Tensor   # uint8 N×S×S class indices
    val_images: torch.Tensor
    val_masks: torch.Tensor
    num_classes: int
    split: dict


def usable_pairs(config: TrainConfig, console: Console) -> tuple[DatasetIndex, list[Pair], int]:
    """Find and check the data set; refuse problems unless ``skip_bad``. Returns (index, good pairs, classes)."""
    index = find_pairs(config.data_root(console), layout=config.layout)
    # Same cache and size as load_arrays, so the check's decoding also fills the array cache.
    report = check_dataset(index, cache_dir=config.cache_path(), size=config.size, num_classes=config.num_classes)
    errors = report.errors
    whole = [problem for problem in errors if problem.pair_id is None and problem.path == index.root]
    if whole:  # about the data set as a whole: skipping pairs cannot help
        raise PixelwiseError(f"{index.root}: {whole[0].message}")
    if errors and not config.skip_bad:
        for problem in errors[:20]:
            console.print(f"  {problem.path}: {problem.message}")
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        raise PixelwiseError(
            f"{len(errors)} problem(s) in {index.root}{more}: fix them, see `pixelwise data check {index.root}`, "
            f"or pass --skip-bad to train without those files"
        )
    pairs = report.good_pairs
    if errors:
        console.print(f"--skip-bad: skipping {len(index.pairs) - len(pairs)} of {len(index.pairs)} pairs:")
        for problem in errors:
            console.print(f"  skipped {problem.path}: {problem.message}")
    if len(pairs) < 3:
        raise PixelwiseError(f"{index.root} has only {len(pairs)} usable image/mask pairs; training needs at least 3")
    if config.num_classes:  # declared (--num-classes) or learned by an earlier run of this config
        return index, pairs, config.num_classes
    values = [v for pair in pairs for v in report.mask_values.get(pair.id, ())]  # skipped pairs do not count
    return index, pairs, max(2, max(values, default=1) + 1)


def run_split(config: TrainConfig, run: RunFolder, pairs: list[Pair]) -> dict:
    """The run's split: read from ``split.json`` when it exists (resume, evaluate), else made and saved."""
    path = run.split_path
    if path.exists():
        split = load_split(path)
        known = {p.id for p in pairs}
        missing = [i for part in ("train", "val") for i in split[part] if i not in known]
        if missing:
            raise PixelwiseError(f"{path} names {len(missing)} images not in the data set (e.g. {missing[0]}); "
                                 f"use the same --data as the run, or start a new run")
        return split
    fold = config.fold
    split = make_split(pairs, seed=config.seed,
                       ratios=(1 - config.val_fraction - config.test_fraction, config.val_fraction, config.test_fraction),
                       folds=config.folds, fold=fold)
    save_split(path, split, seed=config.seed, data=str(config.data or "synthetic"), folds=config.folds, fold=fold)
    return split


def prepare_data(config: TrainConfig, run: RunFolder, console: Console) -> TrainData:
    index, pairs, num_classes = usable_pairs(config, console)
    split = run_split(config, run, pairs)
    by_id = {p.id: p for p in pairs}
    cache = config.cache_path()
    train_images, train_masks = load_arrays([by_id[i] for i in split["train"]], config.size, cache)
    val_images, val_masks = load_arrays([by_id[i] for i in split["val"]], config.size, cache)
    if len(val_images) == 0:
        raise PixelwiseError(f"the validation split is empty ({len(pairs)} pairs); raise --val-fraction or add data")
    console.print(f"data: {index.root} ({index.layout}), {len(train_images)} train / {len(val_images)} val / "
                  f"{len(split.get('test', []))} test, {num_classes} classes, {config.size}×{config.size}")
    return TrainData(train_images, train_masks, val_images, val_masks, num_classes, split)
