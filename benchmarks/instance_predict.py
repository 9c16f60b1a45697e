"""Instance prediction time: ``pixelwise.load(RUN).predict(image)`` on one large image with many objects, the
network and the watershed decode together (what a user of the Python API waits for), then the decode alone.

By default the image is the DSB 2018 image with the most nuclei among the 1024×1024 ones of the data folder
(``--image`` takes any other). Prints the median of ``--reps`` timed calls after one warm-up, the objects found
and the true count. Set ``PIXELWISE_THREADS`` for the threads (default: every core):

    .venv/bin/python benchmarks/instance_predict.py benchmarks/runs/dsb-tiles [--no-tta] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from PIL import Image

import pixelwise
from pixelwise.data.imageio import read_image
from pixelwise.predict.segment import decode_objects

DSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018-nuclei"


def most_crowded_1024(root: Path) -> tuple[Path, int]:
    """The 1024×1024 DSB image with the most nucleus masks, and that count."""
    best, count = None, -1
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        image = folder / "images" / f"{folder.name}.png"
        if not image.exists() or Image.open(image).size != (1024, 1024):
            continue
        n = len(list((folder / "masks").glob("*.png")))
        if n > count:
            best, count = image, n
    if best is None:
        raise SystemExit(f"no 1024×1024 image in {root}: pass --image")
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="an instance run (--task instances)")
    parser.add_argument("--image", type=Path, help="default: the most crowded 1024×1024 DSB image")
    parser.add_argument("--data", type=Path, default=DSB, help="the DSB 2018 folder (for the default image)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-tta", action="store_true", help="one network pass (default: the run's TTA)")
    args = parser.parse_args()

    image_path, true_count = (args.image, None) if args.image else most_crowded_1024(args.data)
    image = read_image(image_path)
    segmenter = pixelwise.load(args.run, tta=not args.no_tta)
    if segmenter.config.record.task != "instances":
        raise SystemExit(f"{args.run} is not an instance run (--task instances)")
    segmenter.predict(image)  # warm-up: weights, threads, allocator
    times, result = [], None
    for _ in range(args.reps):
        start = time.perf_counter()
        result = segmenter.predict(image, probabilities=True)
        times.append(time.perf_counter() - start)
    record = segmenter.config.record
    start = time.perf_counter()  # the decode the run chose on validation (seed source, thresholds, minimum score)
    decode_objects(record.class_map(), None, result.probabilities, thresholds=record.decode)
    decode = time.perf_counter() - start
    height, width = image.shape[:2]
    print(
        f"{image_path.name}: {width}×{height}, {result.objects.count} objects found"
        + (f" ({true_count} true)" if true_count is not None else "")
        + f"; predict {statistics.median(times):.2f} s (median of {args.reps}, TTA {segmenter.tta}), of which the "
        f"watershed decode {decode:.2f} s ({record.decode or 'default thresholds'}); {record.plan or 'squash'}"
    )


if __name__ == "__main__":
    main()
