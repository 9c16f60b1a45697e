"""Reading instance segmentation data sets in place: one instance-id image and one class per object, per image.

:func:`open_instances` detects the layout of a folder (or takes ``layout=NAME``) and returns an
:class:`InstanceDataset`; reading an image (:meth:`InstanceDataset.read`, or iterating) gives an
:class:`InstanceSample`: ``labels`` (int32 H×W, 0 = background, objects 1..N), ``classes`` (object id → class
index ≥ 1), a ``void`` mask where the layout has one, and what had to be resolved (``overlaps``, ``notes``).

Layouts (:data:`INSTANCE_LAYOUTS`):

* ``dsb2018``: the Kaggle Data Science Bowl 2018 folders, ``<id>/images/<id>.png`` (RGBA; alpha dropped) and
  ``<id>/masks/*.png``, one 0/255 PNG per nucleus. Objects are numbered 1..N in mask file-name order (empty
  mask files are skipped with a note). A few masks overlap by some pixels: each pair is reported in
  ``overlaps`` and a shared pixel goes to the **smaller** object (the one whose file name sorts first when both
  have the same area), so a small object lying on a large one keeps all of its pixels.
* ``instance-masks``: an image folder and an instance-id mask folder with matching stems (a mask suffix such as
  ``_mask`` is allowed): Penn-Fudan's ``PNGImages/`` + ``PedMasks/``, or ``images/`` + ``instances/`` or
  ``masks/``. Masks are 8- or 16-bit PNGs (greyscale or palette indices), 0 = background, 1..N = objects.
* ``voc``: PASCAL VOC ``SegmentationObject/`` (palette indices = object ids, 255 = void border) with
  ``SegmentationClass/`` giving each object's class: the majority class of its pixels. Images in
  ``JPEGImages/``; ids from ``ImageSets/Segmentation/<split>.txt`` when ``split`` is given.
* ``coco``: a COCO instances JSON (polygons, RLE or uncompressed RLE, read with pycocotools) and its image
  folder. Crowd annotations (``iscrowd`` 1) become void pixels, not objects; categories are numbered 1..K in
  category-id order (``InstanceDataset.category_ids`` maps back). Overlapping annotations are resolved and
  reported as for ``dsb2018``.

Every problem caused by the files is a :class:`~pixelwise.errors.PixelwiseError` whose one line names the file
and says what to do. :func:`semantic_to_instances` turns a semantic (class-index) mask into instances.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixelwise.data.imageio import IMAGE_EXTENSIONS, read_image
from pixelwise.data.naming import strip_mask_suffix
from pixelwise.errors import PixelwiseError
from pixelwise.masks.postprocess import label_regions

INSTANCE_LAYOUTS = ("dsb2018", "instance-masks", "voc", "coco")

#: Value of void pixels in VOC's ``SegmentationObject``/``SegmentationClass`` PNGs.
VOC_VOID = 255
#: PASCAL VOC 2012's classes; index = the value in ``SegmentationClass``.
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
#: (image folder, mask folder) names of the ``instance-masks`` layout, compared case-insensitively.
INSTANCE_MASK_FOLDERS = (("pngimages", "pedmasks"), ("images", "instances"), ("images", "masks"))


@dataclass
class InstanceSample:
    """One image's instances.

    Attributes:
        id: the image's id (DSB folder name, file stem, COCO ``file_name`` stem).
        image_path: the image file.
        labels: int32 H×W: 0 background, 1..N objects.
        classes: object id → class index ≥ 1 (``InstanceDataset.class_names[c]`` names it).
        void: bool H×W of pixels that belong to no object and count in no metric (VOC border, COCO crowd), or None.
        image: uint8 H×W×3 RGB when read with ``with_image=True``, else None.
        sources: object id → where it came from (a mask file, ``annotation <id>``).
        overlaps: ``(source_a, source_b, pixels)`` for every pair of objects that claimed the same pixels.
        notes: one-line remarks on what was repaired or skipped.
    """

    id: str
    image_path: Path
    labels: np.ndarray
    classes: dict[int, int]
    void: np.ndarray | None = None
    image: np.ndarray | None = None
    sources: dict[int, str] = field(default_factory=dict)
    overlaps: list[tuple[str, str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    id: str
    image: Path
    source: Any  # layout-specific: masks folder, mask path, (object, class) paths, COCO annotations


@dataclass
class InstanceDataset:
    """The images of an instance data set, read one at a time (nothing is decoded when it is opened).

    Attributes:
        root: the folder (or COCO JSON) as given.
        layout: one of :data:`INSTANCE_LAYOUTS`.
        class_names: index → name, index 0 the background.
        category_ids: COCO only, class index → the JSON's ``category_id`` (index 0 unused, 0).
        problems: one-line remarks from listing (an image without a mask, a mask without an image).
    """

    root: Path
    layout: str
    entries: list[_Entry]
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...] = ()
    problems: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [entry.id for entry in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[InstanceSample]:
        for entry in self.entries:
            yield self._read(entry, with_image=False)

    def read(self, key: str | int, with_image: bool = False) -> InstanceSample:
        """The instances of one image, by id or position; ``with_image`` also decodes the image (RGB).

        Raises:
            PixelwiseError: an unreadable file, a mask whose size is not the image's, bad mask values.
        """
        if isinstance(key, int):
            return self._read(self.entries[key], with_image)
        for entry in self.entries:
            if entry.id == key:
                return self._read(entry, with_image)
        raise PixelwiseError(f"{self.root}: no image with id {key!r}; see the data set's ids")

    def _read(self, entry: _Entry, with_image: bool) -> InstanceSample:
        image = read_image(entry.image) if with_image else None
        size = (image.shape[0], image.shape[1]) if image is not None else _image_size(entry.image)
        reader = {"dsb2018": _read_dsb, "instance-masks": _read_id_mask, "voc": _read_voc, "coco": _read_coco}
        sample = reader[self.layout](entry, size, self)
        sample.image = image
        return sample


# ----------------------------------------------------------------------------------------------------------------
# Entry point and layout detection


def open_instances(
    root: str | Path, layout: str | None = None, images: str | Path | None = None, split: str | None = None
) -> InstanceDataset:
    """List an instance segmentation data set, detecting its layout unless ``layout`` names one.

    Args:
        root: the data set folder as downloaded, or a COCO instances JSON file.
        layout: one of :data:`INSTANCE_LAYOUTS` to skip detection.
        images: COCO only: the image folder (default: found beside the JSON, e.g. ``val2017/`` for
            ``annotations/instances_val2017.json``).
        split: VOC only: read the ids of ``ImageSets/Segmentation/<split>.txt`` (``train``, ``val``, ...).

    Returns:
        An :class:`InstanceDataset`, entries sorted by id (COCO: in the JSON's image order).

    Raises:
        PixelwiseError: missing folder, unknown layout, a layout that does not fit, or nothing to read.
    """
    root = Path(root).expanduser()
    if layout is not None and layout not in INSTANCE_LAYOUTS:
        raise PixelwiseError(f"unknown instance layout {layout!r}; choose one of: {', '.join(INSTANCE_LAYOUTS)}")
    if not root.exists():
        raise PixelwiseError(f"{root}: no such file or folder; check the data set path")
    layout = layout or detect_instance_layout(root)
    if layout == "dsb2018":
        return _list_dsb(root)
    if layout == "instance-masks":
        return _list_id_masks(root)
    if layout == "voc":
        return _list_voc(root, split)
    return _list_coco(root, images)


def detect_instance_layout(root: str | Path) -> str:
    """The layout of an instance data set folder (or COCO JSON file); see the module's description.

    Raises:
        PixelwiseError: no known layout fits, naming the folder and what each layout expects.
    """
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() == ".json":
            return "coco"
        raise PixelwiseError(f"{root}: is a file; point at the data set folder or at a COCO instances JSON")
    if _voc_folder(root) is not None:
        return "voc"
    if _coco_jsons(root):
        return "coco"
    if _id_mask_folders(root) is not None:
        return "instance-masks"
    for child in _subfolders(root):
        if (child / "images").is_dir() and (child / "masks").is_dir():
            return "dsb2018"
    raise PixelwiseError(
        f"{root}: no instance layout found; expected <id>/images + <id>/masks (DSB 2018), PNGImages + PedMasks or "
        "images + masks (instance-id PNGs), SegmentationObject + SegmentationClass (VOC), or a COCO JSON"
    )


def _subfolders(root: Path) -> list[Path]:
    return sorted(Path(e.path) for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        Path(e.path)
        for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS
    )


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels."""
    if not path.is_file():
        raise PixelwiseError(f"{path}: image file not found; restore it or remove its entry")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as err:
        raise PixelwiseError(f"{path}: not a readable image ({_reason(err)}); re-download or remove it") from None
    return height, width


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:160]


def _open_mask(path: Path) -> np.ndarray:
    """A mask PNG's values as a 2-D integer array: grey levels, palette indices or 16-bit values.

    Raises:
        PixelwiseError: missing, zero-byte, unreadable, or colour (RGB) masks.
    """
    if not path.is_file():
        raise PixelwiseError(f"{path}: mask file not found; restore it or remove its entry")
    if path.stat().st_size == 0:
        raise PixelwiseError(f"{path}: zero-byte mask file; re-download or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                mode = image.mode
                if mode in ("LA", "La", "PA"):
                    image = image.getchannel(0)
                    mode = image.mode
                array = np.asarray(image)
    except Exception as err:
        raise PixelwiseError(f"{path}: not a readable mask image ({_reason(err)}); re-download or remove it") from None
    if array.ndim == 3:
        # Colour masks whose channels agree are grey masks saved as RGB(A).
        grey = array.shape[2] >= 3 and all((array[:, :, 0] == array[:, :, c]).all() for c in (1, 2))
        if grey:
            array = array[:, :, 0]
        else:
            raise PixelwiseError(
                f"{path}: colour mask (mode {mode}); save object ids as an 8- or 16-bit greyscale or palette PNG"
            )
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise PixelwiseError(f"{path}: mask values are not integers (mode {mode}); save it as an 8- or 16-bit PNG")
    return array


def _check_size(mask: np.ndarray, size: tuple[int, int], mask_path: Path, image_path: Path) -> None:
    if mask.shape != size:
        raise PixelwiseError(
            f"{mask_path}: mask is {mask.shape[1]}×{mask.shape[0]} but image {image_path.name} is "
            f"{size[1]}×{size[0]}; fix the mask or remove the pair"
        )


def _paint(pixel_lists: list[np.ndarray], sources: list[str], size: tuple[int, int], sample: InstanceSample) -> None:
    """Paint objects given as flat pixel indices into ``sample.labels`` (ids 1..N in list order), reporting every
    overlapping pair in ``sample.overlaps``; a shared pixel goes to the smaller object, then the earlier one."""
    count = len(pixel_lists)
    labels = np.zeros(size[0] * size[1], dtype=np.int32)
    if count:
        coverage = np.bincount(np.concatenate(pixel_lists), minlength=labels.size)
        if coverage.max() > 1:
            shared = coverage > 1
            involved = [k for k in range(count) if shared[pixel_lists[k]].any()]
            for i, a in enumerate(involved):
                for b in involved[i + 1 :]:
                    pixels = np.intersect1d(pixel_lists[a], pixel_lists[b], assume_unique=True).size
                    if pixels:
                        sample.overlaps.append((sources[a], sources[b], int(pixels)))
        areas = [p.size for p in pixel_lists]
        # Largest first, and on equal areas the later one first: what is painted last wins.
        for k in sorted(range(count), key=lambda k: (-areas[k], -k)):
            labels[pixel_lists[k]] = k + 1
        kept = np.bincount(labels, minlength=count + 1)[1:]
        for k in np.flatnonzero(kept == 0).tolist():
            sample.notes.append(f"{sources[k]}: every pixel also belongs to smaller objects; object {k + 1} is empty")
    sample.labels = labels.reshape(size)
    sample.sources = {k + 1: sources[k] for k in range(count)}


# ----------------------------------------------------------------------------------------------------------------
# DSB 2018


def _list_dsb(root: Path) -> InstanceDataset:
    entries = []
    for folder in _subfolders(root):
        images_dir, masks_dir = folder / "images", folder / "masks"
        if not images_dir.is_dir():
            raise PixelwiseError(
                f"{folder}: no images/ folder; a DSB 2018 sample is <id>/images/<id>.png + "
                "<id>/masks/*.png (remove stray folders)"
            )
        image = images_dir / f"{folder.name}.png"
        if not image.is_file():
            found = _image_files(images_dir)
            if len(found) != 1:
                raise PixelwiseError(
                    f"{images_dir}: expected one image {folder.name}.png, found {len(found)} image "
                    "files; restore the download"
                )
            image = found[0]
        if not masks_dir.is_dir():
            raise PixelwiseError(f"{folder}: no masks/ folder; DSB test images have no truth — use the training set")
        entries.append(_Entry(folder.name, image, masks_dir))
    if not entries:
        raise PixelwiseError(f"{root}: no DSB 2018 sample folders (<id>/images, <id>/masks) found")
    return InstanceDataset(root, "dsb2018", entries, ("background", "nucleus"))


def _read_dsb(entry: _Entry, size: tuple[int, int], dataset: InstanceDataset) -> InstanceSample:
    sample = InstanceSample(entry.id, entry.image, np.zeros(size, np.int32), {})
    files = _image_files(entry.source)
    if not files:
        raise PixelwiseError(f"{entry.source}: empty masks folder; restore the sample's masks or remove {entry.id}/")
    pixel_lists, sources = [], []
    for path in files:
        mask = _open_mask(path)
        _check_size(mask, size, path, entry.image)
        values = np.unique(mask)
        if values.size > 2:
            raise PixelwiseError(f"{path}: mask holds {values.size} values; a DSB mask is one nucleus, 0/255")
        pixels = np.flatnonzero(mask)
        if pixels.size == 0:
            sample.notes.append(f"{path.name}: empty mask, skipped")
            continue
        pixel_lists.append(pixels)
        sources.append(str(path))
    _paint(pixel_lists, sources, size, sample)
    sample.classes = {k: 1 for k in sample.sources}
    return sample


# ----------------------------------------------------------------------------------------------------------------
# Instance-id masks (Penn-Fudan and plain folders)


def _id_mask_folders(root: Path) -> tuple[Path, Path] | None:
    by_name = {p.name.casefold(): p for p in _subfolders(root)}
    for image_name, mask_name in INSTANCE_MASK_FOLDERS:
        if image_name in by_name and mask_name in by_name:
            return by_name[image_name], by_name[mask_name]
    return None


def _list_id_masks(root: Path) -> InstanceDataset:
    folders = _id_mask_folders(root)
    if folders is None:
        raise PixelwiseError(f"{root}: no PNGImages/ + PedMasks/ or images/ + masks/ folders; check the path")
    images_dir, masks_dir = folders
    images = {p.stem: p for p in _image_files(images_dir)}
    known = {stem.casefold() for stem in images}
    by_fold = {stem.casefold(): stem for stem in images}
    masks: dict[str, Path] = {}
    problems = []
    for path in _image_files(masks_dir):
        stem = by_fold.get(strip_mask_suffix(path.stem, known).casefold())
        if stem is None:
            problems.append(f"{path}: mask without an image in {images_dir.name}/; ignored")
        elif stem in masks:
            raise PixelwiseError(f"{path}: second mask for image {stem} (also {masks[stem].name}); keep one")
        else:
            masks[stem] = path
    for stem, path in images.items():
        if stem not in masks:
            problems.append(f"{path}: image without a mask in {masks_dir.name}/; ignored")
    entries = [_Entry(stem, images[stem], masks[stem]) for stem in sorted(masks)]
    if not entries:
        raise PixelwiseError(
            f"{root}: no image in {images_dir.name}/ has a mask in {masks_dir.name}/ "
            "(same stem, optionally with _mask); check the folders"
        )
    name = "pedestrian" if masks_dir.name.casefold() == "pedmasks" else "object"
    return InstanceDataset(root, "instance-masks", entries, ("background", name), problems=problems)


def _read_id_mask(entry: _Entry, size: tuple[int, int], dataset: InstanceDataset) -> InstanceSample:
    mask = _open_mask(entry.source)
    _check_size(mask, size, entry.source, entry.image)
    labels = mask.astype(np.int32)
    sample = InstanceSample(entry.id, entry.image, labels, {})
    ids = np.unique(labels[labels != 0]).tolist()
    if ids == [255]:
        sample.notes.append(
            f"{entry.source.name}: only values 0 and 255, a binary mask read as one object; "
            "use semantic_to_instances for semantic masks"
        )
    sample.classes = {int(i): 1 for i in ids}
    sample.sources = {int(i): f"{entry.source} value {i}" for i in ids}
    return sample


# ----------------------------------------------------------------------------------------------------------------
# PASCAL VOC


def _voc_folder(root: Path) -> Path | None:
    candidates = [root, root / "VOCdevkit"]
    candidates += sorted(p for base in candidates if base.is_dir() for p in base.glob("VOC20*") if p.is_dir())
    for folder in candidates:
        if (folder / "SegmentationObject").is_dir():
            return folder
    return None


def _list_voc(root: Path, split: str | None) -> InstanceDataset:
    folder = _voc_folder(root)
    if folder is None:
        raise PixelwiseError(f"{root}: no SegmentationObject/ folder (VOC2012/ as downloaded); check the path")
    objects_dir, classes_dir = folder / "SegmentationObject", folder / "SegmentationClass"
    if not classes_dir.is_dir():
        raise PixelwiseError(f"{folder}: SegmentationObject/ without SegmentationClass/; restore the VOC download")
    if split is not None:
        list_file = folder / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            raise PixelwiseError(f"{list_file}: split list not found; use train, val or trainval")
        ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    else:
        ids = sorted(p.stem for p in objects_dir.glob("*.png"))
    if not ids:
        raise PixelwiseError(f"{objects_dir}: no object masks (*.png); restore the VOC download")
    entries = []
    for image_id in ids:
        image = folder / "JPEGImages" / f"{image_id}.jpg"
        if not image.is_file():
            found = [p for p in (folder / "JPEGImages").glob(f"{image_id}.*") if p.suffix.lower() in IMAGE_EXTENSIONS]
            if not found:
                raise PixelwiseError(f"{image}: image of {image_id} not found; restore JPEGImages/")
            image = found[0]
        entries.append(_Entry(image_id, image, (objects_dir / f"{image_id}.png", classes_dir / f"{image_id}.png")))
    return InstanceDataset(root, "voc", entries, VOC_CLASSES)


def _read_voc(entry: _Entry, size: tuple[int, int], dataset: InstanceDataset) -> InstanceSample:
    object_path, class_path = entry.source
    objects = _open_mask(object_path)
    _check_size(objects, size, object_path, entry.image)
    class_mask = _open_mask(class_path)
    _check_size(class_mask, size, class_path, entry.image)
    void = objects == VOC_VOID
    labels = np.where(void, 0, objects).astype(np.int32)
    sample = InstanceSample(entry.id, entry.image, labels, {}, void=void)
    ids = np.unique(labels[labels != 0])
    for object_id in ids.tolist():
        values = class_mask[labels == object_id]
        values = values[(values != 0) & (values != VOC_VOID)]
        if values.size == 0:
            raise PixelwiseError(
                f"{class_path}: object {object_id} of {object_path.name} has no class pixels; "
                "the two masks disagree, restore them"
            )
        counts = np.bincount(values)
        sample.classes[object_id] = int(counts.argmax())  # the majority class; the smaller class on a tie
        if counts.max() < values.size:
            sample.notes.append(
                f"object {object_id}: {values.size - counts.max()} of {values.size} class pixels "
                "disagree with its majority class"
            )
    sample.sources = {int(i): f"{object_path} value {i}" for i in ids.tolist()}
    return sample


# ----------------------------------------------------------------------------------------------------------------
# COCO JSON


def _coco_jsons(root: Path) -> list[Path]:
    found = sorted((root / "annotations").glob("instances_*.json")) if (root / "annotations").is_dir() else []
    return found or sorted(p for p in root.glob("*.json") if _looks_like_coco(p))


def _looks_like_coco(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return False
    return b'"images"' in head or b'"annotations"' in head


def _list_coco(root: Path, images: str | Path | None) -> InstanceDataset:
    from pycocotools import mask as _  # noqa: F401 -- fail here, not on the first image, when it is missing

    if root.is_file():
        json_path = root
    else:
        found = _coco_jsons(root)
        if len(found) != 1:
            what = "no COCO JSON" if not found else f"{len(found)} COCO JSONs ({', '.join(p.name for p in found)})"
            raise PixelwiseError(f"{root}: {what}; pass the instances JSON file itself")
        json_path = found[0]
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PixelwiseError(f"{json_path}: not readable JSON ({_reason(err)}); re-download it") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "annotations" not in data:
        raise PixelwiseError(f"{json_path}: not a COCO instances file (needs images, annotations, categories)")
    categories = sorted(data.get("categories") or [], key=lambda c: c["id"])
    category_ids = tuple(int(c["id"]) for c in categories)
    class_of = {cid: k + 1 for k, cid in enumerate(category_ids)}
    names = ("background",) + tuple(str(c.get("name", c["id"])) for c in categories)
    image_dir = _coco_image_dir(json_path, data["images"], images)
    grouped: dict[Any, list[dict]] = {}
    for annotation in data["annotations"]:
        if annotation.get("category_id") not in class_of:
            raise PixelwiseError(
                f"{json_path}: annotation {annotation.get('id')} has category "
                f"{annotation.get('category_id')!r}, not in categories; fix the JSON"
            )
        grouped.setdefault(annotation["image_id"], []).append(annotation)
    entries = []
    for info in data["images"]:
        source = (info, grouped.get(info["id"], []), class_of)
        entries.append(_Entry(Path(info["file_name"]).stem, image_dir / info["file_name"], source))
    dataset = InstanceDataset(json_path, "coco", entries, names, (0,) + category_ids)
    return dataset


def _coco_image_dir(json_path: Path, images: list[dict], given: str | Path | None) -> Path:
    if given is not None:
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise PixelwiseError(f"{folder}: image folder not found; check the path")
        return folder
    if not images:
        return json_path.parent
    split = json_path.stem.split("instances_", 1)[-1]
    base = json_path.parent
    candidates = [
        base,
        base / "images",
        base.parent / split,
        base.parent / "images" / split,
        base.parent / "images",
        base.parent,
    ]
    first = images[0]["file_name"]
    for folder in candidates:
        if (folder / first).is_file():
            return folder
    tried = ", ".join(str(c) for c in candidates[:4])
    raise PixelwiseError(f"{json_path}: image {first} not found beside it (tried {tried}, ...); pass the image folder")


def decode_rle(rle: dict) -> np.ndarray:
    """bool H×W mask of one pycocotools RLE (``counts`` as bytes)."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        # pycocotools' decode trips numpy 2's __array__ copy-keyword deprecation; the result is unaffected.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _read_coco(entry: _Entry, size: tuple[int, int], dataset: InstanceDataset) -> InstanceSample:
    from pycocotools import mask as mask_utils

    info, annotations, class_of = entry.source
    declared = (int(info.get("height", size[0])), int(info.get("width", size[1])))
    if declared != size:
        raise PixelwiseError(
            f"{entry.image}: image is {size[1]}×{size[0]} but the JSON says {declared[1]}×"
            f"{declared[0]}; use the images the annotations were made on"
        )
    height, width = size
    sample = InstanceSample(entry.id, entry.image, np.zeros(size, np.int32), {})
    void = np.zeros(size, dtype=bool)
    pixel_lists, sources, classes = [], [], []
    for annotation in annotations:
        name = f"annotation {annotation.get('id')}"
        segmentation = annotation.get("segmentation")
        try:
            if isinstance(segmentation, list):  # polygons: one object may have several parts
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
                rle = mask_utils.frPyObjects(segmentation, height, width)
            elif isinstance(segmentation, dict) and "counts" in segmentation:
                rle = dict(segmentation)
                if isinstance(rle["counts"], str):
                    rle["counts"] = rle["counts"].encode("ascii")
                if list(rle.get("size", [])) != [height, width]:
                    raise ValueError(f"RLE size {rle.get('size')} is not the image's {height}×{width}")
            else:
                raise ValueError("segmentation is neither polygons nor RLE")
            mask = decode_rle(rle)
        except Exception as err:  # pycocotools raises TypeError/ValueError/... on malformed input
            raise PixelwiseError(
                f"{dataset.root}: {name} of image {info.get('file_name')}: unreadable segmentation "
                f"({_reason(err)}); fix the JSON"
            ) from None
        if annotation.get("iscrowd"):
            void |= mask
            continue
        pixels = np.flatnonzero(mask)
        if pixels.size == 0:
            sample.notes.append(f"{name}: empty segmentation, skipped")
            continue
        pixel_lists.append(pixels)
        sources.append(name)
        classes.append(class_of[annotation["category_id"]])
    _paint(pixel_lists, sources, size, sample)
    sample.classes = {k + 1: classes[k] for k in range(len(classes))}
    if void.any():
        sample.void = void & (sample.labels == 0)
    return sample


# ----------------------------------------------------------------------------------------------------------------
# Training pairs (pixelwise.data.layouts.Pair with ``instances`` set)

#: How a training pair's instance mask is read: the layouts above that list one source per image, and
#: ``regions`` (a class mask whose 8-connected regions of each class are the objects, ``--task instances``).
TRAINING_LAYOUTS = ("dsb2018", "instance-masks", "voc", "regions")


def pair_source(entry: _Entry) -> Path:
    """The path a training pair keeps as its mask: DSB's ``masks/`` folder, the id PNG, VOC's object PNG."""
    return entry.source[0] if isinstance(entry.source, tuple) else entry.source


def read_pair_instances(pair, colors=None, void: tuple[int, ...] = (), with_image: bool = True) -> InstanceSample:
    """The instances of a training pair (``id``, ``image``, ``mask``, ``instances``: see
    :class:`pixelwise.data.layouts.Pair`), read in place.

    Args:
        pair: a pair whose ``instances`` is one of :data:`TRAINING_LAYOUTS`.
        colors, void: ``regions`` only: the colour map of RGB masks and the mask values that are void.
        with_image: also decode the image (RGB uint8 H×W×3).

    Raises:
        PixelwiseError: unreadable files, mask and image of different sizes, an unknown ``instances`` value.
    """
    layout = pair.instances
    if layout == "regions":
        from pixelwise.data.imageio import read_pair

        image, mask, notes = read_pair(pair.image, pair.mask, colors, void)
        labels, classes = semantic_to_instances(mask, void=tuple(void) + (VOC_VOID,))
        void_mask = np.isin(mask, list(void)) if void else None
        sample = InstanceSample(pair.id, Path(pair.image), labels, classes, void_mask, image if with_image else None)
        sample.sources = {k: f"{pair.mask} region {k}" for k in classes}
        sample.notes += notes
        return sample
    if layout not in TRAINING_LAYOUTS:
        raise PixelwiseError(
            f"{pair.mask}: instance layout {layout!r} cannot be trained; use one of {TRAINING_LAYOUTS}"
        )
    mask = Path(pair.mask)
    source: Any = mask
    dataset = InstanceDataset(Path(pair.image).parent, layout, [], ("background", "object"))
    if layout == "voc":
        source = (mask, mask.parent.parent / "SegmentationClass" / mask.name)
        dataset.class_names = VOC_CLASSES
    return dataset._read(_Entry(pair.id, Path(pair.image), source), with_image)


# ----------------------------------------------------------------------------------------------------------------
# Semantic masks


def semantic_to_instances(
    mask: np.ndarray, void: tuple[int, ...] = (VOC_VOID,), background: int = 0
) -> tuple[np.ndarray, dict[int, int]]:
    """Instances of a semantic mask: each 8-connected region of each class is one object.

    Args:
        mask: integer H×W class indices (uint8 as :func:`~pixelwise.data.imageio.read_mask` returns).
        void: values that are no class (left at 0 in the result).
        background: the background class (no objects).

    Returns:
        ``(labels, classes)``: int32 H×W with objects numbered 1..N class by class (ascending), in raster order of
        each region's first pixel within a class; and object id → class.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an H×W mask, got shape {mask.shape}")
    labels = np.zeros(mask.shape, dtype=np.int32)
    classes: dict[int, int] = {}
    skip = set(void) | {background}
    for cls in np.unique(mask).tolist():
        if cls in skip:
            continue
        regions, count = label_regions(mask == cls)
        offset = len(classes)
        labels[regions > 0] = regions[regions > 0] + offset
        classes.update({offset + k: int(cls) for k in range(1, count + 1)})
    return labels, classes
