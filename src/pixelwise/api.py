"""Use a trained run from Python: ``pixelwise.load(RUN).predict(image)``.

>>> import pixelwise
>>> seg = pixelwise.load("runs/my-run")                  # torch engine, fp32, CPU or CUDA
>>> result = seg.predict("lesion.jpg")                     # or a PIL image, or a uint8 H×W×3 array
>>> result.mask.shape, result.pixel_counts                 # (H, W) class indices at the input's size
>>> open("lesion_mask.png", "wb").write(result.png_bytes())  # the file `pixelwise predict` writes
>>> open("lesion_overlay.png", "wb").write(result.overlay_png_bytes())  # and its overlay
>>> people = pixelwise.load("runs/person").predict("me.jpg", probabilities=True)  # a binary run, kept p
>>> rgba = people.cutout()                                  # uint8 H×W×4: the person, guided-filter alpha
>>> framed = people.replace_background("blur")              # or "#20a040", "255,255,255", "white", "beach.jpg"

Every input goes the way ``pixelwise predict`` takes it (:mod:`pixelwise.predict.segment`): read as RGB
with the EXIF orientation applied, resized to the run's input size, probabilities averaged over folds and
TTA views, resized back to the input's size and thresholded, post-processed. So a :class:`Segmenter` gives
the same masks, and the same PNG bytes, as ``pixelwise predict`` with the same options.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np

from pixelwise.config import PREDICT_TTA
from pixelwise.data.classes import ClassMap
from pixelwise.data.imageio import decode_image, image_to_rgb, read_image
from pixelwise.errors import PixelwiseError
from pixelwise.masks.postprocess import PostProcess
from pixelwise.predict.engine import ENGINES, make_predictor
from pixelwise.predict.predictor import RunPredictor
from pixelwise.predict.segment import Segmentation, labels_of_inputs, make_segmentation, network_inputs

__all__ = ["load", "Segmenter", "Segmentation", "to_rgb"]

#: What :meth:`Segmenter.predict` takes: a path, a PIL image, a ``uint8`` H×W×3 RGB array, or the bytes of
#: an image file.
ImageInput = Union[str, Path, "PIL.Image.Image", np.ndarray, bytes, bytearray, memoryview]  # noqa: F821


def to_rgb(image: Any) -> np.ndarray:
    """Any :data:`ImageInput` as ``uint8`` H×W×3 RGB, as ``pixelwise predict`` reads it.

    Paths and file bytes are decoded by :func:`~pixelwise.data.imageio.read_image` (EXIF orientation
    applied, greyscale/palette/16-bit converted); PIL images get the same conversions; arrays are taken as
    RGB and must be ``uint8`` H×W×3 (copied, so the caller may change theirs afterwards).

    Raises:
        PixelwiseError: a file that is missing, unreadable, truncated or too large.
        TypeError: an object of another type, or an array that is not uint8.
        ValueError: an array that is not H×W×3 or is empty.
    """
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image array has dtype {image.dtype}: pass uint8 RGB values 0..255")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"image array has shape {image.shape}: pass H×W×3 RGB")
        return np.array(image, dtype=np.uint8, order="C", copy=True)
    try:
        from PIL import Image, ImageOps
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        image.load()
        return image_to_rgb(ImageOps.exif_transpose(image), "image")
    raise TypeError(
        f"cannot segment a {type(image).__name__}: pass a path, a PIL image, a uint8 H×W×3 "
        f"array or the bytes of an image file"
    )


class Segmenter:
    """A trained run, ready to segment images. Made by :func:`load`.

    Thread-safe: any number of threads may call :meth:`predict` at once; the network runs one call at a
    time (behind a lock, on the run's device) while reading, resizing and post-processing run in the
    callers' threads.

    What a prediction's mask holds (:class:`Segmentation`): ``mask`` is always ``uint8`` H×W class indices
    at the input's size (0 = background). Binary runs (2 classes): 0/1, and :meth:`Segmentation.png_bytes`
    is an 8-bit greyscale PNG with 0/255. Multi-class runs: ``0..K-1``, and the PNG is a palette PNG (VOC
    style) whose pixel values are the class indices (``np.array(Image.open(f))`` gives them) and whose
    palette holds :attr:`class_colors`, so viewers show the classes in colour. Overlays
    (:meth:`Segmentation.overlay`): binary runs draw the foreground's contour in red; multi-class runs fill
    each class with its colour at 45 % opacity, draw its contour and a legend of the classes present.

    Attributes:
        run: the run folder.
        config: the run's :class:`~pixelwise.config.RunConfig`: ``recipe`` (what training was asked) and
            ``record`` (what it learned: ``size``, ``num_classes``, ``threshold``...).
        class_map: the run's :class:`~pixelwise.data.classes.ClassMap` (names, colours, binary or not).
        class_names: one name per class index (index 0 = background).
        class_colors: one RGB display colour (3 ints 0..255) per class index: the palette of multi-class mask
            PNGs and the fills of their overlays.
        engine, precision, tta: how the network runs (``tta``: ``"none"``, ``"d4"`` or ``"d4-zoom"``).
        post: the post-processing applied to every mask.
    """

    def __init__(self, predictor: RunPredictor, post: PostProcess = PostProcess()):
        self.predictor = predictor
        self.post = post
        self._lock = threading.Lock()

    # -- what the run is --------------------------------------------------------------------------------
    @property
    def run(self) -> Path:
        return self.predictor.run

    @property
    def config(self):
        return self.predictor.config

    @property
    def class_map(self) -> ClassMap:
        return self.config.class_map()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.class_map.names

    @property
    def class_colors(self) -> tuple[tuple[int, int, int], ...]:
        return self.class_map.colors

    @property
    def num_classes(self) -> int:
        return self.class_map.num_classes

    @property
    def size(self) -> int:
        """The network's square input side, pixels: squashed runs resize every image to it, then back; tiled
        runs (:attr:`scale`) cut tiles of this side."""
        return int(self.config.record.size)

    @property
    def scale(self) -> float | None:
        """Tiled runs: the factor images are resized by before tiling (aspect kept); None: squashed runs."""
        return self.config.record.scale

    @property
    def fit(self) -> str:
        """How images meet the square input: ``stretch`` (resized to it) or ``pad`` (letterboxed)."""
        return self.config.recipe.fit

    @property
    def threshold(self) -> float:
        return float(self.config.record.threshold)

    @property
    def engine(self) -> str:
        return self.predictor.engine

    @property
    def precision(self) -> str:
        return self.predictor.precision

    @property
    def tta(self) -> str:
        return self.predictor.tta

    @property
    def device(self) -> str:
        return str(self.predictor.device)

    def __repr__(self) -> str:
        return (
            f"Segmenter(run={str(self.run)!r}, model={self.config.recipe.model!r}, engine={self.engine!r}, "
            f"precision={self.precision!r}, tta={self.tta!r}, classes={list(self.class_names)})"
        )

    # -- segmenting -------------------------------------------------------------------------------------
    def predict(self, image: ImageInput, probabilities: bool = False) -> Segmentation:
        """Segment one image.

        Args:
            image: a path, a PIL image, a ``uint8`` H×W×3 RGB array or an image file's bytes.
            probabilities: also return ``float32`` K×H×W probabilities at the image's size (binary runs'
                :meth:`Segmentation.cutout` and :meth:`Segmentation.replace_background` need them).

        Returns:
            a :class:`Segmentation` at the input's size (``mask``: ``uint8`` H×W class indices; its
            ``png_bytes()`` and ``overlay_png_bytes()`` are the files ``pixelwise predict`` writes).
        """
        return self.predict_batch([image], probabilities=probabilities)[0]

    def predict_batch(
        self, images: Iterable[ImageInput], probabilities: bool = False, batch_size: int = 8
    ) -> list[Segmentation]:
        """Segment several images (any mix of inputs and sizes), ``batch_size`` per network call.

        Returns:
            one :class:`Segmentation` per image, in order; identical to :meth:`predict` on each.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: must be at least 1")
        items = list(images)
        results: list[Segmentation] = []
        for start in range(0, len(items), batch_size):
            rgbs = [to_rgb(image) for image in items[start : start + batch_size]]
            keep = probabilities or self.config.record.needs_probabilities
            labelled = self.labels(self.network_inputs(rgbs), [rgb.shape[:2] for rgb in rgbs], keep)
            results += [self.finish(labels, rgb, probs, probabilities) for rgb, (labels, probs) in zip(rgbs, labelled)]
        return results

    # -- the steps, for callers that schedule them (pixelwise serve) ------------------------------------
    def network_inputs(self, rgbs: list[np.ndarray]):
        """What :meth:`labels` takes for RGB ``uint8`` H×W×3 images (any thread): squashed runs, the ``uint8``
        N×3×S×S batch; tiled runs, the images themselves (:func:`~pixelwise.predict.segment.network_inputs`)."""
        return network_inputs(rgbs, self.config)

    def labels(self, batch, sizes, keep_probabilities: bool = False) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The network step, one call at a time (the lock): :meth:`network_inputs` (or a list of their items)
        and each image's ``(H, W)`` → per image ``(labels uint8 H×W before post-processing, float32 K×H×W
        probabilities or None)``."""
        with self._lock:
            return labels_of_inputs(self.predictor, batch, sizes, keep_probabilities)

    def finish(
        self,
        labels: np.ndarray,
        image: np.ndarray | None = None,
        probabilities: np.ndarray | None = None,
        keep_probabilities: bool = True,
    ) -> Segmentation:
        """Post-process one image's labels into its :class:`Segmentation` (no lock: any thread). Instance runs
        decode their objects (``Segmentation.objects``, ``.instance_labels``) from ``probabilities`` when given,
        else from ``labels``; ``keep_probabilities`` False drops the probabilities afterwards."""
        return make_segmentation(self.config, labels, self.post, image, probabilities, keep_probabilities)


def load(
    run: str | Path,
    engine: str = "torch",
    device: str = "auto",
    precision: str = "fp32",
    tta: bool | str = True,
    *,
    fill_holes: bool = False,
    keep_largest: bool = False,
    min_area: int = 0,
    fold: int | None = None,
) -> Segmenter:
    """Load a trained run folder (made by ``pixelwise train``) for segmenting images.

    Args:
        run: the run folder.
        engine: ``torch`` or ``onnx`` (needs ``pixelwise export RUN`` first; CPU or onnxruntime's CUDA).
        device: torch engine only: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
        precision: torch engine: ``fp32`` (the same masks as ONNX) or ``bf16`` (faster on AMX/AVX-512-BF16
            CPUs and GPUs; moves a few border pixels).
        tta: average over flips and 90° rotations at the input size and 1.25× it (16 network passes per
            image), like ``predict``'s default ``--tta``; ``False`` for one pass (what ``serve`` does unless told
            ``--tta``), or the name of any mode of :data:`~pixelwise.predict.tta.TTA_MODES` (``predict --tta-mode``).
        fill_holes, keep_largest, min_area: post-processing of binary masks, like ``predict``'s options.
        fold: one model of a k-fold run (default: all folds averaged).

    Returns:
        a :class:`Segmenter`.

    Raises:
        PixelwiseError: not a trained run, missing export for ``onnx``, unknown engine or precision.
    """
    if engine not in ENGINES:
        raise PixelwiseError(f"unknown engine '{engine}': use one of {', '.join(ENGINES)}")
    if min_area < 0:
        raise PixelwiseError(f"min_area {min_area}: must be 0 or more")
    mode = tta if isinstance(tta, str) else PREDICT_TTA if tta else "none"
    if engine == "torch":
        from pixelwise.predict.torch_engine import torch_predictor

        predictor = torch_predictor(Path(run), mode, device=device, fold=fold, precision=precision)
    else:
        if device not in ("auto", "cpu"):
            raise PixelwiseError(f"device '{device}': the onnx engine picks its device itself; leave device out")
        predictor = make_predictor(Path(run), engine, mode, precision, fold=fold)
    return Segmenter(predictor, PostProcess(fill_holes, keep_largest, min_area))
