"""The dataset checker: decode every file, collect statistics, and name every bad file.

:func:`check_dataset` turns a :class:`~pixelwise.data.layouts.DatasetIndex` into a :class:`CheckReport`;
:func:`format_report` lays it out (rich) for ``pixelwise data check PATH``, which prints it (:mod:`pixelwise.cli`).

What a check decodes is remembered in the cache folder by file content (see
:class:`pixelwise.data.cache.PairCache`), so re-checking an unchanged dataset does not decode it again, and a
check with ``size`` also fills the array cache that training reads.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pixelwise.data.cache import PairCache, default_workers, pack_resized, run_parallel
from pixelwise.data.classes import ClassMap, class_map_for, find_label_file
from pixelwise.data.imageio import decode_mask, fit_mask_to_image, read_image
from pixelwise.data.layouts import DatasetIndex, Pair, Problem
from pixelwise.errors import PixelwiseError

if TYPE_CHECKING:
    from rich.console import Group

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """Statistics and problems of a dataset after decoding every file.

    Per-pair statistics cover the pairs whose image and mask could be decoded. ``num_classes`` is the largest
    class index seen + 1 (at least 2: binary). ``bad_ids`` are the pairs with an error-severity problem;
    ``good_pairs`` the pairs that can be trained on.
    """

    root: Path
    layout: str
    pairs: list[Pair]
    problems: list[Problem]
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # id → (height, width)
    mask_values: dict[str, tuple[int, ...]] = field(default_factory=dict)  # id → class values present
    foreground: dict[str, float] = field(default_factory=dict)  # id → fraction of pixels with class > 0
    class_pixels: list[int] = field(default_factory=list)  # class → pixel count over all masks
    class_images: list[int] = field(default_factory=list)  # class → number of masks containing it
    resized_masks: int = 0  # masks resized (nearest neighbour) to their image's size
    num_classes: int = 2
    class_names: tuple[str, ...] = ()  # from the class map, when there is one
    objects: dict[str, dict] = field(default_factory=dict)  # instance data: id → count, areas, touching, overlaps

    @property
    def task(self) -> str:
        """The task the data implies: ``instances`` for instance data read in place, else ``semantic``."""
        return "instances" if any(p.instances for p in self.pairs) else "semantic"

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def bad_ids(self) -> set[str]:
        """Ids of listed pairs with at least one error (they are skipped by ``train --skip-bad``)."""
        known = {p.id for p in self.pairs}
        return {p.pair_id for p in self.errors if p.pair_id in known} | {p.id for p in self.pairs if p.mask is None}

    @property
    def good_pairs(self) -> list[Pair]:
        bad = self.bad_ids
        return [p for p in self.pairs if p.id not in bad]

    @property
    def clean(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    @property
    def label_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p.label for p in self.pairs if p.label is not None).items()))

    def summary(self) -> dict:
        """JSON-ready statistics (no per-file lists except the problems)."""
        sizes = np.array(list(self.image_sizes.values()) or [(0, 0)])
        fg = np.array(list(self.foreground.values()) or [0.0])
        return {
            "root": str(self.root),
            "layout": self.layout,
            "pairs": len(self.pairs),
            "usable_pairs": len(self.good_pairs),
            "image_height": _min_median_max(sizes[:, 0]),
            "image_width": _min_median_max(sizes[:, 1]),
            "image_sizes": {f"{w}x{h}": n for (h, w), n in Counter(self.image_sizes.values()).most_common(10)},
            "mask_value_sets": {
                "{" + ",".join(map(str, values)) + "}": n
                for values, n in Counter(self.mask_values.values()).most_common(10)
            },
            "foreground_fraction": _min_median_max(fg),
            "empty_masks": sum(1 for v in self.foreground.values() if v == 0.0),
            "num_classes": self.num_classes,
            "class_pixels": list(self.class_pixels),
            "class_images": list(self.class_images),
            "labels": self.label_counts,
            "resized_masks": self.resized_masks,
            "task": self.task,
            **({"objects": _object_summary(self.objects)} if self.objects else {}),
            "problems": [
                {"severity": p.severity, "path": str(p.path), "message": p.message, "pair": p.pair_id}
                for p in self.problems
            ],
        }


def _object_summary(objects: dict[str, dict]) -> dict:
    """Objects per image, object sizes (pixels), images with touching objects and with overlapping masks."""
    counts = np.array([o["count"] for o in objects.values()] or [0])
    areas = np.array([a for o in objects.values() for a in o["areas"]] or [0])
    return {
        "total": int(counts.sum()),
        "per_image": _min_median_max(counts),
        "area_px": _min_median_max(areas),
        "touching_pairs": int(sum(o["touching"] for o in objects.values())),
        "images_with_touching": sum(1 for o in objects.values() if o["touching"]),
        "overlapping_pairs": int(sum(o["overlaps"] for o in objects.values())),
        "images_with_overlaps": sum(1 for o in objects.values() if o["overlaps"]),
    }


def _min_median_max(values: np.ndarray) -> dict[str, float]:
    return {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def check_dataset(
    index: DatasetIndex,
    progress: bool = True,
    colors: dict[tuple[int, int, int], int] | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    size: int | None = None,
    fit: str = "stretch",
    workers: int | None = None,
    num_classes: int | None = None,
    class_map: ClassMap | None = None,
    ignore: tuple[int, ...] = (),
) -> CheckReport:
    """Decode every image and mask of ``index`` and report statistics and problems.

    Args:
        index: from :func:`~pixelwise.data.layouts.find_pairs`; its listing problems are included.
        progress: a progress bar while decoding (:func:`pixelwise.reporting.progress`: when the CLI shows bars).
        colors: colour → class map for RGB masks.
        cache_dir: cache folder (None → default); check results are remembered there by file content.
        use_cache: False decodes everything and writes nothing to the cache.
        size: when given, also store the pairs resized to ``size`` (placed by ``fit``: stretched or
            letterboxed) in the array cache (training then starts
            without decoding again).
        workers: decoding threads.
        num_classes: declared number of classes (background included); masks with a class index at or above
            it are errors. None infers it (largest index + 1, at least 2).
        class_map: the run's classes (label file, ``--merge``, ignored values): statistics are per class, and a
            mask value that is neither a class nor ignored is an error naming the file and the value.
        ignore: mask values that are void (``--ignore-index``) when there is no ``class_map``.

    Returns:
        A :class:`CheckReport`.
    """
    void = tuple(sorted(set(ignore) | set(class_map.ignored_values if class_map else ())))
    cache = PairCache(cache_dir, colors, void, fit) if use_cache else None
    records = run_parallel(
        lambda pair: _examine(pair, colors, cache, size, void),
        index.pairs,
        workers or default_workers(),
        progress and bool(index.pairs),
        f"checking {len(index.pairs)} pairs",
    )
    if cache is not None:
        cache.save()
    if num_classes is not None and num_classes < 2:
        raise PixelwiseError(f"--num-classes {num_classes}: need at least 2 (background + one class)")
    return _build_report(index, records, class_map.num_classes if class_map else num_classes, class_map, ignore)


def check_with_classes(
    index: DatasetIndex,
    labels: Path | None = None,
    merge: str | None = None,
    ignore: tuple[int, ...] = (),
    colors: dict[tuple[int, int, int], int] | None = None,
    num_classes: int | None = None,
    cache_dir: Path | None = None,
    size: int | None = None,
    fit: str = "stretch",
    use_cache: bool = True,
) -> tuple[CheckReport, ClassMap | None]:
    """Check a data set under its classes: ``labels`` (a label file; default: ``labels.txt``/``labels.json`` in
    the data folder, else the layout's own classes), ``merge`` and ``ignore`` (``--ignore-index``).

    A label file found in the folder (not given) that names more than two classes is set aside, with a note,
    when every mask is binary: a folder may hold binary masks beside the label file of other masks.

    Returns:
        ``(report, class map)``; the class map is None for plain classes (counted from the masks).
    """
    found = None if labels else find_label_file(index.root)
    class_map, notes = class_map_for(labels or found, merge, tuple(ignore))
    if class_map is None and index.classes is not None:
        class_map = index.classes.with_ignored(ignore)

    def check(classes: ClassMap | None) -> CheckReport:
        return check_dataset(
            index,
            colors=colors,
            cache_dir=cache_dir,
            use_cache=use_cache,
            size=size,
            fit=fit,
            num_classes=None if classes else num_classes,
            class_map=classes,
            ignore=tuple(ignore),
        )

    report = check(class_map)
    if (
        found
        and not merge
        and class_map is not None
        and not class_map.is_binary
        and report.mask_values
        and all(set(values) <= {0, 1} for values in report.mask_values.values())
    ):
        log.warning(
            f"{found} names {class_map.num_classes} classes but the masks are binary: not used "
            f"(pass --labels {found} to use it anyway)"
        )
        class_map = None
        report = check(None)
    elif class_map is not None and (labels or found):
        merged = f", merged into {class_map.num_classes} classes" if merge else ""
        log.info(f"classes: {labels or found}{merged}: " + ", ".join(class_map.names))
    for note in notes:
        log.info(note)
    return report, class_map


def _examine(pair: Pair, colors, cache: PairCache | None, size: int | None, void: tuple[int, ...] = ()) -> dict:
    """Decode one pair (or reuse its cached check record) and return the record (JSON-ready dict)."""
    if pair.instances:
        return _examine_instances(pair, colors, cache, size, void)
    content = None
    if cache is not None:
        try:
            content = cache.content(pair)
        except PixelwiseError:
            content = None  # file vanished since listing: decoding below reports it
    if content is not None:
        record = cache.read_record(content)
        buffer = np.empty((4, size, size), dtype=np.uint8) if size else None
        if record is not None and (size is None or not record["usable"] or cache.read_array(content, buffer)):
            return record
    record: dict = {
        "image": None,
        "mask": None,
        "image_error": None,
        "mask_error": None,
        "notes": [],
        "resized": False,
        "class_pixels": None,
        "usable": False,
    }
    image = mask = None
    try:
        image = read_image(pair.image)
        record["image"] = list(image.shape[:2])
    except PixelwiseError as err:
        record["image_error"] = _without_path(err, pair.image)
    if pair.mask is not None:
        try:
            mask, notes = decode_mask(pair.mask, colors, void)
            record["mask"] = list(mask.shape)
            record["notes"] = notes
        except PixelwiseError as err:
            record["mask_error"] = _without_path(err, pair.mask)
    if image is not None and mask is not None:
        try:
            mask, note = fit_mask_to_image(mask, image.shape[:2], pair.mask, pair.image)
            record["resized"] = note is not None
            record["class_pixels"] = np.bincount(mask.ravel()).tolist()
            record["usable"] = True
        except PixelwiseError as err:
            record["mask_error"] = _without_path(err, pair.mask)
    if content is not None:
        if size and record["usable"]:
            cache.write_array(content, pack_resized(image, mask, size, cache.fit))
        cache.write_record(content, record)
    return record


def _examine_instances(pair: Pair, colors, cache: PairCache | None, size: int | None, void: tuple[int, ...]) -> dict:
    """:func:`_examine` for instance data read in place: the record also holds ``objects`` (count, areas, touching
    pairs, overlapping masks); ``class_pixels`` counts the encoded target classes at the image's size."""
    from pixelwise.data.instances_io import read_pair_instances
    from pixelwise.masks.instance_decode import encode_targets, object_areas, pack_instances, touching_pairs

    content = None
    if cache is not None:
        try:
            content = cache.content(pair)
        except PixelwiseError:
            content = None
    if content is not None:
        record = cache.read_record(content)
        buffer = np.empty((4, size, size), dtype=np.uint8) if size else None
        if record is not None and (size is None or not record["usable"] or cache.read_array(content, buffer)):
            return record
    record = dict(image=None, mask=None, image_error=None, mask_error=None, notes=[], resized=False)
    record.update(class_pixels=None, usable=False, objects=None)
    try:
        sample = read_pair_instances(pair, colors, void)
    except PixelwiseError as err:
        text = str(err)
        record["image_error" if text.startswith(str(pair.image)) else "mask_error"] = _without_path(err, pair.mask)
        return record
    record["image"] = record["mask"] = list(sample.labels.shape)
    record["notes"] = list(sample.notes) + [
        f"{a} and {b} overlap by {pixels} pixels; the pixels go to the smaller object"
        for a, b, pixels in sample.overlaps
    ]
    targets = encode_targets(sample.labels, sample.classes, sample.void)
    record["class_pixels"] = np.bincount(targets.ravel()).tolist()
    areas = object_areas(sample.labels)
    record["objects"] = {
        "count": int(areas.size),
        "areas": areas.tolist(),
        "touching": touching_pairs(sample.labels),
        "overlaps": len(sample.overlaps),
    }
    record["usable"] = True
    if content is not None:
        if size:
            cache.write_array(content, pack_instances(sample.image, sample.labels, sample.classes, sample.void, size))
        cache.write_record(content, record)
    return record


def _without_path(err: PixelwiseError, path: Path) -> str:
    """The error's message without its leading ``path: `` (the report shows the path separately)."""
    text = str(err)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _build_report(
    index: DatasetIndex,
    records: list[dict],
    declared: int | None = None,
    class_map: ClassMap | None = None,
    ignore: tuple[int, ...] = (),
) -> CheckReport:
    report = CheckReport(index.root, index.layout, list(index.pairs), list(index.problems))
    # A file already reported by the listing (e.g. zero bytes) is not reported twice.
    listed_errors = {p.path for p in index.problems if p.severity == "error"}
    class_pixels: list[int] = []
    class_images: list[int] = []
    for pair, record in zip(index.pairs, records):
        for path, message in ((pair.image, record["image_error"]), (pair.mask, record["mask_error"])):
            if message and path not in listed_errors:
                report.problems.append(Problem(path, message, "error", pair.id))
        for note in record["notes"]:
            report.problems.append(Problem(pair.mask, note, "warning", pair.id))
        if record["image"] is not None:
            report.image_sizes[pair.id] = tuple(record["image"])
        if not record["usable"]:
            continue
        if record.get("objects") is not None:
            report.objects[pair.id] = record["objects"]
        counts = record["class_pixels"]  # per mask value
        if class_map is not None:
            present = [v for v, c in enumerate(counts) if c > 0]
            unknown = class_map.unknown_values(present)
            if unknown:
                report.problems.append(
                    Problem(
                        pair.mask,
                        f"holds mask value(s) {', '.join(map(str, unknown[:5]))}, "
                        f"neither a class ({class_map.num_classes} classes) nor "
                        f"ignored; fix the mask, add the value to the label file, "
                        f"or ignore it with --ignore-index {unknown[0]}",
                        "error",
                        pair.id,
                    )
                )
                continue
            counts = class_map.class_pixels(counts)
        elif ignore:
            counts = [0 if v in ignore else c for v, c in enumerate(counts)]
            while len(counts) > 1 and counts[-1] == 0:
                counts.pop()
        if declared is not None and len(counts) > declared:
            report.problems.append(
                Problem(
                    pair.mask,
                    f"mask holds class {len(counts) - 1} but {declared} classes "
                    f"were declared (0..{declared - 1}); fix the mask or the "
                    "class count",
                    "error",
                    pair.id,
                )
            )
            continue
        report.resized_masks += int(record["resized"])
        if len(counts) > len(class_pixels):
            class_pixels += [0] * (len(counts) - len(class_pixels))
            class_images += [0] * (len(counts) - len(class_images))
        for value, count in enumerate(counts):
            class_pixels[value] += count
            class_images[value] += int(count > 0)
        total = sum(counts)
        report.mask_values[pair.id] = tuple(v for v, c in enumerate(counts) if c > 0)
        report.foreground[pair.id] = (total - counts[0]) / total if total else 0.0
    report.class_pixels, report.class_images = class_pixels, class_images
    if declared is None or class_map is not None:
        report.problems += _suspicious_classes(report, stray=class_map is None)
    report.problems.sort(key=lambda p: str(p.path))  # every problem of a file together, in folder order
    report.num_classes = declared if declared is not None else max(2, len(class_pixels))
    report.class_names = class_map.names if class_map is not None else ()
    return report


#: A binary data set (classes 0/1 in nearly every mask) in which a class ≥ 2 appears in at most this share of
#: the masks holds stray values, not a class: it would silently turn the run multi-class.
STRAY_CLASS_SHARE = 0.02


def _suspicious_classes(report: CheckReport, stray: bool = True) -> list[Problem]:
    """Data-set-level problems that decoding each file alone cannot see: every mask empty, or a binary set with
    a class that only a few masks hold. Declaring the classes (``--num-classes``) overrides the second."""
    problems: list[Problem] = []
    masks = len(report.mask_values)
    if masks and all(fraction == 0.0 for fraction in report.foreground.values()):
        problems.append(
            Problem(
                report.root,
                f"all {masks} masks are empty (background only): nothing to learn; "
                "check the mask files and that masks/ holds the right folder",
                "error",
            )
        )
    if masks >= 10 and stray:
        binary = sum(1 for values in report.mask_values.values() if set(values) <= {0, 1})
        for value in range(2, len(report.class_images)):
            holders = report.class_images[value]
            if 0 < holders <= max(1, STRAY_CLASS_SHARE * masks) and binary + holders >= masks:
                for pair_id, values in report.mask_values.items():
                    if value in values:
                        pair = next(p for p in report.pairs if p.id == pair_id)
                        problems.append(
                            Problem(
                                pair.mask,
                                f"holds class value {value} while the other masks are "
                                f"binary (0/1 or 0/255): a stray value? fix the mask, or "
                                f"declare the classes with --num-classes",
                                "error",
                                pair_id,
                            )
                        )
    return problems


# --------------------------------------------------------------------------------------------------------------
# CLI


def _class_label(report: CheckReport, index: int) -> str:
    names = report.class_names
    return f"{index} {names[index]}" if index < len(names) else f"class {index}"


def format_report(report: CheckReport) -> Group:
    """A :class:`CheckReport` as one rich renderable: statistics first, then every problem with its file path.
    The CLI prints it with ``soft_wrap=True``, so that a long path stays on one line."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    summary = report.summary()
    parts: list = [
        Text.from_markup(
            f"[bold]{escape(str(report.root))}[/bold]  layout [cyan]{report.layout}[/cyan]  "
            f"{len(report.pairs)} pairs ({summary['usable_pairs']} usable)"
        )
    ]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    if report.image_sizes:
        h, w = summary["image_height"], summary["image_width"]
        sizes = ", ".join(f"{s} ×{n}" for s, n in list(summary["image_sizes"].items())[:3])
        table.add_row(
            "image size",
            f"height {h['min']:.0f}/{h['median']:.0f}/{h['max']:.0f}, width "
            f"{w['min']:.0f}/{w['median']:.0f}/{w['max']:.0f} (min/median/max); "
            f"{len(set(report.image_sizes.values()))} distinct, most common {sizes}",
        )
    if report.mask_values:
        table.add_row("mask values", ", ".join(f"{k} in {n} masks" for k, n in summary["mask_value_sets"].items()))
        fg = summary["foreground_fraction"]
        table.add_row(
            "foreground",
            f"{fg['min']:.1%} / {fg['median']:.1%} / {fg['max']:.1%} (min/median/max); "
            f"{summary['empty_masks']} empty masks",
        )
        total = sum(report.class_pixels) or 1
        table.add_row(
            "classes",
            f"{report.num_classes} classes; "
            + ", ".join(
                f"{_class_label(report, c)}: {px / total:.1%} of pixels ({n} masks)"
                for c, (px, n) in enumerate(zip(report.class_pixels, report.class_images))
            ),
        )
    if report.objects:
        objects = summary["objects"]
        n, a = objects["per_image"], objects["area_px"]
        table.add_row(
            "objects",
            f"{objects['total']} in {len(report.objects)} images; per image {n['min']:.0f}/{n['median']:.0f}/"
            f"{n['max']:.0f}, size {a['min']:.0f}/{a['median']:.0f}/{a['max']:.0f} px (min/median/max)",
        )
        table.add_row(
            "touching",
            f"{objects['touching_pairs']} touching pairs in {objects['images_with_touching']} images "
            "(kept apart by the border class)",
        )
        table.add_row(
            "overlaps",
            f"{objects['overlapping_pairs']} overlapping mask pairs in {objects['images_with_overlaps']} images "
            "(each named below; shared pixels go to the smaller object)",
        )
    table.add_row(
        "task",
        "instances (instance data: every object its own mask; train with --task auto or instances)"
        if report.task == "instances"
        else "semantic (class masks; --task instances makes each connected region of a class one object)",
    )
    if report.label_counts:
        table.add_row("labels", ", ".join(f"{escape(k)} {n}" for k, n in report.label_counts.items()))
    if report.resized_masks:
        table.add_row(
            "resized",
            f"{report.resized_masks} masks had their image's aspect but another size: resized with nearest neighbour",
        )
    parts.append(table)
    for problem in report.problems:
        colour = "red" if problem.severity == "error" else "yellow"
        parts.append(
            Text.from_markup(
                f"[{colour}]{problem.severity}[/{colour}] {escape(str(problem.path))}: {escape(problem.message)}"
            )
        )
    errors, warnings = len(report.errors), len(report.warnings)
    if errors or warnings:
        parts.append(
            Text.from_markup(
                f"[bold]{errors} errors, {warnings} warnings[/bold]; "
                f"{len(report.bad_ids)} pairs unusable (train refuses them unless --skip-bad)"
            )
        )
    else:
        parts.append(Text.from_markup("[green]no problems found[/green]"))
    return Group(*parts)
