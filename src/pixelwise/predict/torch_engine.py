"""The torch engine: a run's weights in PyTorch, fp32 (the default) or bf16 autocast."""

from __future__ import annotations

from pathlib import Path

import torch

from pixelwise.data.classes import activate
from pixelwise.models import build_model
from pixelwise.predict.predictor import RunPredictor
from pixelwise.runs import RunFolder, load_weights
from pixelwise.runtime import autocast, check_precision, network_input, pick_device


def torch_predictor(
    run: Path, tta: str = "none", device: str = "auto", fold: int | None = None, precision: str = "fp32"
) -> RunPredictor:
    """The run's models (all folds averaged, or only ``fold``) as a :class:`RunPredictor`.

    ``precision``: ``fp32`` (the default; the same masks as the ONNX engine) or ``bf16`` autocast (with
    channels_last inputs), faster on CUDA and CPUs with native bf16.
    """
    folder = RunFolder(run)
    config = folder.load_trained_config()
    bf16 = check_precision(precision) == "bf16"
    dev = pick_device(device)
    models = []
    members = folder.model_folders(config)
    for member in members if fold is None else [members[fold]]:
        model = build_model(
            config.recipe.model, config.record.num_classes, pretrained=False
        )  # the run's weights follow
        load_weights(model, member.weights_path)
        models.append(model.to(dev).eval())

    def predict_unit(unit: torch.Tensor) -> torch.Tensor:
        x = network_input(unit, config.record.mean, config.record.std, channels_last=bf16)
        total = None
        for model in models:
            with autocast(dev, bf16):
                probs = activate(model(x))
            total = probs if total is None else total + probs
        return total / len(models)

    return RunPredictor(folder.path, config, predict_unit, tta, dev, "torch", precision)
