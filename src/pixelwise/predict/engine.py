"""Load a run and turn images into probabilities: the torch engine (and the ONNX one, in ``onnx_engine``).

``RunPredictor`` hides folds and TTA: it averages the probabilities of every fold's model and of
every test-time transform, so callers see one model. Both engines take the same input, float32 RGB in
0..1 (:func:`pixelwise.runtime.to_unit`): the torch engine normalises it, the exported graph does so inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from pixelwise.config import TrainConfig
from pixelwise.errors import PixelwiseError
from pixelwise.models import build_model
from pixelwise.predict.tta import tta_probabilities
from pixelwise.runs import RunFolder, load_weights
from pixelwise.runtime import autocast, batched_probabilities, check_precision, network_input, pick_device, probabilities

ENGINES = ("torch", "onnx")


@dataclass
class RunPredictor:
    """Probabilities from a trained run.

    ``probabilities(images)`` takes uint8 N×3×S×S at the run's size ``config.size`` and returns float32
    N×K×S×S on the CPU (K = 1 binary, else the class count), averaged over folds and TTA transforms.
    """

    run: Path
    config: TrainConfig
    predict_unit: Callable[[torch.Tensor], torch.Tensor]  # float32 0..1 N×3×H×W → probabilities N×K×H×W
    tta: str = "none"
    device: torch.device = torch.device("cpu")
    engine: str = "torch"
    precision: str = "fp32"

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        return batched_probabilities(lambda x: tta_probabilities(self.predict_unit, x, self.tta), images,
                                     self.device, batch_size)


def torch_predictor(run: Path, tta: str = "none", device: str = "auto", fold: int | None = None,
                    precision: str = "fp32") -> RunPredictor:
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
        model = build_model(config.model, config.num_classes)
        load_weights(model, member.weights_path)
        models.append(model.to(dev).eval())

    def predict_unit(unit: torch.Tensor) -> torch.Tensor:
        x = network_input(unit, config.mean, config.std, channels_last=bf16)
        total = None
        for model in models:
            with autocast(dev, bf16):
                probs = probabilities(model(x))
            total = probs if total is None else total + probs
        return total / len(models)

    return RunPredictor(folder.path, config, predict_unit, tta, dev, "torch", precision)


def make_predictor(run: Path, engine: str = "torch", tta: str = "none", precision: str = "fp32",
                   fold: int | None = None) -> RunPredictor:
    """A :class:`RunPredictor` for ``engine`` (``torch`` or ``onnx``); ``fold`` picks one model of a k-fold run."""
    if engine == "torch":
        return torch_predictor(run, tta, fold=fold, precision=precision)
    if engine == "onnx":
        from pixelwise.predict.onnx_engine import onnx_predictor

        if precision != "fp32":
            raise PixelwiseError(f"--precision {precision}: the ONNX engine runs fp32 only; leave --precision out")
        return onnx_predictor(Path(run), tta, fold=fold)
    raise PixelwiseError(f"unknown engine '{engine}' (--engine): use one of {', '.join(ENGINES)}")
