"""Instance metrics: COCO mask AP against pycocotools' COCOeval, DSB 2018, StarDist and PQ against hand counts."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pixelwise.evaluate.instance_metrics import (
    DSB_THRESHOLDS,
    coco_ground_truth,
    coco_mask_ap,
    coco_results,
    dsb_image_score,
    dsb_score,
    instance_scores,
    match_instances,
    match_iou,
    panoptic_quality,
    read_coco_results,
    stardist_matching,
    write_coco_results,
)

# ----------------------------------------------------------------------------------------------------------------
# helpers


def cocoeval_stats(truths, preds, true_classes=None, pred_classes=None, pred_scores=None):
    """AP, AP50, AP75 as pycocotools computes them (segm, maxDets 100, area all), -1 → NaN."""
    ground_truth = COCO()
    ground_truth.dataset = coco_ground_truth(truths, true_classes)
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
        detections = ground_truth.loadRes(coco_results(preds, pred_classes, pred_scores))
        evaluation = COCOeval(ground_truth, detections, "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [math.nan if v == -1 else float(v) for v in evaluation.stats[:3]]


def random_boxes(rng, shape, count, start=1):
    """A label image of up to ``count`` random rectangles (later ones cover earlier ones)."""
    labels = np.zeros(shape, np.int32)
    for object_id in range(start, start + count):
        y, x = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
        h, w = rng.integers(2, 11, size=2)
        labels[y : y + h, x : x + w] = object_id
    return labels


def perturbed(rng, truth, drop=0.2, spurious=3):
    """A prediction: truth objects shifted by up to 2 px, some dropped, some spurious boxes added."""
    pred = np.zeros_like(truth)
    next_id = 1
    for object_id in np.unique(truth[truth > 0]):
        if rng.random() < drop:
            continue
        moved = np.roll(truth == object_id, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))
        pred[moved] = next_id
        next_id += 1
    for _ in range(int(rng.integers(0, spurious + 1))):
        y, x = rng.integers(0, truth.shape[0] - 3), rng.integers(0, truth.shape[1] - 3)
        pred[y : y + int(rng.integers(2, 8)), x : x + int(rng.integers(2, 8))] = next_id
        next_id += 1
    return pred


def ids_of(labels):
    return [int(i) for i in np.unique(labels[labels > 0])]


def random_case(seed, images=4, classes=3, score_digits=1):
    rng = np.random.default_rng(seed)
    truths, preds, true_classes, pred_classes, scores = [], [], [], [], []
    for _ in range(images):
        truth = random_boxes(rng, (40, 56), int(rng.integers(0, 12)))
        pred = perturbed(rng, truth)
        truths.append(truth)
        preds.append(pred)
        true_classes.append({i: int(rng.integers(1, classes + 1)) for i in ids_of(truth)})
        # mostly the right class, sometimes another one
        pred_classes.append({i: int(rng.integers(1, classes + 1)) for i in ids_of(pred)})
        # rounded scores: many ties, within and across images
        scores.append({i: round(float(rng.random()), score_digits) for i in ids_of(pred)})
    return truths, preds, true_classes, pred_classes, scores


def strip(width, spans):
    """A 1×width label image with ``{id: (start, stop)}`` column spans."""
    labels = np.zeros((1, width), np.int32)
    for object_id, (start, stop) in spans.items():
        labels[0, start:stop] = object_id
    return labels


# ----------------------------------------------------------------------------------------------------------------
# overlap and matching


def test_iou_matrix_from_joint_histogram():
    truth = np.zeros((10, 10), np.uint16)
    truth[0:4, 0:4] = 7  # 16 px
    truth[6:10, 6:10] = 300  # 16 px
    pred = np.zeros((10, 10), np.int32)
    pred[0:4, 0:2] = 2  # 8 px inside 7
    pred[5:10, 5:10] = 9  # 25 px, 16 shared with 300
    pred[0, 9] = 4  # on background
    match = match_instances(truth, pred)
    assert match.true_ids.tolist() == [7, 300] and match.pred_ids.tolist() == [2, 4, 9]
    assert match.true_areas.tolist() == [16, 16] and match.pred_areas.tolist() == [8, 1, 25]
    assert match.intersections.tolist() == [[8, 0, 0], [0, 0, 16]]
    np.testing.assert_allclose(match.iou, [[8 / 16, 0, 0], [0, 0, 16 / 25]])
    # IoU ≥ 0.5: both pairs; IoU > 0.5: only the second
    assert (match.tp, match.fp, match.fn) == (2, 1, 0)
    strict = match.at(0.5, strict=True)
    assert strict.true_index.tolist() == [1] and strict.pred_index.tolist() == [2]
    assert (strict.tp, strict.fp, strict.fn) == (1, 2, 1)


def test_large_sparse_ids_and_empty_images():
    truth = np.zeros((4, 4), np.int64)
    truth[0, 0] = 10**9  # far beyond a bincount table
    pred = np.zeros((4, 4), np.uint32)
    pred[0, 0:2] = 4_000_000_000
    match = match_instances(truth, pred)
    assert match.true_ids.tolist() == [10**9] and match.pred_ids.tolist() == [4_000_000_000]
    assert match.iou[0, 0] == 0.5
    empty = match_instances(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
    assert empty.iou.shape == (0, 0) and (empty.tp, empty.fp, empty.fn) == (0, 0, 0)
    with pytest.raises(ValueError, match="shapes differ"):
        match_instances(np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="integers"):
        match_instances(np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8))


def test_low_threshold_uses_optimal_matching():
    # t1 = cols 0-9, t2 = cols 10-19; p1 = cols 4-13 overlaps both, p2 = cols 0-3 only t1.
    truth = strip(20, {1: (0, 10), 2: (10, 20)})
    pred = strip(20, {1: (4, 14), 2: (0, 4)})
    match = match_instances(truth, pred, threshold=0.2)
    np.testing.assert_allclose(match.iou, [[6 / 14, 4 / 10], [4 / 16, 0.0]])
    # greedy by IoU would pair t1-p1 and leave t2 alone; the optimal matching finds two pairs
    assert sorted(zip(match.true_index.tolist(), match.pred_index.tolist())) == [(0, 1), (1, 0)]
    assert match.matched_iou.sum() == pytest.approx(0.4 + 0.25)
    # at 0.5 nothing qualifies; at 0.42 only t1-p1
    assert match.at(0.5).tp == 0 and match.at(0.42).tp == 1
    rows, cols = match_iou(np.array([[0.5, 0.5]]), 0.5)  # a tie at exactly 0.5 still gives one match
    assert rows.size == cols.size == 1


# ----------------------------------------------------------------------------------------------------------------
# DSB 2018


def test_dsb_hand_computed():
    truth = strip(30, {1: (0, 10), 2: (10, 20)})
    pred = strip(30, {5: (0, 10), 6: (10, 16)})  # exact, and 6 px inside 10: IoU 0.6 exactly
    # IoU 0.6 is a hit at 0.5 and 0.55 only (strictly greater); the exact one at every threshold
    expected = (2 * 1.0 + 8 * (1 / 3)) / 10
    assert dsb_image_score(match_instances(truth, pred)) == pytest.approx(expected)
    assert DSB_THRESHOLDS[2] == 0.6
    empty = np.zeros((1, 30), np.int32)
    result = dsb_score([truth, empty, empty, truth], [pred, empty, truth, empty])
    assert result["per_image"] == pytest.approx([expected, 1.0, 0.0, 0.0])
    assert result["dsb"] == pytest.approx((expected + 1.0) / 4)


# ----------------------------------------------------------------------------------------------------------------
# StarDist


def test_stardist_pooled_hand_computed():
    truth_a = strip(40, {1: (0, 10), 2: (10, 20), 3: (30, 40)})
    pred_a = strip(40, {1: (0, 10), 2: (10, 16), 3: (20, 25)})  # IoU 1, 0.6; one FP; t3 missed
    truth_b = strip(40, {1: (0, 8)})
    pred_b = strip(40, {1: (2, 8)})  # IoU 0.75
    rows = stardist_matching([truth_a, truth_b], [pred_a, pred_b], thresholds=(0.5, 0.7, 0.9))
    half, seventy, ninety = rows
    assert (half["tp"], half["fp"], half["fn"], half["n_true"], half["n_pred"]) == (3, 1, 1, 4, 4)
    iou_sum = 1.0 + 0.6 + 0.75
    assert half["precision"] == pytest.approx(3 / 4) and half["recall"] == pytest.approx(3 / 4)
    assert half["accuracy"] == pytest.approx(3 / 5) and half["f1"] == pytest.approx(6 / 8)
    assert half["mean_true_score"] == pytest.approx(iou_sum / 4)
    assert half["mean_matched_score"] == pytest.approx(iou_sum / 3)
    assert half["panoptic_quality"] == pytest.approx(iou_sum / (3 + 0.5 + 0.5))
    assert (seventy["tp"], seventy["fp"], seventy["fn"]) == (2, 2, 2)
    assert seventy["accuracy"] == pytest.approx(2 / 6) and seventy["mean_true_score"] == pytest.approx(1.75 / 4)
    assert (ninety["tp"], ninety["accuracy"]) == (1, pytest.approx(1 / 7))
    # no true positive: StarDist reports 0, not NaN
    none = stardist_matching([truth_b], [np.zeros_like(truth_b)], thresholds=(0.5,))[0]
    assert (none["precision"], none["recall"], none["accuracy"], none["f1"], none["mean_matched_score"]) == (0,) * 5


# ----------------------------------------------------------------------------------------------------------------
# Panoptic quality


def test_panoptic_quality_classes_and_void():
    truth = strip(60, {1: (0, 10), 2: (10, 20), 3: (40, 50)})
    pred = strip(60, {1: (0, 8), 2: (10, 20), 3: (20, 30), 4: (50, 60), 5: (34, 40)})
    void = np.zeros((1, 60), bool)
    void[0, 50:60] = True  # pred 4 lies on void: not a false positive
    void[0, 32:36] = True  # pred 5 has 2 of 6 px on void: a false positive
    true_classes = {1: 1, 2: 2, 3: 1}
    pred_classes = {1: 1, 2: 1, 3: 2, 4: 1, 5: 2}  # pred 2 overlaps truth 2 exactly but has the wrong class
    result = panoptic_quality([truth], [pred], [true_classes], [pred_classes], [void])
    # class 1: TP (t1, p1, IoU 0.8); FP p2; FN t3; p4 excused → PQ = 0.8 / (1 + 0.5 + 0.5)
    c1 = result["per_class"][1]
    assert (c1["tp"], c1["fp"], c1["fn"]) == (1, 1, 1)
    assert c1["pq"] == pytest.approx(0.4) and c1["sq"] == pytest.approx(0.8) and c1["rq"] == pytest.approx(0.5)
    # class 2: FN t2, FP p3, FP p5 → 0
    c2 = result["per_class"][2]
    assert (c2["tp"], c2["fp"], c2["fn"], c2["pq"], c2["sq"]) == (0, 2, 1, 0.0, 0.0)
    assert result["pq"] == pytest.approx(0.2) and result["sq"] == pytest.approx(0.4)
    assert result["rq"] == pytest.approx(0.25)


def test_panoptic_iou_leaves_out_void_pixels_of_the_prediction():
    truth = strip(20, {1: (0, 6)})
    pred = strip(20, {1: (0, 12)})  # IoU 6/12 = 0.5: no match without void
    assert panoptic_quality([truth], [pred])["per_class"][1]["tp"] == 0
    void = np.zeros((1, 20), bool)
    void[0, 10:12] = True  # union loses 2 void pixels: 6/10 > 0.5
    result = panoptic_quality([truth], [pred], voids=[void])
    assert result["per_class"][1]["tp"] == 1 and result["pq"] == pytest.approx(0.6)
    empty = np.zeros((1, 20), np.int32)
    assert math.isnan(panoptic_quality([empty], [empty])["pq"])


# ----------------------------------------------------------------------------------------------------------------
# COCO mask AP against COCOeval


@pytest.mark.parametrize("seed", range(5))
def test_coco_ap_equals_cocoeval_random_multiclass(seed):
    truths, preds, true_classes, pred_classes, scores = random_case(seed)
    ours = coco_mask_ap(truths, preds, true_classes, pred_classes, scores)
    reference = cocoeval_stats(truths, preds, true_classes, pred_classes, scores)
    np.testing.assert_allclose([ours["ap"], ours["ap50"], ours["ap75"]], reference, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_coco_ap_equals_cocoeval_one_class_good_predictions(seed):
    rng = np.random.default_rng(100 + seed)
    truths = [random_boxes(rng, (48, 48), int(rng.integers(3, 10))) for _ in range(3)]
    preds = [perturbed(rng, t, drop=0.1, spurious=1) for t in truths]
    scores = [{i: float(rng.choice([0.3, 0.6, 0.9])) for i in ids_of(p)} for p in preds]  # heavy ties
    ours = coco_mask_ap(truths, preds, pred_scores=scores)
    reference = cocoeval_stats(truths, preds, pred_scores=scores)
    np.testing.assert_allclose([ours["ap"], ours["ap50"], ours["ap75"]], reference, atol=1e-6)
    assert ours["ap50"] > 0.3  # a meaningful case, not all zeros


def test_coco_ap_equals_cocoeval_empty_images_and_absent_classes():
    rng = np.random.default_rng(7)
    truth = random_boxes(rng, (32, 32), 5)
    pred = perturbed(rng, truth, drop=0.0, spurious=0)
    empty = np.zeros((32, 32), np.int32)
    spurious = strip(32, {1: (0, 5)}).repeat(32, axis=0)
    truths = [truth, truth, empty, empty]
    preds = [pred, empty, spurious, empty]  # empty prediction, empty truth with a prediction, both empty
    true_classes = [{i: 1 for i in ids_of(truth)}, {i: 2 for i in ids_of(truth)}, {}, {}]
    # class 3 appears only in predictions: COCOeval skips it (no truth); class 2 only in truth: AP 0
    pred_classes = [{i: 1 for i in ids_of(pred)}, {}, {1: 3}, {}]
    scores = [{i: 0.5 for i in ids_of(pred)}, {}, {1: 0.9}, {}]
    ours = coco_mask_ap(truths, preds, true_classes, pred_classes, scores)
    reference = cocoeval_stats(truths, preds, true_classes, pred_classes, scores)
    np.testing.assert_allclose([ours["ap"], ours["ap50"], ours["ap75"]], reference, atol=1e-6)
    assert ours["per_class"][2] == 0.0 and 3 not in ours["per_class"]


def test_coco_ap_hand_made_ties_and_limits():
    # One detection overlapping two truths at IoU exactly 0.5 each (COCOeval takes the last truth).
    truth = strip(4, {1: (0, 1), 2: (1, 2)})
    pred = strip(4, {1: (0, 2), 2: (3, 4)})
    scores = [{1: 0.5, 2: 0.5}]  # equal scores: id order decides
    ours = coco_mask_ap([truth], [pred], pred_scores=scores)
    reference = cocoeval_stats([truth], [pred], pred_scores=scores)
    np.testing.assert_allclose([ours["ap"], ours["ap50"], ours["ap75"]], reference, atol=1e-6)
    assert ours["ap50"] == pytest.approx(np.mean(np.where(np.linspace(0, 1, 101) <= 0.5, 1.0, 0.0)))
    # a perfect prediction scores 1; no prediction at all scores 0; no truth at all is undefined
    assert coco_mask_ap([truth], [truth])["ap"] == pytest.approx(1.0)
    assert coco_mask_ap([truth], [np.zeros_like(truth)])["ap"] == 0.0
    assert math.isnan(coco_mask_ap([np.zeros_like(truth)], [pred])["ap"])
    # more than 100 detections: only the 100 best-scored per image count, as in COCOeval
    many = np.arange(1, 151, dtype=np.int32).reshape(1, 150)
    truth_many = np.where(many > 120, many, 0)
    scores_many = [{i: float(i) / 200 if i <= 120 else 0.1 for i in range(1, 151)}]
    ours = coco_mask_ap([truth_many], [many], pred_scores=scores_many)
    reference = cocoeval_stats([truth_many], [many], pred_scores=scores_many)
    np.testing.assert_allclose([ours["ap"], ours["ap50"], ours["ap75"]], reference, atol=1e-6)
    assert ours["ap"] == 0.0  # the 30 true objects score lowest and fall past the cut


# ----------------------------------------------------------------------------------------------------------------
# COCO JSON helpers and the entry point


def test_coco_results_json_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    preds = [perturbed(rng, random_boxes(rng, (20, 30), 6), drop=0.0, spurious=0) for _ in range(2)]
    classes = [{i: 1 + i % 2 for i in ids_of(p)} for p in preds]
    scores = [{i: 0.1 * i for i in ids_of(p)} for p in preds]
    path = write_coco_results(tmp_path / "results.json", preds, classes, scores)
    entries = json.loads(path.read_text())
    assert all(isinstance(e["segmentation"]["counts"], str) for e in entries)
    first = [e for e in entries if e["image_id"] == 1]
    assert [e["area"] for e in first] == [float(np.count_nonzero(preds[0] == i)) for i in ids_of(preds[0])]
    back = read_coco_results(path)
    for index, pred in enumerate(preds):
        labels, back_classes, back_scores = back[index + 1]
        match = match_instances(pred, labels)
        assert match.tp == match.n_true == match.n_pred and np.all(match.matched_iou == 1.0)
        for row, col in zip(match.true_index, match.pred_index):
            original, read = int(match.true_ids[row]), int(match.pred_ids[col])
            assert back_classes[read] == classes[index][original]
            assert back_scores[read] == pytest.approx(scores[index][original])
    # pycocotools reads the same file
    ground_truth = COCO()
    ground_truth.dataset = coco_ground_truth(preds, classes)
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
        assert len(ground_truth.loadRes(str(path)).getAnnIds()) == len(entries)


def test_instance_scores_keys_and_rows():
    truths, preds, true_classes, pred_classes, scores = random_case(11, images=3)
    result = instance_scores(
        truths,
        preds,
        ids=["a", "b", "c"],
        true_classes=true_classes,
        pred_classes=pred_classes,
        pred_scores=scores,
        stardist_thresholds=(0.5, 0.7),
    )
    for key in ("ap", "ap50", "ap75", "dsb", "pq", "sq", "rq", "stardist", "images"):
        assert key in result
    reference = cocoeval_stats(truths, preds, true_classes, pred_classes, scores)
    np.testing.assert_allclose([result["ap"], result["ap50"], result["ap75"]], reference, atol=1e-6)
    assert [row["id"] for row in result["images"]] == ["a", "b", "c"]
    for row, truth, pred in zip(result["images"], truths, preds):
        match = match_instances(truth, pred, 0.5, strict=True)
        assert (row["n_true"], row["n_pred"], row["tp"], row["fp"], row["fn"]) == (
            match.n_true,
            match.n_pred,
            match.tp,
            match.fp,
            match.fn,
        )
        assert row["dsb"] == pytest.approx(dsb_image_score(match))
    assert result["dsb"] == pytest.approx(dsb_score(truths, preds)["dsb"])
    assert [r["thresh"] for r in result["stardist"]] == [0.5, 0.7]
    json.dumps(result)  # JSON-ready
    with pytest.raises(ValueError, match="has no class"):
        instance_scores(truths, preds, true_classes=[{}, {}, {}])
