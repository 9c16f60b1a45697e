"""Tiny trained run folders for the API and server tests, made in a second without a data set: a U-Net
after a few AdamW steps on synthetic dermoscopy-like images (so its masks are neither empty nor full)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelwise.config import Recipe, RunConfig, RunRecord
from pixelwise.data.classes import ClassMap
from pixelwise.data.synth import sample_rng, synth_sample
from pixelwise.models import build_model
from pixelwise.runs import RunFolder, save_weights

SIZE = 64
THRESHOLD = 0.4  # not 0.5: a consumer reading the default instead of the run's threshold would be caught


def trained_config(
    num_classes: int = 2,
    size: int = SIZE,
    threshold: float = 0.5,
    classes: dict | None = None,
    record: dict | None = None,
    **recipe,
) -> RunConfig:
    """The config.json of a trained run without training: ``recipe`` fields, and a record of ``num_classes``
    plain classes (or ``classes``), ``size``, ``threshold``, fp32 and any other ``record`` fields."""
    recipe.setdefault("fast", False)
    classes = classes if classes is not None else ClassMap.plain(num_classes).to_dict()
    return RunConfig(
        Recipe(**recipe),
        RunRecord(
            num_classes=num_classes, classes=classes, size=size, threshold=threshold, fast=False, **(record or {})
        ),
    )


def synth_image(index: int, size: int = 96) -> np.ndarray:
    """A synthetic dermoscopy-like uint8 H×W×3 RGB image (seeded by ``index``)."""
    return synth_sample(sample_rng(11, index), size)[0]


def make_tiny_run(
    folder: Path,
    steps: int = 3,
    num_classes: int = 2,
    model: str = "unet",
    record: dict | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Path:
    """A run folder (config.json + model.safetensors) at 64 px whose weights took ``steps`` AdamW steps;
    ``class_names``: the run's class map names (default names otherwise), ``record``: more recorded fields."""
    from pixelwise.data.augment import build_augment
    from pixelwise.losses import build_loss
    from pixelwise.train.loop import train_step

    classes = ClassMap.from_names(class_names).to_dict() if class_names else None
    config = trained_config(num_classes, threshold=THRESHOLD, classes=classes, record=record, model=model, batch_size=8)
    samples = [synth_sample(sample_rng(7, i), SIZE) for i in range(8)]
    images = torch.from_numpy(np.stack([image.transpose(2, 0, 1) for image, _ in samples]))
    masks = torch.from_numpy(np.stack([mask for _, mask in samples]))
    torch.manual_seed(0)
    net = build_model(model, num_classes)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    loss, identity = build_loss("bce+dice", num_classes), build_augment("none")
    for _ in range(steps):
        train_step(net, optimizer, loss, identity, images, masks, config.record, torch.device("cpu"))
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(net, RunFolder(folder).weights_path)
    RunFolder(folder).write_config(config)
    return folder


def write_images(folder: Path, sizes=((96, 96), (80, 120), (130, 70))) -> list[Path]:
    """Synthetic images of several sizes and aspects as PNG files ``img<i>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (height, width) in enumerate(sizes):
        image = synth_image(i, max(height, width))[:height, :width]
        path = folder / f"img{i}.png"
        Image.fromarray(np.ascontiguousarray(image)).save(path)
        paths.append(path)
    return paths


def camera_frames(count: int = 6, width: int = 320, height: int = 180) -> list[np.ndarray]:
    """``count`` uint8 H×W×3 RGB frames of a camera pointed at skin: synthetic images cropped to width×height."""
    return [np.ascontiguousarray(synth_image(i, max(width, height))[:height, :width]) for i in range(count)]


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    """RGB frames (even width and height) as a YUV4MPEG2 clip, 4:2:0 with JPEG (full-range BT.601) colours:
    what Chromium's ``--use-file-for-fake-video-capture`` plays as its camera (looped). The format is one text
    header line, then per frame ``FRAME\\n`` and the Y, U and V planes (U and V at half width and height)."""
    height, width = frames[0].shape[:2]
    assert height % 2 == 0 and width % 2 == 0, "4:2:0 needs an even width and height"
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            r, g, b = (frame[..., i].astype(np.float32) for i in range(3))
            y = 0.299 * r + 0.587 * g + 0.114 * b
            u = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
            v = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b

            def half(plane: np.ndarray) -> np.ndarray:
                return plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

            out.write(b"FRAME\n")
            for plane in (y, half(u), half(v)):
                out.write(np.clip(np.rint(plane), 0, 255).astype(np.uint8).tobytes())
    return path
