"""Training data: find the pairs, check them, split them (or reuse the saved split), load arrays.

After this step every image and mask is a uint8 tensor in memory at the training size; batches are
sliced from those tensors, so the training loop never decodes a file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixelwise.config import MULTICLASS_WEIGHTS, Recipe, planned_size
from pixelwise.data.cache import load_arrays
from pixelwise.data.check import CheckReport, check_with_classes
from pixelwise.data.classes import IGNORE, ClassMap
from pixelwise.data.imageio import parse_colors
from pixelwise.data.layouts import DatasetIndex, Pair, find_pairs
from pixelwise.data.split import SPLIT_NAMES, load_split, make_split, save_split
from pixelwise.errors import PixelwiseError
from pixelwise.runs import RunFolder

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    train_images: torch.Tensor  # uint8 N×3×S×S
    train_masks: torch.Tensor  # uint8 N×S×S class indices
    val_images: torch.Tensor
    val_masks: torch.Tensor
    num_classes: int
    split: dict
    class_map: ClassMap | None = None
    class_weights: torch.Tensor | None = None  # float32 (num_classes,) cross-entropy weights, or None

    def __post_init__(self):
        if self.class_map is None:
            self.class_map = ClassMap.plain(self.num_classes)

    @property
    def size(self) -> int:
        """The square input side the arrays were loaded at."""
        return int(self.train_images.shape[-1])


def resolve_classes(
    config: Recipe, index: DatasetIndex, known: ClassMap | None = None
) -> tuple[CheckReport, ClassMap | None]:
    """Check the data set under the run's classes (:func:`~pixelwise.data.check.check_with_classes`).
    ``known``: the classes an earlier part of this run recorded (``--resume``)."""
    report, class_map = check_with_classes(
        index,
        labels=Path(config.labels) if config.labels else None,
        merge=config.merge,
        ignore=tuple(config.ignore_index),
        colors=parse_colors(config.colors) if config.colors else None,
        num_classes=config.num_classes,
        cache_dir=config.cache_path(),
        # --size 0: the check fills the cache at the two-class plan, right for most data sets
        size=config.size or planned_size(config.num_classes or 2),
        fit=config.fit,
    )
    if class_map is not None and config.num_classes and class_map.num_classes != config.num_classes and known is None:
        raise PixelwiseError(
            f"--num-classes {config.num_classes} disagrees with the {class_map.num_classes} classes "
            f"of the label file/--merge; leave --num-classes out"
        )
    return report, class_map


def usable_pairs(config: Recipe, known: ClassMap | None = None) -> tuple[DatasetIndex, list[Pair], ClassMap]:
    """Find and check the data set; refuse problems unless ``skip_bad``. Returns (index, good pairs, classes).
    ``known``: the classes an earlier part of this run recorded (``--resume``), kept as they were."""
    index = find_pairs(config.data_root(), layout=config.layout)
    report, class_map = resolve_classes(config, index, known)
    errors = report.errors
    whole = [problem for problem in errors if problem.pair_id is None and problem.path == index.root]
    if whole:  # about the data set as a whole: skipping pairs cannot help
        raise PixelwiseError(f"{index.root}: {whole[0].message}")
    if errors and not config.skip_bad:
        for problem in errors[:20]:
            log.error(f"  {problem.path}: {problem.message}")
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        raise PixelwiseError(
            f"{len(errors)} problem(s) in {index.root}{more}: fix them, see `pixelwise data check {index.root}`, "
            f"or pass --skip-bad to train without those files"
        )
    pairs = report.good_pairs
    if errors:
        log.warning(f"--skip-bad: skipping {len(index.pairs) - len(pairs)} of {len(index.pairs)} pairs:")
        for problem in errors:
            log.warning(f"  skipped {problem.path}: {problem.message}")
    if len(pairs) < 3:
        raise PixelwiseError(f"{index.root} has only {len(pairs)} usable image/mask pairs; training needs at least 3")
    if class_map is not None:
        return index, pairs, class_map
    if known is not None:
        return index, pairs, known
    if config.num_classes:  # declared (--num-classes)
        return index, pairs, ClassMap.plain(config.num_classes, tuple(config.ignore_index))
    values = [v for pair in pairs for v in report.mask_values.get(pair.id, ())]  # skipped pairs do not count
    return index, pairs, ClassMap.plain(max(2, max(values, default=1) + 1), tuple(config.ignore_index))


def median_frequency_weights(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Median frequency balancing (Eigen & Fergus 2015, used by SegNet): weight_c = median(freq) / freq_c, where
    freq_c = pixels of class c / pixels of the images that contain c. Classes absent from ``masks`` get 0.

    Args:
        masks: uint8 N×H×W class indices (:data:`~pixelwise.data.classes.IGNORE` pixels are not counted).
    Returns:
        float32 (num_classes,).
    """
    flat = masks.reshape(len(masks), -1).long()
    valid = flat != IGNORE
    pixels = np.zeros(num_classes)
    image_pixels = np.zeros(num_classes)
    for row, ok in zip(flat, valid):
        counts = torch.bincount(row[ok], minlength=num_classes)[:num_classes].double().numpy()
        pixels += counts
        image_pixels += (counts > 0) * float(ok.sum())
    present = pixels > 0
    freq = np.where(present, pixels / np.maximum(image_pixels, 1), 0.0)
    weights = (
        np.where(present, np.median(freq[present]) / np.where(present, freq, 1.0), 0.0)
        if present.any()
        else np.ones(num_classes)
    )
    return torch.tensor(weights, dtype=torch.float32)


def run_split(config: Recipe, run: RunFolder, pairs: list[Pair], given: dict | None) -> dict:
    """The run's split: read from ``split.json`` when it exists (resume, evaluate), else made and saved.
    ``config.split``: a saved split to copy (``--split``), checked against the data first.
    ``given``: the data set's own split (e.g. CamVid's train/val/test folders), used as it is unless K-fold."""
    path = run.split_path
    if path.exists():
        split = load_split(path)
        known = {p.id for p in pairs}
        missing = [i for part in ("train", "val") for i in split[part] if i not in known]
        if missing:
            raise PixelwiseError(
                f"{path} names {len(missing)} images not in the data set (e.g. {missing[0]}); "
                f"use the same --data as the run, or start a new run"
            )
        return split
    if config.split is not None:
        return copy_split(config, path, pairs)
    fold = config.fold
    if given is not None and not config.folds:
        known = {p.id for p in pairs}
        split = {part: [i for i in given.get(part, []) if i in known] for part in ("train", "val", "test")}
        save_split(
            path,
            split,
            seed=config.seed,
            data=str(config.data or "synthetic"),
            folds=None,
            fold=None,
            source="the data set's own train/val/test folders",
        )
        return split
    split = make_split(
        pairs,
        seed=config.seed,
        ratios=(1 - config.val_fraction - config.test_fraction, config.val_fraction, config.test_fraction),
        folds=config.folds,
        fold=fold,
    )
    save_split(path, split, seed=config.seed, data=str(config.data or "synthetic"), folds=config.folds, fold=fold)
    return split


def split_file(where: str | Path) -> Path:
    """The ``split.json`` that ``--split`` names: the file itself, or the one in a run folder.

    Raises:
        PixelwiseError: ``where`` is a K-fold ensemble's folder (one split per fold, none at the top).
    """
    where = Path(where)
    if not where.is_dir():
        return where
    run, first_fold = RunFolder(where), RunFolder(where).fold(0)
    if not run.split_path.exists() and first_fold.split_path.exists():
        raise PixelwiseError(
            f"--split {where} is a K-fold ensemble with one split per fold: pass one fold, "
            f"e.g. --split {first_fold.path}"
        )
    return run.split_path


def copy_split(config: Recipe, path: Path, pairs: list[Pair]) -> dict:
    """``config.split``'s parts, checked against ``pairs`` and saved as the run's own ``path``.

    Raises:
        PixelwiseError: the file is missing or malformed, a part is empty, or it names an image not in the data.
    """
    source = split_file(config.split)
    given = load_split(source)
    known = {p.id for p in pairs}
    used = [i for part in SPLIT_NAMES for i in given[part]]
    missing = [i for i in used if i not in known]
    if missing:
        raise PixelwiseError(
            f"{source} names {len(missing)} images not among --data {config.data or 'synthetic'}'s "
            f"usable pairs (e.g. {missing[0]}); pass the data set the split was made on"
        )
    for part in ("train", "val"):
        if not given[part]:
            raise PixelwiseError(f"{source} has no {part} images; a run needs both train and val, add some to it")
    if len(used) < len(known):  # load_split refused repeated ids, so every used id is one known pair
        log.warning(
            f"--split {source}: {len(known) - len(used)} of the data's {len(known)} pairs are in none of "
            f"its parts and are not used"
        )
    split = {part: list(given[part]) for part in SPLIT_NAMES}
    save_split(
        path,
        split,
        seed=config.seed,
        data=str(config.data or "synthetic"),
        folds=None,
        fold=None,
        source=f"copied from {source.resolve()}",
    )
    return split


def prepare_data(
    config: Recipe, run: RunFolder, known: ClassMap | None = None, known_size: int | None = None
) -> TrainData:
    """Check the data, make or read the split, load the train and validation arrays at the input size.

    The input size is the recipe's, or (``size`` 0) the one planned for the data's class count
    (:func:`planned_size`); ``known`` and ``known_size``: the classes and size this run recorded (``--resume``).
    """
    index, pairs, class_map = usable_pairs(config, known)
    num_classes = class_map.num_classes
    size = known_size or config.size
    if not size:
        size = planned_size(num_classes)
        log.info(f"input size {size}×{size}: the plan for {num_classes} classes (--size to choose another)")
    split = run_split(config, run, pairs, index.split)
    by_id = {p.id: p for p in pairs}
    cache = config.cache_path()
    reading = dict(
        colors=parse_colors(config.colors) if config.colors else None,
        void=tuple(class_map.ignored_values),
        fit=config.fit,
    )
    train_images, train_masks = load_arrays([by_id[i] for i in split["train"]], size, cache, **reading)
    val_images, val_masks = load_arrays([by_id[i] for i in split["val"]], size, cache, **reading)
    if not class_map.is_identity:  # mask values → trained classes (merged, void → IGNORE)
        train_masks, val_masks = class_map.apply(train_masks), class_map.apply(val_masks)
    weights = None
    if config.class_weights == "median-freq" or (
        config.class_weights == "auto" and not class_map.is_binary and MULTICLASS_WEIGHTS == "median-freq"
    ):
        weights = median_frequency_weights(train_masks, num_classes)
        log.info("class weights (median frequency): " + ", ".join(f"{w:.2f}" for w in weights.tolist()))
    if len(val_images) == 0:
        raise PixelwiseError(f"the validation split is empty ({len(pairs)} pairs); raise --val-fraction or add data")
    log.info(
        f"data: {index.root} ({index.layout}), {len(train_images)} train / {len(val_images)} val / "
        f"{len(split.get('test', []))} test, {num_classes} classes, {size}×{size} ({config.fit})"
    )
    return TrainData(train_images, train_masks, val_images, val_masks, num_classes, split, class_map, weights)
