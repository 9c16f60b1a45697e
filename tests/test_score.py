"""Tests for `pixelwise score`: pairing, binarisation, output files, agreement with the official ISIC scorer."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pixelwise.cli import score
from pixelwise.errors import PixelwiseError
from pixelwise.evaluate.score import (
    mask_id,
    pair_masks,
    prediction_matches,
    read_binary_mask,
    score_folders,
    write_rows_csv,
)
from pixelwise.metrics import METRIC_KEYS, OVERLAP_KEYS

SHAPE = (120, 160)


def _save(path, mask, mode="255"):
    """Save a bool mask as 0/255 grey PNG ("255"), 0/1 grey ("01") or a 2-colour palette PNG ("P")."""
    if mode == "255":
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    elif mode == "01":
        Image.fromarray(mask.astype(np.uint8)).save(path)
    else:
        image = Image.fromarray(mask.astype(np.uint8), mode="L").convert("P")
        image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        image.save(path)


def _ellipse(center=(60, 80), axes=(35, 50)):
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return ((yy - center[0]) / axes[0]) ** 2 + ((xx - center[1]) / axes[1]) ** 2 <= 1


def _varied_cases():
    """(truth, prediction) pairs covering the error kinds the ISIC conventions must handle."""
    lesion = _ellipse()
    holed = lesion.copy()
    holed[50:70, 60:90] = False
    empty = np.zeros(SHAPE, bool)
    return [
        (lesion, lesion),  # perfect
        (lesion, np.roll(lesion, 6, axis=1)),  # shift
        (lesion, np.roll(np.roll(lesion, 25, axis=0), 30, axis=1)),  # big shift: Jaccard < 0.65
        (lesion, ndimage.binary_dilation(lesion, iterations=5)),  # dilation
        (lesion, ndimage.binary_erosion(lesion, iterations=7)),  # erosion
        (lesion, holed),  # holes
        (lesion, empty),  # empty prediction
        (empty, _ellipse(axes=(8, 8))),  # empty truth, false positive
        (empty, empty),  # both empty
        (np.ones(SHAPE, bool), lesion),  # no truth negatives
    ]


def test_mask_id_strips_one_mask_suffix():
    assert mask_id("ISIC_0000000_segmentation") == "ISIC_0000000"
    assert mask_id("ISIC_0000000_Segmentation") == "ISIC_0000000"
    assert mask_id("IMD002_lesion") == "IMD002"
    assert mask_id("IMD002") == "IMD002"
    assert mask_id("case7_mask") == "case7"
    assert mask_id("case7_label") == "case7"
    assert mask_id("masked_image") == "masked_image"  # suffix only at the end


def test_prediction_matching_needs_a_separator():
    assert prediction_matches("IMD1", "IMD1")
    assert prediction_matches("IMD1_mask", "IMD1")
    assert prediction_matches("IMD1-pred", "IMD1")
    assert prediction_matches("IMD1.pred", "IMD1")
    assert not prediction_matches("IMD10_mask", "IMD1")
    assert not prediction_matches("IMD", "IMD1")


def test_pairing_prefers_the_longest_id_and_lists_strays(tmp_path):
    truth = [tmp_path / "IMD1_lesion.bmp", tmp_path / "IMD10_lesion.bmp", tmp_path / "a_mask.png", tmp_path / "a_b.png"]
    preds = [
        tmp_path / "IMD10_mask.png",
        tmp_path / "IMD1.png",
        tmp_path / "a_b_pred.png",
        tmp_path / "a.png",
        tmp_path / "other.png",
    ]
    pairs, unmatched = pair_masks(truth, preds)
    assert {image_id: pred.name for image_id, _, pred in pairs} == {
        "IMD1": "IMD1.png",
        "IMD10": "IMD10_mask.png",
        "a": "a.png",
        "a_b": "a_b_pred.png",
    }
    assert [p.name for p in unmatched] == ["other.png"]


def test_pairing_errors_name_the_truth(tmp_path):
    with pytest.raises(PixelwiseError, match="IMD3_lesion.bmp.*no prediction"):
        pair_masks([tmp_path / "IMD3_lesion.bmp"], [tmp_path / "IMD4.png"])
    with pytest.raises(PixelwiseError, match="IMD3_lesion.bmp.*2 predictions"):
        pair_masks([tmp_path / "IMD3_lesion.bmp"], [tmp_path / "IMD3.png", tmp_path / "IMD3_v2.png"])
    with pytest.raises(PixelwiseError, match="same image ID"):
        pair_masks([tmp_path / "IMD3_lesion.bmp", tmp_path / "IMD3.bmp"], [])


@pytest.mark.parametrize("mode", ["255", "01", "P"])
def test_read_binary_mask_binarises_every_encoding(tmp_path, mode):
    lesion = _ellipse()
    _save(tmp_path / "m.png", lesion, mode)
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "m.png"), lesion)


def test_score_folders_errors_and_size_mismatch(tmp_path):
    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    with pytest.raises(PixelwiseError, match="no mask images"):
        score_folders(tmp_path / "truth", tmp_path / "pred", progress=False)
    with pytest.raises(PixelwiseError, match="not found"):
        score_folders(tmp_path / "nope", tmp_path / "pred", progress=False)
    _save(tmp_path / "truth" / "x_mask.png", _ellipse())
    _save(tmp_path / "pred" / "x.png", np.zeros((60, 80), bool))
    with pytest.raises(PixelwiseError, match="x.png.*80×60.*160×120"):
        score_folders(tmp_path / "truth", tmp_path / "pred", progress=False)


def _write_isic_folders(tmp_path):
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    truth_dir.mkdir()
    pred_dir.mkdir()
    for index, (truth, pred) in enumerate(_varied_cases()):
        image_id = f"ISIC_{index:07d}"
        _save(truth_dir / f"{image_id}_segmentation.png", truth)
        _save(pred_dir / f"{image_id}_segmentation.png", pred)
    return truth_dir, pred_dir


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # pandas deprecation inside the scorer
def test_agrees_with_official_isic_scorer(tmp_path):
    segmentation = pytest.importorskip("isic_challenge_scoring.segmentation")
    from isic_challenge_scoring import metrics as isic_metrics
    from isic_challenge_scoring.confusion import create_binary_confusion_matrix
    from isic_challenge_scoring.load_image import iter_image_pairs

    truth_dir, pred_dir = _write_isic_folders(tmp_path)
    ours = {row["id"]: row for row in score_folders(truth_dir, pred_dir, progress=False).rows}
    reference_functions = {
        "accuracy": isic_metrics.binary_accuracy,
        "sensitivity": isic_metrics.binary_sensitivity,
        "specificity": isic_metrics.binary_specificity,
        "jaccard": isic_metrics.binary_jaccard,
        "threshold_jaccard": isic_metrics.binary_threshold_jaccard,
        "dice": isic_metrics.binary_dice,
    }
    compared = 0
    for pair in iter_image_pairs(truth_dir, pred_dir):  # the scorer's own file pairing and loading
        cm = create_binary_confusion_matrix(pair.truth_image > 128, pair.prediction_image > 128)
        for key, function in reference_functions.items():
            assert ours[pair.image_id][key] == pytest.approx(function(cm), abs=1e-6), (pair.image_id, key)
            compared += 1
    assert compared == len(_varied_cases()) * len(OVERLAP_KEYS)
    # The cases cover both sides of the 0.65 Jaccard threshold and the empty-mask conventions.
    assert any(0 < row["jaccard"] < 0.65 for row in ours.values())
    assert ours["ISIC_0000008"]["dice"] == 1.0 and ours["ISIC_0000007"]["dice"] == 0.0

    reference_means = segmentation.SegmentationScore.from_dir(truth_dir, pred_dir).macro_average
    summary = score_folders(truth_dir, pred_dir, progress=False).summary
    for key in OVERLAP_KEYS:
        assert summary["mean"][key] == pytest.approx(reference_means[key], abs=1e-6), key


def test_score_command_writes_json_and_csv(tmp_path, capsys):
    truth_dir, pred_dir = _write_isic_folders(tmp_path)
    _save(pred_dir / "stray_prediction.png", _ellipse())
    out_json, out_csv = tmp_path / "out" / "score.json", tmp_path / "out" / "score.csv"
    score(truth_dir, pred_dir, json=out_json, csv=out_csv, nsd_tolerance=2.0, pixel_size=None)
    printed = capsys.readouterr().out
    assert "stray_prediction.png" in printed and "dice" in printed
    document = json.loads(out_json.read_text())  # strict JSON: NaN must have become null
    assert len(document["images"]) == len(_varied_cases())
    assert set(document["images"][0]) == {"id", *METRIC_KEYS}
    assert set(document["mean"]) == set(METRIC_KEYS)
    dice = [image["dice"] for image in document["images"]]
    assert document["mean"]["dice"] == pytest.approx(np.mean(dice))
    # distance metrics are missing (null), never 0, for the three cases with an empty mask
    assert sum(image["hd95"] is None for image in document["images"]) == 3
    hd95 = [image["hd95"] for image in document["images"] if image["hd95"] is not None]
    assert document["mean"]["hd95"] == pytest.approx(np.mean(hd95))
    lines = out_csv.read_text().splitlines()
    header = lines[0].split(",")
    assert header[0] == "id" and {"tp", "fp", "fn", "tn", "prediction_file"} <= set(header)
    assert len(lines) == 1 + len(_varied_cases())


def test_pixel_size_adds_hd95_mm(tmp_path):
    truth_dir, pred_dir = _write_isic_folders(tmp_path)
    result = score_folders(truth_dir, pred_dir, pixel_size_mm=0.5, progress=False)
    shifted = next(row for row in result.rows if row["id"] == "ISIC_0000001")
    assert shifted["hd95_mm"] == pytest.approx(shifted["hd95"] * 0.5)
    assert "hd95_mm" in result.summary["mean"]


def test_write_rows_csv_keeps_precision_and_blanks_nan(tmp_path):
    path = write_rows_csv(
        tmp_path / "rows.csv", [{"id": "a", "dice": 1 / 3, "hd95": math.nan}, {"id": "b", "extra": 2}]
    )
    lines = path.read_text().splitlines()
    assert lines[0] == "id,dice,hd95,extra"
    assert lines[1] == f"a,{1 / 3!r},,"
    assert lines[2] == "b,,,2"


def test_one_mask_naming_rule_for_data_sets_and_score():
    from pixelwise.data.naming import MASK_SUFFIXES

    for suffix in MASK_SUFFIXES:
        assert mask_id(f"case7{suffix}") == "case7", suffix
        assert mask_id(f"case7{suffix.upper()}") == "case7", suffix
