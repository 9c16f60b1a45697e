"""Classes of a data set: label files, --merge, --ignore-index, the checker's unknown values, class weights and
void pixels in the losses, and a multi-class training run that uses them end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.cli import main
from pixelwise.data.classes import IGNORE, UNKNOWN, ClassMap, class_map_for, parse_merge, read_label_file
from pixelwise.data.imageio import read_mask
from pixelwise.errors import PixelwiseError
from pixelwise.losses import build_loss
from pixelwise.train.data import median_frequency_weights


def run_cli(args: list, capsys) -> tuple[int, str]:
    argv = sys.argv
    sys.argv = ["pixelwise", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, (captured.err + captured.out).replace("\n", "")  # rich wraps long lines at the terminal width


LABELS = "0 null\n1 hat\n2 hair\n3 coat\n4 shirt\n5 pants\n6 void\n"


def test_label_txt_names_colours_and_void(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# comment\n0 background\n1 lesion 255 0 0\n2 big scar #00ff00\n255 void\n")
    labels = read_label_file(path)
    assert labels.names == {0: "background", 1: "lesion", 2: "big scar"}
    assert labels.colors == {1: (255, 0, 0), 2: (0, 255, 0)}
    assert labels.ignore == (255,)
    class_map, _ = class_map_for(path, None)
    assert class_map.names == ("background", "lesion", "big scar")
    assert class_map.colors[1] == (255, 0, 0) and class_map.table[255] == IGNORE and class_map.table[3] == UNKNOWN


def test_label_json_and_round_trip(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(
        json.dumps(
            {
                "classes": [{"index": 0, "name": "bg"}, {"index": 1, "name": "road", "color": [128, 64, 128]}],
                "ignore": [11],
            }
        )
    )
    class_map, _ = class_map_for(path, None, (200,))
    assert class_map.names == ("bg", "road") and class_map.colors[1] == (128, 64, 128)
    assert class_map.ignored_values == [11, 200]
    assert ClassMap.from_dict(json.loads(json.dumps(class_map.to_dict()))) == class_map


@pytest.mark.parametrize("text", ["0 a\n0 b\n", "x background\n", "0 background\n2 gap\n"])
def test_bad_label_files_are_one_line_errors(tmp_path, text):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(PixelwiseError, match="labels.txt"):
        class_map_for(path, None)


def test_merge_groups_names_wildcard_and_background(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text(LABELS)
    class_map, notes = class_map_for(path, "upper=coat,SHIRT;lower=pants;hair=2")
    assert class_map.names == ("background", "upper", "lower", "hair")
    assert [class_map.table[v] for v in range(6)] == [0, 0, 3, 1, 1, 2]  # hat joins the background
    assert class_map.table[6] == IGNORE  # "void" in the label file
    assert notes and "hat" in notes[0]
    wildcard, notes = class_map_for(path, "upper=coat,shirt;other=*")
    assert [wildcard.table[v] for v in range(6)] == [0, 2, 2, 1, 1, 2] and not notes
    mask = np.array([[0, 1, 3], [5, 6, 4]], np.uint8)
    assert class_map.apply(mask).tolist() == [[0, 0, 1], [2, IGNORE, 1]]
    assert class_map.apply(torch.from_numpy(mask)).tolist() == [[0, 0, 1], [2, IGNORE, 1]]


@pytest.mark.parametrize(
    "merge, message",
    [
        ("upper=coat;lower=coat", "two groups"),
        ("upper=cape", "unknown label"),
        ("upper", "cannot read"),
        ("a=coat;a=pants", "defined twice"),
    ],
)
def test_bad_merges_say_what_to_fix(tmp_path, merge, message):
    path = tmp_path / "labels.txt"
    path.write_text(LABELS)
    with pytest.raises(PixelwiseError, match=message):
        class_map_for(path, merge)


def test_merge_file_with_comments(tmp_path):
    path = tmp_path / "merge.txt"
    path.write_text("# groups; one per line\nupper=coat,shirt\n\nlower=pants  # legs\n")
    assert parse_merge(str(path)) == [("upper", ["coat", "shirt"]), ("lower", ["pants"])]


def test_void_values_are_kept_by_the_mask_reader(tmp_path):
    indexed = np.array([[0, 1, 2], [255, 255, 1]], np.uint8)
    Image.fromarray(indexed).save(tmp_path / "m.png")
    with pytest.raises(PixelwiseError, match="neither binary"):
        read_mask(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", void=(255,)).tolist() == indexed.tolist()
    binary = np.array([[0, 255], [128, 0]], np.uint8)  # 0/255 foreground with 128 void
    Image.fromarray(binary).save(tmp_path / "b.png")
    assert read_mask(tmp_path / "b.png", void=(128,)).tolist() == [[0, 1], [128, 0]]


def test_median_frequency_weights_by_hand():
    masks = torch.zeros(2, 2, 4, dtype=torch.uint8)
    masks[0, 0, :2] = 1  # image 0: class 1 = 2 of 8 pixels
    masks[1, :, :] = 2  # image 1: class 2 = 7 of 8 pixels, one void pixel
    masks[1, 0, 0] = IGNORE
    weights = median_frequency_weights(masks, 4)
    freq = np.array([6 / 8, 2 / 8, 7 / 7])  # class 0 only in image 0; image 1 has 7 counted pixels
    expected = np.median(freq) / freq
    assert weights[:3].tolist() == pytest.approx(expected.tolist())
    assert weights[3] == 0  # absent class


@pytest.mark.parametrize("name", ["bce", "dice", "bce+dice", "focal"])
@pytest.mark.parametrize("num_classes", [2, 4])
def test_void_pixels_change_no_loss(name, num_classes):
    torch.manual_seed(0)
    k = 1 if num_classes == 2 else num_classes
    logits = torch.randn(2, k, 8, 8)
    masks = torch.randint(0, num_classes, (2, 8, 8), dtype=torch.uint8)
    void = torch.zeros(2, 8, 8, dtype=torch.bool)
    void[:, :3] = True
    loss = build_loss(name, num_classes)
    with_void = loss(logits, masks.masked_fill(void, IGNORE))
    # whatever the logits say on void pixels, the loss is the same
    changed = logits.clone()
    changed[:, :, :3] = 50.0
    assert float(loss(changed, masks.masked_fill(void, IGNORE))) == pytest.approx(float(with_void), rel=1e-5)
    assert torch.isfinite(with_void)
    if name != "dice":  # and it differs from a loss that counts them
        assert float(loss(changed, masks)) != pytest.approx(float(with_void), rel=1e-3)


def test_class_weights_weight_the_cross_entropy():
    logits = torch.zeros(1, 3, 2, 2)
    masks = torch.tensor([[[0, 0], [0, 1]]], dtype=torch.uint8)
    plain = build_loss("bce", 3)(logits, masks)
    weighted = build_loss("bce", 3, class_weights=torch.tensor([1.0, 1.0, 1.0]))(logits, masks)
    assert float(plain) == pytest.approx(float(weighted))
    logits[0, 1] = 2.0  # class 1 favoured: class-0 pixels cost more, the class-1 pixel less
    favour_bg = build_loss("bce", 3, class_weights=torch.tensor([1.0, 0.1, 1.0]))(logits, masks)
    favour_fg = build_loss("bce", 3, class_weights=torch.tensor([0.1, 1.0, 1.0]))(logits, masks)
    assert float(favour_fg) < float(favour_bg)


def parsing_set(root: Path, n: int = 12, stray: bool = False) -> Path:
    """A small parsing-like set: masks with label values 0..5 (names in labels.txt) and 6 = void."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        for value, (r, c) in zip((1, 2, 3, 4, 5), ((2, 2), (2, 18), (16, 2), (16, 18), (10, 10))):
            mask[r : r + 10, c : c + 10] = value
            image[r : r + 10, c : c + 10] = (value * 45, 200 - value * 30, 30 * (i % 3))
        mask[30:, :] = 6
        if stray and i == 3:
            mask[0, 0] = 9
        Image.fromarray(image).save(root / "images" / f"p{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"p{i:02d}.png")
    (root / "labels.txt").write_text(LABELS)
    return root


def test_train_merged_classes_from_the_label_file_in_the_data_folder(tmp_path, capsys):
    data = parsing_set(tmp_path / "data")
    code, text = run_cli(
        [
            "train",
            "--data",
            data,
            "--merge",
            "clothes=coat,shirt,pants;hair=hair",
            "--class-weights",
            "median-freq",
            "--model",
            "unet",
            "--size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--out",
            tmp_path / "run",
            "--cache-dir",
            tmp_path / "cache",
        ],
        capsys,
    )
    assert code == 0, text
    config = json.loads((tmp_path / "run" / "config.json").read_text())["record"]
    assert config["num_classes"] == 3
    assert config["classes"]["names"] == ["background", "clothes", "hair"]
    assert config["classes"]["values"]["6"] == "ignore"
    assert len(config["class_weights"]) == 3
    assert "hat" in text  # the label named in no group is said, not dropped silently


def test_unknown_mask_value_names_the_file_and_value(tmp_path, capsys):
    data = parsing_set(tmp_path / "data", stray=True)
    code, text = run_cli(
        [
            "train",
            "--data",
            data,
            "--model",
            "unet",
            "--size",
            "32",
            "--epochs",
            "1",
            "--out",
            tmp_path / "run",
            "--cache-dir",
            tmp_path / "cache",
        ],
        capsys,
    )
    assert code != 0 and "Traceback" not in text
    assert "p03.png" in text and "9" in text and "--ignore-index" in text
    assert not (tmp_path / "run").exists() or not (tmp_path / "run" / "config.json").exists()


def test_binary_masks_ignore_a_many_class_label_file_with_a_note(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(8):
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 8 + i : 20 + i] = 255
        Image.fromarray(np.dstack([mask // 2] * 3)).save(data / "images" / f"b{i}.png")
        Image.fromarray(mask).save(data / "masks" / f"b{i}.png")
    (data / "labels.txt").write_text(LABELS)
    code, text = run_cli(
        [
            "train",
            "--data",
            data,
            "--model",
            "unet",
            "--size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--out",
            tmp_path / "run",
            "--cache-dir",
            tmp_path / "cache",
        ],
        capsys,
    )
    assert code == 0, text
    assert "masks are binary" in text
    assert json.loads((tmp_path / "run" / "config.json").read_text())["record"]["num_classes"] == 2


def test_data_check_uses_the_label_file_merge_and_void_as_train_does(tmp_path, capsys):
    data = parsing_set(tmp_path / "data", stray=True)
    code, text = run_cli(["data", "check", data, "--cache-dir", tmp_path / "cache"], capsys)
    assert code == 1 and "p03.png" in text and "value(s) 9" in text
    assert "hat" in text and "coat" in text  # class names from labels.txt in the statistics
    code, text = run_cli(
        [
            "data",
            "check",
            data,
            "--cache-dir",
            tmp_path / "cache",
            "--ignore-index",
            "9",
            "--merge",
            "clothes=coat,shirt,pants;hair=hair",
        ],
        capsys,
    )
    assert code == 0, text
    assert "merged into 3 classes" in text and "clothes" in text
