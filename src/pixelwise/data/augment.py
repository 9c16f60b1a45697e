"""Batch augmentation on the model's device, configured by a preset (:data:`PRESETS`, in ``augment_presets.py``).

:class:`BatchAugment` takes a whole batch (images ``float32`` N×3×H×W in 0..1, before normalisation, and
masks N×H×W class indices) on whatever device it lives on and returns an augmented copy.

Two stages, so that the mask can never receive a photometric change:

1. **Geometric** (image *and* mask, the same sampled parameters): horizontal/vertical flips, 90° rotations,
   affine (rotation, log-uniform scale, shift) and an elastic warp. They are folded into **one** sampling
   grid per sample, so the image is resampled once (bilinear) and the mask once (nearest, so every output
   value is one of the input's class indices). Borders are filled by reflection, identically for both.
   The elastic warp is the cheap form of Simard et al.'s elastic deformation: a coarse random displacement
   field (a few control points per side) upsampled bicubically to H×W and added to the grid; it is smooth
   by construction, so no full-resolution Gaussian smoothing is needed (kornia's ``RandomElasticTransform``
   smooths a full-resolution field and runs at ~30 images/s on 2 CPU cores at 256 px, too slow).
   Then **pairs**: a sample drawn for it becomes itself and the next sample of the batch side by side, each
   squeezed to half the width (bilinear, antialiased; masks nearest): what a landscape photo of two people
   looks like once stretched into the square network input.
2. **Photometric** (image only): colour jitter (brightness, contrast, saturation, hue), gamma, Gaussian blur
   (kernels from ``kornia.filters.get_gaussian_kernel1d``) and Gaussian noise, each on the sub-batch of
   samples that drew it.
   Colour jitter is one per-sample 3×3 colour matrix plus offset: brightness scales R, G, B together
   (exactly HSV's V), saturation blends with the luminance grey, hue rotates colours about the grey axis
   (the standard linear approximation of an HSV hue shift). kornia's HSV round trip gives nearly the
   same colours but costs ~30× more on CPU.

Randomness: every random number is drawn from a CPU ``torch.Generator`` (the one passed to ``forward``,
else torch's global one, so ``torch.manual_seed`` makes runs reproducible) in a fixed order that does not
depend on the preset's probabilities, so the geometric draw of a batch is the same whether photometric ops
are on or off. Full-resolution noise is drawn on the images' device from a generator seeded by that draw.
"""

from __future__ import annotations

import dataclasses
import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from pixelwise.choices import choose
from pixelwise.data.augment_presets import PRESETS, AugmentConfig, AugmentPreset  # the table, re-exported

__all__ = ["PRESETS", "AugmentConfig", "AugmentPreset", "BatchAugment", "build_augment"]

# Rec. 601 luma weights: the grey that saturation blends towards and contrast pivots around.
_LUMA = (0.299, 0.587, 0.114)


# Column of each per-sample scalar in the uniform draw; fixed so the draw order never depends on the preset.
_SLOTS = (
    "hflip",
    "vflip",
    "rot90_on",
    "rot90_k",
    "affine_on",
    "angle",
    "scale",
    "shift_x",
    "shift_y",
    "elastic_on",
    "color_on",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "gamma_on",
    "gamma",
    "blur_on",
    "blur_sigma",
    "noise_on",
    "noise_std",
)
_SLOT = {name: i for i, name in enumerate(_SLOTS)}


def _lerp(u: Tensor, low: float, high: float) -> Tensor:
    """Map uniforms in [0, 1) to [low, high)."""
    return low + (high - low) * u


def _log_lerp(u: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Map uniforms in [0, 1) log-uniformly to [low, high) (both > 0)."""
    return torch.exp(_lerp(u, math.log(bounds[0]), math.log(bounds[1])))


class BatchAugment(torch.nn.Module):
    """Random augmentation of a batch of images and their masks; build it with :func:`build_augment`.

    It has no learnable state and applies whenever it is called (call it on training batches only).

    Args:
        config: probabilities and ranges of every op.
        preset: the preset name the config came from (kept for ``config.json``), or ``"custom"``.
    """

    def __init__(self, config: AugmentConfig, preset: str = "custom") -> None:
        super().__init__()
        self.config = config
        self.preset = preset

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}"

    def to_dict(self) -> dict:
        """The preset name and every parameter, to save with the run."""
        return {"preset": self.preset, "params": self.config.to_dict()}

    def forward(self, images: Tensor, masks: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Augment a batch.

        Args:
            images: ``float32`` N×3×H×W, values in 0..1 (before normalisation).
            masks: ``uint8`` or ``int64`` N×H×W class indices (binary = {0, 1}), same device as ``images``.
            generator: a CPU generator for reproducible draws; ``None`` uses torch's global generator.

        Returns:
            ``(images, masks)``: new tensors of the same shapes and dtypes as the inputs (images ``float32``
            clamped to 0..1); every mask value is one of the input mask's values. The inputs are not modified.
        """
        _check_batch(images, masks)
        n, _, height, width = images.shape
        cfg = self.config
        generator = generator if generator is not None else torch.default_generator
        # One uniform draw for every scalar of every op, always the same shape: see the module docstring.
        u = torch.rand(n, len(_SLOTS), generator=generator, dtype=torch.float64).float()
        coarse = torch.randn(n, 2, cfg.elastic_grid, cfg.elastic_grid, generator=generator)
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        pair_u = torch.rand(n, generator=generator)  # drawn last: the draws above do not depend on pairs

        images = images.float()
        if cfg.geometric and n > 0:
            images, masks = _geometric(images, masks, cfg, u, coarse)
        else:
            images, masks = images.clone(), masks.clone()
        if cfg.pair_p > 0 and n > 1:
            _pairs(images, masks, (pair_u < cfg.pair_p).nonzero().flatten())
        if cfg.photometric:
            images = _photometric(images, cfg, u, noise_seed)
        return images.clamp_(0.0, 1.0), masks


def build_augment(preset: str, tiled: bool = False) -> BatchAugment:
    """The augmentation for a preset name (a key of :data:`PRESETS`, from the config).

    Args:
        tiled: the run trains on crops at a fixed scale (a tiled run). Pairs are then left out: they imitate
            a wide photo stretched into the square input, which a tiled run never sees; squeezing crops to half
            their width only teaches it objects of a shape prediction never shows (and, for instance targets,
            drops border pixels between touching objects).

    Raises:
        PixelwiseError: for an unknown preset name.
    """
    config = choose("--augment", preset, PRESETS).config
    if tiled:
        config = dataclasses.replace(config, pair_p=0.0)
    return BatchAugment(config, preset=preset)


def _check_batch(images: Tensor, masks: Tensor) -> None:
    """Raise ``ValueError`` (a programming error, not a user one) when the batch breaks the contract."""
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be float N×3×H×W, got {tuple(images.shape)} {images.dtype}")
    if masks.ndim != 3 or masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"masks must be N×H×W matching images {tuple(images.shape)}, got {tuple(masks.shape)}")
    if masks.dtype not in (torch.uint8, torch.int64):
        raise ValueError(f"masks must be uint8 or int64 class indices, got {masks.dtype}")
    if masks.device != images.device:
        raise ValueError(f"images on {images.device} but masks on {masks.device}")


def _geometric(images: Tensor, masks: Tensor, cfg: AugmentConfig, u: Tensor, coarse: Tensor) -> tuple[Tensor, Tensor]:
    """Resample images (bilinear) and masks (nearest) through one per-sample grid.

    Args:
        images: ``float32`` N×3×H×W.
        masks: N×H×W class indices.
        u: N×len(_SLOTS) uniforms in [0, 1).
        coarse: N×2×G×G standard-normal control-point displacements for the elastic warp.
    """
    n, _, height, width = images.shape
    device = images.device
    col = lambda name: u[:, _SLOT[name]]  # noqa: E731 - a short accessor keeps the maths readable

    # Source position of each output pixel, in pixels from the image centre: q = A @ p + t.
    # The parameter distributions are symmetric, so sampling the inverse map directly is equivalent.
    flip_x = torch.where(col("hflip") < cfg.hflip_p, -1.0, 1.0)
    flip_y = torch.where(col("vflip") < cfg.vflip_p, -1.0, 1.0)
    quarter_turns = torch.where(col("rot90_on") < cfg.rot90_p, 1 + (col("rot90_k") * 3).floor(), 0.0)
    if height != width:  # a quarter turn of a non-square image would not fit its own frame: use 180° only
        quarter_turns = torch.where(quarter_turns > 0, 2.0, 0.0)
    affine_on = col("affine_on") < cfg.affine_p
    angle = torch.where(affine_on, _lerp(col("angle"), -cfg.rotate_degrees, cfg.rotate_degrees), 0.0)
    angle = torch.deg2rad(angle) + quarter_turns * (math.pi / 2)
    zoom = torch.where(affine_on, _log_lerp(col("scale"), cfg.scale), 1.0)
    shift_x = torch.where(affine_on, _lerp(col("shift_x"), -cfg.shift, cfg.shift), 0.0) * width
    shift_y = torch.where(affine_on, _lerp(col("shift_y"), -cfg.shift, cfg.shift), 0.0) * height
    # Round cos/sin so that exact quarter turns give exact pixel permutations (cos(pi/2) is 6e-17, not 0).
    cos = torch.round(torch.cos(angle) * 2**20) / 2**20 / zoom
    sin = torch.round(torch.sin(angle) * 2**20) / 2**20 / zoom
    a = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # N×2×2
    a = torch.stack([flip_x, flip_y], -1)[:, :, None] * a  # flip the source coordinates last
    # To grid_sample's normalised coordinates (align_corners=False): x_n = x_pixels / (W/2).
    half = torch.tensor([width / 2.0, height / 2.0])
    theta_linear = a * half[None, None, :] / half[None, :, None]
    theta_shift = torch.stack([shift_x, shift_y], -1) / half
    theta = torch.cat([theta_linear, theta_shift[:, :, None]], -1).to(device)  # N×2×3
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)  # N×H×W×2 (x, y)

    elastic = (col("elastic_on") < cfg.elastic_p).nonzero().flatten()
    if cfg.elastic_magnitude > 0 and len(elastic) > 0:
        # Smooth displacement: coarse control points, bicubic upsampling; pixels of the shorter side.
        pixels = coarse[elastic] * (cfg.elastic_magnitude * min(height, width))
        normalised = (pixels / half[None, :, None, None]).to(device)
        # Bicubic to 1/8 resolution, then bilinear: 5× cheaper than bicubic to full size, and the field is
        # already smooth at that scale (the linear pieces are 8 px long).
        coarse_size = (max(height // 8, cfg.elastic_grid), max(width // 8, cfg.elastic_grid))
        field = F.interpolate(normalised, size=coarse_size, mode="bicubic", align_corners=True)
        field = F.interpolate(field, size=(height, width), mode="bilinear", align_corners=True)
        grid[elastic.to(device)] += field.permute(0, 2, 3, 1)

    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # Nearest sampling copies input values, so masks keep exactly their class indices (exact in float32).
    mask_float = masks[:, None].float()
    mask_float = F.grid_sample(mask_float, grid, mode="nearest", padding_mode="reflection", align_corners=False)
    return images, mask_float[:, 0].round().to(masks.dtype)


def _pairs(images: Tensor, masks: Tensor, chosen: Tensor) -> None:
    """Samples ``chosen`` become [sample | next sample of the batch], each squeezed to half the width.

    Args:
        images: ``float32`` N×3×H×W and masks N×H×W class indices (N ≥ 2), modified in place.
        chosen: indices of the samples to replace (CPU, int64); partners are read before any is replaced.
    """
    if len(chosen) == 0:
        return
    device = images.device
    chosen = chosen.to(device)
    partner = (chosen + 1) % images.shape[0]
    height, width = images.shape[-2:]
    left_width = width // 2
    halves = []
    for index, half_width in ((chosen, left_width), (partner, width - left_width)):
        image = F.interpolate(
            images[index], size=(height, half_width), mode="bilinear", align_corners=False, antialias=True
        )
        mask = F.interpolate(masks[index][:, None].float(), size=(height, half_width), mode="nearest")
        halves.append((image, mask[:, 0].round().to(masks.dtype)))
    (left, left_mask), (right, right_mask) = halves
    images[chosen] = torch.cat([left, right], dim=-1)
    masks[chosen] = torch.cat([left_mask, right_mask], dim=-1)


def _photometric(images: Tensor, cfg: AugmentConfig, u: Tensor, noise_seed: int) -> Tensor:
    """Colour jitter, gamma, blur and noise on the samples that drew each op; the mask is never involved.

    Args:
        images: ``float32`` N×3×H×W in 0..1 (modified in place and returned).
        u: N×len(_SLOTS) uniforms in [0, 1).
        noise_seed: seed of the device generator for full-resolution noise.
    """
    device = images.device
    col = lambda name: u[:, _SLOT[name]]  # noqa: E731

    def chosen(name: str, p: float) -> Tensor:
        return (col(name) < p).nonzero().flatten()

    idx = chosen("color_on", cfg.color_p)
    if len(idx) > 0:
        images[idx.to(device)] = _color_jitter(
            images[idx.to(device)],
            brightness=_log_lerp(col("brightness")[idx], cfg.brightness),
            contrast=_log_lerp(col("contrast")[idx], cfg.contrast),
            saturation=_log_lerp(col("saturation")[idx], cfg.saturation),
            hue=_lerp(col("hue")[idx], -cfg.hue, cfg.hue),
        ).clamp_(0.0, 1.0)
    idx = chosen("gamma_on", cfg.gamma_p)
    if len(idx) > 0:
        gamma = _log_lerp(col("gamma")[idx], cfg.gamma).to(device)
        images[idx.to(device)] = images[idx.to(device)].clamp_(0.0, 1.0).pow_(gamma[:, None, None, None])
    idx = chosen("blur_on", cfg.blur_p)
    if len(idx) > 0:
        sigma = _lerp(col("blur_sigma")[idx], *cfg.blur_sigma)
        images[idx.to(device)] = _gaussian_blur(images[idx.to(device)], sigma)
    idx = chosen("noise_on", cfg.noise_p)
    if len(idx) > 0:
        std = _lerp(col("noise_std")[idx], *cfg.noise_std).to(device)
        sub = images[idx.to(device)]
        noise_gen = torch.Generator(device=device).manual_seed(noise_seed)
        noise = torch.randn(sub.shape, generator=noise_gen, device=device, dtype=sub.dtype)
        images[idx.to(device)] = sub + std[:, None, None, None] * noise
    return images


def _gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Per-sample Gaussian blur, separable, reflect-padded.

    Args:
        images: ``float32`` M×C×H×W.
        sigma: M standard deviations in pixels (CPU).

    Returns:
        M×C×H×W.
    """
    m, c, height, width = images.shape
    # Kernel radius covers ±2.5 sigma of the widest blur in the batch (> 98.7 % of the mass).
    radius = max(1, math.ceil(2.5 * float(sigma.max())))
    radius = min(radius, (min(height, width) - 1))  # reflect padding needs radius < size
    # kornia builds the normalised per-sample 1-D kernels; the convolution is one grouped conv per axis
    # (twice as fast on CPU as kornia.filters.gaussian_blur2d with per-sample sigma).
    kernel = kornia.filters.get_gaussian_kernel1d(2 * radius + 1, sigma[:, None].float())  # M×K
    kernel = kernel.to(images.device).repeat_interleave(c, dim=0)[:, None, None, :]  # MC×1×1×K
    flat = F.pad(images.reshape(1, m * c, height, width), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel, groups=m * c)
    flat = F.conv2d(flat, kernel.transpose(2, 3), groups=m * c)
    return flat.view(m, c, height, width)


def _color_jitter(images: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor, hue: Tensor) -> Tensor:
    """Per-sample colour jitter as one affine colour map.

    Args:
        images: ``float32`` M×3×H×W in 0..1.
        brightness, contrast, saturation: M factors (1 = unchanged).
        hue: M shifts, fractions of the colour circle (0 = unchanged).

    Returns:
        M×3×H×W, not clamped.
    """
    luma = torch.tensor(_LUMA)
    eye = torch.eye(3)
    # Hue: rotation by 2*pi*hue about the grey axis (Rodrigues' formula with k = (1,1,1)/sqrt(3)).
    theta = 2 * math.pi * hue
    k = torch.ones(3) / math.sqrt(3.0)
    k_cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    hue_matrix = (
        torch.cos(theta)[:, None, None] * eye
        + torch.sin(theta)[:, None, None] * k_cross
        + (1 - torch.cos(theta))[:, None, None] * torch.outer(k, k)
    )
    # Saturation: blend each pixel with its luma grey, s*x + (1-s)*grey.
    grey = torch.ones(3, 1) * luma[None, :]  # row i = luma weights: every channel becomes the grey value
    sat_matrix = saturation[:, None, None] * eye + (1 - saturation)[:, None, None] * grey
    colour = brightness[:, None, None] * sat_matrix @ hue_matrix  # M×3×3
    # Contrast: scale around the image's mean grey after the colour map, c*y + (1-c)*mean_grey(y).
    # mean(y) = colour @ mean(x), so the whole jitter stays one matrix and one offset per sample.
    # Computed on the images' device so that no GPU→CPU synchronisation is needed.
    device = images.device
    colour, contrast, luma = colour.to(device), contrast.to(device), luma.to(device)
    mean_rgb = images.mean(dim=(2, 3))  # M×3
    mean_grey = ((colour @ mean_rgb[:, :, None])[:, :, 0] * luma).sum(-1)  # M
    matrix = contrast[:, None, None] * colour
    offset = ((1 - contrast) * mean_grey)[:, None, None, None]
    flat = images.flatten(2)  # M×3×HW
    return (matrix @ flat).view_as(images) + offset
