"""``RunPredictor``: a trained run as one function from uint8 images to probabilities, whatever the engine.

It hides folds and TTA: the probabilities of every fold's model and of every test-time transform are
averaged, so callers see one model. Both engines (:mod:`.torch_engine`, :mod:`.onnx_engine`) hand it a
function of the same input, float32 RGB in 0..1 (:func:`pixelwise.runtime.to_unit`): the torch engine
normalises it, the exported graph does so inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from pixelwise.config import RunConfig
from pixelwise.predict.tta import tta_probabilities
from pixelwise.runtime import batched_probabilities


@dataclass
class RunPredictor:
    """Probabilities from a trained run.

    ``probabilities(images)`` takes uint8 N×3×S×S at the run's size ``config.record.size`` and returns float32
    N×K×S×S on the CPU (K = 1 binary, else the class count), averaged over folds and TTA transforms.
    """

    run: Path
    config: RunConfig
    predict_unit: Callable[[torch.Tensor], torch.Tensor]  # float32 0..1 N×3×H×W → probabilities N×K×H×W
    tta: str = "none"
    device: torch.device = torch.device("cpu")
    engine: str = "torch"
    precision: str = "fp32"

    @property
    def threshold(self) -> float:
        return self.config.record.threshold

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        return batched_probabilities(
            lambda x: tta_probabilities(self.predict_unit, x, self.tta), images, self.device, batch_size
        )
