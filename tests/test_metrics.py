"""Tests for pixelwise.metrics: confusion counts, ISIC overlap conventions."""

import numpy as np
import pytest
import torch

from pixelwise.metrics import confusion_counts, overlap_metrics


def _random_masks(n=5, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size)) > 0.6, rng.random((n, size, size)) > 0.5


def test_confusion_counts_match_definition_numpy_and_torch():
    pred, truth = _random_masks()
    counts = confusion_counts(pred, truth)
    assert counts.dtype == np.int64 and counts.shape == (5, 4)
    expected = np.stack(
        [
            (pred & truth).sum((1, 2)),
            (pred & ~truth).sum((1, 2)),
            (~pred & truth).sum((1, 2)),
            (~pred & ~truth).sum((1, 2)),
        ],
        axis=1,
    )
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(confusion_counts(torch.from_numpy(pred), torch.from_numpy(truth)), expected)
    # uint8 0/1 tensors count like bool, and one H×W pair gives one row
    np.testing.assert_array_equal(
        confusion_counts(torch.from_numpy(pred).to(torch.uint8), torch.from_numpy(truth).to(torch.uint8)), expected
    )
    np.testing.assert_array_equal(confusion_counts(pred[2], truth[2]), expected[2:3])


def test_confusion_counts_rejects_shape_mismatch():
    with pytest.raises(ValueError):
        confusion_counts(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_overlap_metrics_formulas():
    # tp=30 fp=10 fn=20 tn=40
    m = overlap_metrics(np.array([[30, 10, 20, 40]]))
    assert m["accuracy"][0] == pytest.approx(70 / 100)
    assert m["sensitivity"][0] == pytest.approx(30 / 50)
    assert m["specificity"][0] == pytest.approx(40 / 50)
    assert m["jaccard"][0] == pytest.approx(30 / 60)
    assert m["dice"][0] == pytest.approx(60 / 90)
    assert m["threshold_jaccard"][0] == 0.0  # 0.5 < 0.65
    m = overlap_metrics(np.array([65, 0, 35, 0]))
    assert m["jaccard"][0] == pytest.approx(0.65)
    assert m["threshold_jaccard"][0] == pytest.approx(0.65)  # kept at exactly 0.65
    assert m["specificity"][0] == 1.0  # no truth negatives


def test_overlap_metrics_empty_mask_conventions():
    empty = np.zeros((8, 8), bool)
    some = empty.copy()
    some[2:4, 2:4] = True
    both_empty = overlap_metrics(confusion_counts(empty, empty))
    assert both_empty["dice"][0] == 1.0 and both_empty["jaccard"][0] == 1.0
    assert both_empty["sensitivity"][0] == 1.0 and both_empty["threshold_jaccard"][0] == 1.0
    missed = overlap_metrics(confusion_counts(empty, some))  # nothing predicted
    assert missed["dice"][0] == 0.0 and missed["sensitivity"][0] == 0.0
    spurious = overlap_metrics(confusion_counts(some, empty))  # empty truth, something predicted
    assert spurious["dice"][0] == 0.0 and spurious["sensitivity"][0] == 1.0
    assert spurious["specificity"][0] == pytest.approx(60 / 64)


# ---- distances -------------------------------------------------------------------------------

from scipy import ndimage  # noqa: E402

from pixelwise.metrics import (  # noqa: E402
    METRIC_KEYS,
    choose_threshold,
    distance_metrics,
    image_metrics,
    multiclass_metrics,
    summarize,
    threshold_sweep,
)


def _disk(shape=(96, 128), center=(48, 64), radius=30):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 < radius**2


def test_hd95_of_a_shift_is_the_shift():
    truth = np.zeros((64, 64), bool)
    truth[10:40, 10:30] = True
    pred = np.roll(truth, 5, axis=1)  # vertical edges move 5 px; horizontal edges overlap
    d = distance_metrics(pred, truth, pixel_size_mm=0.1)
    assert d["hd95"] == pytest.approx(5.0)
    assert d["hd95_mm"] == pytest.approx(0.5)
    assert 0 < d["nsd"] < 1  # the horizontal edges are within 2 px, the moved vertical ones are not
    assert distance_metrics(truth, truth)["nsd"] == 1.0 and distance_metrics(truth, truth)["hd95"] == 0.0


@pytest.mark.filterwarnings("ignore::FutureWarning")  # monai deprecation notice, not ours
@pytest.mark.parametrize(
    "make_pred",
    [
        lambda t: np.roll(t, 7, axis=1),
        lambda t: ndimage.binary_dilation(t, iterations=4),
        lambda t: ndimage.binary_erosion(t, iterations=3) | _disk(center=(10, 10), radius=5),
    ],
)
def test_distance_metrics_agree_with_monai(make_pred):
    monai_metrics = pytest.importorskip("monai.metrics")  # reference implementation
    truth = _disk()
    pred = make_pred(truth)
    ours = distance_metrics(pred, truth, nsd_tolerance=2.0)
    p = torch.from_numpy(pred)[None, None].float()
    t = torch.from_numpy(truth)[None, None].float()
    hd95 = float(monai_metrics.compute_hausdorff_distance(p, t, percentile=95))
    nsd = float(monai_metrics.compute_surface_dice(p, t, [2.0]))
    assert ours["hd95"] == pytest.approx(hd95, abs=1e-5)
    assert ours["nsd"] == pytest.approx(nsd, abs=1e-5)


def test_distance_metrics_missing_for_empty_masks():
    empty, disk = np.zeros((96, 128), bool), _disk()
    for pred, truth in [(empty, disk), (disk, empty), (empty, empty)]:
        d = distance_metrics(pred, truth)
        assert np.isnan(d["hd95"]) and np.isnan(d["nsd"]) and np.isnan(d["hd95_mm"])


def test_image_metrics_has_every_key_and_counts():
    truth = _disk()
    row = image_metrics(torch.from_numpy(np.roll(truth, 3, axis=0)), torch.from_numpy(truth))
    assert set(METRIC_KEYS) <= set(row) and "hd95_mm" not in row
    assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == truth.size
    assert row["hd95"] == pytest.approx(3.0)
    with_mm = image_metrics(np.roll(truth, 3, axis=0), truth, pixel_size_mm=0.02)
    assert with_mm["hd95_mm"] == pytest.approx(0.06)
    assert summarize([with_mm])["mean"]["hd95_mm"] == pytest.approx(0.06)  # aggregated by default
    assert "hd95_mm" not in summarize([row])["mean"]


# ---- aggregates ------------------------------------------------------------------------------


def test_summarize_is_nan_aware_and_pools_dice():
    rows = [
        {"dice": 1.0, "hd95": float("nan"), "tp": 0, "fp": 0, "fn": 0, "tn": 100},  # both empty
        {"dice": 0.5, "hd95": 4.0, "tp": 10, "fp": 10, "fn": 10, "tn": 70},
        {"dice": 0.0, "hd95": 8.0, "tp": 0, "fp": 5, "fn": 5, "tn": 90},
    ]
    s = summarize(rows, keys=("dice", "hd95"))
    assert s["n"] == 3
    assert s["mean"]["dice"] == pytest.approx(0.5)
    assert s["median"]["dice"] == pytest.approx(0.5)
    assert s["std"]["dice"] == pytest.approx(np.std([1.0, 0.5, 0.0]))
    assert s["mean"]["hd95"] == pytest.approx(6.0) and s["missing"]["hd95"] == 1
    assert s["pooled_dice"] == pytest.approx(20 / (20 + 15 + 15))
    all_missing = summarize([{"hd95": float("nan")}], keys=("hd95",))
    assert np.isnan(all_missing["mean"]["hd95"]) and np.isnan(all_missing["pooled_dice"])


def test_multiclass_metrics():
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 1]])
    m = multiclass_metrics(pred, truth, num_classes=4)
    cm = m["confusion_matrix"]
    assert cm.shape == (4, 4) and cm.sum() == 8
    assert cm[0, 1] == 1 and cm[2, 0] == 1 and cm[1, 1] == 3
    assert m["dice"][1] == pytest.approx(2 * 3 / (3 + 4))
    assert m["iou"][2] == pytest.approx(1 / 2)
    assert np.isnan(m["dice"][3])  # absent from truth and prediction
    assert m["mean_dice"] == pytest.approx((6 / 7 + 2 / 3) / 2)  # foreground, NaN skipped
    assert m["mean_iou_foreground"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["mean_iou"] == pytest.approx((2 / 4 + 3 / 4 + 1 / 2) / 3)  # class 0 counts, absent class 3 does not
    torch_m = multiclass_metrics(torch.from_numpy(pred), torch.from_numpy(truth), num_classes=4)
    np.testing.assert_array_equal(torch_m["confusion_matrix"], cm)
    with pytest.raises(ValueError):
        multiclass_metrics(pred, truth, num_classes=2)


# ---- threshold -------------------------------------------------------------------------------


def test_threshold_sweep_equals_binarising_per_threshold():
    rng = np.random.default_rng(3)
    truth = np.stack([_disk(radius=r) for r in (0.1, 20, 30, 40)])  # first truth is empty
    probs = np.clip(truth * 0.7 + rng.normal(0, 0.25, truth.shape), 0, 1).astype(np.float32)
    probs[0, :4, :4] = 0.5  # exactly at a threshold: not foreground (probs > threshold)
    thresholds = [0.7, 0.1, 0.3, 0.5, 0.9]  # unsorted on purpose
    sweep = threshold_sweep(torch.from_numpy(probs), torch.from_numpy(truth), thresholds)
    assert [entry["threshold"] for entry in sweep] == pytest.approx(thresholds)
    for entry in sweep:
        expected = overlap_metrics(confusion_counts(probs > np.float32(entry["threshold"]), truth))
        assert entry["dice"] == pytest.approx(expected["dice"].mean(), abs=1e-12)
        assert entry["jaccard"] == pytest.approx(expected["jaccard"].mean(), abs=1e-12)
    np_sweep = threshold_sweep(probs, truth, thresholds)
    assert [e["dice"] for e in np_sweep] == pytest.approx([e["dice"] for e in sweep])
    chosen = choose_threshold(sweep)
    assert chosen == max(sweep, key=lambda e: e["dice"])["threshold"]


def test_threshold_sweep_leaves_ignored_pixels_out():
    """Void pixels (and letterbox bands) count as neither predicted nor true foreground: the sweep equals the
    one over the same images with those pixels made background in both, whatever they held."""
    rng = np.random.default_rng(4)
    truth = np.stack([_disk(radius=r) for r in (20, 30)])
    probs = rng.uniform(0, 1, truth.shape).astype(np.float32)
    ignore = np.zeros(truth.shape, bool)
    ignore[:, :, 30:50] = True  # a band over the left edge of the disks
    thresholds = [0.3, 0.5, 0.7]
    swept = threshold_sweep(probs, truth, thresholds, ignore=ignore)
    expected = threshold_sweep(np.where(ignore, 0.0, probs), truth & ~ignore, thresholds)
    assert [e["dice"] for e in swept] == pytest.approx([e["dice"] for e in expected], abs=1e-12)
    assert [e["dice"] for e in swept] != pytest.approx([e["dice"] for e in threshold_sweep(probs, truth, thresholds)])


def test_choose_threshold_ties_go_to_the_one_nearest_half():
    sweep = [{"threshold": t, "dice": d} for t, d in [(0.3, 0.8), (0.4, 0.9), (0.6, 0.9), (0.55, 0.9)]]
    assert choose_threshold(sweep) == 0.55


# ---- multi-class with void pixels --------------------------------------------------------------

from pixelwise.data.classes import IGNORE  # noqa: E402
from pixelwise.metrics import (  # noqa: E402
    class_summary,
    confusion_matrix,
    metrics_from_confusion,
    multiclass_image_metrics,
)

V = IGNORE
# 3 classes, 12 pixels, 2 of them void (truth 255; the prediction there must not count, whatever it is)
TRUTH_3 = np.array([[0, 0, 0, 1], [1, 1, 2, 2], [2, 0, V, V]])
PRED_3 = np.array([[0, 0, 1, 1], [1, 2, 2, 2], [0, 0, 2, 1]])


def test_confusion_matrix_leaves_out_void_pixels():
    cm = confusion_matrix(PRED_3, TRUTH_3, 3)
    # rows truth, columns prediction, counted by hand over the 10 non-void pixels
    expected = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 2]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(PRED_3), torch.from_numpy(TRUTH_3), 3), expected)
    # whatever is predicted on void pixels (even an out-of-range value) changes nothing
    wild = PRED_3.copy()
    wild[2, 2:] = 200
    np.testing.assert_array_equal(confusion_matrix(wild, TRUTH_3, 3), expected)
    with pytest.raises(ValueError, match="prediction"):
        confusion_matrix(np.where(TRUTH_3 == 0, 7, PRED_3), TRUTH_3, 3)  # out of range on counted pixels
    with pytest.raises(ValueError, match="truth"):
        confusion_matrix(PRED_3, TRUTH_3, 3, ignore=None)  # 255 is then a (bad) class


def test_multiclass_means_and_accuracies_by_hand():
    m = metrics_from_confusion(confusion_matrix(PRED_3, TRUTH_3, 3))
    # IoU_c = tp / (row + col - tp): class 0: 3/(4+4-3), class 1: 2/(3+3-2), class 2: 2/(3+3-2)
    iou = [3 / 5, 2 / 4, 2 / 4]
    assert m["iou"].tolist() == pytest.approx(iou)
    assert m["dice"].tolist() == pytest.approx([6 / 8, 4 / 6, 4 / 6])
    assert m["class_accuracy"].tolist() == pytest.approx([3 / 4, 2 / 3, 2 / 3])  # recall per class
    assert m["truth_pixels"].tolist() == [4, 3, 3] and m["predicted_pixels"].tolist() == [4, 3, 3]
    assert m["mean_iou"] == pytest.approx(np.mean(iou))  # every class (VOC/Cityscapes/CamVid mIoU)
    assert m["mean_iou_foreground"] == pytest.approx(0.5)  # classes 1..C-1
    assert m["mean_class_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert m["global_accuracy"] == pytest.approx(7 / 10)  # void pixels are not in the denominator


def test_pooled_is_the_sum_of_per_image_matrices_not_the_mean_of_means():
    second_truth = np.full((3, 3), 1)
    second_pred = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]])
    pooled = confusion_matrix(PRED_3, TRUTH_3, 3) + confusion_matrix(second_pred, second_truth, 3)
    m = metrics_from_confusion(pooled)
    assert m["iou"][1] == pytest.approx(10 / (12 + 11 - 10))
    assert m["global_accuracy"] == pytest.approx((7 + 8) / 19)
    separate = [
        metrics_from_confusion(confusion_matrix(p, t, 3))["iou"][1]
        for p, t in ((PRED_3, TRUTH_3), (second_pred, second_truth))
    ]
    assert m["iou"][1] != pytest.approx(np.mean(separate))


def test_absent_classes_are_left_out_of_the_means():
    truth = np.array([[0, 0], [2, 2]])
    pred = np.array([[0, 2], [2, 2]])
    m = metrics_from_confusion(confusion_matrix(pred, truth, 4))  # classes 1 and 3 appear nowhere
    assert np.isnan(m["iou"][1]) and np.isnan(m["iou"][3]) and np.isnan(m["class_accuracy"][3])
    assert m["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["mean_iou_foreground"] == pytest.approx(2 / 3)
    assert m["mean_class_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    nothing = metrics_from_confusion(np.zeros((3, 3), np.int64))  # every pixel void
    assert np.isnan(nothing["mean_iou"]) and np.isnan(nothing["global_accuracy"])


def test_class_summary_names_every_class_and_is_plain_python():
    summary = class_summary(confusion_matrix(PRED_3, TRUTH_3, 3), ["road", "car", "sign"])
    assert [c["name"] for c in summary["per_class"]] == ["road", "car", "sign"]
    car = summary["per_class"][1]
    assert car == {
        "name": "car",
        "iou": pytest.approx(0.5),
        "dice": pytest.approx(4 / 6),
        "accuracy": pytest.approx(2 / 3),
        "truth_pixels": 3,
        "predicted_pixels": 3,
    }
    assert summary["confusion_matrix"] == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert summary["global_accuracy"] == pytest.approx(0.7)
    with pytest.raises(ValueError):
        class_summary(np.eye(3, dtype=np.int64), ["a", "b"])


def test_multiclass_image_metrics_ignore_void_and_average_the_foreground():
    row = multiclass_image_metrics(PRED_3, TRUTH_3, 3)
    # class 1: tp 2, fp 1, fn 1; class 2: tp 2, fp 1, fn 1 (the void pixels count for neither)
    assert row["dice"] == pytest.approx(4 / 6)
    assert row["jaccard"] == pytest.approx(0.5)
    assert row["accuracy"] == pytest.approx((2 + 8) / 12)  # void pixels fall in no class: true negatives
    no_void = multiclass_image_metrics(PRED_3, np.where(TRUTH_3 == V, 2, TRUTH_3), 3)
    assert no_void["dice"] != pytest.approx(row["dice"])
    # a class absent from truth and prediction scores 1 (ISIC convention for empty masks), distances missing
    four = multiclass_image_metrics(PRED_3, TRUTH_3, 4)
    assert four["dice"] == pytest.approx((4 / 6 + 4 / 6 + 1) / 3)
    assert four["hd95"] == pytest.approx(row["hd95"])  # the absent class has no distance
    assert set(METRIC_KEYS) <= set(four) and "hd95_mm" not in four
    assert "hd95_mm" in multiclass_image_metrics(PRED_3, TRUTH_3, 3, pixel_size_mm=0.1)
