"""A 4000×3000 prediction through the real ``predict`` path (``predict_files``: decode, the run's per-image path in
``predict/segment.py``, mask + overlay PNGs written): time per megapixel and peak resident memory.

The run folder is made here: the default model (``Recipe().model``) with fresh weights (the masks mean nothing,
the cost is the real one), binary, recorded either squashed (``--scale squash``: one ``--size`` square, as runs
before tiles) or tiled (``--scale 0.5``: resized by the factor, tiles of ``--size``, Gaussian blend). One
process per measurement: the peak RSS is the process's. Set ``PIXELWISE_THREADS`` to choose the threads:

    PIXELWISE_THREADS=1 .venv/bin/python benchmarks/native_predict.py --scale 0.5 --tta none
    PIXELWISE_THREADS=1 .venv/bin/python benchmarks/native_predict.py --scale squash --tta none
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pixelwise.config import Recipe, RunConfig, RunRecord, parse_scale
from pixelwise.data.classes import ClassMap
from pixelwise.models import build_model
from pixelwise.predict.engine import make_predictor
from pixelwise.predict.predict import predict_files
from pixelwise.predict.tiles import plan_tiles
from pixelwise.runs import RunFolder, save_weights
from pixelwise.runtime import set_threads


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_run(folder: Path, scale: float | None, size: int) -> Path:
    recipe = Recipe(fast=False)
    record = RunRecord(
        num_classes=2,
        classes=ClassMap.plain(2).to_dict(),
        size=size,
        scale=scale,
        tiles=plan_tiles(size).to_dict() if scale is not None else None,
    )
    run = RunFolder(folder)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(RunConfig(recipe, record))
    save_weights(build_model(recipe.model, 2, pretrained=False).eval(), run.weights_path)
    return run.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--scale", default="0.5", help="squash, or a factor (tiled)")
    parser.add_argument("--size", type=int, default=0, help="input/tile side (default: 128 squash, 256 tiles)")
    parser.add_argument("--tta", default="none")
    args = parser.parse_args()
    set_threads()
    scale = parse_scale(args.scale)
    scale = None if scale in ("squash", "auto") else scale
    size = args.size or (256 if scale is not None else 128)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = make_run(tmp / "run", scale, size)
        rng = np.random.default_rng(0)
        coarse = rng.integers(0, 256, (args.height // 64 + 1, args.width // 64 + 1, 3), dtype=np.uint8)
        image = np.repeat(np.repeat(coarse, 64, 0), 64, 1)[: args.height, : args.width]
        Image.fromarray(image).save(tmp / "big.png")
        del image, coarse
        predictor = make_predictor(run, "torch", args.tta, "fp32")
        before = peak_rss_mib()
        started = time.perf_counter()
        predict_files(predictor, [tmp / "big.png"], tmp / "out")
        seconds = time.perf_counter() - started
    megapixels = args.height * args.width / 1e6
    how = f"tiles of {size} px at scale {scale:g}" if scale is not None else f"squash to {size} px"
    print(
        f"{args.width}×{args.height} ({how}, tta {args.tta}): {seconds:.1f} s, {seconds / megapixels:.2f} s/MP; "
        f"peak RSS {before:.0f} MiB before predict, {peak_rss_mib():.0f} MiB after"
    )


if __name__ == "__main__":
    main()
