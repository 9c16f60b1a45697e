"""Robustness to another camera: a binary run scored on re-coloured, softened copies of its held-out test images.

Our lesion and people sets come from one pool each; users' images come from other dermoscopes and cameras
(PH2's images, for one, are another device's colours and sharpness). This script changes the run's held-out test
images (never used for training or choices) the way another device would, leaves the truth masks as they are, and
scores the run on each version with the Python API (``pixelwise.load``, its default TTA and threshold):

- ``as-is``: the images as they are (the run's own test number);
- ``warm`` / ``cool``: another white balance (red ×1.15 and blue ×0.85, or the reverse);
- ``dark`` / ``bright``: another exposure curve (gamma 1.5 and 0.67 on 0..1 values);
- ``flat``: lower contrast and saturation (blended 30 % towards the image's mean grey);
- ``soft``: a lower-resolution sensor (down to half the side and back up, bilinear);
- ``jpeg``: strong JPEG compression (quality 30).

    .venv/bin/python benchmarks/appearance.py benchmarks/runs/isic-s22 [--json benchmarks/results/appearance.json]

Prints per version the mean Dice, Jaccard and thresholded Jaccard (ISIC's conventions, pixelwise.metrics).
"""

from __future__ import annotations

import io

import numpy as np
from heldout import HeldOut, run_arguments, save_result
from PIL import Image

from pixelwise.metrics import confusion_counts, overlap_metrics


def _gains(image: np.ndarray, red: float, blue: float) -> np.ndarray:
    scaled = image.astype(np.float32) * np.array([red, 1.0, blue], np.float32)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    return np.clip(np.rint(255.0 * (image / 255.0) ** gamma), 0, 255).astype(np.uint8)


def _flat(image: np.ndarray, amount: float = 0.3) -> np.ndarray:
    grey = image.astype(np.float32).mean()
    return np.clip(np.rint((1 - amount) * image + amount * grey), 0, 255).astype(np.uint8)


def _soft(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    small = Image.fromarray(image).resize((max(1, width // 2), max(1, height // 2)), Image.BILINEAR)
    return np.asarray(small.resize((width, height), Image.BILINEAR))


def _jpeg(image: np.ndarray, quality: int = 30) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


#: name → image transform (uint8 H×W×3 → uint8 H×W×3, same size); the masks are not changed.
VERSIONS = {
    "as-is": lambda image: image,
    "warm": lambda image: _gains(image, 1.15, 0.85),
    "cool": lambda image: _gains(image, 0.85, 1.15),
    "dark": lambda image: _gamma(image, 1.5),
    "bright": lambda image: _gamma(image, 1 / 1.5),
    "flat": _flat,
    "soft": _soft,
    "jpeg": _jpeg,
}


def main() -> None:
    args = run_arguments(__doc__)
    held_out = HeldOut(args)
    config, segmenter = held_out.config, held_out.segmenter
    counts: dict[str, list[np.ndarray]] = {name: [] for name in VERSIONS}
    for image, truth in held_out.images():
        versions = [np.ascontiguousarray(change(image)) for change in VERSIONS.values()]
        for name, segmentation in zip(VERSIONS, segmenter.predict_batch(versions)):
            counts[name].append(confusion_counts(segmentation.mask > 0, truth)[0])
    rows = {}
    for name, per_image in counts.items():
        overlap = overlap_metrics(np.stack(per_image))
        rows[name] = {
            "images": len(per_image),
            **{key: round(float(overlap[key].mean()), 4) for key in ("dice", "jaccard", "threshold_jaccard")},
        }
    print(f"{args.run} (size {config.record.size}, TTA {segmenter.tta}, threshold {segmenter.threshold:.2f})")
    for name, row in rows.items():
        print(
            f"  {name:8s} {row['images']:4d} images  Dice {row['dice']:.4f}  Jaccard {row['jaccard']:.4f}  "
            f"thr. Jaccard {row['threshold_jaccard']:.4f}"
        )
    save_result(args.json, args.run, {"size": config.record.size, "tta": segmenter.tta, "versions": rows})


if __name__ == "__main__":
    main()
