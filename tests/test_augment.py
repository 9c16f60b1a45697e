"""Batch augmentation: masks get every geometric op (nearest) and no photometric one."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from pixelwise.data.augment import PRESETS, BatchAugment, build_augment
from pixelwise.errors import PixelwiseError

GEOMETRIC_OFF = dict(hflip_p=0.0, vflip_p=0.0, rot90_p=0.0, affine_p=0.0, elastic_p=0.0)
PHOTOMETRIC_OFF = dict(color_p=0.0, gamma_p=0.0, blur_p=0.0, noise_p=0.0)


def random_batch(n=6, height=48, width=48, classes=(0, 1), mask_dtype=torch.uint8, seed=0):
    """Random images in 0..1 and random blocky masks whose values are drawn from ``classes``."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, height, width, generator=gen)
    which = torch.randint(0, len(classes), (n, 1, height // 8, width // 8), generator=gen)
    coarse = torch.tensor(classes, dtype=torch.float32)[which]
    masks = F.interpolate(coarse, size=(height, width), mode="nearest")[:, 0].to(mask_dtype)
    return images, masks


def lesion_batch(n, height, width, seed):
    """Images whose pixel values encode the mask: a bright off-centre rectangle on a dark background."""
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, height, width, dtype=torch.uint8)
    for i in range(n):
        top = int(torch.randint(0, height // 4, (1,), generator=gen))
        left = int(torch.randint(0, width // 4, (1,), generator=gen))
        masks[i, top : top + height // 2, left : left + width * 2 // 3] = 1
    images = (0.05 + 0.9 * masks.float())[:, None].repeat(1, 3, 1, 1)
    return images, masks


def near_boundary(masks, radius):
    """N×H×W bool: pixels within ``radius`` of a change of mask value."""
    m = masks[:, None].float()
    dilated = F.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius)
    eroded = -F.max_pool2d(-m, 2 * radius + 1, stride=1, padding=radius)
    return (dilated != eroded)[:, 0]


def threshold_image(images):
    """Segment a photometrically jittered two-level image: 3×3 mean of the grey, cut between its 5th and 95th
    percentiles (independent of the mask, so a misplaced mask cannot hide)."""
    grey = F.avg_pool2d(images.mean(1, keepdim=True), 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    flat = grey.flatten(1)
    cut = (flat.quantile(0.05, dim=1) + flat.quantile(0.95, dim=1)) / 2
    return grey > cut[:, None, None]


def dihedral_images(x):
    """The 8 flips/quarter turns of x (…×H×W, square)."""
    out = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(-2, -1))
        out += [r, r.flip(-1)]
    return out


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(PixelwiseError, match="none, light, zoom, zoom-pair, strong"):
        build_augment("medium")


def test_presets_are_the_documented_ones_and_serialise():
    assert tuple(PRESETS) == ("none", "light", "zoom", "zoom-pair", "strong")
    for name in PRESETS:
        saved = json.loads(json.dumps(build_augment(name).to_dict()))
        assert saved["preset"] == name
        assert (
            BatchAugment(
                dataclasses.replace(
                    PRESETS[name].config,
                    **{k: tuple(v) if isinstance(v, list) else v for k, v in saved["params"].items()},
                )
            ).config
            == PRESETS[name].config
        )


def test_zoom_is_light_with_zoom_in_crops():
    """The default preset: light's flips and colours, and crops up to 1.6x that cut the object off at the
    frame (docs/experiments.md: framing robustness)."""
    light, zoom = PRESETS["light"].config, PRESETS["zoom"].config
    changed = {f.name for f in dataclasses.fields(zoom) if getattr(zoom, f.name) != getattr(light, f.name)}
    assert changed == {"scale", "shift", "affine_p"} and zoom.scale[1] >= 1.5 and zoom.shift > light.shift
    images, masks = random_batch()
    masks = torch.zeros_like(masks)
    masks[:, 8:-8, 8:-8] = 1  # a centred object with a background margin
    torch.manual_seed(0)
    _, zoomed = build_augment("zoom")(images, masks)
    cut_off = [(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()).item() for m in zoomed]
    assert any(cut_off)  # some crops reach past the object's margin: it touches the frame


def test_pairs_put_each_chosen_sample_beside_the_next_squeezed_to_half_width():
    images, masks = random_batch(n=4, height=32, width=48, classes=(0, 1, 2, 255))
    every = BatchAugment(dataclasses.replace(PRESETS["none"].config, pair_p=1.0))
    out_images, out_masks = every(images, masks, torch.Generator().manual_seed(0))
    for i in range(4):
        j = (i + 1) % 4  # the partner is read before any sample is replaced
        assert torch.equal(out_masks[i, :, :24], masks[i][:, ::2])
        assert torch.equal(out_masks[i, :, 24:], masks[j][:, ::2])
        squeezed = F.interpolate(images[[i, j]], size=(32, 24), mode="bilinear", align_corners=False, antialias=True)
        assert torch.allclose(out_images[i], torch.cat([squeezed[0], squeezed[1]], dim=-1), atol=1e-6)
    # zoom-pair draws exactly zoom's geometry: the samples that were not paired come out identical
    images, masks = random_batch(n=16)
    plain = build_augment("zoom")(images, masks, torch.Generator().manual_seed(1))
    paired = build_augment("zoom-pair")(images, masks, torch.Generator().manual_seed(1))
    same = [torch.equal(a, b) for a, b in zip(plain[1], paired[1])]
    assert any(same) and not all(same)


def test_none_is_identity():
    images, masks = random_batch()
    out_images, out_masks = build_augment("none")(images, masks)
    assert torch.equal(out_images, images) and torch.equal(out_masks, masks)
    assert out_masks.dtype == masks.dtype


@pytest.mark.parametrize("preset", ["light", "strong"])
@pytest.mark.parametrize("mask_dtype", [torch.uint8, torch.int64])
@pytest.mark.parametrize("classes", [(0, 1), (0, 3, 7)])
def test_masks_keep_class_values_dtype_and_images_stay_in_range(preset, mask_dtype, classes):
    # Gaps between the classes present: any interpolation but nearest would invent values in between.
    images, masks = random_batch(n=8, classes=classes, mask_dtype=mask_dtype, seed=len(classes))
    before = (images.clone(), masks.clone())
    for seed in range(3):
        out_images, out_masks = build_augment(preset)(images, masks, torch.Generator().manual_seed(seed))
        assert out_masks.dtype == mask_dtype and out_masks.shape == masks.shape
        assert set(out_masks.unique().tolist()) <= set(classes)
        assert out_images.dtype == torch.float32 and out_images.shape == images.shape
        assert out_images.min() >= 0.0 and out_images.max() <= 1.0
    assert torch.equal(images, before[0]) and torch.equal(masks, before[1])  # inputs untouched


@pytest.mark.parametrize("op", ["color_p", "gamma_p", "blur_p", "noise_p"])
def test_each_photometric_op_changes_the_image_and_never_the_mask(op):
    images, masks = random_batch(n=8)
    config = dataclasses.replace(PRESETS["strong"].config, **{**GEOMETRIC_OFF, **PHOTOMETRIC_OFF, op: 1.0})
    out_images, out_masks = BatchAugment(config)(images, masks, torch.Generator().manual_seed(1))
    assert torch.equal(out_masks, masks)
    per_sample_change = (out_images - images).abs().flatten(1).mean(1)
    assert (per_sample_change > 1e-3).all()


def test_strong_mask_is_the_same_with_or_without_photometric_ops():
    images, masks = random_batch(n=8, classes=(0, 1, 2))
    geometric_only = BatchAugment(dataclasses.replace(PRESETS["strong"].config, **PHOTOMETRIC_OFF))
    for seed in range(3):
        full_images, full_masks = build_augment("strong")(images, masks, torch.Generator().manual_seed(seed))
        geo_images, geo_masks = geometric_only(images, masks, torch.Generator().manual_seed(seed))
        assert torch.equal(full_masks, geo_masks)
        assert not torch.allclose(full_images, geo_images)


def test_flips_and_quarter_turns_are_exact_and_shared_by_image_and_mask():
    images, masks = random_batch(n=16, height=32, width=32, classes=(0, 1, 2, 3), seed=3)
    config = dataclasses.replace(PRESETS["strong"].config, **PHOTOMETRIC_OFF, affine_p=0.0, elastic_p=0.0)
    out_images, out_masks = BatchAugment(config)(images, masks, torch.Generator().manual_seed(0))
    seen = set()
    for i in range(len(images)):
        # The image must be exactly one dihedral transform of the input, and the mask that same transform.
        matches = [j for j, t in enumerate(dihedral_images(images[i])) if torch.allclose(t, out_images[i], atol=1e-5)]
        assert len(matches) == 1
        assert torch.equal(out_masks[i], dihedral_images(masks[i])[matches[0]])
        seen.add(matches[0])
    assert len(seen) >= 4  # the batch really got different transforms


def test_non_square_batches_only_get_half_turns():
    images, masks = random_batch(n=12, height=32, width=48, seed=4)
    config = dataclasses.replace(PRESETS["none"].config, rot90_p=1.0)
    out_images, out_masks = BatchAugment(config)(images, masks, torch.Generator().manual_seed(0))
    for i in range(len(images)):
        turned = torch.rot90(images[i], 2, dims=(-2, -1))
        assert torch.allclose(out_images[i], images[i], atol=1e-5) or torch.allclose(out_images[i], turned, atol=1e-5)
        expected = masks[i] if torch.allclose(out_images[i], images[i], atol=1e-5) else torch.rot90(masks[i], 2)
        assert torch.equal(out_masks[i], expected)


@pytest.mark.parametrize("height,width", [(64, 64), (48, 80)])
def test_strong_moves_image_and_mask_together(height, width):
    checked = moved = 0
    for seed in range(6):
        images, masks = lesion_batch(8, height, width, seed)
        out_images, out_masks = build_augment("strong")(images, masks, torch.Generator().manual_seed(seed))
        segmented = threshold_image(out_images)
        band = near_boundary(out_masks, radius=3)
        for i in range(len(images)):
            fraction = out_masks[i].float().mean()
            if not 0.08 < fraction < 0.92:  # the percentile threshold needs both levels present
                continue
            checked += 1
            moved += int(not torch.equal(out_masks[i], masks[i]))
            outside = ~band[i]
            mismatch = (segmented[i] != out_masks[i].bool())[outside].float().mean()
            assert mismatch < 0.002, f"seed {seed} sample {i}: {mismatch:.4f} of pixels disagree"
            # Negative control: the same measure does see a misplaced mask.
            wrong = torch.roll(out_masks[i], shifts=(height // 6, width // 6), dims=(0, 1))
            assert (segmented[i] != wrong.bool()).float().mean() > 0.05
    assert checked >= 40
    assert moved >= 0.8 * checked


def test_elastic_warp_moves_image_and_mask_together():
    images, masks = lesion_batch(8, 64, 64, seed=7)
    config = dataclasses.replace(PRESETS["none"].config, elastic_p=1.0, elastic_magnitude=0.03)
    out_images, out_masks = BatchAugment(config)(images, masks, torch.Generator().manual_seed(0))
    assert not torch.equal(out_masks, masks)
    band = near_boundary(out_masks, radius=1)
    assert ((out_images[:, 0] > 0.5) != out_masks.bool())[~band].sum() == 0


def test_seeded_runs_are_reproducible():
    images, masks = random_batch(n=8, classes=(0, 1, 2))
    augment = build_augment("strong")
    a = augment(images, masks, torch.Generator().manual_seed(5))
    b = augment(images, masks, torch.Generator().manual_seed(5))
    c = augment(images, masks, torch.Generator().manual_seed(6))
    torch.manual_seed(11)
    d = augment(images, masks)
    torch.manual_seed(11)
    e = augment(images, masks)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(d[0], e[0]) and torch.equal(d[1], e[1])
    assert not torch.equal(a[0], c[0])


def test_rejects_malformed_batches():
    images, masks = random_batch()
    with pytest.raises(ValueError):
        build_augment("light")(images, masks.float())
    with pytest.raises(ValueError):
        build_augment("light")(images, masks[:, :-1])
