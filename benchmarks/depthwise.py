"""Depthwise convolutions under CPU bf16 autocast: fp32 or bf16?

EfficientNet-Lite's depthwise k×k convolutions are a small share of its arithmetic but, in bf16 on CPU
(oneDNN), the largest share of a training step's time. This script times, forward + backward, N=16:

1. each depthwise convolution shape of EfficientNet-Lite0 at 128×128 input, in fp32 and bf16 (channels_last);
2. one AdamW training step of ``effnet_lite0_unet`` under bf16 autocast, with the depthwise convolutions in bf16
   (as autocast would run them) and in fp32 (what ``models.efficientnet_lite.SameConv2d`` does on CPU);
3. with ``--train-data DATA``: whole default trainings of ``--epochs`` epochs on DATA, fp32 / bf16 depthwise in
   turns (twice each), printing each epoch's images/s and validation Dice from ``metrics.csv``.

    PIXELWISE_THREADS=2 .venv/bin/python benchmarks/depthwise.py [--size 128] [--model effnet_lite0_unet]
    .venv/bin/python benchmarks/depthwise.py --train-data ../shared/data/isic2017-train-256 --epochs 3

Run it alone: other work on the cores changes every number.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from pixelwise.config import Recipe
from pixelwise.models import build_model
from pixelwise.models.efficientnet_lite import SameConv2d
from pixelwise.runs import RunFolder
from pixelwise.runtime import autocast
from pixelwise.train.loop import train


def timed(fn, reps: int) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` calls, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


def depthwise_ms(channels: int, side: int, kernel: int, stride: int, bf16: bool, reps: int) -> float:
    conv = torch.nn.Conv2d(channels, channels, kernel, stride, groups=channels, bias=False)
    x = torch.randn(16, channels, side, side).contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = conv(x)
        y.float().sum().backward()

    return timed(step, reps)


def bf16_depthwise(self: SameConv2d, x: torch.Tensor) -> torch.Tensor:
    """SameConv2d.forward without the fp32 detour: what autocast alone would run."""
    if self.extra_pad is not None:
        x = F.pad(x, self.extra_pad)
    return torch.nn.Conv2d.forward(self, x)


def depthwise_in_bf16():
    """A context in which SameConv2d skips its fp32 detour."""
    return mock.patch.object(SameConv2d, "forward", bf16_depthwise)


def train_step_ms(model_name: str, size: int, depthwise_bf16: bool, reps: int) -> float:
    torch.manual_seed(0)
    model = build_model(model_name, 2, pretrained=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(16, 3, size, size).contiguous(memory_format=torch.channels_last)
    device = torch.device("cpu")

    def step():
        with autocast(device, True):
            logits = model(x)
        loss = logits.float().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with depthwise_in_bf16() if depthwise_bf16 else nullcontext():
        return timed(step, reps)


def train_in_turns(data: Path, epochs: int) -> None:
    """Default trainings on ``data``, depthwise fp32 / bf16 in turns, so a drifting machine hits both alike."""
    for turn, depthwise_bf16 in enumerate([False, True, False, True]):
        with tempfile.TemporaryDirectory() as folder:
            config = Recipe(data=str(data.resolve()), epochs=epochs)
            with depthwise_in_bf16() if depthwise_bf16 else nullcontext():
                run = RunFolder(train(config, Path(folder) / "run"))
            rows = list(csv.DictReader(run.metrics_path.open()))
        print(
            f"turn {turn + 1}, depthwise {'bf16' if depthwise_bf16 else 'fp32'}: images/s "
            f"{[round(float(r['images_per_s']), 1) for r in rows]}, val Dice "
            f"{[round(float(r['val_dice']), 3) for r in rows]}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--model", default="effnet_lite0_unet")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--train-data", type=Path, help="also time whole trainings on this data set")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if args.train_data:
        train_in_turns(args.train_data, args.epochs)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| depthwise conv (C, input side, kernel, stride) | fp32 ms | bf16 ms |")
    print("| --- | ---: | ---: |")
    # Lite0's depthwise shapes at 128×128 input (SAME padding included in the input side).
    for channels, side, kernel, stride in [
        (96, 65, 3, 2),
        (144, 35, 5, 2),
        (240, 16, 5, 1),
        (480, 8, 5, 1),
        (672, 8, 5, 1),
        (1152, 4, 5, 1),
    ]:
        fp32 = depthwise_ms(channels, side + (kernel - 1 if stride == 1 else 0), kernel, stride, False, args.reps)
        bf16 = depthwise_ms(channels, side + (kernel - 1 if stride == 1 else 0), kernel, stride, True, args.reps)
        print(f"| {channels}, {side}, {kernel}, {stride} | {fp32:.1f} | {bf16:.1f} |")
    bf16 = train_step_ms(args.model, args.size, True, args.reps)
    fp32 = train_step_ms(args.model, args.size, False, args.reps)
    print(
        f"\n{args.model}, batch 16 at {args.size}×{args.size}, bf16 autocast, one AdamW step: "
        f"depthwise in bf16 {bf16:.0f} ms, in fp32 {fp32:.0f} ms ({bf16 / fp32:.2f}× faster)"
    )


if __name__ == "__main__":
    main()
