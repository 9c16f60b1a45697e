"""Model registry: output shapes at any size, logits (not probabilities), errors, sizes and the lesson widths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pixelwise.data.classes import output_channels
from pixelwise.errors import PixelwiseError
from pixelwise.models import MODELS, build_model, count_gflops, count_parameters, model_spec
from pixelwise.models.lesson import BOTTLENECK_CHANNELS, ENCODER_CHANNELS, SegNet, UNet


@pytest.fixture(autouse=True)
def _seeded_single_thread():
    """Seeded, and one thread: on a shared 2-core machine, two threads per tiny forward spin for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("num_classes", [2, 3])
def test_every_model_returns_logits_shaped_like_the_input(name, num_classes):
    """N×K×H×W for K = 1 (binary) or K = C, at stride multiples and odd sizes, in train and eval mode."""
    model = build_model(name, num_classes)
    expected_k = 1 if num_classes == 2 else num_classes
    for height, width in [(64, 64), (50, 70)]:
        x = torch.randn(2, 3, height, width)
        for training in (True, False):
            model.train(training)
            with torch.no_grad():
                logits = model(x)
            assert logits.shape == (2, expected_k, height, width), (name, height, width, training)
            assert logits.dtype == torch.float32
            assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_small_inputs_work_for_every_model(name):
    """Run sizes as small as 32 px (and odd sizes below the stride) must not crash any network."""
    model = build_model(name)
    for height, width in [(32, 32), (20, 30)]:
        for training in (True, False):
            model.train(training)
            with torch.no_grad():
                logits = model(torch.randn(2, 3, height, width))
            assert logits.shape == (2, 1, height, width), (name, height, width, training)


@pytest.mark.parametrize("name", ["unet", "segresnet"])
def test_padding_does_not_leak_between_images_of_a_batch(name):
    """Padding to the stride is per batch; each image's logits must not depend on its batch neighbours."""
    model = build_model(name).eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        together = model(x)
        alone = model(x[:1])
    torch.testing.assert_close(together[:1], alone, rtol=1e-4, atol=1e-4)


def test_gradients_reach_the_first_layer_through_the_padding():
    model = build_model("unet")
    x = torch.randn(2, 3, 50, 70)
    model(x).mean().backward()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(PixelwiseError) as error:
        build_model("nope")
    message = str(error.value)
    assert "nope" in message
    assert all(name in message for name in MODELS)
    assert "\n" not in message


def test_fewer_than_two_classes_is_refused():
    with pytest.raises(PixelwiseError, match="num_classes"):
        build_model("unet", num_classes=1)


def test_output_channels_binary_has_one_logit():
    assert output_channels(2) == 1
    assert output_channels(3) == 3
    assert output_channels(5) == 5


def test_registered_strides_divide_what_the_networks_need():
    """The declared stride must be enough: a stride-multiple input runs without padding (no crop)."""
    for name, spec in MODELS.items():
        net = spec.build(3, 1).eval()  # the raw network, without PadToStride
        side = spec.stride * 2
        with torch.no_grad():
            out = net(torch.randn(2, 3, side, side + spec.stride))
        assert out.shape[-2:] == (side, side + spec.stride), name


def test_unet_has_more_parameters_and_flops_than_segnet():
    """Same encoder and decoder widths, but U-Net's decoder convolutions also read the skip features."""
    segnet, unet = build_model("segnet"), build_model("unet")
    n_segnet, n_unet = count_parameters(segnet), count_parameters(unet)
    assert 0 < n_segnet < n_unet
    # The extra inputs are exactly the concatenated encoder channels, 3×3 kernels, per output channel.
    extra = sum(width * width * 9 for width in ENCODER_CHANNELS)
    assert n_unet - n_segnet == extra
    g_segnet, g_unet = count_gflops(segnet, 64), count_gflops(unet, 64)
    assert 0 < g_segnet < g_unet


def test_count_gflops_scales_with_pixels_and_keeps_the_mode():
    model = build_model("segnet").train()
    small, large = count_gflops(model, 32), count_gflops(model, 64)
    assert model.training, "count_gflops must restore train mode"
    assert large == pytest.approx(4 * small, rel=0.05)


@pytest.mark.parametrize("cls, skip", [(SegNet, False), (UNet, True)])
def test_lesson_channel_widths(cls, skip):
    """Encoder 16, 32, 64, 128; bottleneck 256; decoder 128, 64, 32, 16; 1×1 head."""
    net = cls(3, 1)
    assert ENCODER_CHANNELS == (16, 32, 64, 128) and BOTTLENECK_CHANNELS == 256
    assert [stage[0].out_channels for stage in net.encoder] == [16, 32, 64, 128]
    assert [stage[0].in_channels for stage in net.encoder] == [3, 16, 32, 64]
    assert net.bottleneck[0].out_channels == 256
    assert [stage[0].out_channels for stage in net.decoder] == [128, 64, 32, 16]
    decoder_inputs = [stage[0].in_channels for stage in net.decoder]
    assert decoder_inputs == ([256 + 128, 128 + 64, 64 + 32, 32 + 16] if skip else [256, 128, 64, 32])
    assert net.head.kernel_size == (1, 1) and net.head.in_channels == 16 and net.head.out_channels == 1
    # the lesson's block order: conv → ReLU → BatchNorm
    assert [type(m) for m in net.encoder[0]] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_are_unbounded_logits(name):
    """A large bias on the last layer must show in the output: no sigmoid/softmax inside the model."""
    model = build_model(name).eval()
    last_conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    assert last_conv.bias is not None, name
    with torch.no_grad():
        last_conv.bias.fill_(50.0)
        high = model(torch.randn(1, 3, 32, 32))
        last_conv.bias.fill_(-50.0)
        low = model(torch.randn(1, 3, 32, 32))
    assert high.max() > 1.0, name
    assert low.min() < 0.0, name


def test_model_spec_lookup():
    assert model_spec("unet").stride == 16
    with pytest.raises(PixelwiseError):
        model_spec("UNET")
