"""Choose an engine for a run: ``make_predictor(run, "torch" | "onnx", ...)`` → a :class:`RunPredictor`."""

from __future__ import annotations

from pathlib import Path

from pixelwise.errors import PixelwiseError
from pixelwise.predict.onnx_engine import onnx_predictor
from pixelwise.predict.predictor import RunPredictor
from pixelwise.predict.torch_engine import torch_predictor

ENGINES = ("torch", "onnx")


def make_predictor(
    run: Path, engine: str = "torch", tta: str = "none", precision: str = "fp32", fold: int | None = None
) -> RunPredictor:
    """A :class:`RunPredictor` for ``engine`` (``torch`` or ``onnx``); ``fold`` picks one model of a k-fold run."""
    if engine == "torch":
        return torch_predictor(run, tta, fold=fold, precision=precision)
    if engine == "onnx":
        if precision != "fp32":
            raise PixelwiseError(f"--precision {precision}: the ONNX engine runs fp32 only; leave --precision out")
        return onnx_predictor(Path(run), tta, fold=fold)
    raise PixelwiseError(f"unknown engine '{engine}' (--engine): use one of {', '.join(ENGINES)}")
