"""rs.metrics: pixel confusion, probability histograms and thresholds, object counts and matches, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from changewatch.rs.metrics import (
    Confusion,
    ObjectCounts,
    ProbHistogram,
    best_common_threshold,
    confusion,
    match_objects,
    object_counts,
)


def test_confusion_metrics_by_hand() -> None:
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)
    truth = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    c = confusion(pred, truth)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 2, 1, 3)
    assert c.precision == pytest.approx(0.5)
    assert c.recall == pytest.approx(2 / 3)
    assert c.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert c.iou == pytest.approx(2 / 5)


def test_pooling_adds_counts_not_averages() -> None:
    a, b = Confusion(tp=1, fp=0, fn=9, tn=90), Confusion(tp=90, fp=10, fn=0, tn=0)
    pooled = a + b
    assert pooled.f1 == pytest.approx(2 * 91 / (2 * 91 + 10 + 9))
    assert Confusion().f1 == 0.0 and Confusion().precision == 0.0


def test_histogram_confusion_matches_direct_count() -> None:
    rng = np.random.default_rng(0)
    prob = rng.random(5000).astype(np.float32)
    truth = rng.random(5000) < prob  # informative
    h = ProbHistogram()
    h.add(prob, truth)
    for t in (0.1, 0.37, 0.5, 0.9):
        assert h.confusion_at(t) == confusion(prob >= t, truth)
    best, c = h.best_threshold()
    assert c.f1 == max(h.confusion_at(t).f1 for t in np.round(np.arange(0.01, 1.0, 0.01), 6))
    assert 0.0 < best < 1.0


def test_object_matching_by_hand() -> None:
    truth = np.zeros((60, 80), np.int32)
    truth[0:10, 0:10] = 1            # T1, 100 px
    truth[20:30, 0:10] = 2           # T2, 100 px
    truth[40:42, 40:42] = 3          # T3, 4 px: under the 50-pixel minimum, not counted
    predicted = np.zeros_like(truth)
    predicted[0:10, 0:6] = 1         # inside T1: IoU 60 / 100 = 0.6 → a match
    predicted[20:30, 0:3] = 2        # inside T2: IoU 30 / 100 = 0.3 → none
    predicted[0:10, 50:60] = 3       # on no true object: a false positive
    predicted[40:42, 40:42] = 4      # matches only the small T3: not counted
    predicted[50:55, 70:75] = 5      # all unlabelled: not counted
    labelled = np.ones(truth.shape, bool)
    labelled[48:, 65:] = False
    assert match_objects(predicted, truth, labelled, min_pixels=50) == (3, 1)
    counts = ObjectCounts(total=2, hit=2, predicted=3, matched=1)
    assert counts.precision_iou50 == pytest.approx(1 / 3) and counts.recall_iou50 == pytest.approx(1 / 2)
    assert counts.f1_iou50 == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # 0.4
    # exactly 0.5 matches; one to one: a second prediction on T1 at 0.5 is left unmatched
    predicted[0:10, 5:10] = 6        # T1 now: pred 1 → cols 0–4 (IoU 0.5), pred 6 → cols 5–9 (IoU 0.5)
    assert match_objects(predicted, truth, labelled, min_pixels=50) == (4, 1)


def test_object_counts_by_hand() -> None:
    label = np.zeros((6, 6), np.uint8)
    objects = np.zeros((6, 6), np.int32)
    objects[0:2, 0:2] = 1  # 4 px, hit
    objects[4:6, 4:6] = 2  # 4 px, missed
    objects[0, 5] = 3      # 1 px: below the minimum size
    label[objects > 0] = 1
    prob = np.zeros((6, 6), np.float32)
    prob[1, 1] = 0.9
    prob[0, 5] = 0.9
    assert object_counts(label, objects, prob, 0.5, min_pixels=2) == object_counts(label, objects, prob, 0.5, 4)
    counts = object_counts(label, objects, prob, 0.5, min_pixels=2)
    assert (counts.total, counts.hit, counts.recall) == (2, 1, 0.5)
    assert object_counts(label, objects, prob, 0.5, min_pixels=1).total == 3


def test_common_threshold_maximises_the_mean_of_set_f1() -> None:
    big, small = ProbHistogram(), ProbHistogram()
    big.add(np.array([0.50] * 100 + [0.30] * 1000), np.array([True] * 100 + [False] * 1000))
    small.add(np.array([0.25] * 10 + [0.10] * 10), np.array([True] * 10 + [False] * 10))
    threshold, at = best_common_threshold({"big": big, "small": small})
    # the mean of the two sets' F1 is best where the small set is perfect: (0.10, 0.25]
    assert 0.10 < threshold <= 0.25 and at["small"].f1 == 1.0
    # pooling their pixels instead would favour the big set: (0.30, 0.50]
    pooled = ProbHistogram()
    pooled += big
    pooled += small
    assert 0.30 < pooled.best_threshold()[0] <= 0.50
