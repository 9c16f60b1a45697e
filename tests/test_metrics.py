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
