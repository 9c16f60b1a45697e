"""A run's configuration, saved as ``config.json``: the :class:`Recipe` (what the user asked for, immutable)
and the :class:`RunRecord` (what training learned: classes, input size, normalisation, threshold, epochs),
together a :class:`RunConfig`, reused by ``--resume``, ``evaluate``, ``predict``, ``export`` and ``serve``.

:meth:`Recipe.validate` checks the whole recipe against each module's own list of choices
(``models.MODELS``, ``losses.LOSSES``, ``data.augment.PRESETS``, ``train.optim.OPTIMIZERS``,
``train.schedule.SCHEDULES``) *before* anything is written, so a refused option never leaves a half-made
run folder behind.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pixelwise.choices import Choice, choose, table
from pixelwise.data import MEAN, STD
from pixelwise.errors import PixelwiseError

log = logging.getLogger(__name__)

#: Cross-entropy class weightings (``--class-weights``).
CLASS_WEIGHTS = table(
    Choice("auto", "multi-class: the measured best (MULTICLASS_WEIGHTS), binary: none"),
    Choice("none", "every class counts alike"),
    Choice("median-freq", "median frequency balancing, as the SegNet paper"),
)

#: What ``--class-weights auto`` means for multi-class runs (measured: docs/experiments.md, issue 10).
MULTICLASS_WEIGHTS = "none"
#: How images meet the square network input (``data.imageio.fit_box``): resized to it, or letterboxed.
FITS = table(
    Choice("stretch", "resized to it (measured better)"),
    Choice("pad", "letterbox: longer side to --size, aspect kept, the bands count in no loss or metric"),
)

#: How images meet the network (``--scale``): ``auto`` plans from the data (:mod:`pixelwise.train.plan`), ``squash``
#: resizes every image to one ``size``×``size`` square (``fit``), a number resizes images by that factor (aspect
#: kept) and cuts them into tiles of side ``size`` (native resolution: 1.0; half: 0.5).
SCALE_MODES = ("auto", "squash")
#: Largest ``--scale`` factor: beyond it images are upsampled past any detail they hold.
MAX_SCALE = 4.0


def parse_scale(text: str) -> float | str:
    """``--scale`` text → ``"auto"`` (also ``"0"``), ``"squash"``, or a factor in (0, :data:`MAX_SCALE`].

    Raises:
        PixelwiseError: anything else, naming the option and the accepted values.
    """
    value = str(text).strip().lower()
    if value in SCALE_MODES:
        return value
    try:
        factor = float(value)
    except ValueError:
        factor = math.nan
    if factor == 0:
        return "auto"
    if not (math.isfinite(factor) and 0 < factor <= MAX_SCALE):
        raise PixelwiseError(
            f"--scale {text}: use auto (plan from the data), squash (one {PLANNED_SIZE_BINARY}-px square as "
            f"before), or a factor in (0, {MAX_SCALE:g}] such as 1.0 (native resolution, tiles) or 0.5"
        )
    return factor


#: Which epoch's weights a run keeps (``Recipe.keep``).
KEEP = table(
    Choice(
        "last", "the end of the annealed schedule (on held-out images never more than 0.003 worse, up to 0.02 better)"
    ),
    Choice("best", "the epoch of the best one-pass validation Dice"),
)

#: Test-time augmentation of ``predict``, ``evaluate``, ``pixelwise.load`` and the threshold chosen after
#: training: ``d4`` (8 views) measured better than none on the validation splits of all three development sets
#: (docs/experiments.md, "Test-time augmentation"); ``d4-zoom`` (the 8 views at 1 and 1.25× the input size)
#: measured better than ``d4`` on the same weights of all three (dc83719). ``serve`` leaves it off (latency)
#: unless ``--tta``.
PREDICT_TTA = "d4-zoom"

#: The input side ``--size 0`` (the default) plans from the data, by class count: two classes 128 px; more
#: classes 160 px, because their small classes (shoes, hair, bags; poles and signs in road scenes) need the
#: pixels (measured on ccp-people parsing, docs/experiments.md "Input size for multi-class").
PLANNED_SIZE_BINARY = 128
PLANNED_SIZE_MULTICLASS = 160


def planned_size(num_classes: int) -> int:
    """The network input side ``--size 0`` means for a data set of ``num_classes`` classes."""
    from pixelwise.data.classes import is_binary

    return PLANNED_SIZE_BINARY if is_binary(num_classes) else PLANNED_SIZE_MULTICLASS


#: Largest accepted network input side: beyond it one batch alone would need tens of GB.
MAX_SIZE = 2048


@dataclass(frozen=True)
class Recipe:
    """What the user asked for: every choice of a run, immutable, checked once by :meth:`validate`.

    Defaults are the best recipe measured so far (docs/experiments.md). What training learns from the data
    (classes, input size, normalisation, threshold, ...) is not here: it is the run's :class:`RunRecord`.
    """

    data: str | None = None  # None: the embedded synthetic set
    # further data sets trained with `data` (--data A --data B): each checked and split on its own (data.sets)
    more_data: tuple = ()
    # per data set, how many times an epoch each of its images is drawn (0.5: a random half); (): balanced, each
    # set as many images an epoch as the smallest set has (data.sets.set_weights); 1,1: every image once
    data_weights: tuple = ()
    layout: str | None = None  # force a dataset layout (else detected)
    model: str = "effnet_lite0_unet"  # ImageNet-pretrained encoder: measured best on both development sets
    loss: str = "bce+dice"
    augment: str = "zoom-pair"  # zoom-in crops + side-by-side pairs: robust to framing (docs/experiments.md)
    epochs: int = 40
    budget_seconds: float | None = None  # fit epochs + cosine decay to this much training time
    size: int = 0  # square network input, pixels; 0: planned from the data (planned_size)
    # how images meet the square: stretch (resize), or pad (letterbox; measured worse on the people photos,
    # docs/experiments.md)
    fit: str = "stretch"
    # how the network sees images: auto (planned from the data, train.plan), squash (one size×size square, fit),
    # or a factor such as "1.0": images resized by it (aspect kept) and cut into tiles of side size (parse_scale)
    scale: str = "auto"
    batch_size: int = 16
    optimizer: str = "adamw"  # adamw, or adam (the lesson's)
    schedule: str = "cosine"  # warm-up + cosine decay, or constant (the lesson's)
    lr: float = 3e-3
    encoder_lr_scale: float = 1.0  # the pretrained encoder learns at lr × this (1: like the rest of the network)
    weight_decay: float = 1e-4
    ema: bool = False  # validate and keep a moving average of the weights (train.ema)
    warmup_epochs: float = 1.0
    # stop after this many epochs without a better val Dice; None: run the whole schedule (validation noise must
    # not cut the cosine at its peak)
    patience: int | None = None
    # weights kept: the last epoch's (the annealed end of the schedule), or the best validation epoch's ("best";
    # the max of a noisy score: docs/experiments.md)
    keep: str = "last"
    seed: int = 0
    # a saved split (split.json, or a run folder holding one) used instead of one made from the seed: same test
    # images across seeds and recipes
    split: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    folds: int | None = None  # K-fold cross-validation: one model per fold (an ensemble)...
    fold: int | None = None  # ...or only fold i of the K folds, as a single model
    # CPU: bf16 autocast + channels_last; CUDA: bf16 autocast (where the hardware has no native bf16 the record
    # says fast=False)
    fast: bool = True
    skip_bad: bool = False
    cache_dir: str | None = None  # where decoded arrays are cached; None: the default cache
    init: str | None = None  # start from this run's weights (fine-tuning) instead of the model's own init
    # label file (class names, colours, void values); None: labels.txt/.json in the data folder, if any
    labels: str | None = None
    merge: str | None = None  # train merged classes: "upper=blouse,coat;lower=pants" or a file
    ignore_index: tuple = ()  # mask values that count in no loss and no metric (void)
    colors: str | None = None  # colour → mask value map for RGB masks: "0,0,0=0;255,0,0=1"
    # cross-entropy class weights: none, median-freq (SegNet paper), or auto: none for binary runs,
    # MULTICLASS_WEIGHTS for multi-class
    class_weights: str = "auto"
    synth_n: int = 400  # size of the embedded synthetic set
    num_classes: int | None = None  # declared with --num-classes; None: counted from the masks
    task: str = "auto"  # semantic (a class per pixel) or instances (every object its own mask; auto: instance
    # layouts imply instances), masks.instance_decode.TASKS

    @property
    def is_ensemble(self) -> bool:
        """True for a run holding one model per fold (``fold_<i>/`` sub-folders)."""
        return bool(self.folds) and self.fold is None

    def replace(self, **changes) -> "Recipe":
        """A copy with ``changes`` (the recipe itself never changes)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config.json") -> "Recipe":
        """Build from a dict (``config.json``'s ``recipe``), checking every known key's type; unknown keys
        (e.g. the record's, in a run folder written before the two were split) are ignored.

        Raises:
            PixelwiseError: ``values`` is not a dict, or a value has the wrong type (naming ``source``).
        """
        return cls(**_typed_fields(cls, values, source))

    def validate(self) -> "Recipe":
        """Check every choice and range; returns ``self``. Imports each module's list of choices lazily.

        Raises:
            PixelwiseError: one line naming the option and the fix.
        """
        from pixelwise.data.augment import PRESETS
        from pixelwise.data.layouts import LAYOUTS
        from pixelwise.losses import LOSSES
        from pixelwise.models import model_spec
        from pixelwise.train.optim import OPTIMIZERS
        from pixelwise.train.schedule import SCHEDULES

        spec = model_spec(self.model)
        choose("--loss", self.loss, LOSSES)
        choose("--augment", self.augment, PRESETS)
        choose("--optimizer", self.optimizer, OPTIMIZERS)
        choose("--schedule", self.schedule, SCHEDULES)
        choose("--keep", self.keep, KEEP)
        if self.layout is not None:
            choose("--layout", self.layout, LAYOUTS)
        _at_least("--epochs", self.epochs, 1)
        _at_least("--batch-size", self.batch_size, 2, why=" (BatchNorm needs two images per step)")
        if self.patience is not None:
            _at_least("--patience", self.patience, 1)
        if self.size and not 16 <= self.size <= MAX_SIZE:
            raise PixelwiseError(
                f"--size {self.size}: use an input side from 16 to {MAX_SIZE} pixels, e.g. 128 or "
                f"256, or 0 to let the data decide"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PixelwiseError(f"--lr {self.lr}: the learning rate must be a positive number, e.g. 3e-3")
        if not (math.isfinite(self.encoder_lr_scale) and self.encoder_lr_scale >= 0):
            raise PixelwiseError(f"--encoder-lr-scale {self.encoder_lr_scale}: must be 0 or more, e.g. 0.1")
        if self.encoder_lr_scale != 1.0 and not spec.pretrained:
            raise PixelwiseError(
                f"--encoder-lr-scale {self.encoder_lr_scale:g}: --model {self.model} has no ImageNet "
                f"encoder; leave it at 1 or choose a pretrained model (`pixelwise models`)"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise PixelwiseError(f"--weight-decay {self.weight_decay}: must be 0 or more, e.g. 1e-4")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise PixelwiseError(f"--warmup-epochs {self.warmup_epochs}: must be 0 or more")
        if self.budget_seconds is not None and not (math.isfinite(self.budget_seconds) and self.budget_seconds > 0):
            raise PixelwiseError(
                f"--budget {self.budget_seconds:g}s: give a positive duration such as 15m, or leave --budget out"
            )
        if self.split is not None and self.folds is not None:
            raise PixelwiseError(
                f"--split {self.split} with --folds {self.folds}: a saved split has one train/val "
                f"part, not K folds; leave one of them out"
            )
        if self.folds is not None:
            _at_least("--folds", self.folds, 2, why=" (one fold is a plain run: leave --folds out)")
        else:
            if not 0 < self.val_fraction < 1:
                raise PixelwiseError(
                    f"--val-fraction {self.val_fraction}: must be between 0 and 1 (exclusive), e.g. 0.1"
                )
            if not 0 <= self.test_fraction < 1 or self.val_fraction + self.test_fraction >= 1:
                raise PixelwiseError(
                    f"--test-fraction {self.test_fraction}: must be 0 or more and leave training "
                    f"data (val + test < 1), e.g. 0.2"
                )
        if self.fold is not None and (not self.folds or not 0 <= self.fold < self.folds):
            raise PixelwiseError(f"--fold {self.fold} needs --folds K with 0 <= fold < K")
        if self.num_classes is not None and not 2 <= self.num_classes <= 256:
            raise PixelwiseError(f"--num-classes {self.num_classes}: must be from 2 (background + one class) to 256")
        choose("--class-weights", self.class_weights, CLASS_WEIGHTS)
        choose("--fit", self.fit, FITS)
        from pixelwise.masks.instance_decode import TASKS

        choose("--task", self.task, TASKS)
        if self.task == "instances" and self.merge is not None:
            raise PixelwiseError(
                "--task instances with --merge: objects are regions of the classes as stored; merge the classes "
                "of the masks first, or leave --merge out"
            )
        scale = parse_scale(self.scale)
        if self.fit != "stretch" and not isinstance(scale, str):
            raise PixelwiseError(
                f"--fit {self.fit} with --scale {self.scale}: tiles keep the aspect ratio, fit only places images "
                f"in one square; leave --fit out or pass --scale squash"
            )
        for value in self.ignore_index:
            if not isinstance(value, int) or not 0 <= value <= 255:
                raise PixelwiseError(f"--ignore-index {value}: give a mask value from 0 to 255 (e.g. 255 or 11)")
        if self.colors is not None:
            from pixelwise.data.imageio import parse_colors

            parse_colors(self.colors)
        if self.labels is not None:
            from pixelwise.data.classes import require_label_file

            require_label_file(self.labels)
        if self.merge is not None:
            from pixelwise.data.classes import parse_merge

            parse_merge(self.merge)
        for path in self.data_paths if self.data is not None else ():
            if not Path(path).exists():
                raise PixelwiseError(f"data folder {path} does not exist: pass --data PATH to a data set folder")
        if self.more_data and self.data is None:
            raise PixelwiseError("more_data without data: name the first data set with --data too")
        seen: dict[Path, str] = {}
        for path in self.data_paths:
            resolved = Path(path).resolve()
            if resolved in seen:
                # the same images twice would only count twice: weights say that, without a second copy
                raise PixelwiseError(
                    f"--data {path}: the same data set as --data {seen[resolved]}; give each set once and weight "
                    f"sets with --data-weights"
                )
            seen[resolved] = path
        if self.data_weights:
            if len(self.data_weights) != len(self.data_paths) or self.data is None:
                raise PixelwiseError(
                    f"--data-weights {','.join(f'{w:g}' for w in self.data_weights)}: give one weight per --data "
                    f"({len(self.data_paths) if self.data else 0} data sets)"
                )
            if not all(isinstance(w, (int, float)) and math.isfinite(w) and w > 0 for w in self.data_weights):
                raise PixelwiseError("--data-weights: every weight must be a positive number, e.g. 1,2 or 1,0.5")
        return self

    @property
    def data_paths(self) -> tuple[str, ...]:
        """Every data set of the run: ``data`` then ``more_data`` (empty for the embedded synthetic set)."""
        return (self.data, *self.more_data) if self.data is not None else ()

    # -- where the data and the cache are -------------------------------------------------------------

    def cache_path(self) -> Path:
        """The folder for decoded arrays: ``cache_dir``, else the default cache."""
        from pixelwise.data.cache import default_cache_dir

        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def data_roots(self) -> list[Path]:
        """Every data set folder of the run (:meth:`data_root` then ``more_data``)."""
        return [self.data_root(), *(Path(path) for path in self.more_data)]

    def data_root(self) -> Path:
        """The dataset folder; the embedded synthetic set (made once, cached) when ``data`` is None."""
        if self.data:
            return Path(self.data)
        from pixelwise.data.synth import make_synth_dataset

        size = self.size or planned_size(2)  # the embedded set is binary
        root = self.cache_path() / f"synth-n{self.synth_n}-s{size}-seed0"
        if not (root / "images").is_dir() or len(list((root / "images").iterdir())) < self.synth_n:
            log.info(f"generating the embedded synthetic data set ({self.synth_n} images) in {root}")
            make_synth_dataset(root, n=self.synth_n, size=size, seed=0)
        return root


def _valid_decode(decode: dict) -> bool:
    """A recorded instance decode (``RunRecord.decode``): thresholds in range, known keys, known seed source."""
    from pixelwise.masks.instance_decode import SEED_SOURCES  # masks build on config: imported when checked

    numbers = {key: decode.get(key) for key in ("seed", "foreground", "min_score") if key in decode}
    return (
        {"seed", "foreground"} <= set(decode) <= {"seed", "foreground", "min_score", "seeds"}
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values())
        and 0.0 < decode["seed"] < 1.0
        and 0.0 < decode["foreground"] < 1.0
        and 0.0 <= decode.get("min_score", 0.0) < 1.0
        and decode.get("seeds", SEED_SOURCES[0]) in SEED_SOURCES
    )


@dataclass(frozen=True)
class RunRecord:
    """What a run learned from its data and its training: everything a trained model needs besides its
    weights and its :class:`Recipe`. Written by training (at its start, then again when it ends), read by
    ``evaluate``, ``predict``, ``export``, ``serve`` and the Python API.
    """

    num_classes: int  # classes, background included (2 = binary)
    classes: dict  # the ClassMap (names, colours, mask value → class), ClassMap.to_dict()
    size: int  # the square network input, pixels (the recipe's, or the planned one); tiled runs: the tile side
    scale: float | None = None  # None: images squashed to size×size (runs before tiles); a factor: images
    # resized by it (aspect kept), then cut into tiles of side size (predict.tiles)
    tiles: dict | None = None  # tiled runs: predict.tiles.TilePlan.to_dict() (tile, overlap, stride, blend)
    batch_size: int | None = None  # images (tiled: crops) per optimisation step; None: the recipe's
    plan: str | None = None  # why the run sees images as it does (the plan's one line), for people
    mean: tuple = MEAN  # input normalisation of the network (its encoder's pretraining)
    std: tuple = STD
    fast: bool = False  # trained with bf16 autocast + channels_last
    threshold: float = 0.5  # binary runs: foreground where P > threshold (chosen on validation)
    augment_params: dict | None = None  # the preset's exact operations (data.augment.BatchAugment.to_dict)
    class_weights: tuple | None = None  # cross-entropy class weights used, or None
    kept_epoch: int | None = None  # 1-based epoch whose weights model.safetensors holds
    best_epoch: int | None = None  # 1-based epoch of the best validation Dice
    best_val_dice: float | None = None
    train_seconds: float | None = None
    device: str | None = None
    processes: int | None = None
    weights_sha1: str | None = None  # SHA-1 of model.safetensors as training wrote it
    task: str = "semantic"  # what the run gives: semantic, or instances (classes: background, border, interiors)
    decode: dict | None = None  # instance runs: the watershed's {"seed", "foreground"} thresholds, the objects'
    # "min_score" and where "seeds" come from, chosen on validation (masks.instance_decode; older runs lack the last
    # two: 0 and "regions"); None: the defaults
    refine_edges: bool = False  # squashed runs: the mask's edges refined at the image's own resolution by a guided
    # filter (masks.cutout.refined_mask / refined_classes), chosen on validation; False: the probabilities as is

    def replace(self, **changes) -> "RunRecord":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config.json") -> "RunRecord":
        """Build from ``config.json``'s ``record``, type-checked.

        Raises:
            PixelwiseError: a missing or mistyped field, naming ``source``.
        """
        known = _typed_fields(cls, values, source)
        for name in ("num_classes", "classes", "size"):
            if known.get(name) is None:
                raise PixelwiseError(f"{source} has no {name}: training did not get past data loading; start it again")
        return cls(**known)

    def class_map(self, source: str = "config.json"):
        """The run's :class:`~pixelwise.data.classes.ClassMap`: the one owner of its classes."""
        from pixelwise.data.classes import ClassMap

        return ClassMap.from_dict(self.classes, source)

    @property
    def needs_probabilities(self) -> bool:
        """True when a mask is made from the probabilities at the image's size, not the labels alone: instance
        runs (objects are decoded from them) and ``refine_edges`` runs (the guided filter refines them)."""
        return self.task == "instances" or self.refine_edges

    @property
    def is_tiled(self) -> bool:
        """True when inference resizes images by :attr:`scale` and cuts tiles; False: one squashed square."""
        return self.scale is not None

    def tile_plan(self, source: str = "config.json"):
        """The :class:`~pixelwise.predict.tiles.TilePlan` of a tiled run (None for squashed runs).

        Raises:
            PixelwiseError: a tiled run whose ``tiles`` is missing or malformed, naming ``source``.
        """
        if self.scale is None:
            return None
        from pixelwise.predict.tiles import TilePlan

        if not isinstance(self.tiles, dict) or "tile" not in self.tiles:
            raise PixelwiseError(f"{source}: scale is set but 'tiles' has no tile side; restore the file")
        try:
            return TilePlan.from_dict(self.tiles)
        except (PixelwiseError, TypeError) as error:
            raise PixelwiseError(f"{source}: 'tiles' is not a tile plan ({error}); restore the file") from None

    def check(self, source: str = "config.json") -> "RunRecord":
        """Check the values a model is built from before it is built.

        Raises:
            PixelwiseError: naming ``source`` and the field.
        """
        if not 2 <= self.num_classes <= 256:
            raise PixelwiseError(f"{source}: num_classes {self.num_classes} is outside 2..256; restore the file")
        if not 0.0 <= self.threshold <= 1.0:
            raise PixelwiseError(f"{source}: threshold {self.threshold} is outside 0..1; restore the file")
        if self.decode is not None and not _valid_decode(self.decode):
            raise PixelwiseError(
                f"{source}: decode must be {{'seed': s, 'foreground': f, 'min_score': m, 'seeds': 'regions' or "
                "'distance'}} with s, f in (0, 1) and m in [0, 1); restore the file"
            )
        if self.refine_edges and self.is_tiled:
            raise PixelwiseError(f"{source}: refine_edges is for squashed runs only; restore the file")
        if not 16 <= self.size <= MAX_SIZE:
            raise PixelwiseError(f"{source}: size {self.size} is outside 16..{MAX_SIZE}; restore the file")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise PixelwiseError(f"{source}: {name} must be three numbers; restore the file")
        if not all(v > 0 for v in self.std):
            raise PixelwiseError(f"{source}: std must be positive; restore the file")
        if self.scale is not None:
            if not (math.isfinite(self.scale) and 0 < self.scale <= MAX_SCALE):
                raise PixelwiseError(f"{source}: scale {self.scale} is outside (0, {MAX_SCALE:g}]; restore the file")
            if self.tile_plan(source).tile != self.size:
                raise PixelwiseError(f"{source}: tiles.tile differs from size {self.size}; restore the file")
        if self.class_map(source).num_classes != self.num_classes:
            raise PixelwiseError(
                f"{source}: 'classes' names {self.class_map(source).num_classes} classes but "
                f"num_classes is {self.num_classes}; restore the file"
            )
        return self


#: Keys of the record in a ``config.json`` written before recipe and record were split (one flat object with
#: an untyped ``extra``); :meth:`RunConfig.from_dict` still reads such run folders.
_FLAT_RECORD_KEYS = ("num_classes", "classes", "size", "mean", "std", "fast", "threshold")


@dataclass(frozen=True)
class RunConfig:
    """A run's ``config.json``: the :class:`Recipe` it was asked for and, once training has seen the data, the
    :class:`RunRecord` of what it learned (None before)."""

    recipe: Recipe
    record: RunRecord | None = None

    @property
    def is_ensemble(self) -> bool:
        return self.recipe.is_ensemble

    def trained(self, source: str = "config.json") -> "RunConfig":
        """``self``, after checking that training got far enough for a model to be built from it.

        Raises:
            PixelwiseError: no record, or a record that fails :meth:`RunRecord.check`, naming ``source``.
        """
        if self.record is None:
            raise PixelwiseError(
                f"{source} has no record of training: training did not get past data loading; start it again"
            )
        if self.recipe.fit not in FITS:
            raise PixelwiseError(f"{source}: fit {self.recipe.fit!r} is not stretch or pad; restore the file")
        self.record.check(source)
        return self

    def class_map(self, source: str = "config.json"):
        """The run's :class:`~pixelwise.data.classes.ClassMap` (see :meth:`RunRecord.class_map`)."""
        if self.record is None:
            raise PixelwiseError(f"{source} has no record of training: its classes are not known yet")
        return self.record.class_map(source)

    def to_dict(self) -> dict:
        return {"recipe": self.recipe.to_dict(), "record": None if self.record is None else self.record.to_dict()}

    @classmethod
    def from_dict(cls, values: dict, source: str = "config.json") -> "RunConfig":
        """Read ``config.json``: ``{"recipe": ..., "record": ...}``, or the flat object of run folders written
        before the split (its learned values and ``extra`` become the record).

        Raises:
            PixelwiseError: not an object, or a mistyped value, naming ``source``.
        """
        if not isinstance(values, dict):
            raise PixelwiseError(
                f"{source} holds a {type(values).__name__}, not a settings object: restore it or re-run training"
            )
        if "recipe" in values:
            record = values.get("record")
            if record is not None and not isinstance(record, dict):
                raise PixelwiseError(
                    f"{source}: 'record' is {_short_repr(record)}, expected an object; "
                    f"restore the file or re-run training"
                )
            return cls(
                Recipe.from_dict(values["recipe"], source),
                RunRecord.from_dict(record, source) if record is not None else None,
            )
        recipe = Recipe.from_dict(
            {k: v for k, v in values.items() if k not in _FLAT_RECORD_KEYS or k == "size"}, source
        )
        if values.get("num_classes") is None:  # the flat file of a run that never got past data loading
            return cls(recipe.replace(num_classes=None))
        extra = values.get("extra") if isinstance(values.get("extra"), dict) else {}
        flat = _typed_fields(
            RunRecord,
            {
                **{k: v for k, v in extra.items() if k in _RECORD_FIELDS},
                **{k: values[k] for k in _FLAT_RECORD_KEYS if values.get(k) is not None},
            },
            source,
        )
        if flat.get("classes") is None:  # the plain classes such runs meant: values 0..K-1, the recipe's void
            from pixelwise.data.classes import ClassMap

            count = flat["num_classes"]
            if not 2 <= count <= 256:
                raise PixelwiseError(f"{source}: num_classes {count} is outside 2..256; restore the file")
            void = tuple(v for v in recipe.ignore_index if isinstance(v, int) and 0 <= v <= 255)
            flat["classes"] = ClassMap.plain(count, void).to_dict()
        return cls(recipe.replace(num_classes=None), RunRecord.from_dict(flat, source))


_RECORD_FIELDS = frozenset(f.name for f in fields(RunRecord))


def _typed_fields(cls, values: dict, source: str) -> dict:
    """The known fields of dataclass ``cls`` in ``values``, each checked against its type hint."""
    if not isinstance(values, dict):
        raise PixelwiseError(
            f"{source} holds a {type(values).__name__}, not a settings object: restore it or re-run training"
        )
    hints = typing.get_type_hints(cls)
    return {f.name: _checked(f.name, values[f.name], hints[f.name], source) for f in fields(cls) if f.name in values}


def _at_least(option: str, value: int, low: int, why: str = "") -> None:
    if value < low:
        raise PixelwiseError(f"{option} {value}: must be at least {low}{why}")


def _checked(name: str, value, hint, source: str):
    """``value`` if it fits the field's type hint (ints accepted for floats, lists for tuples), else an error."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return value
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if option is tuple and isinstance(value, (list, tuple)):
            return tuple(value)
        if option is dict and isinstance(value, dict):
            return value
    wanted = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    raise PixelwiseError(
        f"{source}: '{name}' is {_short_repr(value)}, expected {wanted}; restore the file or re-run training"
    )


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_duration(text: str) -> float:
    """'15m', '90s', '1h', '1h30m' or plain seconds → seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise PixelwiseError(f"cannot read duration {text!r}: write it like 15m, 90s or 1h30m")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(n) * scale[u] for n, u in parts)
