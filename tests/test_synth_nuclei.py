"""``pixelwise data synth --task instances``: the embedded nuclei set, in the DSB 2018 layout, reproducible, read
in place as instance data and trained as instances by the default command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pixelwise.data.layouts import find_pairs
from pixelwise.data.synth_nuclei import make_synth_nuclei
from pixelwise.errors import PixelwiseError
from pixelwise.masks.instance_decode import touching_pairs

from cli_runner import run_cli


def file_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_same_seed_same_bytes_and_more_images_keep_the_first(tmp_path):
    a = make_synth_nuclei(tmp_path / "a", n=3, size=64, seed=4, progress=False)
    b = make_synth_nuclei(tmp_path / "b", n=3, size=64, seed=4, progress=False)
    c = make_synth_nuclei(tmp_path / "c", n=5, size=64, seed=4, progress=False)
    other = make_synth_nuclei(tmp_path / "d", n=3, size=64, seed=5, progress=False)
    assert file_bytes(a) == file_bytes(b)
    grown = file_bytes(c)
    assert all(grown[name] == data for name, data in file_bytes(a).items())
    assert file_bytes(other) != file_bytes(a)


def test_read_in_place_as_dsb_instances_with_touching_nuclei_and_no_overlaps(tmp_path):
    root = make_synth_nuclei(tmp_path / "nuclei", n=6, size=96, seed=0, progress=False)
    index = find_pairs(root)
    assert index.layout == "dsb2018" and len(index.pairs) == 6 and all(p.instances for p in index.pairs)
    touching = 0
    for pair in index.pairs:
        masks = np.stack([np.asarray(Image.open(m)) > 0 for m in sorted(pair.mask.iterdir())])
        assert masks.sum(axis=(1, 2)).min() >= 6
        assert masks.sum(axis=0).max() == 1, f"{pair.id}: masks overlap"
        labels = (masks * np.arange(1, len(masks) + 1)[:, None, None]).sum(axis=0)
        touching += touching_pairs(labels)
        image = np.asarray(Image.open(pair.image))
        assert image.shape == (96, 96, 4) and image[..., 3].min() == 255  # RGBA, as DSB ships it
        inside, outside = image[..., 0][labels > 0].mean(), image[..., 0][labels == 0].mean()
        assert inside > outside + 40  # bright nuclei on a dark background
    assert touching >= 6  # touching nuclei: what the border class is for


def test_an_interrupted_set_is_completed_and_another_folder_refused(tmp_path):
    root = make_synth_nuclei(tmp_path / "n", n=3, size=48, seed=1, progress=False)
    whole = file_bytes(root)
    (root / "synth_0002" / "images" / "synth_0002.png").unlink()
    manifest = json.loads((root / "synth.json").read_text())
    (root / "synth.json").write_text(json.dumps({**manifest, "complete": False}))
    make_synth_nuclei(root, n=3, size=48, seed=1, progress=False)
    assert file_bytes(root) == whole
    with pytest.raises(PixelwiseError, match="different synth set"):
        make_synth_nuclei(root, n=3, size=48, seed=2, progress=False)


def test_the_cli_writes_it_and_the_default_train_reads_instances(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    data, run = tmp_path / "nuclei", tmp_path / "run"
    code, output = run_cli(["data", "synth", data, "--task", "instances", "--n", 8, "--size", 48], capsys, monkeypatch)
    assert code == 0 and "ID/images" in output, output
    args = ["train", "--data", data, "--out", run, "--epochs", 1, "--batch-size", 4, "--model", "unet"]
    code, output = run_cli([*args, "--cache-dir", tmp_path / "cache", "--no-fast"], capsys, monkeypatch)
    assert code == 0, output
    record = json.loads((run / "config.json").read_text())["record"]
    assert record["task"] == "instances" and record["classes"]["names"] == ["background", "border", "nucleus"]
