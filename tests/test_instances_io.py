"""Reading instance data sets in the layouts users download: DSB 2018, Penn-Fudan-like id masks, VOC, COCO JSON."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from pixelwise.data.instances_io import (
    VOC_VOID,
    detect_instance_layout,
    open_instances,
    semantic_to_instances,
)
from pixelwise.errors import PixelwiseError

H, W = 24, 32


def save_palette_png(path, values):
    image = Image.fromarray(values.astype(np.uint8), mode="P")
    palette = [0] * 768
    for index in range(256):  # VOC-like colours: any palette will do, the indices are what count
        palette[3 * index : 3 * index + 3] = [(index * 37) % 256, (index * 91) % 256, (index * 53) % 256]
    image.putpalette(palette)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def save_png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


def rgba_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(H, W, 4), dtype=np.uint8)
    image[:, :, 3] = 255
    return image


def box(y0, y1, x0, x1, shape=(H, W)):
    mask = np.zeros(shape, np.uint8)
    mask[y0:y1, x0:x1] = 255
    return mask


# ----------------------------------------------------------------------------------------------------------------
# DSB 2018


def make_dsb(root):
    """Two samples as Kaggle ships them; sample 'aaa' has an overlapping pair and an empty mask file."""
    for sample in ("aaa", "bbb"):
        save_png(root / sample / "images" / f"{sample}.png", rgba_image())
    masks = root / "aaa" / "masks"
    save_png(masks / "m1.png", box(0, 10, 0, 10))  # 100 px
    save_png(masks / "m2.png", box(8, 12, 8, 12))  # 16 px, shares 2×2 = 4 px with m1
    save_png(masks / "m3.png", box(20, 24, 20, 30))  # 40 px, alone
    save_png(masks / "m4.png", np.zeros((H, W), np.uint8))  # empty
    save_png(root / "bbb" / "masks" / "only.png", box(1, 3, 1, 3))
    return root


def test_dsb_layout_overlaps_resolved_and_reported(tmp_path):
    root = make_dsb(tmp_path / "stage1_train")
    assert detect_instance_layout(root) == "dsb2018"
    dataset = open_instances(root)
    assert dataset.layout == "dsb2018" and dataset.ids == ["aaa", "bbb"]
    sample = dataset.read("aaa", with_image=True)
    assert sample.image.shape == (H, W, 3)  # alpha dropped
    assert np.array_equal(sample.image, rgba_image()[:, :, :3])
    assert sample.labels.dtype == np.int32 and sample.labels.shape == (H, W)
    assert sample.classes == {1: 1, 2: 1, 3: 1}  # m4 is empty: skipped, noted
    assert [s.rsplit("/", 1)[-1] for s in sample.sources.values()] == ["m1.png", "m2.png", "m3.png"]
    assert any("m4.png" in note for note in sample.notes)
    assert [(a.rsplit("/", 1)[-1], b.rsplit("/", 1)[-1], n) for a, b, n in sample.overlaps] == [("m1.png", "m2.png", 4)]
    # the smaller object keeps the shared pixels
    assert np.count_nonzero(sample.labels == 2) == 16 and np.count_nonzero(sample.labels == 1) == 96
    assert np.count_nonzero(sample.labels == 3) == 40
    assert [len(s.classes) for s in dataset] == [3, 1]


def test_dsb_bad_input_names_the_file(tmp_path):
    root = make_dsb(tmp_path / "dsb")
    (root / "bbb" / "masks" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(PixelwiseError, match="broken.png: not a readable mask"):
        open_instances(root).read("bbb")
    (root / "bbb" / "masks" / "broken.png").unlink()
    save_png(root / "bbb" / "masks" / "small.png", box(0, 2, 0, 2, shape=(H, W - 1)))
    with pytest.raises(PixelwiseError, match=r"small.png: mask is 31×24 but image bbb.png is 32×24"):
        open_instances(root).read("bbb")
    for path in (root / "bbb" / "masks").iterdir():
        path.unlink()
    with pytest.raises(PixelwiseError, match="empty masks folder"):
        open_instances(root).read("bbb")
    save_png(root / "bbb" / "masks" / "grey.png", np.arange(H * W, dtype=np.uint8).reshape(H, W) % 7)
    with pytest.raises(PixelwiseError, match="grey.png: mask holds 7 values"):
        open_instances(root).read("bbb")


# ----------------------------------------------------------------------------------------------------------------
# Instance-id masks


def test_penn_fudan_palette_id_masks(tmp_path):
    root = tmp_path / "PennFudanPed"
    save_png(root / "PNGImages" / "FudanPed00001.png", rgba_image()[:, :, :3])
    save_png(root / "PNGImages" / "FudanPed00002.png", rgba_image()[:, :, :3])  # no mask: a problem, skipped
    ids = np.zeros((H, W), np.uint8)
    ids[2:10, 2:8] = 1
    ids[12:20, 10:30] = 2
    save_palette_png(root / "PedMasks" / "FudanPed00001_mask.png", ids)
    dataset = open_instances(root)
    assert dataset.layout == "instance-masks" and dataset.ids == ["FudanPed00001"]
    assert dataset.class_names == ("background", "pedestrian")
    assert any("FudanPed00002" in problem for problem in dataset.problems)
    sample = dataset.read(0)
    assert np.array_equal(sample.labels, ids) and sample.classes == {1: 1, 2: 1}


def test_sixteen_bit_id_masks_and_colour_refused(tmp_path):
    root = tmp_path / "cells"
    save_png(root / "images" / "c1.png", rgba_image()[:, :, :3])
    ids = np.zeros((H, W), np.uint16)
    ids[0:5, 0:5] = 300
    ids[10:15, 10:15] = 1000
    save_png(root / "masks" / "c1.png", ids)
    sample = open_instances(root).read("c1")
    assert sample.labels.dtype == np.int32 and set(np.unique(sample.labels).tolist()) == {0, 300, 1000}
    assert sample.classes == {300: 1, 1000: 1}
    colour = np.zeros((H, W, 3), np.uint8)
    colour[0:4, 0:4] = (255, 0, 0)
    save_png(root / "masks" / "c1.png", colour)
    with pytest.raises(PixelwiseError, match="c1.png: colour mask"):
        open_instances(root).read("c1")


# ----------------------------------------------------------------------------------------------------------------
# PASCAL VOC


def test_voc_objects_with_majority_class_and_void(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    Image.fromarray(rgba_image()[:, :, :3]).save(voc / "JPEGImages" / "2007_000032.jpg")
    objects = np.zeros((H, W), np.uint8)
    classes = np.zeros((H, W), np.uint8)
    objects[2:10, 2:12], classes[2:10, 2:12] = 1, 1  # aeroplane
    objects[14:22, 4:14], classes[14:22, 4:14] = 2, 15  # person ...
    classes[14, 4:6] = 1  # ... with two stray aeroplane pixels
    objects[4:8, 20:28], classes[4:8, 20:28] = 3, 15
    objects[1, :], classes[1, :] = VOC_VOID, VOC_VOID  # a void border line
    save_palette_png(voc / "SegmentationObject" / "2007_000032.png", objects)
    save_palette_png(voc / "SegmentationClass" / "2007_000032.png", classes)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    assert detect_instance_layout(tmp_path) == "voc"
    dataset = open_instances(tmp_path, split="val")
    assert dataset.ids == ["2007_000032"] and dataset.class_names[15] == "person"
    sample = dataset.read("2007_000032")
    assert sample.classes == {1: 1, 2: 15, 3: 15}
    assert sample.void is not None and sample.void[1].all() and np.count_nonzero(sample.void) == W
    assert not np.any(sample.labels == VOC_VOID) and np.all(sample.labels[1] == 0)
    assert any("disagree" in note for note in sample.notes)
    with pytest.raises(PixelwiseError, match="split list not found"):
        open_instances(tmp_path, split="nope")


# ----------------------------------------------------------------------------------------------------------------
# COCO JSON


def make_coco(root):
    (root / "val").mkdir(parents=True)
    Image.fromarray(rgba_image()[:, :, :3]).save(root / "val" / "000001.jpg")
    rle_mask = np.zeros((H, W), np.uint8)
    rle_mask[12:20, 16:28] = 1
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    crowd = np.zeros((H, W), np.uint8)
    crowd[0:4, 26:32] = 1
    crowd_counts = []  # uncompressed RLE, column-major run lengths starting with zeros
    flat, value, run = crowd.T.reshape(-1), 0, 0
    for pixel in flat:
        if pixel != value:
            crowd_counts.append(run)
            value, run = pixel, 0
        run += 1
    crowd_counts.append(run)
    data = {
        "images": [{"id": 7, "file_name": "000001.jpg", "height": H, "width": W}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {
                "id": 101,
                "image_id": 7,
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]],
            },  # polygon, a 10×8 box
            {
                "id": 102,
                "image_id": 7,
                "category_id": 18,
                "iscrowd": 0,
                "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")},
            },
            {
                "id": 103,
                "image_id": 7,
                "category_id": 1,
                "iscrowd": 1,
                "segmentation": {"size": [H, W], "counts": crowd_counts},
            },
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))
    return root, rle_mask, crowd


def test_coco_polygon_rle_and_crowd(tmp_path):
    root, rle_mask, crowd = make_coco(tmp_path / "coco")
    assert detect_instance_layout(root) == "coco"
    dataset = open_instances(root)
    assert dataset.class_names == ("background", "person", "dog") and dataset.category_ids == (0, 1, 18)
    sample = dataset.read("000001", with_image=True)
    assert sample.classes == {1: 1, 2: 2}
    assert sample.sources == {1: "annotation 101", 2: "annotation 102"}
    polygon = sample.labels == 1
    rows, cols = np.nonzero(polygon)
    assert (rows.min(), cols.min()) == (2, 2) and abs(np.count_nonzero(polygon) - 10 * 8) <= 20
    assert np.array_equal(sample.labels == 2, rle_mask.astype(bool))
    assert np.array_equal(sample.void, crowd.astype(bool))  # crowd: void, not an object
    # the JSON file itself, with the image folder given
    same = open_instances(root / "annotations" / "instances_val.json", images=root / "val").read(0)
    assert np.array_equal(same.labels, sample.labels)


def test_coco_bad_input(tmp_path):
    root, _, _ = make_coco(tmp_path / "coco")
    json_path = root / "annotations" / "instances_val.json"
    data = json.loads(json_path.read_text())
    data["images"][0]["width"] = W + 5
    json_path.write_text(json.dumps(data))
    with pytest.raises(PixelwiseError, match="but the JSON says 37×24"):
        open_instances(root).read(0)
    (root / "val" / "000001.jpg").unlink()
    with pytest.raises(PixelwiseError, match="image 000001.jpg not found"):
        open_instances(root)
    json_path.write_text("{broken")
    with pytest.raises(PixelwiseError, match="not readable JSON"):
        open_instances(json_path)


# ----------------------------------------------------------------------------------------------------------------
# Detection, semantic masks


def test_unknown_layout_and_missing_folder(tmp_path):
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("hello")
    with pytest.raises(PixelwiseError, match="no instance layout found"):
        open_instances(tmp_path / "random")
    with pytest.raises(PixelwiseError, match="no such file or folder"):
        open_instances(tmp_path / "absent")
    with pytest.raises(PixelwiseError, match="unknown instance layout"):
        open_instances(tmp_path, layout="kitti")


def test_semantic_to_instances():
    mask = np.zeros((6, 8), np.uint8)
    mask[0:2, 0:2] = 1
    mask[3:5, 3:5] = 1
    mask[5, 5] = 1  # touches the second block diagonally: the same region (8-connected)
    mask[0:2, 5:8] = 2
    mask[5, 0] = 255  # void: no object
    labels, classes = semantic_to_instances(mask)
    assert labels.dtype == np.int32 and classes == {1: 1, 2: 1, 3: 2}
    assert np.array_equal(labels == 1, (mask == 1) & (np.arange(8)[None, :] < 2))
    assert np.count_nonzero(labels == 2) == 5 and labels[5, 0] == 0
    assert np.array_equal(labels == 3, mask == 2)
