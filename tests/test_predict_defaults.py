"""What predict, evaluate and the API do without options: test-time augmentation, and the post-processing
the run chose on its validation split (keep the largest region or not)."""

import json

import numpy as np
import pytest
import torch

import pixelwise
from pixelwise.config import PREDICT_TTA, TrainConfig
from pixelwise.deploy.contract import sidecar
from pixelwise.masks.postprocess import PostProcess
from pixelwise.runs import RunFolder
from pixelwise.train.loop import keep_largest_helps
from tests.cli_runner import run_cli
from tests.tiny_run import make_tiny_run, write_images


def _blob(mask, top, left, size):
    mask[top:top + size, left:left + size] = True


def test_keep_largest_helps_when_specks_are_false_positives():
    truth = torch.zeros(3, 32, 32, dtype=torch.bool)
    probs = torch.zeros(3, 32, 32)
    for i in range(3):
        _blob(truth[i], 8, 8, 12)
        probs[i, 8:20, 8:20] = 0.9
        probs[i, 26:29, 26:29] = 0.8  # a speck the truth does not have
    assert keep_largest_helps(probs, truth, 0.5)


def test_keep_largest_does_not_help_when_the_truth_has_several_regions():
    truth = torch.zeros(2, 32, 32, dtype=torch.bool)
    for i in range(2):
        _blob(truth[i], 2, 2, 10)
        _blob(truth[i], 18, 18, 8)
    probs = truth.float() * 0.9
    assert not keep_largest_helps(probs, truth, 0.5)
    # a tie (one region everywhere) keeps every region too
    single = torch.zeros(2, 32, 32, dtype=torch.bool)
    _blob(single[0], 4, 4, 10)
    _blob(single[1], 4, 4, 10)
    assert not keep_largest_helps(single.float(), single, 0.5)


def test_void_pixels_do_not_decide():
    truth = torch.zeros(1, 32, 32, dtype=torch.bool)
    _blob(truth[0], 8, 8, 12)
    probs = truth.float() * 0.9
    probs[0, 26:29, 26:29] = 0.8
    void = torch.zeros_like(truth)
    void[0, 24:, 24:] = True  # the speck lies in void: both choices score the same
    assert not keep_largest_helps(probs, truth, 0.5, void)


def test_post_process_resolves_to_the_run_choice():
    chose = TrainConfig(keep_largest=True)
    assert PostProcess().for_run(chose).keep_largest is True
    assert PostProcess().for_run(TrainConfig()).keep_largest is False
    assert PostProcess(keep_largest=False).for_run(chose).keep_largest is False  # the user's word wins


@pytest.fixture(scope="module")
def keeping_run(tmp_path_factory):
    """A tiny binary run whose config says: keep the largest region."""
    folder = make_tiny_run(tmp_path_factory.mktemp("keep") / "run", steps=2)
    run = RunFolder(folder)
    config = run.load_config()
    config.keep_largest = True
    run.write_config(config)
    return folder


def test_api_defaults_are_tta_and_the_run_choice(keeping_run):
    seg = pixelwise.load(keeping_run)
    assert seg.tta == PREDICT_TTA == "d4"
    assert seg.post.keep_largest is True
    plain = pixelwise.load(keeping_run, tta=False, keep_largest=False)
    assert (plain.tta, plain.post.keep_largest) == ("none", False)


def test_predict_applies_the_run_choice_unless_told_otherwise(keeping_run, tmp_path, capsys, monkeypatch):
    from PIL import Image
    from scipy import ndimage

    images = write_images(tmp_path / "in")
    for out, flags in (("kept", []), ("all", ["--no-keep-largest"])):
        code, output = run_cli(["predict", keeping_run, images[0], "--out", tmp_path / out, *flags], capsys, monkeypatch)
        assert code == 0, output

    kept = np.asarray(Image.open(tmp_path / "kept" / "img0_mask.png")) > 0
    every = np.asarray(Image.open(tmp_path / "all" / "img0_mask.png")) > 0
    assert ndimage.label(kept, structure=np.ones((3, 3)))[1] <= 1
    assert kept.sum() <= every.sum()
    assert not (kept & ~every).any()  # keeping a region never adds pixels


def test_onnx_contract_states_the_run_choice(keeping_run):
    config = RunFolder(keeping_run).load_config()
    meta = sidecar(config, RunFolder(keeping_run).weights_path, stride=32, opset=17, fold=None)
    assert meta["keep_largest"] is True
    assert "largest" in meta["output"]["postprocessing"]
    json.dumps(meta)
