"""`pixelwise score TRUTH PRED` on instance folders: every truth layout, `_instances.png` predictions and COCO
results, numbers equal to `instance_scores` on the same arrays and to pycocotools' COCOeval."""

import contextlib
import csv
import io
import json
import math

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pixelwise.data.naming import instances_id, predicted_instances_name
from pixelwise.errors import PixelwiseError
from pixelwise.evaluate.instance_metrics import coco_ground_truth, coco_results, instance_scores, write_coco_results
from pixelwise.evaluate.score import INSTANCE_ROW_KEYS, instance_predictions, score_instances

from cli_runner import run_cli

H, W = 48, 64
IDS = ("img_a", "img_b", "img_c")
LAYOUTS = ("id-pngs", "instance-masks", "dsb2018", "voc", "coco")
#: COCO image ids of the truth JSON: not the positions 1..N, so results must be mapped by the JSON's ids.
COCO_IMAGE_IDS = (10, 20, 30)
COCO_CATEGORY = 7


def boxes(*spans):
    """int32 H×W label image: object k + 1 covers spans[k] = (y0, y1, x0, x1)."""
    labels = np.zeros((H, W), np.int32)
    for object_id, (y0, y1, x0, x1) in enumerate(spans, start=1):
        labels[y0:y1, x0:x1] = object_id
    return labels


def truth_arrays():
    """Three images; img_a objects 1 and 2 touch, img_b objects 3 and 4 touch."""
    return {
        "img_a": boxes((4, 16, 4, 20), (4, 16, 20, 34), (24, 40, 8, 24), (28, 44, 40, 60)),
        "img_b": boxes((2, 12, 2, 14), (30, 46, 30, 50), (14, 26, 40, 60), (14, 26, 20, 40)),
        "img_c": boxes((6, 20, 6, 30), (26, 42, 36, 58)),
    }


def prediction_arrays(kind):
    truths = truth_arrays()
    if kind == "perfect":  # ids reversed: only the objects count, not their numbers
        return {key: np.where(t > 0, t.max() + 1 - t, 0) for key, t in truths.items()}
    preds = {key: t.copy() for key, t in truths.items()}
    if kind == "merged":  # each touching pair predicted as one object; img_c's objects one pixel thinner
        preds["img_a"][preds["img_a"] == 2] = 1
        preds["img_b"][preds["img_b"] == 4] = 3
        preds["img_c"][6:20, 6] = 0
        preds["img_c"][26, 36:58] = 0
        return preds
    assert kind == "missed"  # one object missed in img_a, another shifted by 3 pixels in img_b
    preds["img_a"][preds["img_a"] == 3] = 0
    shifted = np.roll(np.where(preds["img_b"] == 1, 1, 0), 3, axis=1)
    preds["img_b"][preds["img_b"] == 1] = 0
    preds["img_b"][shifted > 0] = 1
    return preds


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def save_palette(path, values):
    image = Image.fromarray(values.astype(np.uint8), mode="P")
    image.putpalette([(i * 37) % 256 for i in range(768)])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def rgb():
    return np.random.default_rng(0).integers(0, 255, size=(H, W, 3), dtype=np.uint8)


def write_truth(root, layout, truths):
    """Write ``truths`` (id → label image) in ``layout`` under ``root``; returns (truth path, void masks or None)."""
    if layout == "id-pngs":
        for key, labels in truths.items():
            save_png(root / f"{key}.png", labels.astype(np.uint8))
        return root, None
    if layout == "instance-masks":
        for key, labels in truths.items():
            save_png(root / "images" / f"{key}.png", rgb())
            save_png(root / "masks" / f"{key}_mask.png", labels.astype(np.uint8))
        return root, None
    if layout == "dsb2018":  # one 0/255 mask per object, file names in id order
        for key, labels in truths.items():
            save_png(root / key / "images" / f"{key}.png", np.dstack([rgb(), np.full((H, W), 255, np.uint8)]))
            for object_id in range(1, labels.max() + 1):
                save_png(root / key / "masks" / f"m{object_id:02d}.png", (labels == object_id).astype(np.uint8) * 255)
        return root, None
    if layout == "voc":  # a void line along the top; classes differ between objects (scored class-agnostic)
        voids = []
        for key, labels in truths.items():
            objects = labels.astype(np.uint8)
            classes = np.where(labels > 0, 1 + labels % 3 * 7, 0).astype(np.uint8)
            objects[0, :], classes[0, :] = 255, 255
            save_palette(root / "SegmentationObject" / f"{key}.png", objects)
            save_palette(root / "SegmentationClass" / f"{key}.png", classes)
            save_png(root / "JPEGImages" / f"{key}.jpg", rgb())
            void = np.zeros((H, W), bool)
            void[0, :] = True
            voids.append(void)
        return root, voids
    assert layout == "coco"
    images, annotations = [], []
    for (key, labels), image_id in zip(truths.items(), COCO_IMAGE_IDS):
        save_png(root / "val" / f"{key}.png", rgb())
        images.append({"id": image_id, "file_name": f"{key}.png", "height": H, "width": W})
        for object_id in range(1, labels.max() + 1):
            rle = mask_utils.encode(np.asfortranarray((labels == object_id).astype(np.uint8)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": COCO_CATEGORY,
                    "iscrowd": 0,
                    "segmentation": {"size": [H, W], "counts": rle["counts"].decode()},
                }
            )
    data = {"images": images, "annotations": annotations, "categories": [{"id": COCO_CATEGORY, "name": "cell"}]}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))
    return root, None


def write_predictions(folder, preds):
    for key, labels in preds.items():
        save_png(folder / predicted_instances_name(key), labels.astype(np.uint16 if labels.max() > 255 else np.uint8))
    return folder


def cocoeval_stats(truths, preds, pred_scores=None):
    """AP, AP50, AP75 of pycocotools' COCOeval (segm, maxDets 100, area all), class-agnostic."""
    ground_truth = COCO()
    ground_truth.dataset = coco_ground_truth(truths)
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(coco_results(preds, scores=pred_scores)), "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [math.nan if v == -1 else float(v) for v in evaluation.stats[:3]]


def assert_same(actual, expected):
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        assert actual is None or math.isnan(actual)
    else:
        assert actual == pytest.approx(expected, abs=1e-12)


def check_numbers(document, truths, preds, voids=None, pred_scores=None):
    """The JSON's numbers equal instance_scores on the arrays written, and AP equals COCOeval to 1e-6."""
    keys = sorted(truths)
    expected = instance_scores(
        [truths[k] for k in keys], [preds[k] for k in keys], ids=keys, voids=voids, pred_scores=pred_scores
    )
    numbers = document["instances"]
    for key in ("ap", "ap50", "ap75", "dsb", "pq", "sq", "rq", "n_images", "n_true", "n_pred"):
        assert_same(numbers[key], expected[key])
    for key, value in expected["stardist"][0].items():
        assert_same(numbers["stardist"][key], value)
    reference = cocoeval_stats([truths[k] for k in keys], [preds[k] for k in keys], pred_scores)
    for key, value in zip(("ap", "ap50", "ap75"), reference):
        assert numbers[key] == pytest.approx(value, abs=1e-6)
    for row, want in zip(document["images"], expected["images"], strict=True):
        for key in INSTANCE_ROW_KEYS:
            assert_same(row[key], want[key])
    return expected


# ----------------------------------------------------------------------------------------------------------------
# Every truth layout × perfect, merged and missed predictions, through the command


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_scores_like_instance_scores_and_cocoeval(tmp_path, layout, capsys, monkeypatch):
    truths = truth_arrays()
    truth_path, voids = write_truth(tmp_path / "truth", layout, truths)
    for kind in ("perfect", "merged", "missed"):
        preds = prediction_arrays(kind)
        pred_dir = write_predictions(tmp_path / kind, preds)
        out_json, out_csv = tmp_path / f"{kind}.json", tmp_path / f"{kind}.csv"
        code, output = run_cli(
            ["score", truth_path, pred_dir, "--json", out_json, "--csv", out_csv], capsys, monkeypatch
        )
        assert code == 0, output
        document = json.loads(out_json.read_text())
        assert document["layout"] == layout
        expected = check_numbers(document, truths, preds, voids)
        with open(out_csv, newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [row["id"] for row in rows] == list(IDS)
        assert list(rows[0]) == [*INSTANCE_ROW_KEYS, "truth_file", "prediction_file"]
        assert [int(row["tp"]) for row in rows] == [row["tp"] for row in expected["images"]]
        assert rows[0]["prediction_file"] == "img_a_instances.png"
        assert "ap50" in output and "tp / fp / fn @0.5" in output
        numbers = document["instances"]
        if kind == "perfect":
            assert numbers["ap"] == numbers["dsb"] == numbers["pq"] == 1.0
        elif kind == "merged":  # a merged pair matches one of its two at IoU ≥ 0.5: fp 0, fn 2 at τ 0.5
            assert document["images"][0]["n_pred"] == 3 and numbers["stardist"]["fn"] == 2
            assert numbers["ap"] < 1.0 and numbers["pq"] < 1.0
        else:
            assert document["images"][0]["fn"] == 1 and numbers["n_pred"] == numbers["n_true"] - 1


# ----------------------------------------------------------------------------------------------------------------
# uint16 predictions, COCO results


def grid_of_objects(count, shape=(64, 80), cell=4):
    """uint16 label image of ``count`` 3×3 squares on a grid of ``cell``-pixel cells."""
    labels = np.zeros(shape, np.uint16)
    columns = shape[1] // cell
    for k in range(count):
        y, x = divmod(k, columns)
        labels[y * cell : y * cell + 3, x * cell : x * cell + 3] = k + 1
    return labels


def test_uint16_predictions_with_more_than_255_objects(tmp_path):
    truth = {"many": grid_of_objects(300)}
    pred = {"many": truth["many"].copy()}
    pred["many"][pred["many"] > 290] = 0  # ten objects missed
    save_png(tmp_path / "truth" / "many.png", truth["many"])
    write_predictions(tmp_path / "pred", pred)
    with Image.open(tmp_path / "pred" / "many_instances.png") as image:
        assert image.mode == "I;16"
    result = score_instances(tmp_path / "truth", tmp_path / "pred", progress=False)
    assert result.rows[0]["n_true"] == 300 and result.rows[0]["n_pred"] == 290 and result.rows[0]["tp"] == 290
    check_numbers({"instances": result.scores, "images": result.rows}, truth, pred)
    assert result.scores["ap"] < 0.5  # COCO keeps 100 detections per image: a cut the numbers keep


@pytest.mark.parametrize("layout", ["dsb2018", "coco"])
def test_coco_results_with_scores(tmp_path, layout, capsys, monkeypatch):
    truths = truth_arrays()
    truth_path, _ = write_truth(tmp_path / "truth", layout, truths)
    preds = prediction_arrays("merged")
    preds["img_c"][:] = 0  # no detection at all in img_c: an empty prediction, not a missing one
    rng = np.random.default_rng(3)
    scores = [{int(i): float(rng.uniform(0.1, 1.0)) for i in np.unique(preds[k]) if i} for k in IDS]
    results_path = write_coco_results(tmp_path / "results.json", [preds[k] for k in IDS], scores=scores)
    entries = json.loads(results_path.read_text())
    for entry in entries:  # name images and categories as the truth does
        if layout == "coco":
            entry["image_id"] = COCO_IMAGE_IDS[entry["image_id"] - 1]
            entry["category_id"] = COCO_CATEGORY
    entries.append({**entries[0], "image_id": 99})  # an image the truth does not have
    results_path.write_text(json.dumps(entries))
    out_json = tmp_path / "scores.json"
    code, output = run_cli(
        ["score", truth_path, "--coco-results", results_path, "--json", out_json], capsys, monkeypatch
    )
    assert code == 0, output
    assert "1 prediction(s) without a truth image, ignored: image_id 99" in output
    check_numbers(json.loads(out_json.read_text()), truths, preds, pred_scores=scores)


# ----------------------------------------------------------------------------------------------------------------
# Mismatches: one line naming the file and the fix


def test_prediction_without_truth_is_listed(tmp_path, capsys, monkeypatch):
    truth_path, _ = write_truth(tmp_path / "truth", "id-pngs", truth_arrays())
    pred_dir = write_predictions(tmp_path / "pred", prediction_arrays("perfect"))
    save_png(pred_dir / "stray_instances.png", np.zeros((H, W), np.uint8))
    result = score_instances(truth_path, pred_dir, progress=False)
    assert [p.name for p in result.unmatched_predictions] == ["stray_instances.png"]
    code, output = run_cli(["score", truth_path, pred_dir], capsys, monkeypatch)
    assert code == 0 and "1 prediction(s) without a truth image, ignored: stray_instances.png" in output


def test_truth_without_prediction_names_the_first_ids(tmp_path, capsys, monkeypatch):
    truth_path, _ = write_truth(tmp_path / "truth", "dsb2018", truth_arrays())
    preds = prediction_arrays("perfect")
    pred_dir = write_predictions(tmp_path / "pred", {"img_a": preds["img_a"]})
    code, output = run_cli(["score", truth_path, pred_dir], capsys, monkeypatch)
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "no prediction for 2 of 3 truth images (img_b, img_c)" in lines[0]
    assert "img_b_instances.png" in lines[0]


def test_size_mismatch_names_both_files(tmp_path):
    truth_path, _ = write_truth(tmp_path / "truth", "instance-masks", truth_arrays())
    pred_dir = write_predictions(tmp_path / "pred", prediction_arrays("perfect"))
    save_png(pred_dir / "img_b_instances.png", np.zeros((H // 2, W // 2), np.uint8))
    with pytest.raises(PixelwiseError) as error:
        score_instances(truth_path, pred_dir, progress=False)
    message = str(error.value)
    assert str(pred_dir / "img_b_instances.png") in message and "img_b.png" in message
    assert "32×24" in message and "64×48" in message


def test_mask_options_and_missing_predictions_refused(tmp_path, capsys, monkeypatch):
    truth_path, _ = write_truth(tmp_path / "truth", "id-pngs", truth_arrays())
    pred_dir = write_predictions(tmp_path / "pred", prediction_arrays("perfect"))
    code, output = run_cli(["score", truth_path, pred_dir, "--ignore-index", "255"], capsys, monkeypatch)
    assert code == 2 and "--ignore-index: options of mask scoring" in output
    code, output = run_cli(["score", truth_path], capsys, monkeypatch)
    assert code == 2 and "no predictions given" in output
    with pytest.raises(PixelwiseError, match="no instance layout found"):
        score_instances(tmp_path / "pred" / "..", tmp_path / "pred", progress=False)  # folders only, no PNGs


def test_instance_suffix_decides_and_masks_stay_semantic(tmp_path):
    assert instances_id("cell_07_instances") == "cell_07" and instances_id("cell_07_mask") is None
    assert instances_id("_instances") is None
    pred_dir = tmp_path / "pred"
    save_png(pred_dir / "a_mask.png", np.zeros((H, W), np.uint8))
    assert instance_predictions(pred_dir) == []  # plain masks: the semantic scorer, as before
    save_png(pred_dir / "a_instances.png", np.zeros((H, W), np.uint8))
    assert [p.name for p in instance_predictions(pred_dir)] == ["a_instances.png"]
