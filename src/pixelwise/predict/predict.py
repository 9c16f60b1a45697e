"""``pixelwise predict``: image files and folders in, one mask PNG and one overlay PNG per image out.

Masks are written at each input's original size: 0/255 greyscale for binary runs; for multi-class runs
palette PNGs whose pixel values are the class indices and whose palette holds the class colours. Overlays of
multi-class runs fill each class with its colour and carry a legend. Multi-class runs also write
``classes.csv``: one row per image, its pixel fraction in each class (columns named after the classes).
Inputs are never overwritten: the output folder may not be an input folder, and an existing output file is
an error unless ``overwrite`` is set.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pixelwise import reporting
from pixelwise.data.imageio import is_image_file, read_image
from pixelwise.data.naming import (
    background_name,
    cutout_name,
    overlay_name,
    predicted_instances_name,
    predicted_mask_name,
)
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write_bytes, atomic_write_text, encode_png, remove_stale_temporaries
from pixelwise.masks.cutout import cutout_rgba, parse_background, replace_background, require_binary
from pixelwise.masks.instances import write_instances_csv
from pixelwise.masks.postprocess import PostProcess
from pixelwise.predict.predictor import RunPredictor
from pixelwise.predict.segment import segment_images
from pixelwise.predict.video import VideoOptions, is_video_file, predict_videos, video_targets

log = logging.getLogger(__name__)


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given, folders expanded to their image and video files (sorted, not recursive).

    What a folder holds besides images (sub-folders, other files, broken links) is not predicted, and the log
    says so: how many of each, with the first names.
    """
    files: list[Path] = []
    skipped: list[str] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = []
            for path in sorted(item.iterdir()):
                if path.name.startswith("."):
                    continue  # hidden files and our own temporaries are never inputs
                if path.is_file() and (is_image_file(path) or is_video_file(path)):
                    found.append(path)
                elif path.is_dir():
                    skipped.append(f"{path.name}/ (a folder: predict does not recurse)")
                elif path.is_symlink() and not path.exists():
                    skipped.append(f"{path.name} (a broken link)")
                else:
                    skipped.append(f"{path.name} (not an image file)")
            if not found:
                raise PixelwiseError(
                    f"folder {item} has no image or video files (.png, .jpg, .bmp, .tif, .mp4, .mov...): "
                    f"pass images, videos or a folder of them"
                )
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise PixelwiseError(f"input {item} does not exist: pass image files or folders")
    if skipped:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log.info(f"skipped {len(skipped)} item(s) that are not images: {', '.join(skipped[:5])}{more}")
    return files


def output_paths(
    files: list[Path], inputs: list[Path], out: Path, overwrite: bool, pictures: tuple = ()
) -> list[tuple[Path, ...]]:
    """``(mask_path, overlay_path, *picture paths)`` per input file, ``pictures`` being more naming rules
    (``cutout_name``...); refuses unsafe or clashing outputs."""
    if out.exists() and not out.is_dir():
        raise PixelwiseError(f"--out {out} is a file: pass a folder for the masks and overlays")
    out_resolved = out.resolve()
    input_dirs = {Path(i).resolve() for i in inputs if Path(i).is_dir()} | {f.resolve().parent for f in files}
    if out_resolved in input_dirs:
        raise PixelwiseError(f"--out {out} is an input folder: choose a separate folder so no input can be overwritten")
    seen: dict[str, Path] = {}
    paths = []
    for f in files:
        if f.stem in seen:
            raise PixelwiseError(
                f"{f} and {seen[f.stem]} have the same name '{f.stem}': their masks would collide; "
                f"predict them into separate --out folders"
            )
        seen[f.stem] = f
        targets = tuple(out / name(f.stem) for name in (predicted_mask_name, overlay_name, *pictures))
        for path in targets:
            if path.exists() and not overwrite:
                raise PixelwiseError(f"{path} already exists: choose another --out or pass --overwrite")
        paths.append(targets)
    return paths


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` (0-based): the files at positions ``index, index + count, ...`` of the sorted
    input list. Shards need no communication: each process lists the same inputs and keeps its own part."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> "Shard":
        """``"i/N"``; ``"auto"``: from ``RANK``/``WORLD_SIZE`` (torchrun) or ``SLURM_ARRAY_TASK_ID``/
        ``SLURM_ARRAY_TASK_COUNT`` (a SLURM job array); ``None``: everything."""
        if text is None:
            return cls()
        if text == "auto":
            env = os.environ
            if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
                offset = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
                return cls(int(env["SLURM_ARRAY_TASK_ID"]) - offset, int(env["SLURM_ARRAY_TASK_COUNT"])).checked()
            return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))).checked()
        match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if not match:
            raise PixelwiseError(f"--shard {text!r}: write it as i/N (e.g. 0/4, 0-based) or auto")
        return cls(int(match[1]), int(match[2])).checked()

    def checked(self) -> "Shard":
        if not 0 <= self.index < self.count:
            raise PixelwiseError(f"--shard {self.index}/{self.count}: the part must be 0..{self.count - 1}")
        return self

    def select(self, files: list[Path]) -> list[Path]:
        return files[self.index :: self.count]

    @property
    def instances_name(self) -> str:
        return self.table_name("instances")

    @property
    def classes_name(self) -> str:
        return self.table_name("classes")

    def table_name(self, stem: str) -> str:
        """``<stem>.csv``, or ``<stem>.shard-i-of-N.csv`` for a shard (so shards never write the same file)."""
        return f"{stem}.csv" if self.count == 1 else f"{stem}.shard-{self.index}-of-{self.count}.csv"


def read_manifest(path: Path) -> list[Path]:
    """Image paths listed in a text/CSV file (one per line, or a column named ``image``), relative to the file."""
    if not path.is_file():
        raise PixelwiseError(f"--manifest {path} does not exist: pass a file listing one image path per line")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if lines and "," in lines[0]:
        rows = list(csv.DictReader(lines))
        if not rows or "image" not in rows[0]:
            raise PixelwiseError(f"--manifest {path}: a CSV needs a column named image")
        lines = [row["image"] for row in rows]
    files = [(path.parent / line) if not Path(line).is_absolute() else Path(line) for line in lines]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise PixelwiseError(f"--manifest {path} lists {len(missing)} missing file(s), e.g. {missing[0]}; fix the list")
    return files


def predict_files(
    predictor: RunPredictor,
    inputs: list[Path],
    out: Path,
    *,
    overwrite: bool = False,
    post: PostProcess = PostProcess(),
    instances: bool = False,
    min_area: int = 0,
    batch_size: int = 8,
    shard: Shard = Shard(),
    skip_existing: bool = False,
    manifest: Path | None = None,
    cutout: bool = False,
    background: str | None = None,
    video: VideoOptions = VideoOptions(),
) -> list[Path]:
    """Predict every input image (or this ``shard``'s part of them); returns the written mask paths.

    Binary runs only: ``cutout`` also writes ``<stem>_cutout.png`` (RGBA, guided-filter alpha) and
    ``background`` (``blur``, a colour or an image file) ``<stem>_background.png``
    (:mod:`pixelwise.masks.cutout`); a multi-class run or a bad background is refused before anything is written.

    ``skip_existing``: images whose mask and overlay exist already are not predicted again (a killed job
    re-runs safely; every file is written atomically). Images are decoded in a thread pool while the model
    works on the previous batch.

    Video files (:data:`~pixelwise.predict.video.VIDEO_SUFFIXES`) go to :mod:`pixelwise.predict.video` after the
    images (``video``: frame step and temporal smoothing): ``<stem>_mask.mp4`` and the overlay, cutout or
    background video; the mask videos are part of the returned paths.
    """
    if cutout or background is not None:
        require_binary(predictor.config.class_map().num_classes)
    backdrop = parse_background(background) if background is not None else None  # read once, checked first
    pictures = ((cutout_name,) if cutout else ()) + ((background_name,) if backdrop is not None else ())
    listed = collect_inputs(inputs) + (read_manifest(manifest) if manifest else [])
    clips = shard.select([f for f in listed if is_video_file(f)])
    listed = [f for f in listed if not is_video_file(f)]
    if clips:  # checked before any image is written
        clip_options = dataclasses.replace(video, cutout=cutout, background=backdrop, batch_size=batch_size)
        clip_targets = video_targets(clips, inputs, out, overwrite or skip_existing, clip_options.checked())
        skip = skip_existing and not overwrite
        if not listed:
            out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(out)
            return predict_videos(predictor, clips, clip_targets, post=post, options=clip_options, skip_existing=skip)
    if not listed:
        raise PixelwiseError("no input images: pass image files, folders or --manifest")
    # Output names are checked over every listed file, so two shards cannot collide either.
    files = shard.select(listed)
    # Instance runs also write each image's instance-id PNG, every object in instances.csv, and COCO results.
    instance_run = predictor.config.record.task == "instances"
    instances = instances or instance_run
    id_pngs = (predicted_instances_name,) if instance_run else ()
    targets = shard.select(output_paths(listed, inputs, out, overwrite or skip_existing, pictures + id_pngs))
    coco_ids = {path.stem: k for k, path in enumerate(sorted(listed, key=lambda p: p.stem), start=1)}
    detections: list[dict] = []
    instances_csv = out / shard.instances_name
    # Multi-class runs also tabulate each image's class fractions (binary runs: the foreground is one number).
    classes_csv = out / shard.classes_name if not predictor.config.class_map().is_binary else None
    for table in ((instances_csv if instances else None), classes_csv):
        if table is not None and table.exists() and not (overwrite or skip_existing):
            raise PixelwiseError(f"{table} already exists: choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # partial files of a killed earlier run into the same folder
    todo = [
        i
        for i, paths in enumerate(targets)
        if overwrite or not (skip_existing and all(path.exists() for path in paths))
    ]
    if len(todo) < len(files):
        log.info(f"{len(files) - len(todo)} of {len(files)} images already have their mask and overlay: skipped")
    instance_rows: list[dict] = []
    class_rows: dict[int, list[str]] = {}  # file position → its classes.csv row
    written = []
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        decoding = pool.map(lambda batch: [read_image(files[i]) for i in batch], batches)
        for batch, images in reporting.progress(zip(batches, decoding), "predicting", total=len(batches)):
            # The per-image path of the Python API and `pixelwise serve` too (predict/segment.py).
            results = segment_images(predictor, images, post, keep_probabilities=bool(pictures))
            for result, i in zip(results, batch):
                mask_path, overlay_path, *picture_paths = targets[i]
                atomic_write_bytes(mask_path, result.png_bytes())
                atomic_write_bytes(overlay_path, result.overlay_png_bytes())
                if instance_run:
                    atomic_write_bytes(picture_paths.pop(), result.instances_png_bytes())
                    detections += result.objects.coco(coco_ids[files[i].stem])
                if pictures:
                    write_pictures(result, picture_paths, cutout, backdrop)
                written.append(mask_path)
                if instances:
                    instance_rows += result.instances(files[i].stem, min_area=min_area)
                if classes_csv is not None:
                    class_rows[i] = class_fractions_row(files[i].stem, result.mask, result.num_classes)
    if instances:
        if skip_existing and instances_csv.exists():  # keep the rows of the images done before
            done = {row["image"] for row in instance_rows}
            kept = [row for row in csv.DictReader(instances_csv.open()) if row["image"] not in done]
            instance_rows = kept + instance_rows
        write_instances_csv(instances_csv, instance_rows)
    if instance_run:
        write_detections(out / shard.table_name("instances").replace(".csv", ".coco.json"), detections, skip_existing)
    if classes_csv is not None:
        names = predictor.config.class_map().names
        for i in set(range(len(files))) - set(todo):  # skipped: its mask file (palette indices) has the classes
            with Image.open(targets[i][0]) as mask_file:
                mask = np.asarray(mask_file)
            class_rows[i] = class_fractions_row(files[i].stem, mask, len(names))
        write_classes_csv(classes_csv, names, [class_rows[i] for i in sorted(class_rows)])
    part = f" (shard {shard.index}/{shard.count}: {len(files)} of {len(listed)} images)" if shard.count > 1 else ""
    log.info(f"wrote {len(written)} masks and overlays to {out}{part}")
    if clips:
        written += predict_videos(predictor, clips, clip_targets, post=post, options=clip_options, skip_existing=skip)
    return written


def write_detections(path: Path, detections: list[dict], keep_earlier: bool = False) -> Path:
    """Write an instance run's COCO results JSON (``instances.coco.json``: RLE masks, ``score``, ``category_id``
    = object class, ``image_id`` = the image's position 1..N among the inputs sorted by stem, which is what
    ``pixelwise score TRUTH --coco-results`` reads for non-COCO truth). ``keep_earlier``: keep the entries of
    images not predicted now (``--skip-existing``)."""
    if keep_earlier and path.exists():
        done = {entry["image_id"] for entry in detections}
        earlier = json.loads(path.read_text(encoding="utf-8"))
        detections = [entry for entry in earlier if entry["image_id"] not in done] + detections
    return atomic_write_text(path, json.dumps(detections))


def write_pictures(result, paths: list[Path], cutout: bool, backdrop) -> None:
    """A binary result's cutout (RGBA) and/or new-background PNGs, atomically, in the order of ``paths``
    (the cutout first when asked); one alpha matte serves both."""
    alpha = result.alpha()
    pictures = ([cutout_rgba(result.image, alpha)] if cutout else []) + (
        [replace_background(result.image, alpha, backdrop)] if backdrop is not None else []
    )
    for path, picture in zip(paths, pictures):
        atomic_write_bytes(path, encode_png(picture))


def class_fractions_row(image_id: str, mask: np.ndarray, num_classes: int) -> list[str]:
    """One ``classes.csv`` row: ``image_id``, then the fraction of the ``uint8`` H×W class-index ``mask``'s
    pixels in each class ``0..num_classes-1`` (0..1 with 6 decimals; they add up to 1)."""
    counts = np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]
    total = max(mask.size, 1)
    return [image_id, *(f"{count / total:.6f}" for count in counts)]


def write_classes_csv(path: Path, names: tuple[str, ...], rows: list[list[str]]) -> Path:
    """Write ``classes.csv`` atomically: header ``image, <class name>...``, then ``rows``
    (:func:`class_fractions_row`, one per image)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", *names])
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def merge_instance_shards(out: Path) -> Path:
    """Join the per-shard tables of a folder: ``instances.shard-*-of-N.csv`` into ``instances.csv`` and, for
    multi-class runs, ``classes.shard-*-of-N.csv`` into ``classes.csv`` (rows in shard order).

    Returns:
        ``instances.csv`` when there were instance shards, else ``classes.csv``.
    """
    merged = [_merge_shard_set(out, stem) for stem in ("instances", "classes")]
    written = [path for path in merged if path is not None]
    if not written:
        raise PixelwiseError(
            f"{out} has no instances.shard-*-of-*.csv or classes.shard-*-of-*.csv files: "
            f"run predict --shard i/N (with --instances for instances) first"
        )
    return written[0]


def _merge_shard_set(out: Path, stem: str) -> Path | None:
    """Join ``<stem>.shard-*-of-N.csv`` into ``<stem>.csv``; None when there are no such shards."""
    shards = sorted(out.glob(f"{stem}.shard-*-of-*.csv"), key=lambda p: int(p.name.split("-")[1]))
    if not shards:
        return None
    counts = {int(p.name.rsplit("-of-", 1)[1].split(".")[0]) for p in shards}
    if len(counts) != 1 or len(shards) != counts.pop():
        raise PixelwiseError(
            f"{out}: the shard files do not form one complete set ({', '.join(p.name for p in shards)}); "
            f"run the missing shards"
        )
    header, rows = None, []
    for path in shards:
        lines = path.read_text().splitlines(keepends=True)
        header = header or lines[0]
        rows += lines[1:]
    target = out / f"{stem}.csv"
    atomic_write_text(target, header + "".join(rows))
    return target
