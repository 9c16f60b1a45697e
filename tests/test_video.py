"""``pixelwise predict`` on video files (:mod:`pixelwise.predict.video`): tiny synthetic clips written with PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pixelwise.errors import PixelwiseError
from pixelwise.predict.engine import make_predictor
from pixelwise.predict.predict import predict_files
from pixelwise.predict.segment import segment_images
from pixelwise.predict.video import VideoOptions, mask_flicker, read_mask_video

from cli_runner import run_cli
from tiny_run import make_tiny_run, synth_image

av = pytest.importorskip("av")

HEIGHT, WIDTH, FRAMES, RATE = 48, 64, 12, 12


def write_clip(path: Path, frames: list[np.ndarray], codec: str = "libx264", audio: bool = False) -> Path:
    """``frames`` (uint8 H×W×3) as a clip at :data:`RATE` fps; ``audio``: with a silent AAC track."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=RATE)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if codec == "libx264" and width % 2 == 0 and height % 2 == 0 else "yuv444p"
        if audio:
            sound = container.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio:
            for start in range(0, 16000, 1024):
                silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                silence.sample_rate, silence.pts = 16000, start
                for packet in sound.encode(silence):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def moving_frames(count: int = FRAMES) -> list[np.ndarray]:
    """A dark disc moving right over a synthetic skin-like background."""
    background = synth_image(0, 96)[:HEIGHT, :WIDTH]
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    frames = []
    for i in range(count):
        frame = background.copy()
        frame[(rows - 24) ** 2 + (cols - 12 - 3 * i) ** 2 < 100] = (60, 30, 20)
        frames.append(frame)
    return frames


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("video") / "run")


@pytest.fixture(scope="module")
def predictor(run):
    return make_predictor(run, "torch", "none", "fp32")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, predictor):
    """A clip with a silent audio track, predicted without smoothing: (clip, out folder)."""
    folder = tmp_path_factory.mktemp("clip")
    clip = write_clip(folder / "clip.mp4", moving_frames(), audio=True)
    predict_files(predictor, [clip], folder / "out", video=VideoOptions(smooth=1.0))
    return clip, folder / "out"


def test_mask_video_has_the_clips_frames_rate_and_size_and_the_still_image_masks(predicted, predictor):
    clip, out = predicted
    assert sorted(p.name for p in out.iterdir()) == ["clip_mask.mp4", "clip_overlay.mp4"]
    for name in ("clip_mask.mp4", "clip_overlay.mp4"):
        with av.open(str(out / name)) as video:
            stream = video.streams.video[0]
            assert (stream.frames, stream.average_rate, stream.width, stream.height) == (FRAMES, RATE, WIDTH, HEIGHT)
    stills = [segment_images(predictor, [frame])[0].mask for frame in decoded(clip)]
    masks = read_mask_video(out / "clip_mask.mp4")
    assert masks.shape == (FRAMES, HEIGHT, WIDTH)
    assert all(np.array_equal(mask, still) for mask, still in zip(masks, stills))
    assert 0 < masks.mean() < 1  # neither empty nor full: the comparison means something


def test_audio_is_copied_into_the_picture_video(predicted):
    _, out = predicted
    with av.open(str(out / "clip_overlay.mp4")) as video:
        assert [(s.type, s.codec_context.name) for s in video.streams.audio] == [("audio", "aac")]
        assert sum(1 for packet in video.demux(video.streams.audio[0]) if packet.size) > 10


def test_multi_class_mask_video_shows_the_class_colours(tmp_path):
    predictor = make_predictor(make_tiny_run(tmp_path / "three", steps=1, num_classes=3), "torch", "none", "fp32")
    clip = write_clip(tmp_path / "clip.mov", moving_frames(6))
    predict_files(predictor, [clip], tmp_path / "out", video=VideoOptions(smooth=1.0))
    colours = predictor.config.class_map().colors
    with av.open(str(tmp_path / "out" / "clip_mask.mp4")) as video:
        first = next(video.decode(video=0)).to_ndarray(format="rgb24")
    assert {tuple(int(v) for v in c) for c in first.reshape(-1, 3)} > {tuple(colours[1])}  # colours, not indices
    stills = [segment_images(predictor, [frame])[0].mask for frame in decoded(clip)]
    masks = read_mask_video(tmp_path / "out" / "clip_mask.mp4", colours)
    assert all(np.array_equal(mask, still) for mask, still in zip(masks, stills))


def test_smoothing_reduces_flicker_on_a_noisy_clip(tmp_path, predictor):
    rng = np.random.default_rng(0)
    still = synth_image(0, 96)[:HEIGHT, :WIDTH].astype(np.float32)
    noisy = [np.clip(still + rng.normal(0, 3, still.shape), 0, 255).astype(np.uint8) for _ in range(FRAMES)]
    clip = write_clip(tmp_path / "noisy.mkv", noisy, codec="ffv1")  # lossless: the noise stays
    frames = decoded(clip)
    flicker = {}
    for smooth in (1.0, 0.5):
        out = tmp_path / f"smooth-{smooth}"
        predict_files(predictor, [clip], out, video=VideoOptions(smooth=smooth))
        flicker[smooth] = mask_flicker(frames, list(read_mask_video(out / "noisy_mask.mp4")))
    assert flicker[1.0] > 0  # the tiny run hesitates on the noise
    assert flicker[0.5] < 0.7 * flicker[1.0]


def test_every_3_decodes_every_frame_and_predicts_a_third(tmp_path, run):
    predictor = make_predictor(run, "torch", "none", "fp32")
    seen = []
    network = predictor.probabilities
    predictor.probabilities = lambda images, *args: seen.append(len(images)) or network(images, *args)
    clip = write_clip(tmp_path / "clip.mp4", moving_frames())
    predict_files(predictor, [clip], tmp_path / "out", video=VideoOptions(every=3, smooth=1.0))
    assert sum(seen) == FRAMES // 3
    masks = read_mask_video(tmp_path / "out" / "clip_mask.mp4")
    assert len(masks) == FRAMES
    assert all(np.array_equal(masks[i], masks[i - i % 3]) for i in range(FRAMES))


def test_a_truncated_clip_gets_one_line_and_keeps_the_frames_that_decoded(tmp_path, predictor):
    whole = write_clip(tmp_path / "whole.mkv", moving_frames(), codec="ffv1").read_bytes()
    clip = tmp_path / "cut.mkv"
    clip.write_bytes(whole[: int(len(whole) * 0.6)])
    with pytest.raises(PixelwiseError) as caught:
        predict_files(predictor, [clip], tmp_path / "out")
    message = str(caught.value)
    assert "\n" not in message and "cut.mkv" in message and f"of the {FRAMES} frames" in message
    count = int(message.split(" ends after ")[1].split()[0])
    assert 0 < count < FRAMES
    assert len(read_mask_video(tmp_path / "out" / "cut_mask.mp4")) == count
    assert len(decoded(tmp_path / "out" / "cut_overlay.mp4")) == count
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cut_mask.mp4", "cut_overlay.mp4"]


def test_cli_a_folder_with_a_non_video_stops_at_it_in_one_line_after_the_good_clip(tmp_path, run, capsys, monkeypatch):
    folder = tmp_path / "clips"
    folder.mkdir()
    write_clip(folder / "a.mp4", moving_frames(4))
    (folder / "b.mp4").write_text("this is not a video\n" * 20)
    code, output = run_cli(["predict", run, folder, "--out", tmp_path / "out", "--no-tta"], capsys, monkeypatch)
    assert code == 2
    lines = [line for line in output.splitlines() if line.strip() and "a.mp4" not in line]
    assert len(lines) == 1 and "b.mp4" in lines[0] and "cannot read" in lines[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_mask.mp4", "a_overlay.mp4"]
    assert len(read_mask_video(tmp_path / "out" / "a_mask.mp4")) == 4


def test_cli_cutout_and_background_videos_of_an_odd_sized_clip(tmp_path, run, capsys, monkeypatch):
    clip = write_clip(tmp_path / "odd.mov", [frame[:47, :63].copy() for frame in moving_frames(6)], audio=True)
    args = ["predict", run, clip, "--out", tmp_path / "out", "--no-tta", "--cutout", "--background", "white"]
    code, output = run_cli([*args, "--every", "2"], capsys, monkeypatch)
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "odd_background.mp4",
        "odd_cutout.mov",
        "odd_mask.mp4",
    ]
    with av.open(str(tmp_path / "out" / "odd_cutout.mov")) as video:
        assert len(video.streams.audio) == 1
        rgba = [frame.to_ndarray(format="rgba") for frame in video.decode(video=0)]
    assert len(rgba) == 6 and rgba[0].shape == (47, 63, 4)
    masks = read_mask_video(tmp_path / "out" / "odd_mask.mp4")
    for picture, mask in zip(rgba, masks):  # the alpha is the mask but for its refined border
        assert np.mean((picture[..., 3] > 127) == (mask > 0)) > 0.9
