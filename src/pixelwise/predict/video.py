"""``pixelwise predict RUN clip.mp4 --out DIR``: video files in, a mask video and a picture video out.

Frames are decoded with PyAV (FFmpeg: .mp4 .mov .avi .mkv .webm and whatever else it reads), batched through the
run on the one per-image path (:func:`~pixelwise.predict.segment.segment_images`), so a frame's mask is the mask
``predict`` gives the same frame as a still image, except for the temporal smoothing below.

Outputs, per clip ``STEM``, at the clip's frame size and frame rate (the input's timestamps are kept):

* ``STEM_mask.mp4``: the masks, H.264 **lossless** (``qp 0``, 4:4:4): binary runs white (255) on black, multi-class
  runs each class in its colour (the run's palette). Every frame reads back exactly (:func:`read_mask_video`). Plays
  in FFmpeg, VLC and mpv; browsers and QuickTime do not decode lossless H.264.
* the picture video: ``STEM_overlay.mp4`` (the overlay of ``predict``'s PNGs; H.264 CRF 18), or for binary runs,
  with ``cutout``, ``STEM_cutout.mov`` (QuickTime Animation ``qtrle``, RGB + alpha, lossless: what video editors
  import with transparency) and/or, with ``background``, ``STEM_background.mp4`` (H.264 CRF 18). The picture
  videos carry the clip's audio, copied without re-encoding where their container takes its codec (else a
  warning says it was left out).

Temporal smoothing (:class:`TemporalSmoother`): masks of consecutive frames flicker where the network hesitates,
so the network's probabilities are averaged over time, ``p_t = w · p_new + (1 − w) · p_{t−1}``, an exponential
moving average whose weight of the newest frame is ``smooth`` (default :data:`DEFAULT_SMOOTH`; 1 = off). Motion
gating (on by default) raises ``w`` towards 1 where the frame differs from the picture behind the average, so
moving edges do not lag: see :data:`MOTION_LOW` / :data:`MOTION_HIGH`. ``every`` = N predicts every N-th frame
(the average runs over those); the frames between reuse the last mask (drawn on their own image).
:func:`mask_flicker` measures flicker; on a synthetic 640×360 clip (2026-12-06, ``benchmarks/video.py``) the
default halves a hesitant run's flicker away from motion and changes 0.1-1 % of moving pixels (7-36 % without the
gate). Not handled: a phone clip's display rotation (frames are taken as stored).

Every output is written to a temporary file in the output folder and renamed when the clip is done. A file that
is not a video, or a frame that cannot be decoded, stops with one :class:`PixelwiseError` line naming the file;
the clips finished before are complete. A clip that ends early (truncated: fewer frames than its header declares,
or a decoding error after some frames) still gets its outputs, holding the frames that decoded, and the error
says how many.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pixelwise import reporting
from pixelwise.data.classes import is_binary, png_values
from pixelwise.data.naming import BACKGROUND_SUFFIX, CUTOUT_SUFFIX, OVERLAY_SUFFIX, PREDICTED_MASK_SUFFIX
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write, first_line
from pixelwise.masks.cutout import Background, cutout_rgba, parse_background, replace_background, require_binary
from pixelwise.masks.postprocess import PostProcess
from pixelwise.predict.predictor import RunPredictor
from pixelwise.predict.segment import Segmentation, segment_images

log = logging.getLogger(__name__)

#: File suffixes ``predict`` treats as videos (compared in lower case).
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
#: Weight of the newest frame's probability in the moving average (1 = no smoothing). 0.5: a still pixel's
#: probability is averaged over about the last 3 frames (time constant 1/ln 2 ≈ 1.4 frames, weights 1/2, 1/4...).
DEFAULT_SMOOTH = 0.5
#: Motion gate: a pixel of the network's input whose colour differs by at most ``MOTION_LOW`` (of 255, largest
#: channel) from the average picture behind the smoothed probabilities is smoothed fully; by ``MOTION_HIGH`` or
#: more it takes the new probability as it is; linear between. Below ~8 is sensor noise and compression (at the
#: network's size, where resizing has averaged it down); 32 is a clear change.
MOTION_LOW = 8
MOTION_HIGH = 32
#: :func:`mask_flicker`'s "still" pixels: input colour changed by less than this (of 255, largest channel).
STILL_THRESHOLD = 10
#: H.264 quality of the picture videos (CRF: 0 lossless .. 51; 18 is visually lossless) and x264 presets.
PICTURE_CRF = 18
X264_PRESET = "veryfast"


def is_video_file(path: str | Path) -> bool:
    """True when the file's suffix is one ``predict`` reads as a video (:data:`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoOptions:
    """How ``predict`` treats a video.

    Attributes:
        every: predict every N-th frame (1 = all); the others reuse the last mask.
        smooth: weight of the newest frame in the probabilities' moving average, 0 < smooth ≤ 1 (1 = off).
        motion_gate: take the new probability where the frame's colour changed (:data:`MOTION_LOW`).
        cutout: binary runs: write ``STEM_cutout.mov`` (RGBA) instead of the overlay video.
        background: binary runs: write ``STEM_background.mp4`` over this (``blur``, a colour, an image).
        batch_size: predicted frames per network call.
    """

    every: int = 1
    smooth: float = DEFAULT_SMOOTH
    motion_gate: bool = True
    cutout: bool = False
    background: Any = None
    batch_size: int = 8

    def checked(self) -> "VideoOptions":
        if self.every < 1:
            raise PixelwiseError(f"--every {self.every}: must be 1 or more (1 predicts every frame)")
        if not 0 < self.smooth <= 1:
            raise PixelwiseError(f"--smooth {self.smooth}: must be in (0, 1]; 1 turns smoothing off")
        if self.batch_size < 1:
            raise PixelwiseError(f"batch size {self.batch_size}: must be 1 or more")
        return self


# -- temporal smoothing ------------------------------------------------------------------------------------------
class TemporalSmoother:
    """The exponential moving average of a clip's probabilities, frame after frame, at the network's size.

    Call it with each batch of consecutive predicted frames: ``uint8`` N×3×S×S inputs and their ``float32``
    N×K×S×S probabilities; it returns the smoothed probabilities (a convex mix, so they stay in 0..1 and still sum
    to 1 over the classes). Averaging before the resize to the frame's size is the same as after (both linear).

    The motion gate compares each frame with the *average picture* behind the averaged probabilities (the inputs,
    averaged with the same per-pixel weights), not with the previous frame: slow motion, less than a network
    pixel a frame, adds up until the gate opens instead of hiding under the noise threshold frame after frame.
    The change is dilated by one network pixel (3×3 maximum), so both sides of a moving edge open.
    """

    def __init__(self, smooth: float = DEFAULT_SMOOTH, motion_gate: bool = True):
        self.smooth, self.motion_gate = float(smooth), motion_gate
        self.state: torch.Tensor | None = None
        self.picture: torch.Tensor | None = None  # float32 3×S×S: the inputs averaged like the state

    def weight(self, frame: torch.Tensor) -> torch.Tensor | float:
        """The newest frame's weight: ``smooth``, raised towards 1 where ``frame`` (float32 3×S×S, 0..255) differs
        from the average picture."""
        if not self.motion_gate or self.picture is None:
            return self.smooth
        change = (frame - self.picture).abs().amax(dim=0, keepdim=True)
        change = F.max_pool2d(change[None], 3, stride=1, padding=1)[0]
        moved = ((change - MOTION_LOW) / (MOTION_HIGH - MOTION_LOW)).clamp(0.0, 1.0)
        return self.smooth + (1.0 - self.smooth) * moved

    def __call__(self, inputs: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        if self.smooth >= 1.0:
            return probabilities
        out = torch.empty_like(probabilities)
        for i, (frame, p) in enumerate(zip(inputs.float(), probabilities)):
            if self.state is None or self.state.shape != p.shape or self.picture.shape != frame.shape:
                self.state, self.picture = p.clone(), frame.clone()
            else:
                w = self.weight(frame)
                self.state = w * p + (1.0 - w) * self.state
                self.picture = w * frame + (1.0 - w) * self.picture
            out[i] = self.state
        return out


class SmoothedPredictor:
    """A :class:`RunPredictor` whose ``probabilities`` pass through a :class:`TemporalSmoother`; everything else
    (``config``, ``threshold``...) is the predictor's. Feed it a clip's frames in order."""

    def __init__(self, predictor: RunPredictor, smoother: TemporalSmoother):
        self._predictor, self.smoother = predictor, smoother

    def __getattr__(self, name: str):
        return getattr(self._predictor, name)

    def probabilities(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        return self.smoother(images, self._predictor.probabilities(images, batch_size))


# -- flicker -----------------------------------------------------------------------------------------------------
def mask_flicker(
    frames: Sequence[np.ndarray], masks: Sequence[np.ndarray], still: int = STILL_THRESHOLD, margin: int = 0
) -> float:
    """How much a clip's masks flicker where the picture stands still.

    For each pair of consecutive frames, the *still* pixels are those whose input colour changed by less than
    ``still`` (of 255, in every channel); flicker is the fraction of still pixels whose mask label changed,
    averaged over the pairs. 0 = masks steady wherever the picture is; motion itself is not counted.

    Args:
        frames: ``uint8`` H×W×3 input frames, in order.
        masks: ``uint8`` H×W masks of the same frames.
        margin: also leave out pixels within ``margin`` pixels of a changed one (a square window): a moving
            object's mask edge is blurred over a few pixels that stand still themselves, and moves with it.
    """
    from scipy import ndimage

    changes = []
    for (a, b), (m, n) in zip(zip(frames, frames[1:]), zip(masks, masks[1:])):
        calm = (np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)) < still
        if margin > 0:
            calm = ndimage.minimum_filter(calm.view(np.uint8), size=2 * margin + 1, mode="nearest").astype(bool)
        if calm.any():
            changes.append(float((m != n)[calm].mean()))
    return float(np.mean(changes)) if changes else 0.0


# -- outputs -----------------------------------------------------------------------------------------------------
def mask_video_name(stem: str) -> str:
    return f"{stem}{PREDICTED_MASK_SUFFIX}.mp4"


def picture_video_names(stem: str, cutout: bool = False, background: bool = False) -> tuple[str, ...]:
    """The picture videos of a clip: the overlay, or the cutout and/or the new-background video."""
    if not (cutout or background):
        return (f"{stem}{OVERLAY_SUFFIX}.mp4",)
    return ((f"{stem}{CUTOUT_SUFFIX}.mov",) if cutout else ()) + (
        (f"{stem}{BACKGROUND_SUFFIX}.mp4",) if background else ()
    )


def video_targets(
    files: list[Path], inputs: list[Path], out: Path, overwrite: bool, options: VideoOptions
) -> list[tuple[Path, ...]]:
    """``(mask video, *picture videos)`` per clip; refuses an output folder that is an input folder, clips of
    the same name and existing outputs (unless ``overwrite``), before anything is written."""
    if out.exists() and not out.is_dir():
        raise PixelwiseError(f"--out {out} is a file: pass a folder for the mask and overlay videos")
    input_dirs = {Path(i).resolve() for i in inputs if Path(i).is_dir()} | {f.resolve().parent for f in files}
    if out.resolve() in input_dirs:
        raise PixelwiseError(f"--out {out} is an input folder: choose a separate folder so no input can be overwritten")
    seen: dict[str, Path] = {}
    targets = []
    for f in files:
        if f.stem in seen:
            raise PixelwiseError(
                f"{f} and {seen[f.stem]} have the same name '{f.stem}': their videos would collide; "
                f"predict them into separate --out folders"
            )
        seen[f.stem] = f
        names = (mask_video_name(f.stem), *picture_video_names(f.stem, options.cutout, options.background is not None))
        paths = tuple(out / name for name in names)
        for path in paths:
            if path.exists() and not overwrite:
                raise PixelwiseError(f"{path} already exists: choose another --out or pass --overwrite")
        targets.append(paths)
    return targets


def predict_videos(
    predictor: RunPredictor,
    files: list[Path],
    targets: list[tuple[Path, ...]],
    *,
    post: PostProcess = PostProcess(),
    options: VideoOptions = VideoOptions(),
    skip_existing: bool = False,
) -> list[Path]:
    """Predict each clip into its :func:`video_targets`, in order; returns the mask videos written.

    Raises:
        PixelwiseError: a clip that cannot be read or ends early (the clips before it are complete; an early end
            still writes that clip's decoded frames).
    """
    options = options.checked()
    if options.cutout or options.background is not None:
        require_binary(predictor.config.class_map().num_classes)
    backdrop = parse_background(options.background) if options.background is not None else None
    written = []
    for path, paths in zip(files, targets):
        if skip_existing and all(p.exists() for p in paths):
            log.info(f"{path.name}: its videos exist already: skipped")
            continue
        predict_video(predictor, path, paths, post=post, options=options, backdrop=backdrop)
        written.append(paths[0])
    return written


@dataclass
class _Pending:
    image: np.ndarray  # uint8 H×W×3
    pts: int | None
    predict: bool


def predict_video(
    predictor: RunPredictor,
    path: Path,
    targets: Sequence[Path],
    *,
    post: PostProcess = PostProcess(),
    options: VideoOptions = VideoOptions(),
    backdrop: Background | None = None,
) -> int:
    """One clip → ``targets`` (``mask video, *picture videos``, as :func:`video_targets`); returns its frame count.

    Raises:
        PixelwiseError: not a video; a frame that cannot be decoded; fewer frames than declared (the outputs then
            hold the frames decoded, and the message says how many).
    """
    options = options.checked()
    class_map = predictor.config.class_map()
    binary = is_binary(class_map.num_classes)
    keep_probabilities = options.cutout or backdrop is not None
    model = SmoothedPredictor(predictor, TemporalSmoother(options.smooth, options.motion_gate))
    source = _open_video(path)
    with source:
        stream = source.streams.video[0]
        audio = list(source.streams.audio)
        expected = _expected_frames(stream, source)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        state: dict[str, Any] = {"frames": 0, "predicted": 0, "error": None, "audio": []}

        def encode_all(tmp_paths: list[Path]) -> None:
            writers: list[_VideoWriter] = []
            pending: list[_Pending] = []
            last: list[Segmentation] = []

            def flush() -> None:
                if not pending:
                    return
                wanted = [p for p in pending if p.predict]
                results = iter(segment_images(model, [p.image for p in wanted], post, keep_probabilities))
                for item in pending:
                    if item.predict:
                        last[:] = [next(results)]
                        seg = last[0]
                    else:  # the last mask, drawn on this frame's own picture
                        seg = dataclasses.replace(last[0], image=item.image)
                    writers[0].write(_mask_frame(seg, binary, class_map.colors), item.pts)
                    for writer, picture in zip(writers[1:], _pictures(seg, options.cutout, backdrop)):
                        writer.write(picture, item.pts)
                state["predicted"] += len(wanted)
                pending.clear()

            def pass_audio() -> None:
                if writers:
                    for packet in state["audio"]:
                        for writer in writers[1:]:
                            writer.mux_audio(packet)
                    state["audio"].clear()

            try:
                frames = _decoded(source, stream, audio, state)
                for image, pts in reporting.progress(frames, path.name, total=expected or None):
                    if not writers:
                        height, width = image.shape[:2]
                        time_base = stream.time_base if pts is not None else None
                        _open_writers(writers, tmp_paths, width, height, rate, time_base, audio, options.cutout)
                    elif image.shape[:2] != (writers[0].height, writers[0].width):
                        image = _resize_rgb(image, writers[0].height, writers[0].width)
                    pass_audio()
                    index = state["frames"] - 1
                    predict = index % options.every == 0
                    if predict and sum(p.predict for p in pending) == options.batch_size:
                        flush()
                    pending.append(_Pending(image, pts, predict))
                if not writers:  # nothing decoded: leave no empty video behind
                    ended = "the file ends before its first frame (truncated?)" if expected else "it holds no frames"
                    reason = state["error"] or ended
                    raise PixelwiseError(f"cannot decode frame 0 of {path}: {reason}; pass a video FFmpeg can decode")
                flush()
                pass_audio()
                for writer in writers:
                    writer.close()
            except BaseException:
                for writer in writers:
                    writer.abort()
                raise

        _write_atomically(list(targets), encode_all)

    count, error = state["frames"], state["error"]
    names = ", ".join(p.name for p in targets)
    if error is not None:
        raise PixelwiseError(
            f"cannot decode frame {count} of {path}: {error}; wrote the {count} frames before it to {names}"
        )
    if expected and count < expected - 1:
        raise PixelwiseError(
            f"{path} ends after {count} of the {expected} frames it declares (truncated?): wrote those {count} frames "
            f"to {names}; re-copy or re-export the clip"
        )
    log.info(f"{path.name}: {count} frames ({state['predicted']} predicted) → {names}")
    return count


def _write_atomically(paths: list[Path], write: Callable[[list[Path]], None]) -> None:
    """``write(temporary paths)``, then every path renamed into place (:func:`~pixelwise.fileio.atomic_write`
    nested, so a failure removes every temporary and leaves no output)."""

    def step(done: list[Path]) -> None:
        if len(done) == len(paths):
            write(done)
            return
        atomic_write(paths[len(done)], lambda tmp: step(done + [tmp]))

    step([])


def _open_video(path: Path):
    import av

    try:
        source = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise PixelwiseError(
            f"cannot read {path} as a video: {_reason(error)}; pass a video FFmpeg can decode "
            f"({' '.join(VIDEO_SUFFIXES)})"
        ) from None
    if not source.streams.video:
        source.close()
        raise PixelwiseError(f"{path} has no video stream (truncated or not a video?): pass a video file")
    from pixelwise.runtime import thread_count

    stream = source.streams.video[0]
    stream.thread_type = "AUTO"  # frame and slice threads, as many as the math may use
    stream.codec_context.thread_count = thread_count()
    return source


def _reason(error: BaseException) -> str:
    """An FFmpeg error's own words (``Invalid data found when processing input``), without errno and path."""
    return getattr(error, "strerror", None) or first_line(error)


def _expected_frames(stream, source) -> int:
    """The frame count the clip declares: the stream's count, else its duration (stream, tag, or container when
    the clip has no other stream) times its frame rate; 0 when it declares none."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return 0
    seconds = None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif "DURATION" in (stream.metadata or {}):
        try:
            h, m, s = stream.metadata["DURATION"].split(":")
            seconds = int(h) * 3600 + int(m) * 60 + float(s)
        except ValueError:
            seconds = None
    elif source.duration and len(source.streams) == 1:
        seconds = source.duration / 1_000_000
    return int(round(seconds * float(rate))) if seconds else 0


def _decoded(source, stream, audio: list, state: dict) -> Iterator[tuple[np.ndarray, int | None]]:
    """``(rgb, pts)`` per decoded frame, in order; the audio packets met on the way are appended to
    ``state["audio"]``. A decoding error ends the iteration and is kept in ``state["error"]``; ``state["frames"]``
    counts the frames."""
    import av

    packets = source.demux(stream, *audio)
    while True:
        try:
            packet = next(packets)
            if packet.stream.type == "audio":
                if packet.dts is not None and packet.size:
                    state["audio"].append(packet)
                continue
            decoded = packet.decode()
        except StopIteration:
            return
        except (av.error.FFmpegError, OSError) as error:
            state["error"] = _reason(error)
            return
        for frame in decoded:
            state["frames"] += 1
            yield frame.to_ndarray(format="rgb24"), frame.pts


def _copy_packet(packet):
    """A packet of its own (bytes and timing), independent of the demuxer's buffer."""
    import av

    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
    copy.duration = packet.duration
    copy.is_keyframe = packet.is_keyframe
    return copy


def _resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _mask_frame(seg: Segmentation, binary: bool, colors) -> np.ndarray:
    """The mask video's frame: ``uint8`` H×W 0/255 (binary) or H×W×3 class colours."""
    if binary:
        return png_values(seg.mask, seg.num_classes)
    return np.asarray(colors, dtype=np.uint8)[seg.mask]


def _pictures(seg: Segmentation, cutout: bool, backdrop: Background | None) -> list[np.ndarray]:
    """The picture frames, in the order of :func:`picture_video_names`."""
    if not cutout and backdrop is None:
        return [seg.overlay()]
    alpha = seg.alpha()
    return ([cutout_rgba(seg.image, alpha)] if cutout else []) + (
        [replace_background(seg.image, alpha, backdrop)] if backdrop is not None else []
    )


def _open_writers(
    writers: list["_VideoWriter"], tmp_paths: list[Path], width: int, height: int, rate, time_base, audio, cutout: bool
) -> None:
    """Open the mask writer and the picture writers into ``writers`` (so a failure can close those opened)."""
    picture = "picture" if width % 2 == 0 and height % 2 == 0 else "picture444"  # 4:2:0 needs even sides
    kinds = ["mask"] + (["cutout"] if cutout else []) + [picture] * (len(tmp_paths) - 1 - int(cutout))
    for tmp, kind in zip(tmp_paths, kinds):
        writers.append(_VideoWriter(tmp, kind, width, height, rate, time_base, [] if kind == "mask" else audio))


#: kind → (container format, codec, the stream's pixel format, encoder options); frames are converted to it.
_CODECS = {
    "mask": ("mp4", "libx264", "yuv444p", {"qp": "0", "preset": X264_PRESET}),
    "picture": ("mp4", "libx264", "yuv420p", {"crf": str(PICTURE_CRF), "preset": X264_PRESET}),
    "picture444": ("mp4", "libx264", "yuv444p", {"crf": str(PICTURE_CRF), "preset": X264_PRESET}),
    "cutout": ("mov", "qtrle", "argb", {}),
}


class _VideoWriter:
    """One output video: a video stream (codec by ``kind``) and copies of the clip's audio streams."""

    def __init__(self, path: Path, kind: str, width: int, height: int, rate, time_base, audio: list):
        import av

        from pixelwise.runtime import thread_count

        container_format, codec, pix_fmt, codec_options = _CODECS[kind]
        self.width, self.height, self.rate = width, height, rate
        self.container = av.open(str(path), "w", format=container_format)
        try:
            self.stream = self.container.add_stream(codec, rate=rate)
        except (av.error.FFmpegError, ValueError) as error:
            self.container.close()
            raise PixelwiseError(
                f"this FFmpeg has no {codec} encoder ({first_line(error)}): install PyAV from PyPI (its wheels have it)"
            ) from None
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pix_fmt
        self.stream.options = codec_options
        self.stream.codec_context.thread_count = thread_count()
        self.time_base = time_base if time_base is not None else Fraction(1, 1) / Fraction(rate)
        self.stream.codec_context.time_base = self.time_base
        self.last_pts: int | None = None
        self.audio = {}
        for source in audio:
            try:
                self.audio[source.index] = self.container.add_stream_from_template(source)
            except (av.error.FFmpegError, ValueError) as error:
                log.warning(f"{path.name}: audio stream {source.index} not copied ({first_line(error)})")

    def write(self, array: np.ndarray, pts: int | None) -> None:
        import av

        layout = {2: "gray", 3: "rgb24", 4: "rgba"}[array.ndim if array.ndim == 2 else array.shape[2]]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=layout)
        if pts is None:
            pts = 0 if self.last_pts is None else self.last_pts + 1
        elif self.last_pts is not None and pts <= self.last_pts:  # encoders need strictly increasing stamps
            pts = self.last_pts + 1
        frame.pts, frame.time_base = pts, self.time_base
        self.last_pts = pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def mux_audio(self, packet) -> None:
        target = self.audio.get(packet.stream_index)
        if target is None:
            return
        import av

        copy = _copy_packet(packet)
        copy.stream = target
        try:
            self.container.mux(copy)
        except av.error.FFmpegError as error:  # a malformed packet: drop it, keep the picture
            log.debug(f"audio packet dropped: {first_line(error)}")

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def abort(self) -> None:
        """Close without finishing (the file is a temporary that is about to be removed)."""
        try:
            self.container.close()
        except Exception:  # the error being raised matters, not this one
            pass


# -- reading masks back ------------------------------------------------------------------------------------------
def read_mask_video(path: str | Path, colors: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
    """A mask video's frames as ``uint8`` N×H×W class indices.

    Args:
        colors: the run's class colours for a multi-class mask video (each pixel → the nearest colour's index);
            None for a binary run's (grey > 127 → 1).
    """
    import av

    with av.open(str(path)) as source:
        frames = []
        for frame in source.decode(video=0):
            if colors is None:
                frames.append((frame.to_ndarray(format="gray") > 127).astype(np.uint8))
                continue
            rgb = frame.to_ndarray(format="rgb24").astype(np.int32)
            palette = np.asarray(colors, dtype=np.int32)
            distance = ((rgb[:, :, None, :] - palette[None, None]) ** 2).sum(axis=-1)
            frames.append(distance.argmin(axis=-1).astype(np.uint8))
    return np.stack(frames) if frames else np.zeros((0, 0, 0), np.uint8)
