"""Training data: find the pairs, check them, split them (or reuse the saved split), plan how the network sees
the images (:mod:`pixelwise.train.plan`: one squashed square, or tiles at a scale), load arrays.

After this step every image and mask is a uint8 tensor in memory: squashed runs at the input size (batches are
sliced from those tensors); tiled runs at their scale, padded to one common size with void masks (batches are
crops cut from them, :mod:`pixelwise.train.patches`). The training loop never decodes a file.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixelwise.config import MULTICLASS_WEIGHTS, Recipe, parse_scale, planned_size
from pixelwise.data.cache import load_arrays, load_scaled_arrays
from pixelwise.data.check import CheckReport, check_dataset, check_with_classes
from pixelwise.data.classes import IGNORE, ClassMap, instance_target_classes, is_instance_target
from pixelwise.data.imageio import parse_colors
from pixelwise.data.layouts import DatasetIndex, Pair
from pixelwise.data.objects import ObjectStats, measure_pairs
from pixelwise.data.sets import find_sets, set_index, split_sets
from pixelwise.data.split import SPLIT_NAMES, load_split, save_split
from pixelwise.errors import PixelwiseError
from pixelwise.predict.tiles import PAD_VALUE
from pixelwise.runs import RunFolder
from pixelwise.train.patches import pad_stack
from pixelwise.train.plan import InputPlan, plan_input

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    """The loaded training and validation arrays.

    Squashed runs: images uint8 N×3×S×S, masks uint8 N×S×S class indices. Tiled runs (``plan.scale`` set):
    images at the plan's scale padded to one H×W (grey 128), masks padded with IGNORE (void), each image's own
    size in ``train_sizes``/``val_sizes`` (int64 N×2); training steps take crops of side ``plan.size``.
    """

    train_images: torch.Tensor
    train_masks: torch.Tensor
    val_images: torch.Tensor
    val_masks: torch.Tensor
    num_classes: int
    split: dict
    class_map: ClassMap | None = None
    class_weights: torch.Tensor | None = None  # float32 (num_classes,) cross-entropy weights, or None
    plan: InputPlan | None = None  # how the network sees images; None: squashed at the arrays' size
    train_sizes: torch.Tensor | None = None  # tiled runs: int64 N×2 (h, w) of each scaled training image
    val_sizes: torch.Tensor | None = None
    #: A run on several data sets (:mod:`pixelwise.data.sets`): their names, and each image's set (int64 (N,)
    #: positions in ``set_names``); empty and None for one set.
    set_names: tuple[str, ...] = ()
    train_sets: torch.Tensor | None = None
    val_sets: torch.Tensor | None = None
    #: The validation pairs, in the order of ``val_images`` (choices made on the images at their own size).
    val_pairs: tuple[Pair, ...] = ()

    def __post_init__(self):
        if self.class_map is None:
            self.class_map = ClassMap.plain(self.num_classes)

    @property
    def is_tiled(self) -> bool:
        return self.plan is not None and self.plan.is_tiled

    @property
    def size(self) -> int:
        """The square input side the arrays were loaded at (tiled runs: the tile side)."""
        return self.plan.size if self.is_tiled else int(self.train_images.shape[-1])


def task_index(config: Recipe, index: DatasetIndex) -> DatasetIndex:
    """The index the run's ``--task`` trains: instance layouts as they are (``auto``, ``instances``); class masks
    as they are (``auto``, ``semantic``) or, for ``instances``, each connected region of a class one object
    (pairs read as ``regions``; classes background, border, one interior per class of the masks).

    Raises:
        PixelwiseError: ``--task semantic`` on instance data; void values that collide with the target classes.
    """
    instance_data = bool(index.pairs) and index.pairs[0].instances is not None
    if config.task == "semantic" and instance_data:
        raise PixelwiseError(
            f"--task semantic: {index.root} is instance data ({index.layout}, one mask per object); "
            "train it with --task instances (or auto)"
        )
    if config.task != "instances" or instance_data:
        return index
    _, semantic = resolve_classes(config, index)
    if semantic is None:  # plain classes: counted from the masks
        _, pairs, semantic = usable_pairs(config.replace(task="semantic"))
    targets = instance_target_classes(semantic.names[1:], semantic.colors[1:])
    clashing = [v for v in semantic.ignored_values if v < targets.num_classes and v != IGNORE]
    if clashing:
        raise PixelwiseError(
            f"--task instances: void mask value {clashing[0]} is also target class {clashing[0]} of "
            f"{index.root}; renumber the void value to 255"
        )
    pairs = [dataclasses.replace(pair, instances="regions") for pair in index.pairs]
    log.info(f"--task instances: each connected region of a class of {index.root} is one object")
    return dataclasses.replace(index, pairs=pairs, classes=targets.with_ignored(semantic.ignored_values))


def resolve_classes(
    config: Recipe, index: DatasetIndex, known: ClassMap | None = None
) -> tuple[CheckReport, ClassMap | None]:
    """Check the data set under the run's classes (:func:`~pixelwise.data.check.check_with_classes`).
    ``known``: the classes an earlier part of this run recorded (``--resume``)."""
    if index.pairs and index.pairs[0].instances:  # instance data: the classes are the instance run's targets
        report = check_dataset(
            index,
            colors=parse_colors(config.colors) if config.colors else None,
            cache_dir=config.cache_path(),
            size=config.size or planned_size(index.classes.num_classes),
            fit=config.fit,
            class_map=index.classes,
            ignore=tuple(config.ignore_index),
        )
        return report, index.classes
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
    index = task_index(config, find_sets(config.data_roots(), layout=config.layout))
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
            data=_data_name(config),
            folds=None,
            fold=None,
            source="the data set's own train/val/test folders",
        )
        return split
    split = split_sets(
        pairs,
        seed=config.seed,
        ratios=(1 - config.val_fraction - config.test_fraction, config.val_fraction, config.test_fraction),
        folds=config.folds,
        fold=fold,
    )
    save_split(path, split, seed=config.seed, data=_data_name(config), folds=config.folds, fold=fold)
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
            f"{source} names {len(missing)} images not among --data {_data_name(config)}'s "
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
        data=_data_name(config),
        folds=None,
        fold=None,
        source=f"copied from {source.resolve()}",
    )
    return split


def _data_name(config: Recipe) -> str:
    """The run's data as split.json and messages name it: the path(s), or ``synthetic``."""
    return " + ".join(config.data_paths) or "synthetic"


def plan_for(
    config: Recipe, train_pairs: list[Pair], images: int, class_map: ClassMap, colors: dict | None
) -> InputPlan:
    """The run's :class:`~pixelwise.train.plan.InputPlan`; masks are measured unless the recipe forces squash."""
    forced = parse_scale(config.scale)
    squash = forced == "squash" or (forced == "auto" and config.fit != "stretch")
    stats = ObjectStats(0, 0.0, 0.0, 1.0) if squash else measure_pairs(train_pairs, class_map, colors)
    return plan_input(config, stats, class_map.num_classes, images, instances=is_instance_target(class_map))


def prepare_data(
    config: Recipe,
    run: RunFolder,
    known: ClassMap | None = None,
    known_size: int | None = None,
    known_plan: InputPlan | None = None,
) -> TrainData:
    """Check the data, make or read the split, plan the input, load the train and validation arrays.

    The plan (:func:`~pixelwise.train.plan.plan_input`, logged with its reason) decides squash or tiles, the
    scale, the input or tile side (the recipe's ``size``, or planned) and the batch. ``known``, ``known_size``,
    ``known_plan``: the classes, size and plan this run recorded (``--resume``).
    """
    index, pairs, class_map = usable_pairs(config, known)
    num_classes = class_map.num_classes
    split = run_split(config, run, pairs, index.split)
    by_id = {p.id: p for p in pairs}
    colors = parse_colors(config.colors) if config.colors else None
    train_pairs, val_pairs = [by_id[i] for i in split["train"]], [by_id[i] for i in split["val"]]
    if known_plan is not None:
        plan = known_plan
    elif known_size:  # a run recorded before plans: squashed at its size
        plan = InputPlan(None, known_size, config.batch_size, "")
    else:
        plan = plan_for(config, train_pairs, len(train_pairs) + len(val_pairs), class_map, colors)
        log.info(plan.reason)
    size = plan.size
    if not plan.is_tiled and not config.size and not known_size:
        log.info(f"input size {size}×{size}: the plan for {num_classes} classes (--size to choose another)")
    cache = config.cache_path()
    void = tuple(class_map.ignored_values)
    sizes: dict[str, torch.Tensor | None] = {"train": None, "val": None}
    if plan.is_tiled:
        loaded = {}
        for part, part_pairs in (("train", train_pairs), ("val", val_pairs)):
            arrays = load_scaled_arrays(part_pairs, plan.scale, cache, colors=colors, void=void)
            if not class_map.is_identity:  # mask values → trained classes (merged, void → IGNORE)
                for packed in arrays:
                    packed[3] = class_map.apply(packed[3])
            loaded[part] = pad_stack(arrays, size, PAD_VALUE) if arrays else (torch.zeros(0),) * 3
            del arrays
        (train_images, train_masks, sizes["train"]), (val_images, val_masks, sizes["val"]) = (
            loaded["train"],
            loaded["val"],
        )
    else:
        reading = dict(colors=colors, void=void, fit=config.fit)
        train_images, train_masks = load_arrays(train_pairs, size, cache, **reading)
        val_images, val_masks = load_arrays(val_pairs, size, cache, **reading)
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
    seen = (
        f"scale {plan.scale:.3g} padded to {train_images.shape[-2]}×{train_images.shape[-1]}, tiles of {size} px"
        if plan.is_tiled
        else f"{size}×{size} ({config.fit})"
    )
    log.info(
        f"data: {index.root} ({index.layout}), {len(train_images)} train / {len(val_images)} val / "
        f"{len(split.get('test', []))} test, {num_classes} classes, {seen}"
    )
    names = tuple(sorted({pair.source for pair in pairs if pair.source}))
    if names:
        counts = {name: sum(pair.source == name for pair in train_pairs) for name in names}
        log.info("training images per data set: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    return TrainData(
        train_images,
        train_masks,
        val_images,
        val_masks,
        num_classes,
        split,
        class_map,
        weights,
        plan,
        sizes["train"],
        sizes["val"],
        names,
        set_index(train_pairs, names),
        set_index(val_pairs, names),
        tuple(val_pairs),
    )
