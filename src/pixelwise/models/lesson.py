"""The lesson's two networks, SegNet and U-Net, written small and clear.

Both follow the classic course exercise on PH2 at 256×256:

- encoder: four stages of conv3×3 → ReLU → BatchNorm, each followed by a 2×2 max-pool,
  with 16, 32, 64 and 128 channels;
- bottleneck: conv3×3 → ReLU → BatchNorm with 256 channels at 1/16 resolution;
- decoder: four stages of bilinear ×2 upsampling then conv3×3 → ReLU → BatchNorm
  (128, 64, 32, 16 channels), and a 1×1 convolution to the class logits.

SegNet's decoder sees only the upsampled features; U-Net concatenates the encoder features of
the same resolution before each decoder convolution (the skip connections), which is why it
recovers lesion borders much better.

Both return **logits**. The lesson applied a sigmoid in ``forward`` and then trained with
``BCEWithLogitsLoss``, which applies a second sigmoid: the loss then sees values squeezed into
(0.5, 0.73), its gradient shrinks, and learning stalls well below what the network can do.
Here the sigmoid (or softmax) is applied only when probabilities are needed, never before the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_CHANNELS = (16, 32, 64, 128)
BOTTLENECK_CHANNELS = 256


def conv_relu_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv3×3 (same padding) → ReLU → BatchNorm, the lesson's building block (order kept)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(out_channels),
    )


class _LessonNet(nn.Module):
    """Shared encoder/decoder; ``skip`` decides SegNet (False) or U-Net (True).

    Args:
        in_channels: image channels (3 for RGB).
        out_channels: 1 for binary segmentation (sigmoid), C for C classes (softmax).
        skip: concatenate encoder features in the decoder (U-Net).

    Forward:
        x: float32 N×in_channels×H×W, normalised image; H and W multiples of 16.
        returns float32 logits N×out_channels×H×W.
    """

    stride = 16  # four 2×2 poolings

    def __init__(self, in_channels: int = 3, out_channels: int = 1, skip: bool = False):
        super().__init__()
        self.skip = skip
        widths = (in_channels,) + ENCODER_CHANNELS
        self.encoder = nn.ModuleList(conv_relu_bn(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_relu_bn(ENCODER_CHANNELS[-1], BOTTLENECK_CHANNELS)
        decoder = []
        below = BOTTLENECK_CHANNELS
        for width in reversed(ENCODER_CHANNELS):
            decoder.append(conv_relu_bn(below + (width if skip else 0), width))
            below = width
        self.decoder = nn.ModuleList(decoder)
        self.head = nn.Conv2d(ENCODER_CHANNELS[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        for stage in self.encoder:
            x = stage(x)
            features.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for stage, skip_features in zip(self.decoder, reversed(features)):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            if self.skip:
                x = stage[2](stage[1](conv_of_concat(stage[0], x, skip_features)))
            else:
                x = stage(x)
        return self.head(x)


def conv_of_concat(conv: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``conv(torch.cat([a, b], 1))`` computed as two convolutions over the weight's channel halves.

    Same result and same weights as the concatenation, but the gradient reaching ``a`` (the upsampled
    features) is a whole tensor rather than a channel slice of the concatenation's gradient: in
    channels_last memory such a slice is strided, and it made the bilinear upsampling's backward pass the
    slowest operation of a bf16 training step (docs/benchmarks.md).
    """
    channels = a.shape[1]
    return F.conv2d(a, conv.weight[:, :channels], conv.bias, padding=conv.padding) + F.conv2d(
        b, conv.weight[:, channels:], None, padding=conv.padding
    )


class SegNet(_LessonNet):
    """The lesson's SegNet: encoder–decoder without skip connections. Returns logits."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1):
        super().__init__(in_channels, out_channels, skip=False)


class UNet(_LessonNet):
    """The lesson's U-Net: SegNet plus skip connections (concatenation). Returns logits."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1):
        super().__init__(in_channels, out_channels, skip=True)
