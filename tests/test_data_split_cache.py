"""Seeded stratified splits and k-folds, split.json round trip, and the on-disk array cache."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import pixelwise.data.cache as cache_module
from pixelwise.data.cache import default_cache_dir, load_arrays
from pixelwise.data.layouts import Pair, find_pairs
from pixelwise.data.split import load_split, make_split, save_split, select
from pixelwise.errors import PixelwiseError

from layout_fixtures import make_folders, save_image

DEV_SET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isic2017-train-256"


def fake_pairs(n: int, labels: list[str] | None = None) -> list[Pair]:
    return [
        Pair(f"id{i:04d}", Path(f"/x/{i}.png"), Path(f"/x/{i}_m.png"), labels[i] if labels else None) for i in range(n)
    ]


# ---------------------------------------------------------------------------------------------------- splits


def test_split_is_a_seeded_partition_independent_of_input_order():
    pairs = fake_pairs(101)
    split = make_split(pairs, seed=3)
    assert sorted(split["train"] + split["val"] + split["test"]) == [p.id for p in pairs]
    assert [len(split[k]) for k in ("train", "val", "test")] == [71, 15, 15]
    assert make_split(list(reversed(pairs)), seed=3) == split
    assert make_split(pairs, seed=4) != split


def test_split_stratifies_by_label():
    labels = ["melanoma"] * 20 + ["common nevus"] * 60 + ["atypical nevus"] * 40
    pairs = fake_pairs(120, labels)
    label_of = {p.id: p.label for p in pairs}
    for seed in range(5):
        split = make_split(pairs, seed=seed, ratios=(0.5, 0.25, 0.25))
        for part, share in (("train", 0.5), ("val", 0.25), ("test", 0.25)):
            counts = Counter(label_of[i] for i in split[part])
            assert counts == {"melanoma": 20 * share, "common nevus": 60 * share, "atypical nevus": 40 * share}


def test_split_with_uneven_strata_keeps_totals_and_nonempty_parts():
    labels = ["a"] * 7 + ["b"] * 3 + ["c"]
    split = make_split(fake_pairs(11, labels), seed=0)
    # 11 × (0.7, 0.15, 0.15) = 7.7, 1.65, 1.65: largest remainders give 8, 2, 1
    assert [len(split[k]) for k in ("train", "val", "test")] == [8, 2, 1]
    assert sum(1 for i in split["train"] if int(i[2:]) < 7) in (5, 6)  # stratum "a" (7 pairs) ≈ 70 % in train
    tiny = make_split(fake_pairs(3), seed=0)
    assert all(len(tiny[k]) == 1 for k in ("train", "val", "test"))


def test_kfold_tests_partition_the_data_and_never_leak():
    labels = ["m"] * 10 + ["n"] * 30
    pairs = fake_pairs(40, labels)
    tests = []
    for fold in range(5):
        split = make_split(pairs, seed=1, folds=5, fold=fold, ratios=(0.8, 0.2, 0.0))
        assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
        assert len(split["test"]) == 8 and sum(1 for i in split["test"] if int(i[2:]) < 10) == 2  # stratified
        assert len(split["val"]) == 6  # 20 % of the 32 non-test pairs, rounded
        tests += split["test"]
    assert sorted(tests) == [p.id for p in pairs]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"ratios": (0.5, 0.5, 0.5)}, "summing to 1"),
        ({"folds": 1, "fold": 0}, "at least 2"),
        ({"folds": 3, "fold": 3}, "between 0 and 2"),
        ({"folds": 3}, "between 0 and 2"),
        ({"fold": 1}, "--folds"),
    ],
)
def test_split_option_errors(kwargs, fragment):
    with pytest.raises(PixelwiseError, match=fragment):
        make_split(fake_pairs(10), seed=0, **kwargs)


def test_split_json_round_trip_and_leak_detection(tmp_path):
    pairs = fake_pairs(20)
    split = make_split(pairs, seed=0)
    path = save_split(tmp_path / "run" / "split.json", split, seed=0, ratios=[0.7, 0.15, 0.15], layout="folders")
    loaded = load_split(path)
    assert {k: loaded[k] for k in ("train", "val", "test")} == split
    assert loaded["seed"] == 0 and loaded["counts"] == {k: len(v) for k, v in split.items()}
    assert [p.id for p in select(pairs, loaded["test"])] == split["test"]
    with pytest.raises(PixelwiseError, match="not in the dataset"):
        select(pairs[:5], loaded["test"] + ["ghost"])
    leaky = dict(split, test=split["test"] + split["train"][:1])
    with pytest.raises(PixelwiseError, match="leak"):
        save_split(tmp_path / "leak.json", leaky)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PixelwiseError, match="not valid JSON"):
        load_split(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------------- cache


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PIXELWISE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "pixelwise"


def count_decodes(monkeypatch) -> list[str]:
    """Record every pair decoded (instead of read from the cache)."""
    decoded: list[str] = []
    original = cache_module.read_pair

    def spy(image_path, mask_path, colors=None, void=()):
        decoded.append(Path(image_path).stem)
        return original(image_path, mask_path, colors, void)

    monkeypatch.setattr(cache_module, "read_pair", spy)
    return decoded


def test_load_arrays_resizes_and_caches(tmp_path, monkeypatch):
    make_folders(tmp_path / "ds", n=4, size=(40, 60))
    pairs = find_pairs(tmp_path / "ds").pairs
    decoded = count_decodes(monkeypatch)
    images, masks = load_arrays(pairs, 32, tmp_path / "cache", progress=False)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    assert masks.dtype == torch.uint8 and masks.shape == (4, 32, 32)
    assert set(masks.unique().tolist()) == {0, 1}
    assert sorted(decoded) == [p.id for p in pairs]
    # the resize is bilinear + antialias on the image, nearest on the mask
    from PIL import Image

    image = np.asarray(Image.open(pairs[0].image)).astype(np.float32)
    reference = torch.nn.functional.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None],
        size=(32, 32),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[0]
    assert (images[0].float() - reference).abs().max() <= 1.0
    # warm: nothing decoded, identical arrays; a moved cache folder still works
    decoded.clear()
    again = load_arrays(pairs, 32, tmp_path / "cache", progress=False)
    assert decoded == [] and torch.equal(again[0], images) and torch.equal(again[1], masks)
    os.rename(tmp_path / "cache", tmp_path / "moved cache")
    moved = load_arrays(pairs, 32, tmp_path / "moved cache", progress=False)
    assert decoded == [] and torch.equal(moved[0], images)
    # another size is another entry
    small = load_arrays(pairs, 16, tmp_path / "moved cache", progress=False)
    assert small[0].shape == (4, 3, 16, 16) and len(decoded) == 4


def test_cache_rebuilds_only_a_changed_file(tmp_path, monkeypatch):
    make_folders(tmp_path / "ds", n=3, size=(24, 24))
    pairs = find_pairs(tmp_path / "ds").pairs
    first = load_arrays(pairs, 16, tmp_path / "cache", progress=False)
    decoded = count_decodes(monkeypatch)
    time.sleep(0.01)
    new_image = np.full((24, 24, 3), 7, np.uint8)
    save_image(pairs[1].image, new_image)
    second = load_arrays(pairs, 16, tmp_path / "cache", progress=False)
    assert decoded == [pairs[1].id]
    assert torch.equal(second[0][0], first[0][0]) and (second[0][1] == 7).all()


def test_damaged_cache_entry_is_rebuilt_and_unreadable_file_named(tmp_path, monkeypatch):
    make_folders(tmp_path / "ds", n=2, size=(24, 24))
    pairs = find_pairs(tmp_path / "ds").pairs
    first = load_arrays(pairs, 16, tmp_path / "cache", progress=False)
    for entry in (tmp_path / "cache" / "arrays").rglob("*.npy"):
        entry.write_bytes(entry.read_bytes()[:100])
    decoded = count_decodes(monkeypatch)
    second = load_arrays(pairs, 16, tmp_path / "cache", progress=False)
    assert len(decoded) == 2 and torch.equal(first[0], second[0])
    pairs[0].image.write_bytes(b"broken")
    with pytest.raises(PixelwiseError, match="case_000.png"):
        load_arrays(pairs, 16, tmp_path / "cache", progress=False)
    with pytest.raises(PixelwiseError, match="without mask"):
        load_arrays([Pair("x", pairs[1].image, None)], 16, tmp_path / "cache", progress=False)


def test_check_with_size_fills_the_array_cache(tmp_path, monkeypatch):
    from pixelwise.data.check import check_dataset

    make_folders(tmp_path / "ds", n=3, size=(24, 24))
    index = find_pairs(tmp_path / "ds")
    check_dataset(index, progress=False, cache_dir=tmp_path / "cache", size=16)
    decoded = count_decodes(monkeypatch)
    images, _ = load_arrays(index.pairs, 16, tmp_path / "cache", progress=False)
    assert decoded == [] and images.shape == (3, 3, 16, 16)


@pytest.mark.parametrize("index_text", ["[]", '{"x": 5}', '{"x": [1, 2]}', '"text"', "{bad json"])
def test_cache_index_and_records_of_the_wrong_shape_are_rebuilt(tmp_path, index_text):
    from pixelwise.data.check import check_dataset

    make_folders(tmp_path / "ds", n=3, size=(24, 24))
    index = find_pairs(tmp_path / "ds")
    first = check_dataset(index, progress=False, cache_dir=tmp_path / "cache", size=16)
    entries = json.loads((tmp_path / "cache" / "hashes.json").read_text())
    damaged = json.loads(index_text) if index_text != "{bad json" else None
    if isinstance(damaged, dict):  # every real entry damaged the same way
        damaged = {name: value for name in entries for value in damaged.values()}
    (tmp_path / "cache" / "hashes.json").write_text(json.dumps(damaged) if damaged is not None else index_text)
    for record in (tmp_path / "cache" / "checks").rglob("*.json"):
        record.write_text(index_text)
    again = check_dataset(index, progress=False, cache_dir=tmp_path / "cache", size=16)
    assert again.summary() == first.summary()
    images, _ = load_arrays(index.pairs, 16, tmp_path / "cache", progress=False)
    assert images.shape == (3, 3, 16, 16)


@pytest.mark.skipif(not DEV_SET.is_dir(), reason="development set not present")
def test_development_set_split_is_stratified_by_melanoma():
    pairs = find_pairs(DEV_SET).pairs
    split = make_split(pairs, seed=0)
    label_of = {p.id: p.label for p in pairs}
    shares = [sum(label_of[i] == "melanoma" for i in split[k]) / len(split[k]) for k in ("train", "val", "test")]
    assert max(shares) - min(shares) < 0.01
