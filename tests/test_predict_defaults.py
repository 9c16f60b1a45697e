"""What predict, evaluate and the API do without options: test-time augmentation (16 views: the 8 dihedral
ones at two scales), and a threshold chosen after training on the same averaged probabilities."""

import json

import torch

import pixelwise
from pixelwise.config import PREDICT_TTA
from pixelwise.deploy.contract import sidecar
from pixelwise.runs import RunFolder
from pixelwise.train import loop
from pixelwise.train.data import TrainData
from tests.tiny_run import make_tiny_run

from tiny_run import trained_config


class LeftHalf(torch.nn.Module):
    """Logits +6 on the left half and -1 on the right half of whatever view it is shown (pixels ignored)."""

    def forward(self, x):
        logits = torch.full((x.shape[0], 1, x.shape[-2], x.shape[-1]), -1.0)
        logits[..., : x.shape[-1] // 2] = 6.0
        return logits


def test_the_threshold_is_chosen_on_tta_averaged_probabilities(monkeypatch):
    size = 16
    masks = torch.ones(4, size, size, dtype=torch.uint8)  # all foreground
    images = torch.zeros(4, 3, size, size, dtype=torch.uint8)
    data = TrainData(images, masks, images, masks, num_classes=2, split={})
    config = trained_config(size=size, fast=False, num_classes=2).record
    modes = []
    real = loop.tta_probabilities

    def spy(predict_probs, x, modes_=PREDICT_TTA):
        modes.append(modes_)
        return real(predict_probs, x, modes_)

    monkeypatch.setattr(loop, "tta_probabilities", spy)
    # One pass: 0.998 left, 0.269 right; only thresholds below 0.269 keep the right half: 0.25 is chosen.
    # Over the views every pixel is left in half of them and right in the other half: about 0.633 everywhere,
    # and of the thresholds that keep it all (0.1 .. 0.6) the one nearest 0.5 is chosen.
    assert loop.choose_threshold_on_validation(LeftHalf(), data, config, torch.device("cpu")) == 0.5
    assert modes and set(modes) == {PREDICT_TTA}
    monkeypatch.setattr(loop, "PREDICT_TTA", "none")
    assert loop.choose_threshold_on_validation(LeftHalf(), data, config, torch.device("cpu")) == 0.25


def test_multiclass_runs_keep_argmax():
    data = TrainData(
        torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
        torch.zeros(2, 8, 8, dtype=torch.uint8),
        torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
        torch.zeros(2, 8, 8, dtype=torch.uint8),
        num_classes=3,
        split={},
    )
    assert (
        loop.choose_threshold_on_validation(LeftHalf(), data, trained_config(3, size=8).record, torch.device("cpu"))
        == 0.5
    )


def test_api_and_contract_defaults(tmp_path):
    run = make_tiny_run(tmp_path / "run", steps=1)
    assert pixelwise.load(run).tta == PREDICT_TTA == "d4-zoom"
    assert pixelwise.load(run, tta=False).tta == "none"
    config = RunFolder(run).load_config()
    meta = sidecar(config, RunFolder(run).weights_path, stride=32, opset=17, fold=None)
    assert "16 views" in meta["tta"]
    json.dumps(meta)
