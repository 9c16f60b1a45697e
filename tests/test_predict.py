"""predict / evaluate edge cases not covered by the end-to-end test: instances, post-processing, name clashes,
bad inputs, overwriting, mixed sizes, multi-class outputs, evaluating on another data set.

Most tests use a stand-in predictor whose probabilities follow the image's brightness (so the expected mask is
known); CLI tests use a run folder holding an untrained SegNet (config.json + model.safetensors).
"""

from __future__ import annotations

import csv
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from forked import run_pixelwise
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from pixelwise.errors import PixelwiseError
from pixelwise.masks.postprocess import PostProcess
from pixelwise.models import build_model
from pixelwise.predict.predict import predict_files
from pixelwise.predict.predictor import RunPredictor
from pixelwise.runs import RunFolder, save_weights
from pixelwise.runtime import normalize

from tiny_run import trained_config

EIGHT = np.ones((3, 3), bool)


def brightness_predictor(
    tmp_path: Path, num_classes: int = 2, size: int = 32, value: float | None = None
) -> RunPredictor:
    """Binary: P(lesion) = sigmoid(4·normalised red). 3 classes: red → class 1, blue → class 2, dark → 0.

    With ``value``, a constant binary probability everywhere.
    """
    config = trained_config(size=size, num_classes=num_classes, threshold=0.5, fast=False)

    def predict_unit(unit: torch.Tensor) -> torch.Tensor:
        x = normalize(unit, config.record.mean, config.record.std)
        if value is not None:
            return torch.full_like(x[:, :1], value)
        if num_classes == 2:
            return torch.sigmoid(4 * x[:, :1])
        logits = torch.cat([torch.zeros_like(x[:, :1]), 4 * x[:, :1], 4 * x[:, 2:3]], dim=1)
        return logits.softmax(1)

    return RunPredictor(tmp_path, config, predict_unit)


def squares_image(
    path: Path,
    height: int = 64,
    width: int = 64,
    colour=(255, 255, 255),
    squares=((4, 4, 20), (40, 6, 12), (10, 44, 6)),
) -> Path:
    """Dark image with bright squares (x, y, side): one region each, separated by at least 8 px."""
    image = np.full((height, width, 3), 10, np.uint8)
    for x, y, side in squares:
        image[y : y + side, x : x + side] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def regions(mask: np.ndarray) -> int:
    return int(ndimage.label(mask > 0, structure=EIGHT)[1])


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# --------------------------------------------------------------------------------------------
# predict_files with a known predictor
# --------------------------------------------------------------------------------------------


def test_instances_csv_has_one_row_per_region(tmp_path):
    inputs = tmp_path / "in"
    squares_image(inputs / "three.png")
    squares_image(inputs / "one.png", squares=((20, 20, 16),))
    squares_image(inputs / "none.png", squares=())
    out = tmp_path / "out"
    predict_files(brightness_predictor(tmp_path), [inputs], out, instances=True)
    rows = list(csv.DictReader((out / "instances.csv").open()))
    per_image = {stem: [r for r in rows if r["image"] == stem] for stem in ("three", "one", "none")}
    for stem, expected in (("three", 3), ("one", 1), ("none", 0)):
        mask = read_png(out / f"{stem}_mask.png")
        assert regions(mask) == expected, stem
        assert len(per_image[stem]) == expected, stem
    assert sorted(int(r["instance"]) for r in per_image["three"]) == [1, 2, 3]
    areas = sorted(int(r["area_px"]) for r in per_image["three"])
    assert areas[0] < areas[1] < areas[2], "three squares of three sizes"
    assert 300 < areas[2] < 500, "the 20×20 square, at the input's size (±blur of the 32-px round trip)"


def test_keep_largest_leaves_the_largest_region(tmp_path):
    image = squares_image(tmp_path / "in" / "three.png")
    out = tmp_path / "out"
    predict_files(brightness_predictor(tmp_path), [image], out, post=PostProcess(keep_largest=True), instances=True)
    mask = read_png(out / "three_mask.png")
    assert regions(mask) == 1
    ys, xs = np.nonzero(mask)
    assert 4 <= xs.mean() <= 24 and 4 <= ys.mean() <= 24, "the 20×20 square at (4, 4)"
    assert len(list(csv.DictReader((out / "instances.csv").open()))) == 1


def test_min_area_drops_small_regions_and_fill_holes_fills(tmp_path):
    image = squares_image(tmp_path / "in" / "three.png")
    out = tmp_path / "out"
    predict_files(brightness_predictor(tmp_path), [image], out, post=PostProcess(min_area=80))
    assert regions(read_png(out / "three_mask.png")) == 2, "the 6×6 square (36 px) is dropped"

    ring = np.full((64, 64, 3), 10, np.uint8)
    ring[8:56, 8:56] = 255
    ring[24:40, 24:40] = 10  # a 16-px hole, 8 px at the 32-px network size
    Image.fromarray(ring).save(tmp_path / "in" / "ring.png")
    predict_files(brightness_predictor(tmp_path), [tmp_path / "in" / "ring.png"], tmp_path / "holes")
    predict_files(
        brightness_predictor(tmp_path),
        [tmp_path / "in" / "ring.png"],
        tmp_path / "filled",
        post=PostProcess(fill_holes=True),
    )
    assert read_png(tmp_path / "holes" / "ring_mask.png")[32, 32] == 0
    assert read_png(tmp_path / "filled" / "ring_mask.png")[32, 32] == 255


def test_masks_match_each_input_size_within_one_batch(tmp_path):
    inputs = tmp_path / "in"
    sizes = {"wide": (40, 90), "tall": (100, 30), "square": (64, 64)}
    for stem, (h, w) in sizes.items():
        squares_image(inputs / f"{stem}.png", h, w, squares=((2, 2, 20),))
    Image.open(inputs / "wide.png").convert("L").save(inputs / "grey.png")  # greyscale input
    Image.open(inputs / "tall.png").convert("RGBA").save(inputs / "alpha.png")  # RGBA input
    sizes.update(grey=sizes["wide"], alpha=sizes["tall"])
    out = tmp_path / "out"
    written = predict_files(brightness_predictor(tmp_path), [inputs], out, batch_size=8)
    assert len(written) == 5
    for stem, (h, w) in sizes.items():
        mask = read_png(out / f"{stem}_mask.png")
        assert mask.shape == (h, w), stem
        assert set(np.unique(mask)) == {0, 255}, stem
        assert mask[5:15, 5:15].all() and not mask[-3:, -3:].any(), stem
        assert read_png(out / f"{stem}_overlay.png").shape == (h, w, 3), stem


def test_folders_expand_to_their_image_files_only(tmp_path):
    inputs = tmp_path / "in"
    squares_image(inputs / "a.png")
    squares_image(inputs / "sub" / "b.png")  # not recursive
    (inputs / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    predict_files(brightness_predictor(tmp_path), [inputs], out)
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_overlay.png"]


def test_same_stem_from_two_folders_is_refused_before_writing(tmp_path):
    a = squares_image(tmp_path / "a" / "x.png")
    b = squares_image(tmp_path / "b" / "x.jpg", squares=((1, 1, 5),))
    out = tmp_path / "out"
    with pytest.raises(PixelwiseError, match="same name") as error:
        predict_files(brightness_predictor(tmp_path), [a, b], out)
    assert str(a) in str(error.value) and str(b) in str(error.value)
    assert not out.exists() or not any(out.iterdir())


def test_non_image_file_is_a_clear_error(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(PixelwiseError) as error:
        predict_files(brightness_predictor(tmp_path), [notes], tmp_path / "out")
    assert str(notes) in str(error.value) and "\n" not in str(error.value)


def test_out_that_is_a_file_is_a_clear_error(tmp_path):
    image = squares_image(tmp_path / "in" / "a.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"something")
    with pytest.raises(PixelwiseError, match="--out"):
        predict_files(brightness_predictor(tmp_path), [image], out)
    assert out.read_bytes() == b"something"


def test_overwrite_replaces_and_its_absence_refuses(tmp_path):
    image = squares_image(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    predict_files(brightness_predictor(tmp_path, value=0.9), [image], out)
    assert read_png(out / "a_mask.png").min() == 255
    with pytest.raises(PixelwiseError, match="already exists"):
        predict_files(brightness_predictor(tmp_path, value=0.1), [image], out)
    assert read_png(out / "a_mask.png").min() == 255, "refused: the earlier mask is untouched"
    predict_files(brightness_predictor(tmp_path, value=0.1), [image], out, overwrite=True)
    assert read_png(out / "a_mask.png").max() == 0, "replaced by the new prediction"


def test_existing_instances_csv_is_not_replaced_without_overwrite(tmp_path):
    """Predicting more images into the same folder must not silently drop the earlier instances.csv."""
    out = tmp_path / "out"
    predict_files(brightness_predictor(tmp_path), [squares_image(tmp_path / "in" / "a.png")], out, instances=True)
    before = (out / "instances.csv").read_text()
    with pytest.raises(PixelwiseError, match="instances.csv"):
        predict_files(brightness_predictor(tmp_path), [squares_image(tmp_path / "in2" / "b.png")], out, instances=True)
    assert (out / "instances.csv").read_text() == before
    assert not (out / "b_mask.png").exists(), "refused before writing anything"
    predict_files(brightness_predictor(tmp_path), [tmp_path / "in2" / "b.png"], out, instances=True, overwrite=True)
    assert {r["image"] for r in csv.DictReader((out / "instances.csv").open())} == {"b"}


def test_threshold_of_the_run_is_used(tmp_path):
    image = squares_image(tmp_path / "in" / "a.png")
    predictor = brightness_predictor(tmp_path, value=0.6)
    predict_files(predictor, [image], tmp_path / "low")
    predictor.config = replace(predictor.config, record=predictor.config.record.replace(threshold=0.7))
    predict_files(predictor, [image], tmp_path / "high")
    assert read_png(tmp_path / "low" / "a_mask.png").min() == 255
    assert read_png(tmp_path / "high" / "a_mask.png").max() == 0


def test_multiclass_masks_are_class_indices_and_never_post_processed(tmp_path):
    """Post-processing is binary-only: a 3-class run must give the same masks with or without it, whatever
    classes an image happens to contain."""
    inputs = tmp_path / "in"
    squares_image(inputs / "both.png", colour=(255, 0, 0), squares=((4, 4, 20), (40, 40, 12)))
    image = np.asarray(Image.open(inputs / "both.png")).copy()
    image[44:52, 6:14] = (0, 0, 255)  # a class-2 square
    Image.fromarray(image).save(inputs / "both.png")
    squares_image(inputs / "red_only.png", colour=(255, 0, 0), squares=((4, 4, 20), (40, 40, 12)))
    predictor = brightness_predictor(tmp_path, num_classes=3)
    predict_files(predictor, [inputs], tmp_path / "plain")
    predict_files(predictor, [inputs], tmp_path / "post", post=PostProcess(keep_largest=True, min_area=200))
    both = read_png(tmp_path / "plain" / "both_mask.png")
    assert set(np.unique(both)) == {0, 1, 2}
    red_only = read_png(tmp_path / "plain" / "red_only_mask.png")
    assert set(np.unique(red_only)) == {0, 1} and regions(red_only) == 2
    for stem in ("both", "red_only"):
        assert np.array_equal(
            read_png(tmp_path / "plain" / f"{stem}_mask.png"), read_png(tmp_path / "post" / f"{stem}_mask.png")
        ), stem


# --------------------------------------------------------------------------------------------
# Through the CLI, with an untrained run folder
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """A run folder as `pixelwise train` leaves it, minus the training: an untrained SegNet at 32 px."""
    root = tmp_path_factory.mktemp("untrained")
    run = root / "run"
    run.mkdir()
    torch.manual_seed(0)
    save_weights(build_model("segnet"), RunFolder(run).weights_path)
    config = trained_config(
        model="segnet", size=32, num_classes=2, threshold=0.5, fast=False, cache_dir=str(root / "cache")
    )
    RunFolder(run).write_config(config)
    return root


def pixelwise(*args) -> subprocess.CompletedProcess:
    return run_pixelwise(list(args), timeout=120)


def test_cli_non_image_input_is_one_line_and_exit_2(untrained_run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    result = pixelwise("predict", untrained_run / "run", notes, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "notes.txt" in result.stderr and "Traceback" not in result.stderr


def test_cli_instances_and_keep_largest(untrained_run, tmp_path):
    squares_image(tmp_path / "in" / "a.png")
    squares_image(tmp_path / "in" / "b.png", 48, 80)
    runner = CliRunner()
    from pixelwise.cli import app

    result = runner.invoke(
        app,
        [
            "predict",
            str(untrained_run / "run"),
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "out"),
            "--instances",
            "--keep-largest",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "out" / "instances.csv").open()))
    for stem in ("a", "b"):
        mask = read_png(tmp_path / "out" / f"{stem}_mask.png")
        assert regions(mask) <= 1
        assert len([r for r in rows if r["image"] == stem]) == regions(mask)


def make_folder_set(root: Path, n: int = 4) -> Path:
    for i in range(n):
        squares_image(root / "images" / f"p{i}.png", squares=((4 + 4 * i, 4, 16),))
        mask = np.zeros((64, 64), np.uint8)
        mask[4:20, 4 + 4 * i : 20 + 4 * i] = 255
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
    return root


def test_evaluate_on_another_data_set_scores_every_pair(untrained_run, tmp_path):
    from pixelwise.evaluate.evaluate import evaluate_run

    data = make_folder_set(tmp_path / "other set")
    result = evaluate_run(untrained_run / "run", data, cache_dir=untrained_run / "cache")
    assert result.folder == untrained_run / "run" / "eval-other_set"
    rows = list(csv.DictReader((result.folder / "metrics.csv").open()))
    assert sorted(r["id"] for r in rows) == ["p0", "p1", "p2", "p3"]
    summary = json.loads((result.folder / "summary.json").read_text())
    assert summary["split"] == "all" and summary["n_images"] == 4
    with pytest.raises(PixelwiseError, match="--split"):
        evaluate_run(untrained_run / "run", data, "test", cache_dir=untrained_run / "cache")


def test_evaluate_without_a_split_file_says_what_to_do(untrained_run):
    """The untrained run has no split.json and no --data: the saved split cannot be evaluated."""
    from pixelwise.evaluate.evaluate import _split_ids

    config = RunFolder(untrained_run / "run").load_config()
    with pytest.raises(PixelwiseError, match="--data"):
        _split_ids(untrained_run / "run", config, "test")


def test_evaluate_unknown_split_name_is_a_clear_error(untrained_run):
    from pixelwise.evaluate.evaluate import _split_ids

    run = untrained_run / "run"
    (run / "split.json").write_text(json.dumps({"version": 1, "train": ["p0"], "val": ["p1"], "test": ["p2"]}))
    try:
        config = RunFolder(run).load_config()
        with pytest.raises(PixelwiseError, match="nope"):
            _split_ids(run, config, "nope")
    finally:
        (run / "split.json").unlink()


def test_evaluate_never_post_processes_a_multiclass_run(tmp_path, monkeypatch):
    from pixelwise.evaluate import evaluate as evaluate_module

    data = tmp_path / "data"
    for stem in ("r0", "r1"):
        squares_image(data / "images" / f"{stem}.png", colour=(255, 0, 0), squares=((4, 4, 20), (40, 40, 12)))
        mask = np.zeros((64, 64), np.uint8)
        mask[4:24, 4:24] = 1
        mask[40:52, 40:52] = 1
        (data / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask, mode="L").save(data / "masks" / f"{stem}.png")
    predictor = brightness_predictor(tmp_path, num_classes=3)
    monkeypatch.setattr(evaluate_module, "make_predictor", lambda run, engine, tta, *rest, **options: predictor)
    plain = evaluate_module.evaluate_run(tmp_path / "run", data, cache_dir=tmp_path / "cache")
    post = evaluate_module.evaluate_run(
        tmp_path / "run", data, post=PostProcess(keep_largest=True), cache_dir=tmp_path / "cache"
    )
    assert [r["dice"] for r in post.rows] == pytest.approx([r["dice"] for r in plain.rows])


def test_threshold_curve_predicts_the_validation_images_unless_switched_off(tmp_path, monkeypatch, caplog):
    """The report's threshold curve costs a second prediction, of the validation split: a logged step, which
    ``--no-threshold-curve`` skips (the report then says the curve was not drawn)."""
    from pixelwise.cli import app
    from pixelwise.data.split import save_split
    from pixelwise.evaluate import evaluate as evaluate_module

    data = make_folder_set(tmp_path / "data")
    plain = brightness_predictor(tmp_path)
    predictor = replace(plain, config=replace(plain.config, recipe=plain.config.recipe.replace(data=str(data))))
    predicted = []  # images per call of the predictor
    probabilities = predictor.probabilities
    monkeypatch.setattr(
        predictor, "probabilities", lambda images, *rest: predicted.append(len(images)) or probabilities(images, *rest)
    )
    monkeypatch.setattr(evaluate_module, "make_predictor", lambda *args, **options: predictor)
    run = tmp_path / "run"
    save_split(RunFolder(run).split_path, {"train": ["p0"], "val": ["p1", "p2"], "test": ["p3"]})

    with caplog.at_level("INFO", logger="pixelwise"):
        result = evaluate_module.evaluate_run(run, cache_dir=tmp_path / "cache")
    assert predicted == [1, 2]  # the test image, then the validation images for the curve
    assert "predicting 2 validation images for the threshold curve" in caplog.text
    assert 'alt="threshold sweep"' in (result.folder / "report.html").read_text()

    predicted.clear()
    outcome = CliRunner().invoke(
        app,
        ["evaluate", str(run), "--no-threshold-curve", "--cache-dir", str(tmp_path / "cache")],
        catch_exceptions=False,
    )
    assert outcome.exit_code == 0, outcome.output
    assert predicted == [1]  # the test image only
    text = (run / "eval-test" / "report.html").read_text()
    assert "Threshold curve not drawn" in text and 'alt="threshold sweep"' not in text


def test_score_reads_a_predict_output_folder_as_it_is(tmp_path):
    """`predict --out P` writes X_mask.png and X_overlay.png; `score TRUTH P` scores the masks (it refused:
    '2 predictions for image X'). Truth masks may use any suffix that data sets use, e.g. _seg."""
    from pixelwise.evaluate.score import score_folders

    inputs = tmp_path / "in"
    squares_image(inputs / "three.png")
    squares_image(inputs / "one.png", squares=((20, 20, 16),))
    out = tmp_path / "out"
    predict_files(brightness_predictor(tmp_path), [inputs], out)
    assert (out / "three_overlay.png").exists()
    truth = tmp_path / "truth"
    truth.mkdir()
    for stem in ("three", "one"):
        Image.fromarray(read_png(out / f"{stem}_mask.png")).save(truth / f"{stem}_seg.png")
    result = score_folders(truth, out, progress=False)
    assert [r["id"] for r in result.rows] == ["one", "three"]
    assert all(r["prediction_file"].endswith("_mask.png") for r in result.rows)
    assert all(r["dice"] == 1.0 for r in result.rows)
    assert result.unmatched_predictions == []


def test_two_shards_give_exactly_the_outputs_of_one_unsharded_run(tmp_path):
    from pixelwise.predict.predict import Shard, merge_instance_shards

    inputs = tmp_path / "in"
    for i in range(5):
        squares_image(inputs / f"img{i}.png", squares=((4 + i, 4, 20), (40, 40 - i, 12)))
    predictor = brightness_predictor(tmp_path)
    predict_files(predictor, [inputs], tmp_path / "whole", instances=True)
    for index in (0, 1):
        predict_files(
            predictor, [inputs], tmp_path / "sharded", instances=True, shard=Shard(index, 2), skip_existing=True
        )
    merge_instance_shards(tmp_path / "sharded")
    whole = {p.name: p.read_bytes() for p in (tmp_path / "whole").iterdir()}
    sharded = {p.name: p.read_bytes() for p in (tmp_path / "sharded").iterdir() if "shard-" not in p.name}
    assert whole.keys() == sharded.keys() and len(whole) == 11
    assert all(whole[name] == sharded[name] for name in whole if name != "instances.csv")
    assert sorted(whole["instances.csv"].splitlines()) == sorted(sharded["instances.csv"].splitlines())
    # A re-run (a killed job started again) skips what exists and changes nothing.
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sharded").iterdir()}
    assert predict_files(predictor, [inputs], tmp_path / "sharded", shard=Shard(0, 2), skip_existing=True) == []
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sharded").iterdir()} == before
    assert Shard.parse("1/4") == Shard(1, 4)
    with pytest.raises(PixelwiseError, match="--shard"):
        Shard.parse("4/4")


def test_shard_auto_reads_slurm_array_and_torchrun_variables(monkeypatch):
    from pixelwise.predict.predict import Shard

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    assert Shard.parse("auto") == Shard(2, 4)
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert Shard.parse("auto") == Shard(1, 2)
