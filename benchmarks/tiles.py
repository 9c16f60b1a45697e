"""Tiled native-resolution prediction (:mod:`pixelwise.predict.tiles`) on a large image: time and peak memory.

A freshly built network (random weights: the masks mean nothing, the cost is the real one) predicts a synthetic
uint8 image of ``--height``×``--width`` pixels in overlapping ``--tile`` windows, ``--batch`` at a time, fp32,
``torch.no_grad``, on the CPU, the way ``predict``'s torch engine runs it (``fit`` and TTA aside). Prints the
windows, the time per megapixel and per window, and the process's peak resident memory before and after the
tiling (the model and the image are in the first figure). Set ``PIXELWISE_THREADS`` to choose the threads:

    PIXELWISE_THREADS=1 .venv/bin/python benchmarks/tiles.py
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from pixelwise.data import MEAN, STD
from pixelwise.data.classes import activate
from pixelwise.models import build_model
from pixelwise.predict.tiles import plan_tiles, tiled_labels
from pixelwise.runtime import model_input, set_threads


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synthetic_image(height: int, width: int) -> np.ndarray:
    """Smooth colour blobs with noise: ``uint8`` H×W×3, built without a full-size float array."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (height // 64 + 1, width // 64 + 1, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(coarse, 64, 0), 64, 1)[:height, :width]
    return np.ascontiguousarray(image // 2 + rng.integers(0, 128, image.shape, dtype=np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="effnet_lite0_unet")
    parser.add_argument("--classes", type=int, default=2, help="2 = binary (1 sigmoid channel)")
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--width", type=int, default=3000)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()

    set_threads()
    torch.manual_seed(0)
    model = build_model(args.model, args.classes, pretrained=False).eval()
    device = torch.device("cpu")

    def predict_probs(batch: torch.Tensor) -> torch.Tensor:
        return activate(model(model_input(batch, MEAN, STD, device, channels_last=False)))

    image = synthetic_image(args.height, args.width)
    plan = plan_tiles(args.tile, args.overlap)
    windows = len(plan.grid(args.height, args.width))
    with torch.no_grad():  # one batch first: the allocator's and the kernels' first-call costs
        predict_probs(torch.zeros(args.batch, 3, args.tile, args.tile, dtype=torch.uint8))
    before = peak_rss_mib()
    start = time.perf_counter()
    labels = tiled_labels(predict_probs, image, plan, args.batch)
    seconds = time.perf_counter() - start
    after = peak_rss_mib()

    megapixels = args.height * args.width / 1e6
    print(
        f"model {args.model} ({args.classes} classes), image {args.height}x{args.width} ({megapixels:.1f} MP), "
        f"plan {plan.to_dict()}, batch {args.batch}, threads {torch.get_num_threads()}"
    )
    print(f"windows {windows} ({windows * args.tile**2 / (megapixels * 1e6):.2f}x the image's pixels)")
    print(f"time {seconds:.1f} s = {seconds / megapixels:.2f} s/MP = {1000 * seconds / windows:.0f} ms/window")
    print(
        f"peak RSS {before:.0f} MiB before tiling (model, image, warm-up), {after:.0f} MiB after "
        f"(+{after - before:.0f} MiB); labels {labels.nbytes / 2**20:.1f} MiB, foreground {labels.mean():.3f}"
    )


if __name__ == "__main__":
    main()
