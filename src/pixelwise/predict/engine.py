"""Load a run and turn images into probabilities: the torch engine (and the ONNX one, in ``onnx_engine``).

``RunPredictor`` hides folds and TTA: it averages the probabilities of every fold's model and of
every test-time transform, so callers see one model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pixelwise.data.preprocess import normalize, probabilities, to_unit
from pixelwise.errors import PixelwiseError
from pixelwise.models import build_model
from pixelwise.predict.tta import tta_probabilities
from pixelwise.train import checkpoint
from pixelwise.train.config import TrainConfig
from pixelwise.train.loop import autocast, pick_device, use_fast_mode


def model_folders(run: Path, config: TrainConfig) -> list[Path]:
    """The folders holding ``model.safetensors``: the run itself, or one per fold."""
    folders = [run / f"fold_{i}" for i in range(config.folds)] if config.is_ensemble else [run]
    for folder in folders:
        if not (folder / checkpoint.MODEL_FILE).exists():
            raise PixelwiseError(f"{folder} has no {checkpoint.MODEL_FILE}: training never finished an epoch; "
                                 f"continue it with `pixelwise train --resume {run}`")
    return folders


def load_config(run: Path) -> TrainConfig:
    config = TrainConfig.from_dict(checkpoint.read_config(run))
    if config.num_classes is None:
        raise PixelwiseError(f"{run}/config.json has no num_classes: training did not get past data loading; "
                             f"start it again")
    return config


@dataclass
class RunPredictor:
    """Probabilities from a trained run.

    ``probabilities(images)`` takes uint8 N×3×S×S at the run's size ``config.size`` and returns float32
    N×K×S×S on the CPU (K = 1 binary, else the class count), averaged over folds and TTA transforms.
    """

    run: Path
    config: TrainConfig
    predict_normalized: Callable[[torch.Tensor], torch.Tensor]  # normalised float batch → probs
    tta: str = "none"
    device: torch.device = torch.device("cpu")

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        out = []
        for start in range(0, len(images), batch_size):
            x = normalize(to_unit(images[start:start + batch_size].to(self.device)), self.config.mean, self.config.std)
            out.append(tta_probabilities(self.predict_normalized, x, self.tta).float().cpu())
        return torch.cat(out)


def torch_predictor(run: Path, tta: str = "none", device: str = "auto", fold: int | None = None) -> RunPredictor:
    """The run's models (all folds averaged, or only ``fold``) as a :class:`RunPredictor`."""
    run = Path(run)
    config = load_config(run)
    dev = pick_device(device)
    config.fast = use_fast_mode(config.fast, dev)
    models = []
    folders = model_folders(run, config)
    for folder in folders if fold is None else [folders[fold]]:
        model = build_model(config.model, config.num_classes)
        checkpoint.load_weights(model, folder / checkpoint.MODEL_FILE)
        models.append(model.to(dev).eval())

    def predict_normalized(x: torch.Tensor) -> torch.Tensor:
        if config.fast:
            x = x.contiguous(memory_format=torch.channels_last)
        total = None
        for model in models:
            with autocast(dev, config.fast):
                probs = probabilities(model(x))
            total = probs if total is None else total + probs
        return total / len(models)

    return RunPredictor(run, config, predict_normalized, tta, dev)


def make_predictor(run: Path, engine: str = "torch", tta: str = "none") -> RunPredictor:
    if engine == "torch":
        return torch_predictor(run, tta)
    if engine == "onnx":
        from pixelwise.predict.onnx_engine import onnx_predictor

        return onnx_predictor(Path(run), tta)
    raise PixelwiseError(f"unknown engine '{engine}': use torch or onnx")


def resize_probabilities(probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Probabilities K×S×S (or N×K×S×S) → same at height×width (bilinear), for masks at the original size."""
    batched = probs if probs.dim() == 4 else probs.unsqueeze(0)
    out = F.interpolate(batched.float(), size=(height, width), mode="bilinear", align_corners=False)
    return out if probs.dim() == 4 else out[0]


def labels_at_size(probs: torch.Tensor, height: int, width: int, threshold: float) -> np.ndarray:
    """K×S×S probabilities → uint8 H×W class indices at the original image size."""
    full = resize_probabilities(probs, height, width)
    if full.shape[0] == 1:
        return (full[0] > threshold).numpy().astype(np.uint8)
    return full.argmax(0).numpy().astype(np.uint8)
