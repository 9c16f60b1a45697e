"""Training internals: LR schedule, checkpoints and resume state, time-budget fitting, k-fold runs, multi-class runs."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pixelwise import runs
from pixelwise.config import Recipe, RunConfig
from pixelwise.errors import PixelwiseError
from pixelwise.models import build_model
from pixelwise.runs import RunFolder
from pixelwise.train import checkpoint
from pixelwise.train.checkpoint import LoopState
from pixelwise.train.schedule import WarmupCosine

PEAK = 0.01


def optimizer_for(lr: float = PEAK) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=lr)


def lrs(schedule: WarmupCosine, steps: int) -> list[float]:
    """The learning rate used by each of the next ``steps`` optimiser steps."""
    out = []
    for _ in range(steps):
        out.append(schedule.optimizer.param_groups[0]["lr"])
        schedule.step()
    return out


# --------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------


def test_warmup_rises_linearly_to_the_peak():
    schedule = WarmupCosine(optimizer_for(), warmup_steps=10, total_steps=100)
    values = lrs(schedule, 11)
    rises = np.diff(values[:10])
    assert values[0] == pytest.approx(PEAK / 10)
    assert np.allclose(rises, PEAK / 10), "equal increments: linear"
    assert values[9] == pytest.approx(PEAK) and values[10] == pytest.approx(PEAK)
    assert max(values) <= PEAK * (1 + 1e-9)


def test_cosine_decays_monotonically_to_zero_at_total_steps():
    schedule = WarmupCosine(optimizer_for(), warmup_steps=5, total_steps=50)
    values = lrs(schedule, 51)
    after_warmup = values[5:]
    assert all(b <= a + 1e-12 for a, b in zip(after_warmup, after_warmup[1:]))
    assert values[50] == pytest.approx(0.0, abs=1e-12)
    # half way through the decay, the cosine is at half the peak
    assert values[5 + 45 // 2] == pytest.approx(PEAK / 2, rel=0.05)
    schedule.set_step(80)  # past the end: stays at zero, never rises again
    assert schedule.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_constant_schedule_stays_at_the_peak_after_warmup():
    schedule = WarmupCosine(optimizer_for(), warmup_steps=4, total_steps=20, constant=True)
    values = lrs(schedule, 30)
    assert values[0] == pytest.approx(PEAK / 4)
    assert values[3:] == pytest.approx([PEAK] * 27)


def test_no_warmup_starts_at_the_peak():
    schedule = WarmupCosine(optimizer_for(), warmup_steps=0, total_steps=10)
    assert schedule.optimizer.param_groups[0]["lr"] == pytest.approx(PEAK)


@pytest.mark.parametrize("new_total", [70, 110, 200])
def test_refitting_total_steps_keeps_the_lr_continuous_and_ends_at_zero(new_total):
    """A time budget re-fits total_steps after an epoch: the LR must not jump, and must still reach 0."""
    schedule = WarmupCosine(optimizer_for(), warmup_steps=10, total_steps=100)
    lrs(schedule, 60)
    before = schedule.optimizer.param_groups[0]["lr"]
    largest_step = PEAK * math.pi / 2 / 90  # the steepest per-step change of the original cosine
    schedule.total_steps = new_total
    after = schedule.optimizer.param_groups[0]["lr"]
    assert after == pytest.approx(before, abs=1e-12), "the current step's LR must not change"
    values = lrs(schedule, new_total - 60 + 1)
    changes = np.abs(np.diff([before] + values))
    assert changes.max() <= 2 * largest_step * 90 / (new_total - 60), "smooth decay, no jump"
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:])), "still decreasing"
    assert values[-1] == pytest.approx(0.0, abs=1e-12), "reaches zero at the new total"


def test_refitting_during_warmup_changes_nothing_yet():
    fitted = WarmupCosine(optimizer_for(), warmup_steps=10, total_steps=100)
    lrs(fitted, 5)
    fitted.total_steps = 60
    reference = WarmupCosine(optimizer_for(), warmup_steps=10, total_steps=60)
    lrs(reference, 5)
    assert lrs(fitted, 60) == pytest.approx(lrs(reference, 60))


def test_refitted_schedule_survives_an_optimizer_state_round_trip(tmp_path):
    """--resume rebuilds the schedule, restores the optimiser, sets total_steps, then set_step(step)."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEAK)
    schedule = WarmupCosine(optimizer, warmup_steps=2, total_steps=40)
    lrs(schedule, 20)
    schedule.total_steps = 50  # a budget refit
    lrs(schedule, 5)
    checkpoint.save_train_state(RunFolder(tmp_path), model, optimizer, LoopState(step=schedule.step_count))
    expected = lrs(schedule, 10)

    model2 = torch.nn.Linear(2, 1)
    optimizer2 = torch.optim.AdamW(model2.parameters(), lr=PEAK)
    resumed = WarmupCosine(optimizer2, warmup_steps=2, total_steps=40)
    loop = checkpoint.load_train_state(RunFolder(tmp_path), model2, optimizer2)
    resumed.total_steps = 50
    resumed.set_step(loop.step)
    assert lrs(resumed, 10) == pytest.approx(expected, rel=1e-9, abs=1e-15)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def tiny_batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 32, 32, generator=generator), torch.randint(0, 2, (2, 32, 32), generator=generator)


def train_steps(model, optimizer, steps: int, first_seed: int = 0) -> None:
    model.train()
    for step in range(steps):
        x, y = tiny_batch(first_seed + step)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_weights_round_trip_exactly(tmp_path):
    torch.manual_seed(0)
    model = build_model("segnet")
    train_steps(model, torch.optim.AdamW(model.parameters(), lr=1e-2), 1)  # BatchNorm statistics move too
    runs.save_weights(model, tmp_path / "model.safetensors")
    torch.manual_seed(1)
    other = runs.load_weights(build_model("segnet"), tmp_path / "model.safetensors")
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    x, _ = tiny_batch()
    model.eval(), other.eval()
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


def test_weights_of_another_model_are_refused(tmp_path):
    runs.save_weights(build_model("segnet"), tmp_path / "model.safetensors")
    with pytest.raises(PixelwiseError, match="do not fit"):
        runs.load_weights(build_model("unet"), tmp_path / "model.safetensors")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_weights_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "model.safetensors"
    runs.save_weights(build_model("segnet"), path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00garbage" * 20, "empty": b""}[damage])
    with pytest.raises(PixelwiseError, match="cannot read weights"):
        runs.load_weights(build_model("segnet"), path)


def test_train_state_resume_is_identical_to_an_uninterrupted_run(tmp_path):
    """Save after 2 AdamW steps, restore into fresh objects, take 1 more step: same parameters, bit for bit."""
    torch.manual_seed(0)
    model = build_model("segnet")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    train_steps(model, optimizer, 2)
    checkpoint.save_train_state(RunFolder(tmp_path), model, optimizer, LoopState(epoch=1, step=2, best_dice=0.5))

    torch.manual_seed(123)  # different initial weights: everything must come from the state
    restored = build_model("segnet")
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=1e-2, weight_decay=1e-4)
    loop = checkpoint.load_train_state(RunFolder(tmp_path), restored, restored_optimizer)
    assert loop == LoopState(epoch=1, step=2, best_dice=0.5)
    moments = optimizer.state_dict()["state"]
    restored_moments = restored_optimizer.state_dict()["state"]
    assert moments.keys() == restored_moments.keys() and len(moments) > 0
    for index, state in moments.items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(restored_moments[index][key])), (index, key)

    train_steps(model, optimizer, 1, first_seed=2)
    train_steps(restored, restored_optimizer, 1, first_seed=2)
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name


def test_interrupted_state_save_never_mixes_two_epochs(tmp_path, monkeypatch):
    """An interruption between writing the tensors and the JSON of epoch 2 must not pair epoch-2 weights
    with epoch-1 counters: --resume would then train epoch 2 twice on already-updated weights."""
    torch.manual_seed(0)
    model = build_model("segnet")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train_steps(model, optimizer, 1)
    checkpoint.save_train_state(RunFolder(tmp_path), model, optimizer, LoopState(epoch=1, step=1))
    train_steps(model, optimizer, 1, first_seed=1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "atomic_write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_train_state(RunFolder(tmp_path), model, optimizer, LoopState(epoch=2, step=2))
    monkeypatch.undo()

    restored = build_model("segnet")
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=1e-2)
    loop = checkpoint.load_train_state(RunFolder(tmp_path), restored, restored_optimizer)
    adam_step = int(next(iter(restored_optimizer.state_dict()["state"].values()))["step"])
    assert adam_step == loop.step, f"weights/moments after {adam_step} steps, counters say {loop.step}"


def test_missing_train_state_is_a_clear_error(tmp_path):
    model = build_model("segnet")
    with pytest.raises(PixelwiseError, match="--resume"):
        checkpoint.load_train_state(RunFolder(tmp_path), model, torch.optim.AdamW(model.parameters()))


def test_damaged_train_state_is_a_clear_error(tmp_path):
    model = build_model("segnet")
    optimizer = torch.optim.AdamW(model.parameters())
    train_steps(model, optimizer, 1)
    checkpoint.save_train_state(RunFolder(tmp_path), model, optimizer, LoopState(epoch=1, step=1))
    state = tmp_path / RunFolder.STATE
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(PixelwiseError):
        checkpoint.load_train_state(RunFolder(tmp_path), build_model("segnet"), torch.optim.AdamW(model.parameters()))


def test_read_config_refuses_folders_that_are_not_runs(tmp_path):
    with pytest.raises(PixelwiseError, match="not a pixelwise run"):
        RunFolder(tmp_path).read_config()
    with pytest.raises(PixelwiseError, match="does not exist"):
        RunFolder(tmp_path / "missing").read_config()
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(PixelwiseError, match="not valid JSON"):
        RunFolder(tmp_path).read_config()
    config = RunConfig(Recipe(model="unet"))
    RunFolder(tmp_path).write_config(config)
    assert RunFolder(tmp_path).read_config() == json.loads(json.dumps(config.to_dict()))
    assert RunFolder(tmp_path).load_config() == config


# --------------------------------------------------------------------------------------------
# Time budget
# --------------------------------------------------------------------------------------------


def budget_loop(epoch_seconds: list[float]) -> LoopState:
    return LoopState(
        epoch=len(epoch_seconds), epochs=40, epoch_seconds=list(epoch_seconds), train_seconds=float(sum(epoch_seconds))
    )


def test_fit_to_budget_uses_the_pace_after_the_slow_first_epoch():
    from pixelwise.train.loop import _fit_to_budget

    schedule = WarmupCosine(optimizer_for(), warmup_steps=10, total_steps=40 * 10)
    loop = budget_loop([30.0, 10.0, 12.0, 10.0])  # 62 s spent; later epochs ~10 s each
    _fit_to_budget(loop, 300.0, schedule, steps_per_epoch=10)
    assert loop.epochs == 4 + 23  # (300 - 62) // 10
    assert schedule.total_steps == loop.epochs * 10


def test_fit_to_budget_after_one_epoch_and_when_the_budget_is_spent():
    from pixelwise.train.loop import _fit_to_budget

    schedule = WarmupCosine(optimizer_for(), warmup_steps=0, total_steps=400)
    loop = budget_loop([20.0])
    _fit_to_budget(loop, 100.0, schedule, steps_per_epoch=5)
    assert loop.epochs == 1 + 4 and schedule.total_steps == 25
    loop = budget_loop([20.0, 15.0, 15.0])
    _fit_to_budget(loop, 40.0, schedule, steps_per_epoch=5)
    assert loop.epochs == 3, "over budget: stop after the current epoch"
    assert schedule.total_steps == 15


def test_budget_note_names_the_budget_that_would_fit_enough_epochs():
    from pixelwise.train.loop import ENOUGH_EPOCHS, budget_note

    note = budget_note(19, 900.0)
    assert "fits 19 epochs in the 15-minute budget" in note
    assert f"about --budget {math.ceil(15 * ENOUGH_EPOCHS / 19)}m" in note
    assert budget_note(ENOUGH_EPOCHS, 900.0) is None and budget_note(45, 900.0) is None


# --------------------------------------------------------------------------------------------
# Whole runs through the CLI (tiny): k-fold, multi-class
# --------------------------------------------------------------------------------------------

runner = CliRunner()


def invoke(*args):
    from pixelwise.cli import app

    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


TINY = ("--size", 32, "--batch-size", 8, "--augment", "none", "--model", "segnet", "--lr", 5e-3)


@pytest.fixture(scope="module")
def fold_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("folds")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIXELWISE_THREADS", "1")
        invoke("data", "synth", root / "data", "--n", 24, "--size", 32, "--seed", 5)
        invoke(
            "train",
            "--data",
            root / "data",
            "--out",
            root / "run",
            "--folds",
            2,
            "--epochs",
            1,
            "--cache-dir",
            root / "cache",
            *TINY,
        )
    return root


def test_folds_make_disjoint_test_parts_that_cover_every_pair(fold_run):
    run = fold_run / "run"
    all_ids = sorted(p.stem for p in (fold_run / "data" / "images").iterdir())
    tests = []
    for fold in range(2):
        folder = run / f"fold_{fold}"
        assert (folder / "model.safetensors").stat().st_size > 0
        split = json.loads((folder / "split.json").read_text())
        assert split["fold"] == fold and split["folds"] == 2
        parts = [set(split[name]) for name in ("train", "val", "test")]
        assert set().union(*parts) == set(all_ids), "each fold uses every pair once"
        assert sum(map(len, parts)) == len(all_ids), "parts of a fold are disjoint"
        tests.append(set(split["test"]))
    assert tests[0].isdisjoint(tests[1])
    assert sorted(tests[0] | tests[1]) == all_ids
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["folds"] == 2 and config["record"]["num_classes"] == 2
    fold_thresholds = [
        json.loads((run / f"fold_{i}" / "config.json").read_text())["record"]["threshold"] for i in range(2)
    ]
    assert config["record"]["threshold"] == pytest.approx(np.mean(fold_thresholds))


def test_evaluate_folds_is_out_of_fold(fold_run, monkeypatch):
    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    run = fold_run / "run"
    invoke("evaluate", run, "--cache-dir", fold_run / "cache")
    rows = list(csv.DictReader((run / "eval-test" / "metrics.csv").open()))
    ids = [row["id"] for row in rows]
    all_ids = sorted(p.stem for p in (fold_run / "data" / "images").iterdir())
    assert sorted(ids) == all_ids, "every pair evaluated exactly once, by the fold that did not train on it"
    assert all(0.0 <= float(row["dice"]) <= 1.0 for row in rows)


def test_predict_with_a_fold_ensemble(fold_run, tmp_path, monkeypatch):
    from pixelwise.predict.torch_engine import torch_predictor

    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    run = fold_run / "run"
    image = next((fold_run / "data" / "images").iterdir())
    invoke("predict", run, image, "--out", tmp_path / "out")
    mask = np.asarray(Image.open(tmp_path / "out" / f"{image.stem}_mask.png"))
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
    # the ensemble averages the two folds' probabilities
    images = torch.from_numpy(np.asarray(Image.open(image).convert("RGB"))).permute(2, 0, 1)[None]
    both = torch_predictor(run).probabilities(images)
    each = [torch_predictor(run, fold=i).probabilities(images) for i in range(2)]
    torch.testing.assert_close(both, (each[0] + each[1]) / 2, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(each[0], each[1]), "two folds, two different models"


def make_three_class_set(root: Path, n: int = 14, size: int = 32) -> Path:
    """images/ + masks/: a bright square = class 1 and a dark disc = class 2 on noise ('L' masks 0, 1, 2)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image = rng.integers(90, 160, (size, size, 3)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        x0, y0 = rng.integers(1, size // 2 - 8, 2)
        mask[y0 : y0 + 8, x0 : x0 + 8] = 1
        cx, cy = rng.integers(size // 2 + 5, size - 5, 2)
        mask[(xx - cx) ** 2 + (yy - cy) ** 2 <= 16] = 2
        image[mask == 1] = (240, 240, 60)
        image[mask == 2] = (30, 30, 120)
        Image.fromarray(image).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"case{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiclass")
    data = make_three_class_set(root / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIXELWISE_THREADS", "1")
        # 14 pairs → 9 train / 2 val / 3 test: batches of 8 and 1 (the single-image batch is skipped)
        invoke(
            "train",
            "--data",
            data,
            "--out",
            root / "run",
            "--epochs",
            2,
            "--cache-dir",
            root / "cache",
            "--val-fraction",
            0.15,
            "--test-fraction",
            0.2,
            *TINY,
        )
    return root


def test_multiclass_run_config_and_evaluation(multiclass_run, monkeypatch):
    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    run = multiclass_run / "run"
    config = json.loads((run / "config.json").read_text())["record"]
    assert config["num_classes"] == 3
    from safetensors.torch import load_file

    head = [v for k, v in load_file(str(run / "model.safetensors")).items() if k.endswith("head.weight")]
    assert head and head[0].shape[0] == 3, "one logit per class"
    invoke("evaluate", run, "--cache-dir", multiclass_run / "cache")
    summary = json.loads((run / "eval-test" / "summary.json").read_text())
    multiclass = summary["multiclass"]
    assert len(multiclass["dice"]) == 3
    assert all(d is None or 0.0 <= d <= 1.0 for d in multiclass["dice"])
    test_ids = json.loads((run / "split.json").read_text())["test"]
    assert summary["n_images"] == len(test_ids)
    assert sorted(row["id"] for row in summary["images"]) == sorted(test_ids)


def test_multiclass_predict_writes_class_indices(multiclass_run, tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    run = multiclass_run / "run"
    out = tmp_path / "out"
    invoke("predict", run, multiclass_run / "data" / "images", "--out", out)
    masks = sorted(out.glob("*_mask.png"))
    assert len(masks) == 14
    values = set()
    for path in masks:
        mask = np.asarray(Image.open(path))
        assert mask.shape == (32, 32)
        values |= set(np.unique(mask).tolist())
    assert values <= {0, 1, 2}


def test_cosine_ends_at_zero_when_a_single_image_batch_is_skipped(multiclass_run):
    run = multiclass_run / "run"
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) % 8 == 1, "the data set must leave one image in the last batch"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 2
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-9), "the LR after the last epoch of a cosine run"


def test_early_stopping_is_off_by_default_and_counts_epochs_without_improvement():
    from pixelwise.config import Recipe
    from pixelwise.train.loop import stops_early

    assert Recipe().patience is None
    stalled = LoopState(epoch=50, best_epoch=0)
    assert not stops_early(stalled, None), "without --patience only the schedule ends a run"
    assert stops_early(LoopState(epoch=4, best_epoch=0), 3)
    assert not stops_early(LoopState(epoch=4, best_epoch=1), 3)


def test_a_budgeted_run_anneals_to_the_end_even_when_validation_stalls(tmp_path, monkeypatch):
    """The learning rate reaches (nearly) zero in the last epoch: validation noise does not cut the cosine."""
    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    invoke("data", "synth", tmp_path / "data", "--n", 24, "--size", 32, "--seed", 5)
    # lr 1e-6: validation Dice barely moves, so a patience rule would have stopped after a few epochs.
    invoke(
        "train",
        "--data",
        tmp_path / "data",
        "--out",
        tmp_path / "run",
        "--budget",
        "12s",
        "--epochs",
        1000,
        "--cache-dir",
        tmp_path / "cache",
        *TINY[:-2],
        "--lr",
        1e-6,
        "--warmup-epochs",
        0,
    )
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) >= 3
    assert float(rows[-1]["lr"]) < 0.1 * 1e-6, [r["lr"] for r in rows]
    total = sum(float(r["seconds"]) for r in rows)
    assert total < 12 + 2 * max(float(r["seconds"]) for r in rows)


@pytest.mark.parametrize("keep", ["last", "best"])
def test_the_run_keeps_the_last_epochs_weights_unless_told_best(keep, tmp_path, monkeypatch):
    """Validation made to peak at epoch 1 of 3: ``last`` keeps epoch 3's weights (the train state's), ``best``
    epoch 1's; config.json says which."""
    from safetensors.torch import load_file

    from pixelwise.train import loop

    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    real, scores = loop.validate, iter([0.9, 0.5, 0.4])
    monkeypatch.setattr(loop, "validate", lambda *a, **k: loop.Validation(real(*a, **k).loss, next(scores)))
    invoke("data", "synth", tmp_path / "data", "--n", 16, "--size", 32, "--seed", 2)
    invoke(
        "train",
        "--data",
        tmp_path / "data",
        "--out",
        tmp_path / "run",
        "--epochs",
        3,
        "--keep",
        keep,
        "--cache-dir",
        tmp_path / "cache",
        *TINY,
    )
    run = tmp_path / "run"
    extra = json.loads((run / "config.json").read_text())["record"]
    assert extra["best_epoch"] == 1 and extra["kept_epoch"] == (3 if keep == "last" else 1)
    kept = load_file(str(run / "model.safetensors"))
    last = {
        k[len("model.") :]: v
        for k, v in load_file(str(run / "train_state.safetensors")).items()
        if k.startswith("model.")
    }
    same = all(torch.equal(kept[k], last[k]) for k in kept)
    assert same == (keep == "last")


def test_keep_accepts_last_or_best():
    from pixelwise.config import Recipe

    assert Recipe().keep == "last"
    with pytest.raises(PixelwiseError, match="--keep"):
        Recipe(keep="first").validate()


def test_init_starts_from_another_runs_weights(fold_run, tmp_path, monkeypatch):
    """--init RUN: the new run starts from RUN's weights (here trained with a learning rate too small to move
    them), and a run of another network is refused before anything is written."""
    from safetensors.torch import load_file

    from pixelwise.errors import PixelwiseError

    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    source = fold_run / "run" / "fold_0"
    invoke(
        "train",
        "--data",
        fold_run / "data",
        "--out",
        tmp_path / "tuned",
        "--epochs",
        1,
        "--init",
        source,
        "--cache-dir",
        fold_run / "cache",
        *TINY[:-2],
        "--lr",
        1e-12,
        "--warmup-epochs",
        0,
    )
    before, after = (
        load_file(str(source / "model.safetensors")),
        load_file(str(tmp_path / "tuned" / "model.safetensors")),
    )
    weights = [k for k in before if k.endswith("weight")]
    assert weights and all(torch.allclose(before[k], after[k], atol=1e-6) for k in weights)
    from pixelwise.cli import app

    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(fold_run / "data"),
            "--out",
            str(tmp_path / "other"),
            "--init",
            str(source),
            "--model",
            "unet",
        ],
    )
    assert isinstance(result.exception, PixelwiseError) and "--model segnet" in str(result.exception)
    assert not (tmp_path / "other").exists()


PARTS = ("train", "val", "test")


def test_split_reuses_a_saved_split_whatever_the_seed(fold_run, tmp_path, monkeypatch):
    """--split RUN: another seed trains, validates and tests on exactly RUN's images (a fold's test part holds
    half the pairs, where a split made from --seed would test on a fifth)."""
    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    source = fold_run / "run" / "fold_0"
    invoke(
        "train",
        "--data",
        fold_run / "data",
        "--out",
        tmp_path / "seed1",
        "--epochs",
        1,
        "--seed",
        1,
        "--split",
        source,
        "--cache-dir",
        fold_run / "cache",
        *TINY,
    )
    saved = json.loads((source / "split.json").read_text())
    copied = json.loads((tmp_path / "seed1" / "split.json").read_text())
    assert {k: copied[k] for k in PARTS} == {k: saved[k] for k in PARTS} and len(copied["test"]) == 12
    assert copied["seed"] == 1 and str(source.resolve()) in copied["source"]
    invoke("evaluate", tmp_path / "seed1", "--no-tta")
    rows = list(csv.DictReader((tmp_path / "seed1" / "eval-test" / "metrics.csv").open()))
    assert sorted(r["id"] for r in rows) == sorted(saved["test"])


def test_split_that_does_not_fit_the_data_or_the_options_is_refused_before_writing(fold_run, tmp_path):
    from pixelwise.cli import app

    saved = json.loads((fold_run / "run" / "fold_0" / "split.json").read_text())
    ghost = tmp_path / "ghost.json"
    ghost.write_text(json.dumps({**saved, "train": saved["train"] + ["not_here"]}))
    cases = [
        (["--split", ghost], "not_here"),
        (["--split", tmp_path / "none.json"], "split file not found"),
        (["--split", ghost, "--folds", 2], "--folds 2"),
        (["--split", fold_run / "run"], "fold_0"),
    ]
    for extra, message in cases:
        result = runner.invoke(
            app,
            [
                "train",
                "--data",
                str(fold_run / "data"),
                "--out",
                str(tmp_path / "run"),
                "--cache-dir",
                str(fold_run / "cache"),
                *map(str, TINY),
                *map(str, extra),
            ],
        )
        assert isinstance(result.exception, PixelwiseError) and message in str(result.exception), result.output
        assert not (tmp_path / "run").exists()


def test_pairs_a_saved_split_leaves_out_are_named_not_silently_dropped(fold_run, tmp_path, caplog):
    from pixelwise.config import Recipe
    from pixelwise.data.layouts import find_pairs
    from pixelwise.train.data import copy_split

    saved = json.loads((fold_run / "run" / "fold_0" / "split.json").read_text())
    smaller = tmp_path / "smaller.json"
    smaller.write_text(json.dumps({**saved, "train": saved["train"][2:]}))
    config = Recipe(data=str(fold_run / "data"), split=str(smaller))
    with caplog.at_level(logging.INFO, logger="pixelwise"):
        split = copy_split(config, tmp_path / "run" / "split.json", find_pairs(fold_run / "data").pairs)
    assert split["train"] == saved["train"][2:]
    assert "2 of the data's 24 pairs are in none of its parts" in caplog.text
    assert json.loads((tmp_path / "run" / "split.json").read_text())["train"] == saved["train"][2:]


@pytest.mark.parametrize("classes, planned", [(2, 128), (3, 160)])
def test_size_0_is_planned_from_the_class_count(tmp_path, classes, planned, caplog):
    from pixelwise.config import Recipe, planned_size
    from pixelwise.train.data import prepare_data

    data = make_three_class_set(tmp_path / "data", n=10)
    if classes == 2:  # the same images with class 2 folded into 1
        for path in (data / "masks").iterdir():
            Image.fromarray((np.asarray(Image.open(path)) > 0).astype(np.uint8), mode="L").save(path)
    config = Recipe(data=str(data), cache_dir=str(tmp_path / "cache"), val_fraction=0.2, test_fraction=0.2)
    assert config.size == 0 and config.validate() is config
    with caplog.at_level(logging.INFO, logger="pixelwise"):
        prepared = prepare_data(config, RunFolder(tmp_path / "run"))
    assert prepared.size == planned == planned_size(classes)
    assert config.size == 0, "the recipe is not changed: the planned size is the run's record"
    assert prepared.train_images.shape[-2:] == (planned, planned) and prepared.num_classes == classes
    assert f"input size {planned}×{planned}" in caplog.text
    explicit = Recipe(data=str(data), cache_dir=str(tmp_path / "cache"), size=48, val_fraction=0.2, test_fraction=0.2)
    assert prepare_data(explicit, RunFolder(tmp_path / "run")).val_images.shape[-1] == 48


# --------------------------------------------------------------------------------------------
# Validation: the score that picks the kept epoch


class FixedLogits(torch.nn.Module):
    """Stands in for a network: returns the same logits whatever the input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def test_multiclass_validation_pools_each_class_over_the_split_instead_of_averaging_images():
    """Image A: classes 1 and 2, predicted exactly. Image B: class 1 only, one pixel predicted as class 2.
    Per image, B's absent class 2 would score 0 and halve B's mean; pooled, class 2 is 8 of 9 predicted pixels."""
    from pixelwise.losses import build_loss
    from pixelwise.train.data import TrainData
    from pixelwise.train.loop import validate

    from tiny_run import trained_config

    truth = torch.ones(2, 4, 4, dtype=torch.uint8)
    truth[0, :, 2:] = 2
    pred = truth.clone()
    pred[1, 0, 0] = 2
    logits = torch.nn.functional.one_hot(pred.long(), 3).permute(0, 3, 1, 2).float() * 10
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    data = TrainData(images, truth, images, truth, 3, {})
    val = validate(FixedLogits(logits), data, build_loss("bce", 3), trained_config(3).record, torch.device("cpu"))
    class1 = 2 * 23 / (24 + 23)  # 8 + 15 right of 24 truth pixels, 23 predicted
    class2 = 2 * 8 / (8 + 9)
    assert val.dice == pytest.approx((class1 + class2) / 2)
    assert val.dice > 0.9  # the per-image mean would be (1 + (30 / 31 + 0) / 2) / 2 ≈ 0.74


def test_binary_validation_is_the_mean_of_per_image_dice():
    from pixelwise.losses import build_loss
    from pixelwise.train.data import TrainData
    from pixelwise.train.loop import validate

    from tiny_run import trained_config

    truth = torch.zeros(2, 4, 4, dtype=torch.uint8)
    truth[0, :2] = 1  # 8 pixels, predicted exactly
    truth[1, 0, :2] = 1  # 2 pixels, predicted as 4
    pred = truth.clone()
    pred[1, 0, :4] = 1
    logits = torch.where(pred.bool(), 10.0, -10.0)[:, None]
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    data = TrainData(images, truth, images, truth, 2, {})
    val = validate(FixedLogits(logits), data, build_loss("bce"), trained_config(2).record, torch.device("cpu"))
    assert val.dice == pytest.approx((1.0 + 2 * 2 / (2 + 4)) / 2)


# --------------------------------------------------------------------------------------------
# --encoder-lr-scale: the pretrained encoder learns at its own rate


def test_encoder_lr_scale_gives_the_pretrained_encoder_its_own_rate_through_the_schedule():
    from pixelwise.train.optim import build_optimizer

    model = build_model("effnet_lite0_unet", 2, pretrained=False)
    optimizer = build_optimizer(model, "adamw", 0.01, 1e-4, encoder_lr_scale=0.1)
    rest, encoder = optimizer.param_groups
    assert encoder["lr"] == pytest.approx(0.001) and rest["lr"] == pytest.approx(0.01)
    ids = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter once
    assert {id(p) for p in encoder["params"]} == {id(p) for p in model.net.encoder.parameters()}
    schedule = WarmupCosine(optimizer, warmup_steps=0, total_steps=10)
    for _ in range(5):
        schedule.step()
    assert encoder["lr"] / rest["lr"] == pytest.approx(0.1)  # one schedule, two peaks

    # A network trained from scratch has no pretrained encoder: one group at --lr.
    plain = build_optimizer(build_model("unet", 2), "adamw", 0.01, 1e-4, encoder_lr_scale=0.1)
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["lr"] == pytest.approx(0.01)


def test_encoder_lr_scale_0_keeps_the_encoder_weights_while_the_decoder_learns():
    from pixelwise.train.optim import build_optimizer

    torch.manual_seed(0)
    model = build_model("effnet_lite0_unet", 2, pretrained=False)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = build_optimizer(model, "adamw", 0.01, 1e-4, encoder_lr_scale=0.0)
    model(torch.rand(2, 3, 64, 64)).mean().backward()
    optimizer.step()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert moved and all(not name.startswith("net.encoder.") for name in moved)
    assert any(name.startswith("net.decoder.") for name in moved)


def test_encoder_lr_scale_must_not_be_negative_nor_given_to_a_network_without_an_imagenet_encoder():
    from pixelwise.config import Recipe

    with pytest.raises(PixelwiseError, match="--encoder-lr-scale"):
        Recipe(encoder_lr_scale=-1.0).validate()
    with pytest.raises(PixelwiseError, match="--encoder-lr-scale 0.1: --model unet has no ImageNet encoder"):
        Recipe(model="unet", encoder_lr_scale=0.1).validate()
    assert Recipe(model="unet").validate().encoder_lr_scale == 1.0


@pytest.mark.parametrize("name", ["unet", "res_unet", "resnet18_unet", "effnet_lite0_unet", "effnet_lite2_unet"])
def test_the_encoder_the_rate_applies_to_is_the_one_the_registry_calls_pretrained(name):
    from pixelwise.models import model_spec, pretrained_encoder

    found = pretrained_encoder(build_model(name, 2, pretrained=False))
    assert (found is not None) == model_spec(name).pretrained


# --------------------------------------------------------------------------------------------
# --ema: a moving average of the weights is validated and kept
# --------------------------------------------------------------------------------------------


def test_ema_decay_forgets_early_steps_fast_and_is_capped():
    from pixelwise.train.ema import MAX_DECAY, ema_decay

    assert ema_decay(0) == pytest.approx(0.1)  # the first update keeps 90 % of the new weights
    decays = [ema_decay(n) for n in range(20_000)]
    assert all(a <= b for a, b in zip(decays, decays[1:]))
    assert max(decays) == MAX_DECAY and ema_decay(100) < MAX_DECAY


def test_weight_average_follows_the_formula_for_weights_and_batchnorm_statistics():
    from pixelwise.train.ema import WeightAverage, ema_decay

    torch.manual_seed(0)
    model = build_model("segnet")
    average = WeightAverage(model)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(3):
        train_steps(model, optimizer, 1, first_seed=step)
        average.update(model)
        decay = ema_decay(step)
        for name, value in model.state_dict().items():
            expected[name] = (
                decay * expected[name] + (1 - decay) * value if value.is_floating_point() else value.clone()
            )
    assert average.updates == 3
    for name, value in average.module.state_dict().items():
        assert torch.allclose(value, expected[name], atol=1e-6), name
    bn_mean = next(k for k in expected if k.endswith("running_mean"))
    assert not torch.allclose(average.module.state_dict()[bn_mean], model.state_dict()[bn_mean])
    tracked = next(k for k in expected if k.endswith("num_batches_tracked"))
    assert int(average.module.state_dict()[tracked]) == 3
    assert not any(p.requires_grad for p in average.module.parameters())


def test_ema_state_survives_resume(tmp_path):
    from pixelwise.train.ema import WeightAverage

    torch.manual_seed(0)
    model = build_model("segnet")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    average = WeightAverage(model)
    for step in range(2):
        train_steps(model, optimizer, 1, first_seed=step)
        average.update(model)
    checkpoint.save_train_state(RunFolder(tmp_path), model, optimizer, LoopState(epoch=1, step=2), average)

    torch.manual_seed(1)
    restored = build_model("segnet")
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=1e-2)
    restored_average = WeightAverage(restored)
    checkpoint.load_train_state(RunFolder(tmp_path), restored, restored_optimizer, restored_average)
    assert restored_average.updates == 2
    for (name, a), b in zip(average.module.state_dict().items(), restored_average.module.state_dict().values()):
        assert torch.equal(a, b), name

    # A state saved without an average starts one from the restored weights.
    checkpoint.save_train_state(RunFolder(tmp_path), model, optimizer, LoopState(epoch=1, step=2))
    fresh = WeightAverage(build_model("segnet"))
    checkpoint.load_train_state(RunFolder(tmp_path), restored, restored_optimizer, fresh)
    assert fresh.updates == 0
    for (name, a), b in zip(model.state_dict().items(), fresh.module.state_dict().values()):
        assert torch.equal(a, b), name


def test_an_ema_run_keeps_the_averaged_weights(tmp_path, monkeypatch):
    """One epoch: the kept model.safetensors is the average (ema.* in the train state), not the last step's."""
    monkeypatch.setenv("PIXELWISE_THREADS", "1")
    invoke("data", "synth", tmp_path / "data", "--n", 24, "--size", 32, "--seed", 5)
    invoke(
        "train",
        "--data",
        tmp_path / "data",
        "--out",
        tmp_path / "run",
        "--epochs",
        1,
        "--ema",
        "--cache-dir",
        tmp_path / "cache",
        *TINY,
    )
    folder = RunFolder(tmp_path / "run")
    kept, _ = runs.read_tensors(folder.weights_path, "weights")
    state, _ = runs.read_tensors(folder.state_path, "train state")
    assert folder.load_config().recipe.ema
    assert json.loads(folder.state_json_path.read_text())["ema_updates"] == 2  # two steps of 8 images
    differs = False
    for name, value in kept.items():
        assert torch.equal(value, state[f"ema.{name}"]), name
        differs |= not torch.equal(value, state[f"model.{name}"])
    assert differs, "the kept weights are the average, not the last step's"


def test_a_fold_ensemble_keeps_its_task_and_merges_what_each_fold_chose():
    from pixelwise.config import RunRecord
    from pixelwise.data.classes import ClassMap
    from pixelwise.train.loop import ensemble_record

    classes = ClassMap.plain(3).to_dict()
    folds = [
        RunRecord(num_classes=3, classes=classes, size=64, task="instances", decode={"seed": 0.8, "foreground": 0.4}),
        RunRecord(num_classes=3, classes=classes, size=64, task="instances", decode={"seed": 0.6, "foreground": 0.5}),
    ]
    merged = ensemble_record(folds)
    assert merged.task == "instances"  # an instance ensemble still decodes objects
    assert merged.decode == pytest.approx({"seed": 0.7, "foreground": 0.45})
    scored = [f.replace(decode={**f.decode, "min_score": m}) for f, m in zip(folds, (0.9, 0.8))]
    assert ensemble_record(scored).decode == pytest.approx({"seed": 0.7, "foreground": 0.45, "min_score": 0.85})
    assert scored[0].check().decode["min_score"] == 0.9  # a recorded minimum score is a valid record
    sourced = [scored[0].replace(decode={**scored[0].decode, "seeds": "distance"}), scored[1], scored[1]]
    assert ensemble_record(sourced).decode.get("seeds", "regions") == "regions"  # most folds: region seeds
    assert ensemble_record(sourced[:1] * 2 + sourced[1:2]).decode["seeds"] == "distance"
    with pytest.raises(PixelwiseError, match="decode must be"):
        folds[0].replace(decode={"seed": 0.8, "foreground": 0.4, "seeds": "peaks"}).check()
    with pytest.raises(PixelwiseError, match="decode must be"):
        folds[0].replace(decode={"seed": 0.8, "foreground": 0.4, "min_score": 1.5}).check()
    assert ensemble_record([folds[0], folds[1].replace(decode=None)]).decode is None
    binary = [RunRecord(num_classes=2, classes=ClassMap.plain(2).to_dict(), size=64, threshold=t) for t in (0.4, 0.6)]
    assert ensemble_record(binary).threshold == pytest.approx(0.5)
    votes = [binary[0].replace(refine_edges=True), binary[1], binary[1].replace(refine_edges=True)]
    assert ensemble_record(votes).refine_edges is True
    assert ensemble_record(votes[:2]).refine_edges is False  # a tie is not a majority
