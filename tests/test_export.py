"""ONNX export and the onnxruntime engine: same logits and masks as torch, dynamic shapes, clear errors."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pixelwise.cli import app
from pixelwise.data.augment import build_augment
from pixelwise.data.synth import sample_rng, synth_sample
from pixelwise.deploy.contract import sidecar_path
from pixelwise.deploy.onnx_export import export_run
from pixelwise.errors import PixelwiseError
from pixelwise.losses import build_loss
from pixelwise.models import build_model
from pixelwise.predict.onnx_engine import onnx_predictor
from pixelwise.predict.torch_engine import torch_predictor
from pixelwise.runs import RunFolder, load_weights, save_weights
from pixelwise.runtime import normalize, to_unit
from pixelwise.train.loop import train_step

from tiny_run import trained_config

SIZE = 64
THRESHOLD = 0.4  # not 0.5, so that a consumer reading the default instead of the sidecar would be caught


def synth_batch(n: int, size: int = SIZE, first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-looking uint8 images N×3×S×S and their 0/1 masks N×S×S from the synthetic set."""
    samples = [synth_sample(sample_rng(7, first + i), size) for i in range(n)]
    images = torch.from_numpy(np.stack([image.transpose(2, 0, 1) for image, _ in samples]))
    masks = torch.from_numpy(np.stack([mask for _, mask in samples]))
    return images, masks


def make_run(folder: Path, model: str = "unet", folds: int | None = None, steps: int = 4) -> Path:
    """A fp32 run folder whose weights took a few AdamW steps on synthetic images (logits not all near 0)."""
    config = trained_config(2, threshold=THRESHOLD, model=model, folds=folds, batch_size=8)
    images, masks = synth_batch(8)
    identity = build_augment("none")
    folder.mkdir(parents=True)
    for fold in range(folds or 1):
        torch.manual_seed(fold)
        net = build_model(model, 2)
        optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
        for _ in range(steps):
            train_step(
                net, optimizer, build_loss("bce+dice"), identity, images, masks, config.record, torch.device("cpu")
            )
        save_weights(net, (RunFolder(folder).fold(fold) if folds else RunFolder(folder)).weights_path)
    RunFolder(folder).write_config(config)
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is as fast, and immune to the other core being busy (shared CI machines)."""
    threads, env = torch.get_num_threads(), os.environ.get("PIXELWISE_THREADS")
    torch.set_num_threads(1)
    os.environ["PIXELWISE_THREADS"] = "1"  # what the CLI commands and onnxruntime sessions use
    yield
    torch.set_num_threads(threads)
    if env is None:
        del os.environ["PIXELWISE_THREADS"]
    else:
        os.environ["PIXELWISE_THREADS"] = env


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("export") / "run")
    export_run(run)
    return run


def torch_logits(run: Path, unit: torch.Tensor) -> np.ndarray:
    """fp32 eager logits of a run's model for float 0..1 images N×3×H×W."""
    config = RunFolder(run).load_config()
    net = load_weights(build_model(config.recipe.model, 2), RunFolder(run).weights_path).eval()
    with torch.no_grad():
        return net(normalize(unit, config.record.mean, config.record.std)).numpy()


def onnx_logits(path: Path, unit: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": unit.numpy()})[0]


def test_sidecar_tells_a_consumer_everything(exported):
    path = exported / "model.onnx"
    meta = json.loads(sidecar_path(path).read_text())
    config = json.loads((exported / "config.json").read_text())["record"]
    assert meta["input"]["range"] == [0.0, 1.0] and meta["input"]["layout"] == "NCHW"
    assert meta["normalization"]["mean"] == config["mean"] and meta["normalization"]["std"] == config["std"]
    assert meta["threshold"] == THRESHOLD and meta["num_classes"] == 2 and meta["output"]["channels"] == 1
    assert meta["size"] == SIZE and meta["stride"] == 16
    graph = onnx.load(str(path))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True], "N, H, W dynamic; channels fixed"


@pytest.mark.parametrize("shape", [(1, SIZE, SIZE), (3, 96, 128), (2, 70, 90)])
def test_onnx_logits_match_torch_on_random_and_real_looking_images(exported, shape):
    n, height, width = shape
    random_unit = torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(n))
    images, _ = synth_batch(n, size=max(height, width))
    real_unit = to_unit(images[:, :, :height, :width].contiguous())
    for unit in (random_unit, real_unit):
        expected = torch_logits(exported, unit)
        got = onnx_logits(exported / "model.onnx", unit)
        assert got.shape == (n, 1, height, width)
        assert np.abs(got - expected).max() < 1e-3
        # Same masks wherever the logit is not within the float tolerance of the threshold's logit.
        cut = np.log(THRESHOLD / (1 - THRESHOLD))
        clear = np.abs(expected - cut) > 1e-3
        assert np.array_equal((got > cut)[clear], (expected > cut)[clear])
        assert clear.mean() > 0.99


def test_predict_cli_gives_identical_masks_with_both_engines(exported, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    images, _ = synth_batch(3, size=80, first=20)
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        # One image at another size and aspect, resized by predict like any input.
        Image.fromarray(image if i else image[:60]).save(inputs / f"case{i}.png")
    runner = CliRunner()
    masks = {}
    for engine in ("torch", "onnx"):
        result = runner.invoke(
            app,
            ["predict", str(exported), str(inputs), "--out", str(tmp_path / engine), "--engine", engine, "--tta"],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        masks[engine] = {p.name: np.asarray(Image.open(p)) for p in sorted((tmp_path / engine).glob("*_mask.png"))}
    assert list(masks["torch"]) == list(masks["onnx"]) and len(masks["onnx"]) == 3
    for name, mask in masks["torch"].items():
        assert np.array_equal(mask, masks["onnx"][name]), name
    assert any(0 < (m > 0).mean() < 1 for m in masks["onnx"].values()), "masks should not be all one class"


def test_onnx_engine_matches_torch_engine_probabilities_with_tta(exported):
    images, _ = synth_batch(2, first=40)
    expected = torch_predictor(exported, tta="d4").probabilities(images)
    got = onnx_predictor(exported, tta="d4").probabilities(images)
    assert got.shape == expected.shape == (2, 1, SIZE, SIZE)
    assert (got - expected).abs().max() < 1e-4


def test_missing_or_stale_export_is_a_clear_error(exported, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(exported, run)
    (run / "model.onnx").unlink()
    with pytest.raises(PixelwiseError, match="pixelwise export"):
        onnx_predictor(run)
    shutil.copy(exported / "model.onnx", run / "model.onnx")
    onnx_predictor(run)  # current again
    net = build_model("unet", 2)
    save_weights(net, RunFolder(run).weights_path)  # training went on: other weights
    with pytest.raises(PixelwiseError, match="other weights"):
        onnx_predictor(run)


def test_kfold_run_exports_every_fold_and_averages_them(tmp_path):
    run = make_run(tmp_path / "kfold", folds=2, steps=1)
    written = export_run(run)
    assert written == [run / "model.fold_0.onnx", run / "model.fold_1.onnx"]
    assert [json.loads(sidecar_path(p).read_text())["fold"] for p in written] == [0, 1]
    images, _ = synth_batch(2, first=50)
    expected = torch_predictor(run).probabilities(images)
    single = torch_predictor(run, fold=0).probabilities(images)
    got = onnx_predictor(run).probabilities(images)
    assert (got - expected).abs().max() < 1e-4
    assert (single - expected).abs().max() > 1e-3, "the folds differ, so averaging is what is tested"


def test_out_file_and_bad_format(exported, tmp_path):
    out = tmp_path / "deploy" / "lesion.onnx"
    result = CliRunner().invoke(app, ["export", str(exported), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    unit = torch.rand(1, 3, 48, 80)
    assert np.abs(onnx_logits(out, unit) - torch_logits(exported, unit)).max() < 1e-3
    assert json.loads(sidecar_path(out).read_text())["threshold"] == THRESHOLD
    with pytest.raises(PixelwiseError, match="format"):
        export_run(exported, tmp_path / "x.onnx", fmt="tflite")
    with pytest.raises(PixelwiseError, match="opset"):
        export_run(exported, tmp_path / "x.onnx", opset=13)


def test_monai_resnet_shortcuts_export_with_a_dynamic_batch(tmp_path):
    # MONAI's ResNet builds its zero-padded shortcut with the traced batch and size as constants; the
    # export swaps it for a traceable equivalent, and its own check runs a batch of 3 at another size.
    run = make_run(tmp_path / "resnet", model="resnet18_unet", steps=1)
    (path,) = export_run(run)
    unit = torch.rand(4, 3, 96, 64)
    assert np.abs(onnx_logits(path, unit) - torch_logits(run, unit)).max() < 1e-3


def test_fp32_torch_and_onnx_give_identical_masks_even_for_a_fast_mode_run(tmp_path):
    """A run trained in fast mode (bf16) is still predicted in fp32 by default, so both engines agree."""
    run = make_run(tmp_path / "fast")
    config = RunFolder(run).load_config()
    RunFolder(run).write_config(replace(config, record=config.record.replace(fast=True)))
    export_run(run)
    images, _ = synth_batch(3, first=60)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(inputs / f"i{i}.png")
    masks = {}
    for engine in ("torch", "onnx"):
        result = CliRunner().invoke(
            app,
            ["predict", str(run), str(inputs), "--out", str(tmp_path / engine), "--engine", engine],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        masks[engine] = [np.asarray(Image.open(p)) for p in sorted((tmp_path / engine).glob("*_mask.png"))]
    assert len(masks["torch"]) == 3
    assert all(np.array_equal(a, b) for a, b in zip(masks["torch"], masks["onnx"]))
    result = CliRunner().invoke(
        app,
        ["predict", str(run), str(inputs), "--out", str(tmp_path / "bf16"), "--precision", "bf16"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app, ["predict", str(run), str(inputs), "--out", str(tmp_path / "x"), "--engine", "onnx", "--precision", "bf16"]
    )
    assert result.exit_code != 0 and "fp32 only" in str(result.exception)


def test_onnx_evaluation_of_a_kfold_run_is_out_of_fold(tmp_path, monkeypatch):
    """Each fold's test images are scored by that fold's own model with either engine (was: the averaged
    ensemble, whose other members trained on them)."""
    from pixelwise.data.split import save_split
    from pixelwise.evaluate import evaluate as evaluate_module

    run = make_run(tmp_path / "kfold", folds=2, steps=1)
    data = tmp_path / "data"
    images, masks = synth_batch(4, first=70)
    for i, (image, mask) in enumerate(zip(images, masks)):
        (data / "images").mkdir(parents=True, exist_ok=True)
        (data / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(data / "images" / f"s{i}.png")
        Image.fromarray(mask.numpy() * 255).save(data / "masks" / f"s{i}.png")
    config = RunFolder(run).load_config()
    RunFolder(run).write_config(
        replace(config, recipe=config.recipe.replace(data=str(data), cache_dir=str(tmp_path / "cache")))
    )
    for fold, test_ids in enumerate((["s0", "s1"], ["s2", "s3"])):
        others = [i for i in ("s0", "s1", "s2", "s3") if i not in test_ids]
        save_split(
            RunFolder(run).fold(fold).split_path,
            {"train": others[:1], "val": others[1:], "test": test_ids},
            seed=0,
            data=str(data),
            folds=2,
            fold=fold,
        )
    export_run(run)
    calls = []
    real = evaluate_module.make_predictor

    def spy(run_path, engine, tta="none", precision="fp32", fold=None):
        calls.append((engine, fold))
        return real(run_path, engine, tta, precision, fold=fold)

    monkeypatch.setattr(evaluate_module, "make_predictor", spy)
    rows = {}
    for engine in ("torch", "onnx"):
        result = evaluate_module.evaluate_run(run, engine=engine, cache_dir=tmp_path / "cache")
        rows[engine] = {r["id"]: r["dice"] for r in result.rows}
    assert ("onnx", 0) in calls and ("onnx", 1) in calls
    assert rows["torch"].keys() == rows["onnx"].keys() == {"s0", "s1", "s2", "s3"}
    for image_id, dice in rows["torch"].items():
        assert abs(dice - rows["onnx"][image_id]) < 1e-3, image_id
