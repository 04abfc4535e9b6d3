"""rs.evaluate: metrics against hand-computed values, histograms, site discovery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from changewatch.rs.errors import InputFileError
from changewatch.rs.evaluate import Confusion, ProbHistogram, confusion, evaluate, find_sites
from changewatch.rs.infer import ChangeModel
from tests.data import BrightnessChangeNet, pointwise_spec


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


def test_find_sites(sites: Path, tmp_path: Path) -> None:
    assert [s.name for s in find_sites(sites)] == ["alpha", "beta", "gamma"]
    assert [s.name for s in find_sites(sites, ["gamma", "alpha"])] == ["gamma", "alpha"]
    with pytest.raises(InputFileError, match="no labelled pair named delta"):
        find_sites(sites, ["delta"])
    with pytest.raises(InputFileError, match="no labelled pairs"):
        find_sites(tmp_path / "sites" / "alpha")


def test_evaluate_known_answer(sites: Path) -> None:
    # The pointwise brightness model finds exactly the planted squares: perfect scores.
    model = ChangeModel(BrightnessChangeNet(4), pointwise_spec(), torch.device("cpu"))
    report = evaluate(find_sites(sites), model, threshold=0.5)
    assert report.pooled.tp == 12 * 12 + 8 * 8 + 10 * 10 + 6 * 6 + 14 * 14
    assert report.pooled.f1 == pytest.approx(1.0)
    d = report.to_dict()
    assert {"precision", "recall", "f1", "iou", "object_recall", "sites"} <= set(d)
    assert set(d["sites"]) == {"alpha", "beta", "gamma"}
    # 10 m pixels: the 6×6 square (3 600 m²) and larger count at the default 200 m²; all five are hit
    assert (report.objects.total, report.objects.hit) == (5, 5) and d["object_recall"] == 1.0
