"""Fault injection: every command × every class of bad input a user can type or drop in.

Each case runs the real console entry point (``pixelwise.cli.main``, in this process) and asserts: a non-zero
exit, one error line that names the file or option (no traceback), inputs byte-identical afterwards, and no
partial or temporary file left anywhere under the test's folder.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.cli import main
from pixelwise.config import Recipe, RunConfig
from pixelwise.models import build_model
from pixelwise.runs import RunFolder, save_weights

from tiny_run import trained_config


def damaged_record(**values) -> dict:
    """The config.json of a trained segnet run with ``values`` written over its record's."""
    config = trained_config(model="segnet", num_classes=2).to_dict()
    return {**config, "record": {**config["record"], **values}}


def run_cli(args: list, capsys) -> tuple[int, str]:
    """``pixelwise ARGS`` through ``main()``: (exit code, stderr + stdout)."""
    argv = sys.argv
    sys.argv = ["pixelwise", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def write_pair(folder: Path, stem: str, mask: np.ndarray) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 255, (*mask.shape, 3), dtype=np.uint8)).save(folder / "images" / f"{stem}.png")
    Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Inputs every case may read (never write): a good data set, bad data sets, a run, damaged runs."""
    root = tmp_path_factory.mktemp("faults")
    square = np.zeros((32, 32), np.uint8)
    square[8:24, 8:24] = 255
    for i in range(12):
        write_pair(root / "good", f"p{i:02d}", square)
        write_pair(root / "empty_masks", f"p{i:02d}", np.zeros((32, 32), np.uint8))
        stray = square // 255  # 0/1 masks...
        if i == 5:
            stray[0, 0] = 2  # ...and one stray value 2, which would silently make the run 3-class
        write_pair(root / "stray_value", f"p{i:02d}", stray)
    (root / "empty_folder").mkdir()
    (root / "overlays").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "overlays" / "p00_overlay.png")
    (root / "a_file.txt").write_text("not a folder")
    (root / "good" / "images" / "zz_dangling.png").symlink_to(root / "nowhere.png")

    run = RunFolder(root / "run")
    torch.manual_seed(0)
    save_weights(build_model("segnet"), run.weights_path)
    run.write_config(
        trained_config(model="segnet", size=32, num_classes=2, threshold=0.5, fast=False, data=str(root / "good"))
    )
    damaged = {
        "run_bad_json": "{ not json",
        "run_list_json": "[]",
        "run_string_size": json.dumps(damaged_record(size="big")),
        "run_huge_size": json.dumps(damaged_record(size=100000)),
        "run_string_threshold": json.dumps(damaged_record(threshold="x")),
    }
    for name, text in damaged.items():
        folder = RunFolder(root / name)
        save_weights(build_model("segnet"), folder.weights_path)
        folder.config_path.write_text(text)
    flipped = RunFolder(root / "run_flipped_bits")
    save_weights(build_model("segnet"), flipped.weights_path)
    config = trained_config(
        model="segnet",
        size=32,
        num_classes=2,
        threshold=0.5,
        fast=False,
        record={"weights_sha1": hashlib.sha1(flipped.weights_path.read_bytes()).hexdigest()},
    )
    flipped.write_config(config)
    data = bytearray(flipped.weights_path.read_bytes())
    data[-5] ^= 0x10  # one bit in the last tensor's bytes: loads fine, wrong weights
    flipped.weights_path.write_bytes(bytes(data))
    truncated = RunFolder(root / "run_truncated")
    save_weights(build_model("segnet"), truncated.weights_path)
    truncated.write_config(trained_config(model="segnet", size=32, num_classes=2, fast=False))
    truncated.weights_path.write_bytes(truncated.weights_path.read_bytes()[:200])
    return root


TRAIN = ["train", "--size", 32, "--batch-size", 4, "--epochs", 1, "--model", "segnet"]

# (case name, arguments with {root} and {out} placeholders, text the one error line must contain)
CASES = [
    ("check: missing folder", ["data", "check", "{root}/nope"], "nope"),
    ("check: a file", ["data", "check", "{root}/a_file.txt"], "a_file.txt"),
    ("check: empty folder", ["data", "check", "{root}/empty_folder"], "empty"),
    ("check: unknown layout", ["data", "check", "{root}/good", "--layout", "weird"], "layout"),
    ("check: all masks empty", ["data", "check", "{root}/empty_masks", "--no-cache"], None),
    ("check: stray mask value", ["data", "check", "{root}/stray_value", "--no-cache"], None),
    ("train: missing data", [*TRAIN, "--data", "{root}/nope", "--out", "{out}"], "nope"),
    ("train: optimizer", [*TRAIN, "--data", "{root}/good", "--optimizer", "nope", "--out", "{out}"], "--optimizer"),
    ("train: batch 0", [*TRAIN, "--data", "{root}/good", "--batch-size", 0, "--out", "{out}"], "--batch-size"),
    ("train: negative lr", [*TRAIN, "--data", "{root}/good", "--lr", -1, "--out", "{out}"], "--lr"),
    ("train: size 8", [*TRAIN, "--data", "{root}/good", "--size", 8, "--out", "{out}"], "--size"),
    ("train: size 100000", [*TRAIN, "--data", "{root}/good", "--size", 100000, "--out", "{out}"], "--size"),
    ("train: budget 0", [*TRAIN, "--data", "{root}/good", "--budget", "0", "--out", "{out}"], "--budget"),
    ("train: budget text", [*TRAIN, "--data", "{root}/good", "--budget", "soon", "--out", "{out}"], "duration"),
    ("train: epochs 0", [*TRAIN, "--data", "{root}/good", "--epochs", 0, "--out", "{out}"], "--epochs"),
    ("train: one fold", [*TRAIN, "--data", "{root}/good", "--folds", 1, "--out", "{out}"], "--folds"),
    ("train: fold outside", [*TRAIN, "--data", "{root}/good", "--folds", 2, "--fold", 2, "--out", "{out}"], "--fold"),
    ("train: val 0", [*TRAIN, "--data", "{root}/good", "--val-fraction", 0, "--out", "{out}"], "--val-fraction"),
    ("train: classes 1", [*TRAIN, "--data", "{root}/good", "--num-classes", 1, "--out", "{out}"], "--num-classes"),
    (
        "train: all masks empty",
        [*TRAIN, "--data", "{root}/empty_masks", "--out", "{out}", "--cache-dir", "{out}_cache"],
        "empty",
    ),
    (
        "train: stray mask value",
        [*TRAIN, "--data", "{root}/stray_value", "--out", "{out}", "--cache-dir", "{out}_cache"],
        "p05.png",
    ),
    (
        "train: out under a file",
        [*TRAIN, "--data", "{root}/good", "--out", "{root}/a_file.txt/run", "--cache-dir", "{out}_cache"],
        "a_file.txt",
    ),
    ("train: resume nothing", ["train", "--resume", "{root}/nope"], "nope"),
    ("train: resume bad json", ["train", "--resume", "{root}/run_bad_json"], "config.json"),
    ("train: resume list json", ["train", "--resume", "{root}/run_list_json"], "config.json"),
    ("train: resume string size", ["train", "--resume", "{root}/run_string_size"], "'size'"),
    ("evaluate: not a run", ["evaluate", "{root}/good"], "not a pixelwise run"),
    ("evaluate: bad json", ["evaluate", "{root}/run_bad_json"], "config.json"),
    ("evaluate: huge size", ["evaluate", "{root}/run_huge_size"], "size"),
    ("evaluate: string threshold", ["evaluate", "{root}/run_string_threshold"], "'threshold'"),
    (
        "evaluate: flipped bits",
        ["evaluate", "{root}/run_flipped_bits", "--data", "{root}/good", "--cache-dir", "{out}_cache"],
        "model.safetensors",
    ),
    (
        "evaluate: truncated weights",
        ["evaluate", "{root}/run_truncated", "--data", "{root}/good", "--cache-dir", "{out}_cache"],
        "model.safetensors",
    ),
    (
        "evaluate: unknown split",
        ["evaluate", "{root}/run", "--split", "holdout", "--cache-dir", "{out}_cache"],
        "holdout",
    ),
    ("evaluate: unknown engine", ["evaluate", "{root}/run", "--engine", "tpu"], "--engine"),
    ("evaluate: unknown precision", ["evaluate", "{root}/run", "--precision", "fp8"], "--precision"),
    ("predict: missing input", ["predict", "{root}/run", "{root}/nope.png", "--out", "{out}"], "nope.png"),
    ("predict: no images", ["predict", "{root}/run", "{root}/empty_folder", "--out", "{out}"], "empty_folder"),
    (
        "predict: out is an input",
        ["predict", "{root}/run", "{root}/good/images", "--out", "{root}/good/images"],
        "input folder",
    ),
    (
        "predict: out under a file",
        ["predict", "{root}/run", "{root}/good/images", "--out", "{root}/a_file.txt/o"],
        "a_file.txt",
    ),
    (
        "predict: no export",
        ["predict", "{root}/run", "{root}/good/images", "--out", "{out}", "--engine", "onnx"],
        "pixelwise export",
    ),
    (
        "predict: flipped bits",
        ["predict", "{root}/run_flipped_bits", "{root}/good/images", "--out", "{out}"],
        "model.safetensors",
    ),
    ("score: missing truth", ["score", "{root}/nope", "{root}/good/masks"], "nope"),
    ("score: overlays only", ["score", "{root}/good/masks", "{root}/overlays"], "overlays"),
    ("score: empty truth", ["score", "{root}/empty_folder", "{root}/good/masks"], "empty_folder"),
    ("export: not a run", ["export", "{root}/good"], "not a pixelwise run"),
    ("export: format", ["export", "{root}/run", "--format", "tflite", "--out", "{out}.x"], "format"),
    ("export: out is a folder", ["export", "{root}/run", "--out", "{root}/empty_folder"], "empty_folder"),
]


@pytest.mark.parametrize("name, args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_cleanly(world, tmp_path, capsys, monkeypatch, name, args, expected):
    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "default_cache"))
    before = tree_digest(world)
    out = tmp_path / "out"
    code, output = run_cli([str(a).format(root=world, out=out) for a in args], capsys)
    assert code != 0, f"{name}: exit 0\n{output}"
    assert "Traceback" not in output, output
    error_lines = [line for line in output.splitlines() if line.startswith("error")]
    if expected is not None:  # a PixelwiseError: one line naming the file or option
        assert len(error_lines) == 1, output
        assert expected in output, output
    assert tree_digest(world) == before, "an input changed"
    leftovers = [p for root in (world, tmp_path) for p in root.rglob("*.tmp*")]
    assert not leftovers, leftovers
    if name.startswith("train:") and "resume" not in name:
        assert not out.exists(), "a refused run left a folder behind"


def test_checker_names_the_stray_value_and_the_empty_set(world, capsys):
    code, output = run_cli(["data", "check", world / "stray_value", "--no-cache"], capsys)
    assert code == 1 and "p05.png" in output and "class value 2" in output
    code, output = run_cli(["data", "check", world / "stray_value", "--no-cache", "--num-classes", 3], capsys)
    assert code == 0, "declaring the classes overrides the stray-value rule"
    code, output = run_cli(["data", "check", world / "empty_masks", "--no-cache"], capsys)
    assert code == 1 and "all 12 masks are empty" in output.replace("\n", " ")
    code, output = run_cli(["data", "check", world / "good", "--no-cache"], capsys)
    assert code == 0 and "zz_dangling.png" in output and "broken link" in output


def test_resume_of_a_run_killed_before_its_first_epoch_starts_again_in_place(world, tmp_path, capsys, monkeypatch):
    """`kill -9` in the first epoch leaves config.json + split.json and no train state: --resume trains."""
    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    run = RunFolder(tmp_path / "run")
    config = RunConfig(
        Recipe(
            data=str(world / "good"),
            size=32,
            batch_size=4,
            epochs=1,
            model="segnet",
            cache_dir=str(tmp_path / "cache"),
            skip_bad=True,
        )
    )
    run.write_config(config)
    (run.path / ".model.safetensors.abcd1234.tmp.safetensors").write_bytes(b"\0" * 100)  # a killed write
    code, output = run_cli(["train", "--resume", run.path], capsys)
    assert code == 0, output
    assert "starting it again in place" in output.replace("\n", " ")
    assert run.train_finished() and run.weights_path.exists()
    assert not list(run.path.glob(".*.tmp*")), "the partial file of the killed write is gone"


def test_predict_says_what_it_skipped_and_cleans_partial_files(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(inputs / "a.png")
    (inputs / "notes.txt").write_text("x")
    (inputs / "gone.png").symlink_to(tmp_path / "nowhere.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a_mask.png.k3j9x0qz.tmp.png").write_bytes(b"")  # a kill -9 during an earlier write
    code, output = run_cli(["predict", world / "run", inputs, "--out", out], capsys)
    assert code == 0, output
    text = output.replace("\n", " ")
    assert "skipped 3 item(s)" in text and "sub/" in text and "notes.txt" in text and "gone.png" in text
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_overlay.png"]
