"""Tests for instances from semantic masks and for mask post-processing."""

import csv
import math

import numpy as np
import pytest

from pixelwise.masks.instances import (
    INSTANCE_COLUMNS,
    count_instances,
    instances_from_mask,
    mirror_asymmetry,
    outer_perimeter,
    write_instances_csv,
)
from pixelwise.masks.postprocess import postprocess_mask

SHAPE = (100, 140)


def _ellipse(cy, cx, a, b, angle=0.0, shape=SHAPE):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    c, s = math.cos(angle), math.sin(angle)
    u = c * (xx - cx) + s * (yy - cy)
    v = -s * (xx - cx) + c * (yy - cy)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def _three_regions():
    mask = np.zeros(SHAPE, bool)
    mask[10:30, 20:60] = True  # 800 px rectangle, first in raster order
    mask |= _ellipse(70, 100, 25, 14)  # largest blob
    mask[90, 5] = mask[91, 6] = True  # a 2-px diagonal speck (8-connected)
    return mask


def test_instances_geometry():
    rows = instances_from_mask(_three_regions(), "img1")
    assert [row["instance"] for row in rows] == [1, 2, 3]
    assert all(set(row) == set(INSTANCE_COLUMNS) for row in rows)
    rect = rows[0]
    assert rect["image"] == "img1" and rect["area_px"] == 800
    assert rect["area_percent"] == pytest.approx(100 * 800 / (100 * 140))
    assert (rect["bbox_x"], rect["bbox_y"], rect["bbox_width"], rect["bbox_height"]) == (20, 10, 40, 20)
    assert (rect["centroid_x"], rect["centroid_y"]) == pytest.approx((39.5, 19.5))
    assert rect["equivalent_diameter"] == pytest.approx(math.sqrt(4 * 800 / math.pi))
    # marching squares through edge midpoints: the 40×20 box minus four cut corners
    assert rect["perimeter"] == pytest.approx(2 * (40 + 20) - 4 * (1 - math.sqrt(0.5)))
    assert rect["asymmetry"] == pytest.approx(0.0, abs=1e-9)
    speck = rows[2]
    assert speck["area_px"] == 2  # diagonal neighbours are one region


def test_min_area_and_keep_largest():
    mask = _three_regions()
    assert len(instances_from_mask(mask, "a", min_area=3)) == 2
    largest = instances_from_mask(mask, "a", keep_largest=True)
    assert len(largest) == 1 and largest[0]["area_px"] == int(_ellipse(70, 100, 25, 14).sum())
    assert instances_from_mask(np.zeros(SHAPE, bool), "a") == []


def test_perimeter_of_a_disk_is_close_to_two_pi_r():
    disk = _ellipse(50, 70, 30, 30)
    assert outer_perimeter(disk) == pytest.approx(2 * math.pi * 30, rel=0.08)
    holed = disk.copy()
    holed[45:55, 65:75] = False
    assert outer_perimeter(holed) == pytest.approx(outer_perimeter(disk))  # holes are not border


def test_asymmetry_separates_symmetric_from_lopsided_shapes():
    for angle in (0.0, 0.6, 1.2):
        about_major, about_minor = mirror_asymmetry(_ellipse(50, 70, 35, 18, angle))
        assert about_major < 0.03 and about_minor < 0.03
    # an egg: symmetric about its long axis, lopsided about the short one
    egg = _ellipse(50, 70, 35, 18) | _ellipse(50, 45, 12, 26)
    about_major, about_minor = mirror_asymmetry(egg)
    assert about_major < 0.03 < 0.15 < about_minor


def test_write_instances_csv_and_counts(tmp_path):
    rows = instances_from_mask(_three_regions(), "img1") + instances_from_mask(_ellipse(20, 20, 5, 5), "img2")
    path = write_instances_csv(tmp_path / "instances.csv", rows)
    with open(path, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert len(read) == 4 and tuple(read[0]) == INSTANCE_COLUMNS
    assert int(read[0]["area_px"]) == 800
    assert count_instances(rows, ["img1", "img2", "img3"]) == {"img1": 3, "img2": 1, "img3": 0}
    empty = write_instances_csv(tmp_path / "empty.csv", [])
    assert empty.read_text().strip() == ",".join(INSTANCE_COLUMNS)


def test_postprocess_mask():
    mask = _three_regions()
    mask[65:75, 95:105] = False  # a hole in the ellipse
    original = mask.copy()
    assert postprocess_mask(mask).sum() == mask.sum()
    cleaned = postprocess_mask(mask, min_area=3)
    assert cleaned.sum() == mask.sum() - 2 and not cleaned[90, 5]
    largest = postprocess_mask(mask, keep_largest=True, fill_holes=True)
    np.testing.assert_array_equal(largest, _ellipse(70, 100, 25, 14))
    np.testing.assert_array_equal(mask, original)  # input untouched
    assert not postprocess_mask(np.zeros(SHAPE, bool), keep_largest=True, min_area=10).any()
    # min_area larger than every region leaves nothing, even with keep_largest
    assert not postprocess_mask(mask, keep_largest=True, min_area=10_000).any()
