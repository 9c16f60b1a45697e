"""Reading images and masks (every format quirk) and the dataset checker (statistics, problems, exit code)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pixelwise.cli import data_check
from pixelwise.data.check import check_dataset
from pixelwise.data.imageio import MaskWarning, parse_colors, read_image, read_mask, read_pair
from pixelwise.data.layouts import find_pairs
from pixelwise.errors import PixelwiseError

from layout_fixtures import (
    lesion,
    make_folders,
    make_isic,
    make_ph2,
    save_image,
    save_jpeg_with_orientation,
    save_mask_1bit_bmp,
    save_mask_255,
    save_mask_palette,
    truncate,
    write_png_bomb,
    write_raw_png,
)

# ---------------------------------------------------------------------------------------------------- images


def test_image_modes_all_become_rgb_uint8(tmp_path):
    image, _ = lesion(20, 30)
    grey = image[..., 0]
    cases = {
        "rgb.png": (Image.fromarray(image), image),
        "grey.png": (Image.fromarray(grey), np.repeat(grey[..., None], 3, axis=2)),
        "rgba.png": (Image.fromarray(np.dstack([image, np.full(grey.shape, 128, np.uint8)])), image),
        "palette.png": (Image.fromarray(image).quantize(16), None),
    }
    for name, (pil, expected) in cases.items():
        pil.save(tmp_path / name)
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (20, 30, 3), name
        if expected is not None:
            np.testing.assert_array_equal(out, expected, err_msg=name)
    palette = read_image(tmp_path / "palette.png")
    assert np.abs(palette.astype(int) - image.astype(int)).mean() < 20  # quantised, but the same picture


def test_16_bit_images_scaled_from_full_range(tmp_path):
    values = np.linspace(0, 65535, 12 * 10).reshape(12, 10).astype(np.uint16)
    write_raw_png(tmp_path / "grey16.png", values, 16, 0)
    out = read_image(tmp_path / "grey16.png")
    np.testing.assert_array_equal(out[..., 0], np.rint(values / 257).astype(np.uint8))
    rgb = np.stack([values, values // 2, 65535 - values], axis=2)
    write_raw_png(tmp_path / "rgb16.png", rgb, 16, 2)
    out = read_image(tmp_path / "rgb16.png")
    assert out.shape == (12, 10, 3)
    assert np.abs(out.astype(int) - (rgb // 257).astype(int)).max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = 255  # left half white
    save_jpeg_with_orientation(tmp_path / "rotated.jpg", image, orientation=6)  # display = 90° clockwise
    out = read_image(tmp_path / "rotated.jpg")
    assert out.shape == (40, 20, 3)
    assert out[:15].mean() > 200 and out[25:].mean() < 50  # the white half is now on top


@pytest.mark.parametrize("kind", ["zero", "truncated_png", "truncated_jpg", "garbage", "bomb", "missing"])
def test_bad_image_files_raise_naming_the_file(tmp_path, kind):
    image, _ = lesion(64, 64)
    path = tmp_path / f"bad {kind}.png"
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "truncated_png":
        truncate(save_image(path, image), 0.5)
    elif kind == "truncated_jpg":
        path = truncate(save_image(tmp_path / "bad.jpg", image, quality=90), 0.4)
    elif kind == "garbage":
        path.write_bytes(b"this is not an image at all" * 10)
    elif kind == "bomb":
        write_png_bomb(path)
    with pytest.raises(PixelwiseError) as caught:
        read_image(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    expected = {
        "zero": "zero-byte",
        "truncated_png": "truncated",
        "truncated_jpg": "truncated",
        "garbage": "not a readable image",
        "bomb": "decompression-bomb",
        "missing": "not found",
    }[kind]
    assert expected in message


# ---------------------------------------------------------------------------------------------------- masks


def test_binary_mask_encodings_all_give_0_1(tmp_path):
    _, mask = lesion(24, 32)
    files = [
        save_mask_255(tmp_path / "grey255.png", mask),
        save_mask_1bit_bmp(tmp_path / "onebit.bmp", mask),
        save_mask_palette(tmp_path / "palette.png", mask),
        save_image(tmp_path / "grey01.png", mask),
        save_image(tmp_path / "rgb255.bmp", np.repeat((mask * 255)[..., None], 3, axis=2).astype(np.uint8)),
        save_image(tmp_path / "red_on_black.png", np.dstack([mask * 200, mask * 0, mask * 0]).astype(np.uint8)),
        write_raw_png(tmp_path / "grey16.png", mask.astype(np.uint16) * 65535, 16, 0),
    ]
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # none of these needs a repair
            out = read_mask(path)
        assert out.dtype == np.uint8, path.name
        np.testing.assert_array_equal(out, mask, err_msg=path.name)


def test_indexed_and_colour_multiclass_masks(tmp_path):
    classes = np.zeros((10, 12), np.uint8)
    classes[2:5, 2:6], classes[6:9, 5:10] = 1, 3
    np.testing.assert_array_equal(read_mask(save_image(tmp_path / "indexed.png", classes)), classes)
    np.testing.assert_array_equal(
        read_mask(save_mask_palette(tmp_path / "pal.png", classes, ((0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)))),
        classes,
    )
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    rgb_path = save_image(tmp_path / "rgb.png", palette[classes])
    colours = parse_colors("0,0,0=0; #ff0000=1; 0,255,0=2; 0,0,255=3")
    np.testing.assert_array_equal(read_mask(rgb_path, colours), classes)
    with pytest.raises(PixelwiseError, match="colour"):
        read_mask(rgb_path)  # several colours, no map
    with pytest.raises(PixelwiseError, match="not in the colour map"):
        read_mask(rgb_path, {(0, 0, 0): 0, (255, 0, 0): 1})
    with pytest.raises(PixelwiseError, match="malformed"):
        parse_colors("red=1")


def test_jpeg_mask_is_snapped_with_a_warning(tmp_path):
    _, mask = lesion(48, 64)
    path = save_image(tmp_path / "mask.jpg", (mask * 255).astype(np.uint8), quality=60)
    assert len(np.unique(np.asarray(Image.open(path)))) > 2  # really not binary any more
    with pytest.warns(MaskWarning, match="thresholded"):
        out = read_mask(path)
    assert set(np.unique(out).tolist()) <= {0, 1}
    assert (out != mask).mean() < 0.01


def test_truly_grey_mask_is_refused(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 50).astype(np.uint8), (20, 1))
    path = save_image(tmp_path / "probability map.png", ramp)
    with pytest.raises(PixelwiseError, match="grey, not binary") as caught:
        read_mask(path)
    assert str(path) in str(caught.value)
    void = np.zeros((20, 20), np.uint8)
    void[5:15, 5:15], void[4, :] = 1, 255  # 255 = "ignore" border, VOC style: must not be snapped into class 1
    with pytest.raises(PixelwiseError, match="values 0, 1, 255"):
        read_mask(save_image(tmp_path / "void.png", void))


def test_read_pair_resizes_same_aspect_masks_and_refuses_other_aspects(tmp_path):
    image, mask = lesion(40, 60)
    save_image(tmp_path / "img.png", image)
    small = np.asarray(Image.fromarray(mask * 255).resize((30, 20), Image.NEAREST)) // 255
    save_mask_255(tmp_path / "small.png", small)
    _, out, notes = read_pair(tmp_path / "img.png", tmp_path / "small.png")
    assert out.shape == (40, 60) and set(np.unique(out).tolist()) == {0, 1}
    assert any("resized" in n for n in notes)
    save_mask_255(tmp_path / "square.png", np.zeros((40, 40), np.uint8))
    with pytest.raises(PixelwiseError, match="aspect"):
        read_pair(tmp_path / "img.png", tmp_path / "square.png")


# ---------------------------------------------------------------------------------------------------- checker


def test_check_reports_statistics_of_a_clean_ph2_set(tmp_path):
    dataset, ids, diagnoses = make_ph2(tmp_path, n=6, rgb_masks=(2,), jpg_duplicates=(1,))
    report = check_dataset(find_pairs(dataset), progress=False, cache_dir=tmp_path / "cache")
    assert report.clean and report.problems == [] and report.bad_ids == set()
    assert report.num_classes == 2 and len(report.class_pixels) == 2
    assert set(report.image_sizes.values()) == {(28, 36)}
    assert set(report.mask_values.values()) == {(0, 1)}
    fg = report.summary()["foreground_fraction"]
    assert 0 < fg["min"] <= fg["median"] <= fg["max"] < 1
    assert report.class_pixels[1] == sum(int(round(f * 28 * 36)) for f in report.foreground.values())
    assert report.label_counts == {"atypical nevus": 2, "common nevus": 2, "melanoma": 2}


def _broken_dataset(root: Path) -> dict[str, str]:
    """A folders dataset with one problem per pair; returns {pair id: expected message fragment}."""
    ids = make_folders(root, n=8, size=(40, 60))
    images, masks = root / "images", root / "masks"
    truncate(images / f"{ids[0]}.png", 0.5)
    (masks / f"{ids[1]}.png").write_bytes(b"")
    save_image(masks / f"{ids[2]}.png", np.tile(np.linspace(0, 255, 60).astype(np.uint8), (40, 1)))
    save_mask_255(masks / f"{ids[3]}.png", np.zeros((40, 40), np.uint8))  # other aspect
    save_mask_255(masks / f"{ids[4]}.png", lesion(20, 30, seed=4)[1])  # same aspect, half size: resized
    (masks / f"{ids[5]}.png").unlink()
    save_image(masks / f"{ids[5]}.jpg", (lesion(40, 60, seed=5)[1] * 255).astype(np.uint8), quality=60)  # snapped
    write_png_bomb(images / f"{ids[6]}.png")
    return {
        ids[0]: "truncated",
        ids[1]: "zero-byte",
        ids[2]: "grey, not binary",
        ids[3]: "aspect",
        ids[6]: "decompression-bomb",
    }


def test_check_names_every_bad_file(tmp_path):
    expected = _broken_dataset(tmp_path / "ds")
    report = check_dataset(find_pairs(tmp_path / "ds"), progress=False, cache_dir=tmp_path / "cache")
    assert report.bad_ids == set(expected)
    for pair_id, fragment in expected.items():
        mine = [p for p in report.errors if p.pair_id == pair_id]
        assert len(mine) == 1 and fragment in mine[0].message, (pair_id, [p.message for p in mine])
        assert mine[0].path.is_file()
    assert [p.pair_id for p in report.warnings] == ["case_005"]
    assert "thresholded" in report.warnings[0].message
    assert report.resized_masks == 1
    assert [p.id for p in report.good_pairs] == ["case_004", "case_005", "case_007"]


def test_cached_check_gives_the_same_report_and_sees_changes(tmp_path):
    expected = _broken_dataset(tmp_path / "ds")
    index = find_pairs(tmp_path / "ds")
    fresh = check_dataset(index, progress=False, use_cache=False)
    first = check_dataset(index, progress=False, cache_dir=tmp_path / "cache")
    again = check_dataset(index, progress=False, cache_dir=tmp_path / "cache")
    for report in (first, again):
        assert report.summary() == fresh.summary()
    # repair one file: the cached verdict must not stick
    image, _ = lesion(40, 60, seed=0)
    save_image(tmp_path / "ds" / "images" / "case_000.png", image)
    repaired = check_dataset(find_pairs(tmp_path / "ds"), progress=False, cache_dir=tmp_path / "cache")
    assert repaired.bad_ids == set(expected) - {"case_000"}


def test_check_multiclass_infers_class_count(tmp_path):
    for i in range(3):
        classes = np.zeros((16, 16), np.uint8)
        classes[:8, :8], classes[8:, 8:] = 1, 2 + (i == 2)
        save_image(tmp_path / "images" / f"m{i}.png", lesion(16, 16, seed=i)[0])
        save_image(tmp_path / "masks" / f"m{i}.png", classes)
    report = check_dataset(find_pairs(tmp_path), progress=False, use_cache=False)
    assert report.num_classes == 4
    assert report.class_images == [3, 3, 2, 1]
    assert report.clean
    declared = check_dataset(find_pairs(tmp_path), progress=False, use_cache=False, num_classes=3)
    assert declared.num_classes == 3 and declared.bad_ids == {"m2"}
    assert "class 3" in declared.errors[0].message and declared.errors[0].path.name == "m2.png"


def test_check_command_exit_codes_and_output(tmp_path):
    import typer

    app = typer.Typer()
    app.command()(data_check)
    runner = CliRunner()
    make_isic(tmp_path / "clean", n=3)
    result = runner.invoke(app, [str(tmp_path / "clean"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "isic" in result.output and "3 pairs" in result.output and "no problems" in result.output
    _broken_dataset(tmp_path / "broken")
    result = runner.invoke(app, [str(tmp_path / "broken"), "--no-cache"], terminal_width=300)
    assert result.exit_code == 1
    assert "case_001.png" in result.output and "zero-byte" in result.output
    assert "5 errors, 1 warnings" in result.output
