"""Augmentation presets: one row per ``--augment`` name (:data:`PRESETS`), each holding an :class:`AugmentConfig`.

The ops themselves are :mod:`pixelwise.data.augment` (torch); this module imports nothing heavy, so the CLI lists
the presets in its ``--help`` without loading torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pixelwise.choices import Choice, table


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of every op; a probability of 0 turns the op off.

    Ranges are closed intervals ``(low, high)``. Factors (scale, brightness, contrast, saturation, gamma)
    are drawn log-uniformly, so that e.g. ×0.8 and ×1.25 are equally likely; angles, shifts and hue
    uniformly. Shifts are fractions of the image size; hue is a fraction of the colour circle; the elastic
    magnitude is the standard deviation of control-point displacements as a fraction of the shorter side.
    """

    hflip_p: float = 0.0
    vflip_p: float = 0.0
    rot90_p: float = 0.0  # probability of a random quarter turn (1, 2 or 3); 180° only on non-square input
    affine_p: float = 0.0
    rotate_degrees: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)  # > 1 zooms in
    shift: float = 0.0
    elastic_p: float = 0.0
    elastic_grid: int = 5  # control points per side of the coarse displacement field
    elastic_magnitude: float = 0.0
    color_p: float = 0.0
    brightness: tuple[float, float] = (1.0, 1.0)
    contrast: tuple[float, float] = (1.0, 1.0)
    saturation: tuple[float, float] = (1.0, 1.0)
    hue: float = 0.0
    gamma_p: float = 0.0
    gamma: tuple[float, float] = (1.0, 1.0)
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 0.5)  # pixels
    noise_p: float = 0.0
    noise_std: tuple[float, float] = (0.0, 0.0)  # on the 0..1 scale
    pair_p: float = 0.0  # probability that a sample becomes [itself | the next sample], each half as wide

    @property
    def geometric(self) -> bool:
        """Whether any op that moves pixels is on (then the mask is resampled too)."""
        return any(p > 0 for p in (self.hflip_p, self.vflip_p, self.rot90_p, self.affine_p, self.elastic_p))

    @property
    def photometric(self) -> bool:
        """Whether any op that changes pixel values (image only) is on."""
        return any(p > 0 for p in (self.color_p, self.gamma_p, self.blur_p, self.noise_p))

    def to_dict(self) -> dict:
        """Every parameter as plain JSON types (tuples become lists), for ``config.json``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# light + zooming in up to 1.6× with larger shifts: crops that cut the object off at the frame, as in
# half-body and close-up photos (benchmarks/framing.py measures why).
_ZOOM = AugmentConfig(
    hflip_p=0.5,
    vflip_p=0.5,
    rot90_p=0.75,
    affine_p=0.7,
    rotate_degrees=15.0,
    scale=(0.8, 1.6),
    shift=0.15,
    color_p=0.5,
    brightness=(0.9, 1.1),
    contrast=(0.9, 1.1),
    saturation=(0.9, 1.1),
    hue=0.02,
)


@dataclass(frozen=True)
class AugmentPreset(Choice):
    """An augmentation preset ``--augment`` names: the probabilities and ranges of every op."""

    config: AugmentConfig


PRESETS: dict[str, AugmentPreset] = table(
    AugmentPreset("none", "no augmentation", AugmentConfig()),
    # Lesions have no canonical orientation, so flips and quarter turns are always safe.
    AugmentPreset(
        "light",
        "flips, quarter turns, mild affine and colour jitter",
        AugmentConfig(
            hflip_p=0.5,
            vflip_p=0.5,
            rot90_p=0.75,
            affine_p=0.5,
            rotate_degrees=15.0,
            scale=(0.9, 1.1),
            shift=0.05,
            color_p=0.5,
            brightness=(0.9, 1.1),
            contrast=(0.9, 1.1),
            saturation=(0.9, 1.1),
            hue=0.02,
        ),
    ),
    AugmentPreset("zoom", "light + zoom-in crops up to 1.6×", _ZOOM),
    # A quarter of the samples show two people (or lesions) side by side, squeezed, as a group photo does once
    # stretched into the square input (the default recipe's: benchmarks/framing.py, docs/experiments.md).
    AugmentPreset(
        "zoom-pair",
        "zoom + a quarter of the samples as side-by-side pairs, as in group photos",
        dataclasses.replace(_ZOOM, pair_p=0.25),
    ),
    AugmentPreset(
        "strong",
        "light's ops, wider, + elastic warp, gamma, blur and noise",
        AugmentConfig(
            hflip_p=0.5,
            vflip_p=0.5,
            rot90_p=0.75,
            affine_p=0.8,
            rotate_degrees=45.0,
            scale=(0.75, 1.33),
            shift=0.1,
            elastic_p=0.3,
            elastic_grid=5,
            elastic_magnitude=0.015,
            color_p=0.8,
            brightness=(0.75, 1.25),
            contrast=(0.75, 1.33),
            saturation=(0.7, 1.4),
            hue=0.05,
            gamma_p=0.3,
            gamma=(0.7, 1.4),
            blur_p=0.2,
            blur_sigma=(0.3, 1.2),
            noise_p=0.2,
            noise_std=(0.005, 0.04),
        ),
    ),
)
