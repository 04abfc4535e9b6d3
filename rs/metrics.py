"""Change metrics: pixel confusion and probability histograms, object counts and matches, as typed figures.

Pixel confusion and probability histograms work at any threshold, pooled over pairs; for object
counts and matches ``rs.evaluate`` defines what the objects are.

Every figure has a dataclass: ``PixelMetrics`` (precision, recall, F1, IoU and counts),
``ObjectMetrics``, one pair's ``PairMetrics`` and the whole ``Metrics`` an evaluation reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from changewatch.rs.datasets import LABEL_NODATA

HIST_BINS = 1000


MATCH_IOU = 0.5  # intersection over union from which a predicted object matches a true one


@dataclass(frozen=True)
class PixelMetrics:
    """Pixel figures of the change class: precision, recall, F1, IoU (0–1) and the counts.

    The counts are of true and false positives, false and true negatives.
    """

    precision: float
    recall: float
    f1: float
    iou: float
    tp: int
    fp: int
    fn: int
    tn: int


@dataclass(frozen=True)
class ObjectMetrics:
    """Object figures (see the module docstring): object recall, and precision, recall and F1 at IoU ≥ 0.5.

    Object recall (share of true objects hit) over ``objects`` true objects of which
    ``objects_hit`` were hit; precision, recall and F1 at IoU ≥ 0.5 over ``objects_predicted``
    predicted objects of which ``objects_matched`` matched.
    """

    object_recall: float
    objects: int
    objects_hit: int
    object_precision: float
    object_recall_iou50: float
    object_f1: float
    objects_predicted: int
    objects_matched: int


@dataclass(frozen=True)
class PairMetrics:
    """Pixel and object figures of one pair, or pooled over pairs."""

    pixels: PixelMetrics
    objects: ObjectMetrics

    def to_dict(self) -> dict[str, float | int]:
        """One flat JSON object: the pixel figures, then the object figures."""
        return {**asdict(self.pixels), **asdict(self.objects)}


@dataclass(frozen=True)
class Metrics:
    """What ``evaluate --json`` prints.

    The pooled figures, the smallest object counted (m²), the decision threshold, and each pair's
    figures.
    """

    pooled: PairMetrics
    object_min_m2: float
    threshold: float
    sites: dict[str, PairMetrics]

    def to_dict(self) -> dict[str, object]:
        """Pooled figures at the top level, per-pair figures under ``sites``."""
        return {**self.pooled.to_dict(), "object_min_m2": self.object_min_m2, "threshold": self.threshold,
                "sites": {name: m.to_dict() for name, m in self.sites.items()}}


@dataclass
class Confusion:
    """Pixel counts of the change class: true/false positives, false/true negatives; ``+`` adds counts."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def precision(self) -> float:
        """Precision: TP / (TP + FP), 0 without positive predictions."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """Recall: TP / (TP + FN), 0 without true change."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """F1: 2·TP / (2·TP + FP + FN), 0 without true positives."""
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    @property
    def iou(self) -> float:
        """IoU of the change class: TP / (TP + FP + FN), 0 without true positives."""
        return self.tp / (self.tp + self.fp + self.fn) if self.tp else 0.0

    def metrics(self) -> PixelMetrics:
        """Precision, recall, F1, IoU (0–1) and the raw counts."""
        return PixelMetrics(self.precision, self.recall, self.f1, self.iou, self.tp, self.fp, self.fn, self.tn)


def confusion(pred: np.ndarray, truth: np.ndarray) -> Confusion:
    """Confusion of boolean arrays of predicted and true change (already restricted to labelled pixels)."""
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return Confusion(tp, fp, fn, int(pred.size) - tp - fp - fn)


@dataclass
class ProbHistogram:
    """Histograms of predicted probability over true-change and no-change pixels (HIST_BINS bins on [0, 1]).

    ``+=`` adds another histogram's counts.
    """

    pos: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))
    neg: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))

    def add(self, prob: np.ndarray, truth: np.ndarray) -> None:
        """Count labelled pixels: ``prob`` probabilities (0–1) and ``truth`` booleans (True: change), same shape."""
        bins = np.minimum((prob * HIST_BINS).astype(np.int64), HIST_BINS - 1)
        self.pos += np.bincount(bins[truth], minlength=HIST_BINS)
        self.neg += np.bincount(bins[~truth], minlength=HIST_BINS)

    def __iadd__(self, other: ProbHistogram) -> ProbHistogram:
        self.pos += other.pos
        self.neg += other.neg
        return self

    def confusion_at(self, threshold: float) -> Confusion:
        """Confusion when predicting change for probability ≥ threshold (threshold on the bin grid)."""
        k = int(round(threshold * HIST_BINS))
        tp, fp = int(self.pos[k:].sum()), int(self.neg[k:].sum())
        return Confusion(tp, fp, int(self.pos[:k].sum()), int(self.neg[:k].sum()))

    def best_threshold(self, step: float = 0.01) -> tuple[float, Confusion]:
        """Threshold (multiple of ``step`` in [step, 1 − step]) with the highest F1, and its confusion."""
        threshold, at = best_common_threshold({"": self}, step)
        return threshold, at[""]


def best_common_threshold(histograms: dict[str, ProbHistogram],
                          step: float = 0.01) -> tuple[float, dict[str, Confusion]]:
    """The one threshold maximising the mean F1 over several sets' histograms, and each set's confusion at it.

    The threshold is a multiple of ``step`` in [step, 1 − step]; ties go to the one nearest 0.5.
    """
    candidates = np.round(np.arange(step, 1.0, step), 6)
    scored = [(float(np.mean([h.confusion_at(t).f1 for h in histograms.values()])), -abs(t - 0.5), t)
              for t in candidates]
    _, _, best = max(scored)
    return float(best), {name: h.confusion_at(best) for name, h in histograms.items()}


@dataclass
class ObjectCounts:
    """True change objects and how many the prediction hit; predicted objects and how many match a true one.

    True change objects of at least the minimum area and how many the prediction hit (a pixel);
    predicted objects counted and how many of them match a true one at IoU ≥ MATCH_IOU. ``+`` adds
    counts.
    """

    total: int = 0
    hit: int = 0
    predicted: int = 0
    matched: int = 0

    def __add__(self, other: ObjectCounts) -> ObjectCounts:
        return ObjectCounts(self.total + other.total, self.hit + other.hit, self.predicted + other.predicted,
                            self.matched + other.matched)

    @property
    def recall(self) -> float:
        """Object recall: share of true objects with a pixel predicted as change."""
        return self.hit / self.total if self.total else 0.0

    @property
    def precision_iou50(self) -> float:
        """Share of predicted objects that match a true one at IoU ≥ MATCH_IOU (0 without predictions)."""
        return self.matched / self.predicted if self.predicted else 0.0

    @property
    def recall_iou50(self) -> float:
        """Share of true objects that a predicted one matches at IoU ≥ MATCH_IOU (0 without true ones)."""
        return self.matched / self.total if self.total else 0.0

    @property
    def f1_iou50(self) -> float:
        """Harmonic mean of ``precision_iou50`` and ``recall_iou50`` (0 without matches)."""
        return 2 * self.matched / (self.predicted + self.total) if self.matched else 0.0

    def metrics(self) -> ObjectMetrics:
        """Object recall, precision, recall and F1 at IoU ≥ 0.5, and the counts."""
        return ObjectMetrics(self.recall, self.total, self.hit, self.precision_iou50, self.recall_iou50, self.f1_iou50,
                             self.predicted, self.matched)


def object_counts(label: np.ndarray, objects: np.ndarray, prob: np.ndarray, threshold: float,
                  min_pixels: float) -> ObjectCounts:
    """Objects (an int label image, 0 = none) of at least ``min_pixels`` pixels, and how many are hit.

    Hit: having a pixel with probability ≥ ``threshold`` (unlabelled pixels and NaN never count).
    """
    n = int(objects.max(initial=0))
    if n == 0:
        return ObjectCounts()
    size = np.bincount(objects.ravel(), minlength=n + 1)
    with np.errstate(invalid="ignore"):
        predicted = (prob >= threshold) & (label != LABEL_NODATA)
    hit = np.zeros(n + 1, bool)
    hit[objects[predicted]] = True
    big = size >= min_pixels
    big[0] = False
    return ObjectCounts(int(big.sum()), int((big & hit).sum()))


def match_objects(predicted: np.ndarray, truth: np.ndarray, labelled: np.ndarray, min_pixels: float,
                  min_iou: float = MATCH_IOU) -> tuple[int, int]:
    """Predicted objects counted, and how many match a true object one to one at IoU ≥ ``min_iou``.

    ``predicted``, ``truth``: int object ids (0 = none) on one grid, each image's objects disjoint;
    ``labelled``: boolean, the pixels with a label (the others are left out of every area). True
    objects under ``min_pixels`` pixels are not counted, nor is a predicted object that matches only
    such an object or has no labelled pixel. Pairs are matched greedily, highest IoU first; as the
    objects of one image are disjoint, at IoU above 0.5 an object can have only one partner, so
    this is also the maximum matching. Memory: 9 bytes per labelled pixel, 16 per pixel of overlap.
    """
    p, t = predicted[labelled], truth[labelled]
    p_size = np.bincount(p, minlength=int(predicted.max(initial=0)) + 1)
    t_size = np.bincount(t, minlength=int(truth.max(initial=0)) + 1)
    both = (p > 0) & (t > 0)
    pairs, inter = np.unique(p[both].astype(np.int64) * len(t_size) + t[both], return_counts=True)
    pi, ti = np.divmod(pairs, len(t_size))
    iou = inter / (p_size[pi] + t_size[ti] - inter)
    used_p, used_t = set(), set()
    matched = ignored = 0
    for k in np.argsort(-iou, kind="stable"):
        if iou[k] < min_iou:
            break
        if pi[k] in used_p or ti[k] in used_t:
            continue
        used_p.add(pi[k])
        used_t.add(ti[k])
        if t_size[ti[k]] >= min_pixels:
            matched += 1
        else:
            ignored += 1
    return int(np.count_nonzero(p_size[1:])) - ignored, matched
