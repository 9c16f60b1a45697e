"""The Python API: ``pixelwise.load(RUN).predict(image)`` gives predict's masks and PNG bytes, whatever the
input type, in batches and from many threads at once."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import pixelwise
from pixelwise.api import Segmentation, Segmenter
from pixelwise.cli import app
from pixelwise.data.imageio import read_image
from pixelwise.errors import PixelwiseError

from tiny_run import SIZE, THRESHOLD, make_tiny_run, synth_image, write_images


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("api") / "run")


@pytest.fixture(scope="module")
def seg(run) -> Segmenter:
    return pixelwise.load(run)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("api-images") / "in")


@pytest.fixture(scope="module")
def predicted(run, images, tmp_path_factory) -> Path:
    """`pixelwise predict` on the images: the reference masks and overlays."""
    out = tmp_path_factory.mktemp("api-predict") / "out"
    result = CliRunner().invoke(
        app, ["predict", str(run), str(images[0].parent), "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return out


def test_load_describes_the_run(seg, run):
    assert seg.run == run and seg.size == SIZE and seg.threshold == THRESHOLD
    assert seg.class_names == ("background", "foreground") and seg.num_classes == 2
    assert len(seg.class_colors) == 2 and all(len(rgb) == 3 for rgb in seg.class_colors)
    assert (seg.engine, seg.precision, seg.tta) == ("torch", "fp32", "d4-zoom")
    assert "unet" in repr(seg)


def test_path_pil_array_and_bytes_give_identical_masks(seg, images):
    path = images[1]
    by_path = seg.predict(path)
    by_str = seg.predict(str(path))
    by_pil = seg.predict(Image.open(path))
    by_array = seg.predict(read_image(path))
    by_bytes = seg.predict(path.read_bytes())
    assert by_path.mask.shape == (80, 120) and by_path.mask.dtype == np.uint8
    for other in (by_str, by_pil, by_array, by_bytes):
        assert np.array_equal(other.mask, by_path.mask)
    assert set(np.unique(by_path.mask).tolist()) <= {0, 1}
    assert 0 < by_path.mask.mean() < 1, "a few training steps: masks are neither empty nor full"


def test_png_bytes_and_overlay_are_exactly_what_predict_writes(seg, images, predicted):
    for path in images:
        result = seg.predict(path)
        assert result.png_bytes() == (predicted / f"{path.stem}_mask.png").read_bytes(), path.name
        overlay = np.asarray(Image.open(predicted / f"{path.stem}_overlay.png"))
        assert np.array_equal(result.overlay(), overlay)
        assert result.overlay().dtype == np.uint8 and result.overlay().shape == (*result.mask.shape, 3)
        assert result.overlay_png_bytes() == (predicted / f"{path.stem}_overlay.png").read_bytes()


def test_result_fields(seg, images):
    result = seg.predict(images[2])
    assert isinstance(result, Segmentation)
    assert result.probabilities is None
    assert result.threshold == THRESHOLD and result.class_names == ("background", "foreground")
    counts = result.pixel_counts
    assert list(counts) == ["background", "foreground"] and sum(counts.values()) == 130 * 70
    assert counts["foreground"] == int(result.mask.sum())
    summary = result.summary()
    assert (summary["width"], summary["height"]) == (70, 130)
    assert summary["classes"][1]["pixels"] == counts["foreground"]
    png = np.asarray(Image.open(io.BytesIO(result.png_bytes())))
    assert png.dtype == np.uint8 and set(np.unique(png).tolist()) <= {0, 255}
    assert np.array_equal(png > 0, result.mask > 0)


def test_probabilities_at_the_input_size_agree_with_the_mask(seg, images):
    plain = seg.predict(images[1])
    result = seg.predict(images[1], probabilities=True)
    probs = result.probabilities
    assert probs.dtype == np.float32 and probs.shape == (2, 80, 120)
    assert probs.min() >= 0 and probs.max() <= 1 and np.allclose(probs.sum(0), 1, atol=1e-6)
    assert np.array_equal(result.mask, plain.mask)
    assert np.array_equal(result.mask, (probs[1] > THRESHOLD).astype(np.uint8))


def test_predict_batch_equals_predict_on_each(seg, images):
    inputs = [images[0], Image.open(images[1]), read_image(images[2]), synth_image(5, 50)]
    batch = seg.predict_batch(inputs)
    assert len(batch) == 4
    for item, image in zip(batch, inputs):
        assert np.array_equal(item.mask, seg.predict(image).mask)
    small = seg.predict_batch(inputs, batch_size=3)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(batch, small))
    assert seg.predict_batch([]) == []


def test_concurrent_threads_get_the_same_results(seg, images):
    inputs = [images[i % 3] for i in range(12)]
    expected = [seg.predict(path).png_bytes() for path in images]
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(lambda path: seg.predict(path).png_bytes(), inputs))
    assert got == [expected[i % 3] for i in range(12)]


def test_post_processing_options(run, images):
    plain = pixelwise.load(run).predict(images[0])
    largest = pixelwise.load(run, keep_largest=True).predict(images[0])
    from scipy import ndimage

    assert ndimage.label(largest.mask, structure=np.ones((3, 3)))[1] <= 1
    assert largest.pixel_counts["foreground"] <= plain.pixel_counts["foreground"]


def test_tta_and_bf16_run(run, images):
    tta = pixelwise.load(run, tta=True)
    assert tta.tta == "d4-zoom"
    result = tta.predict(images[0])
    assert result.mask.shape == (96, 96)
    bf16 = pixelwise.load(run, precision="bf16").predict(images[0])
    assert (bf16.mask != seg_mask(run, images[0])).mean() < 0.05


def seg_mask(run, image):
    return pixelwise.load(run).predict(image).mask


def test_multiclass_run_names_and_indices(tmp_path, images):
    run = make_tiny_run(tmp_path / "three", steps=1, num_classes=3, class_names=("skin", "lesion", "ruler"))
    seg = pixelwise.load(run)
    result = seg.predict(images[0], probabilities=True)
    assert result.class_names == ("skin", "lesion", "ruler")
    assert result.probabilities.shape == (3, 96, 96)
    assert np.array_equal(result.mask, result.probabilities.argmax(0))
    png = Image.open(io.BytesIO(result.png_bytes()))
    assert png.mode == "P", "multi-class masks are palette PNGs"
    assert np.array_equal(np.asarray(png), result.mask), "multi-class PNGs hold the class indices"
    assert seg.class_names == ("skin", "lesion", "ruler") and len(seg.class_colors) == 3
    assert result.class_colors == seg.class_colors
    assert png.getpalette()[:9] == [c for rgb in seg.class_colors for c in rgb], "the palette: the class colours"
    assert list(result.pixel_counts) == ["skin", "lesion", "ruler"]
    assert sum(result.class_fractions.values()) == pytest.approx(1.0)
    overlay = result.overlay()
    assert overlay.shape == result.image.shape and not np.array_equal(overlay, result.image)


def test_bad_inputs_are_clear_errors(seg, run, tmp_path):
    with pytest.raises(PixelwiseError, match="file not found"):
        seg.predict(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(PixelwiseError, match="not a readable image"):
        seg.predict(tmp_path / "notes.png")
    with pytest.raises(TypeError, match="uint8"):
        seg.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="H×W×3"):
        seg.predict(np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError, match="cannot segment"):
        seg.predict(42)
    with pytest.raises(PixelwiseError, match="engine"):
        pixelwise.load(run, engine="tensorrt")
    with pytest.raises(PixelwiseError, match="precision"):
        pixelwise.load(run, precision="fp8")
    with pytest.raises(PixelwiseError, match="pixelwise export"):
        pixelwise.load(run, engine="onnx")
    with pytest.raises(PixelwiseError, match="not a pixelwise run|does not exist"):
        pixelwise.load(tmp_path)


def test_array_input_is_copied(seg, images):
    array = read_image(images[0])
    result = seg.predict(array)
    array[:] = 0
    assert not np.array_equal(result.overlay()[..., 0], np.zeros_like(array[..., 0]))


def test_a_run_folder_written_before_recipe_and_record_were_split_still_loads(tmp_path, images):
    """Old config.json: one flat object, the learned values beside the options and an untyped ``extra``."""
    import json

    from pixelwise.runs import RunFolder

    run = make_tiny_run(tmp_path / "old", steps=1)
    new = json.loads((run / "config.json").read_text())
    flat = {
        **new["recipe"],
        "num_classes": 2,
        "classes": None,
        "threshold": THRESHOLD,
        "size": SIZE,
        "mean": new["record"]["mean"],
        "std": new["record"]["std"],
        "fast": False,
        "extra": {"kept_epoch": 3, "best_val_dice": 0.91, "augment_params": {"p": 1}, "unknown": "kept out"},
    }
    (run / "config.json").write_text(json.dumps(flat))
    config = RunFolder(run).load_trained_config()
    assert config.recipe.model == "unet" and config.record.size == SIZE and config.record.threshold == THRESHOLD
    assert config.record.kept_epoch == 3 and config.record.best_val_dice == 0.91
    assert config.class_map().names == ("background", "foreground")
    assert pixelwise.load(run).predict(images[0]).mask.shape == (96, 96)


def test_load_takes_any_tta_mode_by_name_and_refuses_unknown_ones(tmp_path):
    from pixelwise.errors import PixelwiseError

    run = make_tiny_run(tmp_path / "run", steps=1)
    assert pixelwise.load(run, tta="flips").tta == "flips"
    with pytest.raises(PixelwiseError, match="choose one of"):
        pixelwise.load(run, tta="sideways").predict(synth_image(0))
