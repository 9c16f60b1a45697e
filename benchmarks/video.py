"""Video prediction (pixelwise.predict.video): how much do masks flicker with and without temporal smoothing, and
how many frames a second does ``predict`` turn a clip into a mask video and an overlay video, on this CPU?

The clip is synthetic, written with PyAV: a dark disc moving across a textured (skin-like) background, with
Gaussian sensor noise (sigma 2) on every frame, H.264 CRF 12 (so the background is still up to noise and
compression, and the disc's edge moves 4 px a frame).

* Flicker (:func:`pixelwise.predict.video.mask_flicker`): over consecutive frames, the fraction of *still* pixels
  (input colour changed by < 10 of 255 in every channel) whose mask label changed; and the same on still pixels
  at least 16 px from any changed one (``margin=16``: leaves out the moving disc's blurred mask edge, which moves
  with it). Lag: the fraction of *moving* pixels (the rest) whose label differs from the unsmoothed mask, i.e. what
  smoothing costs where things move. Measured at 640×360, one pass, for ``smooth`` 1 (off), 0.5 (the default,
  motion-gated), 0.5 without the motion gate, and 0.3, with two tiny runs: 3 steps (hesitant: its masks flicker
  on the noise) and ``--steps`` (default 30: confident).
* Speed: frames/s of the whole path (decode → network → mask + overlay → encode both videos), one pass and TTA
  (``d4-zoom``, 16 network passes a frame), at 640×360 and 1280×720, with the share of time spent in the network.

Models: flicker uses ``tests/tiny_run.py``'s ``make_tiny_run`` (64 px U-Net trained a few AdamW steps on
synthetic dermoscopy-like images, which segments a dark disc on skin); speed is measured for it and (``--model
both``, the default) for a freshly built, untrained ``effnet_lite0_unet`` (the recipe's default network; no
pretrained download) at ``--size`` px, whose masks mean nothing but whose speed is the default network's.

    PIXELWISE_THREADS=1 .venv/bin/python benchmarks/video.py [--model tiny|both] [--frames 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def textured_background(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random skin-like texture, uint8 H×W×3."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(0, 1, (height, width)), max(2.0, height / 60))
    noise = (noise - noise.mean()) / (noise.std() + 1e-6)
    base = np.array([205, 160, 135], np.float32)
    return np.clip(base + noise[..., None] * np.array([18, 15, 12], np.float32), 0, 255).astype(np.uint8)


def write_clip(path: Path, height: int, width: int, frames: int, rate: int = 25) -> Path:
    """The moving-disc clip (see the module's docstring)."""
    import av

    rng = np.random.default_rng(1)
    background = textured_background(height, width).astype(np.float32)
    rows, cols = np.mgrid[:height, :width]
    radius, step = height / 6, width / 160
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for i in range(frames):
            frame = background.copy()
            disc = (rows - height / 2) ** 2 + (cols - width / 4 - step * i) ** 2 < radius**2
            frame[disc] = (95, 60, 45)
            frame = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def default_run(folder: Path, size: int) -> Path:
    """An untrained effnet_lite0_unet run folder at ``size`` (config.json + model.safetensors)."""
    from pixelwise.models import build_model
    from pixelwise.runs import RunFolder, save_weights

    from tiny_run import trained_config

    folder.mkdir(parents=True, exist_ok=True)
    net = build_model("effnet_lite0_unet", 2, pretrained=False)
    save_weights(net, RunFolder(folder).weights_path)
    RunFolder(folder).write_config(trained_config(2, size=size, model="effnet_lite0_unet"))
    return folder


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def timed_predictor(run: Path, tta: str):
    """A predictor whose network time is added up in ``.network_seconds``."""
    from pixelwise.predict.engine import make_predictor

    predictor = make_predictor(run, "torch", tta, "fp32")
    predictor.network_seconds = 0.0
    network = predictor.probabilities

    def probabilities(images, *args):
        start = time.perf_counter()
        try:
            return network(images, *args)
        finally:
            predictor.network_seconds += time.perf_counter() - start

    predictor.probabilities = probabilities
    return predictor


def predict(predictor, clip: Path, out: Path, options) -> tuple[float, Path]:
    from pixelwise.predict.video import predict_video, video_targets

    targets = video_targets([clip], [clip], out, True, options)[0]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    predict_video(predictor, clip, targets, options=options)
    return time.perf_counter() - start, targets[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny", "both"), default="both")
    parser.add_argument("--steps", type=int, default=30, help="tiny run: AdamW steps")
    parser.add_argument("--size", type=int, default=256, help="default model: network input side")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    from pixelwise.predict.video import STILL_THRESHOLD, VideoOptions, mask_flicker, read_mask_video
    from pixelwise.runtime import set_threads, thread_count

    set_threads()
    results: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "PIXELWISE_THREADS=%s .venv/bin/python benchmarks/video.py %s"
        % (os.environ.get("PIXELWISE_THREADS", ""), " ".join(sys.argv[1:])),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, PIXELWISE_THREADS -> {thread_count()} thread(s)",
        "flicker": {},
        "speed": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from tiny_run import make_tiny_run

        hesitant = make_tiny_run(tmp / "hesitant", steps=3)
        run = make_tiny_run(tmp / "run", steps=args.steps)
        models = {f"tiny run (make_tiny_run: unet, 64 px, {args.steps} steps)": run}
        if args.model == "both":
            models[f"untrained effnet_lite0_unet, {args.size} px"] = default_run(tmp / "default", args.size)
        clips = {(h, w): write_clip(tmp / f"clip{w}x{h}.mp4", h, w, args.frames) for h, w in ((360, 640), (720, 1280))}
        warm = write_clip(tmp / "warm.mp4", 360, 640, 4)

        # Flicker at 640×360, one pass.
        clip = clips[(360, 640)]
        frames = decoded(clip)
        moving = [
            np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1) >= STILL_THRESHOLD
            for a, b in zip(frames, frames[1:])
        ]
        settings = {
            "off (smooth 1)": VideoOptions(smooth=1.0),
            "smooth 0.5, motion-gated (default)": VideoOptions(smooth=0.5),
            "smooth 0.5, no motion gate": VideoOptions(smooth=0.5, motion_gate=False),
            "smooth 0.3, motion-gated": VideoOptions(smooth=0.3),
        }
        for steps, flicker_run in ((3, hesitant), (args.steps, run)):
            predictor = timed_predictor(flicker_run, "none")
            masks = {}
            for name, options in settings.items():
                _, mask_path = predict(predictor, clip, tmp / f"flicker-{steps}-{len(masks)}", options)
                masks[name] = list(read_mask_video(mask_path))
            plain = masks["off (smooth 1)"]
            table = results["flicker"][f"tiny run, {steps} steps"] = {}
            for name, series in masks.items():
                lag = np.mean([float((m != p)[move].mean()) for m, p, move in zip(series[1:], plain[1:], moving)])
                row = table[name] = {
                    "flicker_still": mask_flicker(frames, series),
                    "flicker_still_16px_from_motion": mask_flicker(frames, series, margin=16),
                    "lag_moving": float(lag),
                    "foreground": float(np.mean([m.mean() for m in series])),
                }
                print(
                    f"flicker {steps:2d} steps {name:36s} still {row['flicker_still']:.5f}  16 px from motion "
                    f"{row['flicker_still_16px_from_motion']:.5f}  moving pixels changed vs unsmoothed {lag:.4f}",
                    flush=True,
                )

        # Speed.
        for (model, run), tta in itertools.product(models.items(), ("none", "d4-zoom")):
            predictor = timed_predictor(run, tta)
            predict(predictor, warm, tmp / "warm", VideoOptions())  # first-call costs out of the way
            for (height, width), clip in clips.items():
                predictor.network_seconds = 0.0
                seconds, _ = predict(predictor, clip, tmp / f"speed-{tta}-{width}", VideoOptions())
                row = {
                    "model": model,
                    "size": f"{width}x{height}",
                    "tta": tta,
                    "frames": args.frames,
                    "seconds": round(seconds, 2),
                    "frames_per_second": round(args.frames / seconds, 2),
                    "network_share": round(predictor.network_seconds / seconds, 2),
                }
                results["speed"].append(row)
                print(
                    f"speed {model[:26]:26s} {row['size']:>9s} tta {tta:8s} {row['frames_per_second']:6.2f} frames/s "
                    f"(network {row['network_share']:.0%} of the time)",
                    flush=True,
                )
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
