"""The lesson's training loop against pixelwise's default path, with profiles.

The lesson's loop (one float32 tensor pre-resized once, a ``DataLoader`` over a list of (image, mask) tuples,
batch 32, shuffle, Adam 1e-3, ``BCEWithLogitsLoss``, fp32 NCHW) against pixelwise's default training path
(uint8 batch sliced from memory → 0..1 → default augmentation → normalise → channels_last → bf16 autocast →
``bce+dice`` → AdamW, built by the loop's own ``build_training``) on the same network and data, in the same
process, epochs interleaved; the ratio is pixelwise images/s ÷ lesson images/s (``lesson_ratio`` in
docs/benchmarks.md). The lesson's loop lives here, not in the package: it is a yardstick, not a feature.

Usage (from the repository root)::

    .venv/bin/python benchmarks/lesson_loop.py [--size 256] [--images 64] [--reps 5] [--profile]
                                               [--data ../shared/data/isic2017-train-256] [--model unet]

Prints images/s of both paths (epochs interleaved, median of ``--reps`` after one warm-up epoch each) and,
with ``--profile``, a torch.profiler table per path (one epoch each): the operators by self CPU time, which
is what says where each path spends its time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from pixelwise.bench import BenchSettings, bench_pairs, default_recipe, pixelwise_epoch, training_setup
from pixelwise.data.cache import load_arrays
from pixelwise.models import build_model
from pixelwise.runtime import pick_device

LESSON_BATCH = 32


def lesson_loader(images: torch.Tensor, masks: torch.Tensor, batch: int = LESSON_BATCH):
    """The lesson's data: one float32 tensor (0..1) pre-resized once, a DataLoader over (image, mask) tuples."""
    from torch.utils.data import DataLoader

    x = images.float().div(255.0)  # N×3×S×S float32
    y = masks.float().unsqueeze(1)  # N×1×S×S float32 in {0, 1}
    return DataLoader(list(zip(x, y)), batch_size=batch, shuffle=True)


def lesson_epoch(model, loader, optimizer, criterion) -> int:
    """One epoch of the lesson's loop (fp32, NCHW); returns the number of images seen."""
    model.train()
    seen = 0
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        seen += len(x)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=64, help="images per epoch (a multiple of 32)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--model", default="unet", help="network for both paths (the lesson's: unet)")
    parser.add_argument("--data", default=None, help="data set folder (default: the embedded synthetic set)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table per path")
    parser.add_argument("--rows", type=int, default=15, help="operators per profile table")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PIXELWISE_THREADS", os.cpu_count() or 1)))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = pick_device()
    settings = BenchSettings(size=args.size, images=args.images, data=args.data)
    images, masks = load_arrays(bench_pairs(settings), args.size, progress=False)
    masks = (masks > 0).to(torch.uint8)

    torch.manual_seed(0)
    lesson_model = build_model(args.model)
    lesson_optimizer = torch.optim.Adam(lesson_model.parameters(), lr=1e-3)
    criterion = torch.nn.BCEWithLogitsLoss()
    loader = lesson_loader(images, masks)
    recipe, record = default_recipe(device, model=args.model)
    training = training_setup(recipe, device)  # the loop's own model, optimiser, loss and augmentation
    paths = {
        "lesson": lambda: lesson_epoch(lesson_model, loader, lesson_optimizer, criterion),
        "pixelwise": lambda: pixelwise_epoch(training, images, masks, recipe, record, device),
    }
    for work in paths.values():
        work()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.reps):
        for name, work in paths.items():
            started = time.perf_counter()
            count = work()
            rates[name].append(count / (time.perf_counter() - started))
    lesson_ips, ours_ips = statistics.median(rates["lesson"]), statistics.median(rates["pixelwise"])
    print(
        f"machine: {os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}, "
        f"load average {os.getloadavg()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    print(f"{args.model} at {args.size}px, {len(images)} images per epoch, median of {args.reps}")
    for name in paths:
        print(
            f"  {name:10s} {statistics.median(rates[name]):7.2f} images/s   (all: "
            f"{', '.join(f'{r:.2f}' for r in rates[name])})"
        )
    print(f"  ratio      {ours_ips / lesson_ips:7.2f}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, work in paths.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                work()
            print(f"\n=== {name}: one epoch, operators by self CPU time ===")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
