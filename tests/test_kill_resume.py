"""``kill -9`` at several points of ``pixelwise train`` and ``predict``, then ``--resume`` / a re-run: the result
equals an uninterrupted run's, row for row and byte for byte, and no partial file is left behind.

The training process kills itself (SIGKILL, nothing gets to clean up) at a chosen point: the forked child
(``forked.run_pixelwise``) patches one function of pixelwise before calling the real CLI.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
from forked import run_pixelwise
from PIL import Image

EPOCHS = 3
#: Columns that must be equal between an interrupted-and-resumed run and an uninterrupted one (not the timings).
COMPARED = ("epoch", "train_loss", "val_loss", "val_dice", "lr")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("killdata")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(3)
    for i in range(14):
        mask = np.zeros((32, 32), np.uint8)
        r, c = rng.integers(4, 16, 2)
        mask[r : r + 12, c : c + 12] = 255
        image = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
        image[mask > 0] += 120
        Image.fromarray(image).save(root / "images" / f"k{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"k{i:02d}.png")
    return root


def pixelwise(
    args: list,
    cache: Path,
    kill_at: str | None = None,
    kill_after: bool = False,
) -> subprocess.CompletedProcess:
    return run_pixelwise(args, kill_at=kill_at, kill_after=kill_after)


def train_args(data: Path, run: Path, cache: Path) -> list:
    return [
        "train",
        "--data",
        data,
        "--out",
        run,
        "--cache-dir",
        cache,
        "--model",
        "unet",
        "--size",
        "32",
        "--batch-size",
        "4",
        "--epochs",
        EPOCHS,
        "--augment",
        "light",
        "--no-fast",
    ]


def metrics_rows(run: Path) -> list[tuple]:
    with (run / "metrics.csv").open() as handle:
        return [tuple(row[c] for c in COMPARED) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    run = root / "run"
    done = pixelwise(train_args(dataset, run, root / "cache"), root / "cache")
    assert done.returncode == 0, done.stderr
    return run


# (where the process dies, which call of it, whether that call completes first)
KILL_POINTS = {
    "first epoch, second step": ("pixelwise.train.loop.train_step", 2, False),
    "mid-epoch 2": ("pixelwise.train.loop.train_step", 5, False),
    "checkpoint write, after the tensors": ("pixelwise.train.checkpoint.atomic_write_json", 2, False),
    "right after a checkpoint": ("pixelwise.train.loop.save_train_state", 2, True),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_train_killed_then_resumed_equals_an_uninterrupted_run(point, dataset, uninterrupted, tmp_path):
    where, nth, after = KILL_POINTS[point]
    run, cache = tmp_path / "run", tmp_path / "cache"
    killed = pixelwise(train_args(dataset, run, cache), cache, kill_at=f"{where}:{nth}", kill_after=after)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    resumed = pixelwise(["train", "--resume", run], cache)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert metrics_rows(run) == metrics_rows(uninterrupted)
    assert (run / "model.safetensors").read_bytes() == (uninterrupted / "model.safetensors").read_bytes()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], "partial files left behind"


@pytest.mark.parametrize(
    "kill_at",
    [
        "pixelwise.predict.predict.atomic_write_bytes:7",  # between two files
        "os.replace:5",
    ],
)  # inside an atomic write: its temporary file stays
def test_predict_killed_midway_then_rerun_equals_one_run(kill_at, dataset, uninterrupted, tmp_path):
    images = dataset / "images"
    reference = pixelwise(["predict", uninterrupted, images, "--out", tmp_path / "one"], tmp_path / "c")
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "killed"
    killed = pixelwise(["predict", uninterrupted, images, "--out", out], tmp_path / "c", kill_at=kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    rerun = pixelwise(["predict", uninterrupted, images, "--out", out, "--skip-existing"], tmp_path / "c")
    assert rerun.returncode == 0, rerun.stderr
    one = {p.name: p.read_bytes() for p in (tmp_path / "one").iterdir()}
    again = {p.name: p.read_bytes() for p in out.iterdir()}
    assert again.keys() == one.keys()
    assert again == one
