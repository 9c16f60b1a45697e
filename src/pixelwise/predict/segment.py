"""One image's way from pixels to a :class:`Segmentation`, shared by ``pixelwise predict``, the Python API
(:mod:`pixelwise.api`) and ``pixelwise serve``, so the three give the same masks and the same PNG bytes.

:func:`image_labels` is the one place that decides, per run, how the network sees an image:

- squashed runs (``record.scale`` None, every run before tiles): :func:`network_batch` (RGB images of any
  size → uint8 N×3×S×S at the run's size, :func:`resize_image`), then :func:`labels_at_sizes` (the run's
  probabilities, brought back to each image's own size and turned into class indices);
- tiled runs (``record.scale`` set): :func:`tiled_image_labels`, per image: resized by the scale (aspect
  kept), cut into the run's overlapping tiles (:func:`~pixelwise.predict.tiles.tiled_labels`, the predictor's
  probabilities per tile, so folds, TTA and both engines apply), labels brought back to the image's size
  (nearest; probabilities bilinear when asked). Memory grows with the image's width, not its area.

Then :func:`make_segmentation`: post-processing and the result object; its :meth:`Segmentation.png_bytes`
is the mask file ``predict`` writes, :meth:`Segmentation.overlay` the overlay it writes.

Masks: binary runs give 0/255 greyscale PNGs; multi-class runs palette PNGs whose pixel values are the class
indices and whose palette holds the run's class colours (:func:`~pixelwise.masks.labels.mask_png_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pixelwise.config import RunConfig
from pixelwise.data.classes import (
    is_binary,
    is_binary_output,
    labels_from_probabilities,
    object_classes,
    png_values,
    voc_colour,
)
from pixelwise.data.imageio import resize_image, resize_nearest, resize_scaled
from pixelwise.fileio import encode_png
from pixelwise.masks.cutout import (
    BackgroundInput,
    alpha_matte,
    cutout_rgba,
    refined_classes,
    refined_mask,
    replace_background,
    require_binary,
)
from pixelwise.masks.instance_decode import (
    FOREGROUND_THRESHOLD,
    MIN_SCORE,
    SEED_SOURCES,
    SEED_THRESHOLD,
    InstanceSet,
    decode_instances,
    decode_labels,
)
from pixelwise.masks.instances import instances_from_mask
from pixelwise.masks.labels import labels_at_size, mask_png_bytes, resize_probabilities
from pixelwise.masks.overlay import prediction_overlay
from pixelwise.masks.postprocess import PostProcess
from pixelwise.predict.predictor import RunPredictor
from pixelwise.predict.tiles import tiled_labels

RGB = tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The segmentation of one image, at the image's own size.

    Attributes:
        mask: ``uint8`` H×W class indices (0 = background; binary runs: 0/1), post-processing applied.
        class_names: one name per class index, ``len == K`` (K ≥ 2, background included).
        threshold: the run's probability threshold (binary runs: foreground where P > threshold).
        probabilities: ``float32`` K×H×W in 0..1, summing to 1 over K at each pixel (bilinearly resized
            from the network's output), or None unless asked for. Binary runs give ``[1 - p, p]`` and the
            mask is ``p > threshold`` (not an argmax); multi-class masks are the argmax; both refined on
            the image where the run chose it (``RunRecord.refine_edges``). Post-processing,
            when set, changes the mask only. Binary runs' cutouts (:meth:`alpha`, :meth:`cutout`,
            :meth:`replace_background`) need them.
        image: the ``uint8`` H×W×3 RGB input (for :meth:`overlay` and cutouts), or None when it was not kept.
        class_colors: one RGB colour (0..255 each) per class: the mask PNG's palette and the overlay's fills
            (multi-class runs); empty → PASCAL VOC's colours.
    """

    mask: np.ndarray
    class_names: tuple[str, ...]
    threshold: float
    probabilities: np.ndarray | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    class_colors: tuple[RGB, ...] = ()
    #: Instance runs (``--task instances``): the objects decoded from the probabilities
    #: (:func:`~pixelwise.masks.instance_decode.decode_instances`); None for semantic runs.
    objects: InstanceSet | None = field(default=None, repr=False)

    def __post_init__(self):
        if len(self.class_colors) != len(self.class_names):  # frozen: set the default through object
            given = dict(enumerate(self.class_colors))
            object.__setattr__(
                self, "class_colors", tuple(given.get(i) or voc_colour(i) for i in range(len(self.class_names)))
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @property
    def pixel_counts(self) -> dict[str, int]:
        """Pixels of each class, by class name, in class order (they add up to H·W)."""
        counts = np.bincount(self.mask.ravel(), minlength=self.num_classes)
        return {name: int(counts[i]) for i, name in enumerate(self.class_names)}

    @property
    def class_fractions(self) -> dict[str, float]:
        """Fraction of the image's pixels in each class (0..1), by class name, in class order."""
        total = max(self.height * self.width, 1)
        return {name: count / total for name, count in self.pixel_counts.items()}

    def mask_png_values(self) -> np.ndarray:
        """The pixel values of the mask PNG: 0/255 for binary runs, the class indices otherwise (uint8 H×W)."""
        return png_values(self.mask, self.num_classes)

    def png_bytes(self) -> bytes:
        """The mask as PNG file bytes, byte for byte what ``pixelwise predict`` writes as ``<name>_mask.png``:
        binary runs 8-bit greyscale 0/255; multi-class runs a palette PNG whose pixel values are the class
        indices and whose palette holds :attr:`class_colors`."""
        return mask_png_bytes(self.mask, self.class_colors)

    def overlay(self) -> np.ndarray:
        """``uint8`` H×W×3, as in ``predict``'s ``<name>_overlay.png``: binary runs, the input image with the
        foreground's contour in red; multi-class runs, each class filled with its colour at 45 % opacity,
        its contour, and a legend naming the classes present.

        Raises:
            ValueError: the input image was not kept (a server result made for ``format=png``/``json``).
        """
        if self.image is None:
            raise ValueError("this Segmentation was made without its input image: no overlay can be drawn")
        if self.objects is not None:  # instance runs: one colour per object, outlined
            return self.objects.overlay(self.image)
        return prediction_overlay(self.image, self.mask, self.class_names, self.class_colors)

    def overlay_png_bytes(self) -> bytes:
        """:meth:`overlay` as PNG file bytes (what ``predict`` writes as ``<name>_overlay.png``)."""
        return encode_png(self.overlay())

    def alpha(self, radius: int | None = None, eps: float | None = None) -> np.ndarray:
        """The foreground's alpha matte, ``float32`` H×W in 0..1: the probability refined by a guided filter so
        its edges follow the image's (:func:`~pixelwise.masks.cutout.alpha_matte`); exactly the mask (0/1) away
        from the mask's border. Binary runs only; needs :attr:`image` and :attr:`probabilities`, which
        ``Segmenter.predict(image, probabilities=True)`` keeps.

        Args:
            radius, eps: the guided filter's window radius (pixels; default ~1 % of the longer side) and
                regularisation (default :data:`~pixelwise.masks.cutout.DEFAULT_EPS`).

        Raises:
            PixelwiseError: a multi-class run.
            ValueError: the image or the probabilities were not kept.
        """
        require_binary(self.num_classes)
        if self.image is None or self.probabilities is None:
            raise ValueError(
                "cutouts need the image and the probabilities: segment with "
                "Segmenter.predict(image, probabilities=True)"
            )
        options = {} if eps is None else {"eps": eps}
        return alpha_matte(
            self.image, self.probabilities[1], radius=radius, threshold=self.threshold, mask=self.mask, **options
        )

    def cutout(self, radius: int | None = None, eps: float | None = None) -> np.ndarray:
        """The image with the foreground's :meth:`alpha` as its alpha channel: ``uint8`` H×W×4 RGBA (straight
        alpha), what ``predict --cutout`` writes as ``<name>_cutout.png``. Needs and raises as :meth:`alpha`."""
        return cutout_rgba(self.image, self.alpha(radius, eps))

    def replace_background(
        self, background: BackgroundInput, radius: int | None = None, eps: float | None = None
    ) -> np.ndarray:
        """The foreground over a new background, ``uint8`` H×W×3 (``predict --background``'s
        ``<name>_background.png``).

        Args:
            background: ``"blur"`` (the image blurred around the subject), a colour (``"#rrggbb"``, ``"r,g,b"``,
                a name such as ``"white"``, an ``(r, g, b)`` tuple) or an image (a path or a ``uint8`` h×w×3
                array, scaled to cover and centre-cropped).
            radius, eps: as :meth:`alpha`.

        Raises:
            PixelwiseError: a multi-class run, a bad colour, a missing or unreadable background image.
            ValueError: the image or the probabilities were not kept (see :meth:`alpha`).
        """
        return replace_background(self.image, self.alpha(radius, eps), background)

    @property
    def instance_labels(self) -> np.ndarray | None:
        """Instance runs: H×W object ids (uint16, 0 = background, objects 1..N; int32 beyond 65535), else None."""
        return None if self.objects is None else self.objects.labels

    def instances(self, image_id: str = "image", min_area: int = 0) -> list[dict[str, Any]]:
        """The rows of ``instances.csv``. Instance runs: one per decoded object (id, class, area, bbox, centroid,
        score); semantic runs: the connected foreground regions and their shape measures."""
        if self.objects is not None:
            return [row for row in self.objects.rows(image_id) if row["area_px"] >= min_area]
        return instances_from_mask(self.mask > 0, image_id, min_area=min_area)

    def instances_png_bytes(self) -> bytes:
        """Instance runs: the instance-id PNG (``<stem>_instances.png``; 16-bit beyond 255 objects).

        Raises:
            ValueError: a semantic run (no objects).
        """
        if self.objects is None:
            raise ValueError("this run is not an instance run (--task instances): it has no objects")
        return self.objects.png_bytes()

    def summary(self) -> dict[str, Any]:
        """Size, classes with their pixel counts and fractions, and the threshold, as plain JSON values."""
        counts, fractions = self.pixel_counts, self.class_fractions
        return {
            "width": self.width,
            "height": self.height,
            "threshold": float(self.threshold),
            "classes": [
                {"index": i, "name": name, "pixels": counts[name], "fraction": fractions[name]}
                for i, name in enumerate(self.class_names)
            ],
            "pixel_counts": counts,
        }


def network_batch(images: Sequence[np.ndarray], size: int, fit: str = "stretch") -> torch.Tensor:
    """RGB ``uint8`` H×W×3 images (any sizes) → the network's ``uint8`` N×3×S×S batch at side ``size``,
    placed by the run's ``fit`` (stretched or letterboxed, :func:`~pixelwise.data.imageio.fit_box`)."""
    return torch.stack([torch.from_numpy(resize_image(image, size, fit)) for image in images])


def labels_at_sizes(
    predictor: RunPredictor, batch: torch.Tensor, sizes: Sequence[tuple[int, int]], keep_probabilities: bool = False
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Run the model on ``batch`` and bring each image's result back to its own size.

    Args:
        batch: ``uint8`` N×3×S×S from :func:`network_batch`.
        sizes: ``(height, width)`` of each original image.
        keep_probabilities: also return each image's probabilities at its size.

    Returns:
        per image ``(labels, probabilities)``: ``uint8`` H×W class indices (before post-processing) and
        ``float32`` K×H×W (K = class count; binary runs ``[1 - p, p]``) or None.
    """
    probs = predictor.probabilities(batch)
    threshold, fit = predictor.threshold, predictor.config.recipe.fit
    results = []
    for p, (height, width) in zip(probs, sizes):
        if not keep_probabilities:
            results.append((labels_at_size(p, height, width, threshold, fit), None))
            continue
        resized = resize_probabilities(p, height, width, fit)  # the steps of labels_at_size, keeping the resize
        results.append(_labels_and_probabilities(resized, threshold))
    return results


def labels_at_image_size(
    config: RunConfig, probability: torch.Tensor, height: int, width: int, image: np.ndarray | None = None
) -> np.ndarray:
    """One squashed image's network probabilities (float32 K×S×S) → its uint8 H×W labels at ``(height,
    width)``, before post-processing: :func:`~pixelwise.masks.labels.labels_at_size`, then, for ``refine_edges``
    runs given the ``image`` (uint8 H×W×3), the edges refined on it (:func:`refine_labels`). What ``evaluate``
    scores: the same masks ``predict`` writes."""
    threshold, fit = config.record.threshold, config.recipe.fit
    if not config.record.refine_edges or image is None:
        return labels_at_size(probability, height, width, threshold, fit)
    labels, probabilities = _labels_and_probabilities(resize_probabilities(probability, height, width, fit), threshold)
    return refine_labels(config, labels, image, probabilities)


def _labels_and_probabilities(probs: torch.Tensor, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities K×H×W at an image's size → its uint8 H×W labels (threshold or argmax) and float32
    probabilities, a binary run's single channel completed to ``[1 - p, p]``."""
    labels = labels_from_probabilities(probs.unsqueeze(0), threshold)[0].numpy()
    if is_binary_output(probs.unsqueeze(0)):  # one sigmoid channel: add the background
        probs = torch.cat([1.0 - probs, probs])
    return labels, probs.numpy().astype(np.float32, copy=False)


#: Tiles per call of the predictor (each call averages its folds and TTA views over them).
TILE_BATCH = 8

#: ``labels_of_inputs``' result: per image (uint8 H×W labels, float32 K×H×W probabilities or None).
Labelled = list[tuple[np.ndarray, "np.ndarray | None"]]


def tiled_image_labels(
    predictor: RunPredictor, image: np.ndarray, keep_probabilities: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """One image through a tiled run: resized by ``record.scale`` (aspect kept), labelled tile by tile with the
    run's :class:`~pixelwise.predict.tiles.TilePlan` (Gaussian blend of overlapping tiles), brought back to the
    image's size.

    Args:
        image: ``uint8`` H×W×3 RGB, any size.
        keep_probabilities: also return the probabilities, bilinearly resized (K×H×W×4 bytes at the image's
            size); the labels are then taken from them (threshold or argmax), as :func:`labels_at_sizes` does.

    Returns:
        ``(labels uint8 H×W, probabilities float32 K×H×W or None)``; binary runs' probabilities are ``[1 - p, p]``.
    """
    record = predictor.config.record
    height, width = image.shape[:2]
    scaled = resize_scaled(image, record.scale)
    plan = record.tile_plan()
    if not keep_probabilities:
        labels = tiled_labels(predictor.probabilities, scaled, plan, TILE_BATCH, predictor.threshold)
        return (labels if labels.shape == (height, width) else resize_nearest(labels, height, width)), None
    _, every = tiled_labels(
        predictor.probabilities, scaled, plan, TILE_BATCH, predictor.threshold, return_probabilities=True
    )
    probs = torch.from_numpy(every)
    if tuple(probs.shape[1:]) != (height, width):
        probs = F.interpolate(probs[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return _labels_and_probabilities(probs, predictor.threshold)


def network_inputs(images: Sequence[np.ndarray], config: RunConfig) -> torch.Tensor | list[np.ndarray]:
    """What :func:`labels_of_inputs` takes for RGB ``uint8`` H×W×3 images: squashed runs, the uint8 N×3×S×S
    batch (:func:`network_batch`); tiled runs, the images themselves (each is tiled at its own size)."""
    if config.record.is_tiled:
        return list(images)
    return network_batch(images, config.record.size, config.recipe.fit)


def labels_of_inputs(
    predictor: RunPredictor,
    inputs: torch.Tensor | Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]],
    keep_probabilities: bool = False,
) -> Labelled:
    """The network step of :func:`image_labels` on :func:`network_inputs` (``serve`` batches those).

    Args:
        inputs: squashed runs, uint8 N×3×S×S (a tensor, or a list of 3×S×S arrays); tiled runs, the uint8
            H×W×3 images.
        sizes: ``(height, width)`` of each original image.
    """
    if predictor.config.record.is_tiled:
        return [tiled_image_labels(predictor, image, keep_probabilities) for image in inputs]
    if not isinstance(inputs, torch.Tensor):
        inputs = torch.stack([torch.as_tensor(x) for x in inputs])
    return labels_at_sizes(predictor, inputs, sizes, keep_probabilities)


def image_labels(predictor: RunPredictor, images: Sequence[np.ndarray], keep_probabilities: bool = False) -> Labelled:
    """Class labels of RGB ``uint8`` H×W×3 images at their own sizes, before post-processing: the one per-image
    path of ``predict``, ``evaluate``, the Python API and ``serve`` (squashed or tiled, as the run says).

    Returns:
        per image ``(labels uint8 H×W, probabilities float32 K×H×W or None)`` (see :func:`labels_at_sizes`).
    """
    sizes = [image.shape[:2] for image in images]
    return labels_of_inputs(predictor, network_inputs(images, predictor.config), sizes, keep_probabilities)


def make_segmentation(
    config: RunConfig,
    labels: np.ndarray,
    post: PostProcess = PostProcess(),
    image: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    keep_probabilities: bool = True,
) -> Segmentation:
    """Post-process ``labels`` (uint8 H×W from :func:`labels_at_sizes`) into a :class:`Segmentation`.

    Instance runs also decode their objects here, whatever produced the class probabilities (whole image, tiles,
    TTA): from ``probabilities`` (K×H×W at the image's size) when given, else from ``labels`` (one-hot).
    ``refine_edges`` runs refine the mask's edges on ``image`` here (:func:`refine_labels`). Both runs need the
    probabilities (``RunRecord.needs_probabilities``); ``keep_probabilities`` False leaves them out of the result
    once used.
    """
    class_map = config.class_map()
    labels = refine_labels(config, labels, image, probabilities)
    mask = post.apply(labels, class_map.num_classes)
    objects = None
    if config.record.task == "instances":
        objects = decode_objects(class_map, labels, probabilities, post.min_area, config.record.decode)
    if config.record.needs_probabilities and not keep_probabilities:
        probabilities = None
    return Segmentation(
        mask=mask,
        class_names=class_map.names,
        threshold=float(config.record.threshold),
        probabilities=probabilities,
        image=image,
        class_colors=class_map.colors,
        objects=objects,
    )


def refine_labels(
    config: RunConfig, labels: np.ndarray, image: np.ndarray | None, probabilities: np.ndarray | None
) -> np.ndarray:
    """A ``refine_edges`` run's labels, refined on the image by a guided filter: binary runs, the foreground
    probability's matte > 0.5 (:func:`~pixelwise.masks.cutout.refined_mask`, uint8 H×W 0/1); multi-class runs,
    the argmax of each class's filtered probability near class borders
    (:func:`~pixelwise.masks.cutout.refined_classes`). Other runs, or without the image or the probabilities
    (float32 K×H×W at the image's size; binary ``[1 - p, p]``), the ``labels`` unchanged."""
    if not config.record.refine_edges or image is None or probabilities is None:
        return labels
    if image.shape[:2] != probabilities.shape[-2:]:
        return labels
    if is_binary(config.record.num_classes):
        return refined_mask(image, probabilities, config.record.threshold).astype(np.uint8)
    return refined_classes(image, probabilities, labels)


def decode_objects(
    class_map, labels: np.ndarray, probabilities: np.ndarray | None, min_area: int = 0, thresholds: dict | None = None
) -> InstanceSet:
    """An instance run's objects of one image: its target-class probabilities (float32 K×H×W) or, without them, its
    class indices (uint8 H×W) decoded by the seeded watershed (:mod:`pixelwise.masks.instance_decode`);
    ``thresholds``: the run's ``{"seed", "foreground", "min_score", "seeds"}`` (``RunRecord.decode``), None for
    the defaults."""
    names = object_classes(class_map)
    if probabilities is not None:
        chosen = thresholds or {}
        return decode_instances(
            probabilities,
            min_area=min_area,
            seed_threshold=chosen.get("seed", SEED_THRESHOLD),
            foreground_threshold=chosen.get("foreground", FOREGROUND_THRESHOLD),
            class_names=names,
            min_score=chosen.get("min_score", MIN_SCORE),
            seeds=chosen.get("seeds", SEED_SOURCES[0]),
        )
    return decode_labels(labels, class_map.num_classes, min_area=min_area, class_names=names)


def segment_images(
    predictor: RunPredictor,
    images: Sequence[np.ndarray],
    post: PostProcess = PostProcess(),
    keep_probabilities: bool = False,
) -> list[Segmentation]:
    """:func:`image_labels` → :func:`make_segmentation` for RGB images."""
    labelled = image_labels(predictor, images, keep_probabilities or predictor.config.record.needs_probabilities)
    return [
        make_segmentation(predictor.config, labels, post, image, probs, keep_probabilities)
        for image, (labels, probs) in zip(images, labelled)
    ]
