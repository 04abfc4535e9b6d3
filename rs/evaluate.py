"""Change metrics of a model on labelled pairs: pixel-level (pooled over all pixels and per pair)
and object-level.

Pairs come in any layout ``rs.datasets`` reads (OSCD-style sites, LEVIR-CD A/B/label folders of
plain or georeferenced images, scenes with a vector layer of changed polygons). Predictions come
from the same tiled, blended path as ``detect`` (``rs.infer``), so the figures describe what users
get. *True objects* are the connected regions (4-connectivity) of a label raster, or the polygons
of a vector layer; only those of at least ``object_min_m2`` are counted.

- *Object recall* is the share of true objects that have at least one pixel predicted as change.
- *Object precision, recall and F1 at IoU 0.5*: the *predicted objects* are the change objects
  ``detect`` would write from the prediction (``rs.vectorize``: one per building for models with
  building outputs, connected change regions otherwise; those under ``object_min_m2`` dropped, as
  ``--min-area-m2`` drops them). A predicted object *matches* a true one when their intersection
  over union (pixels, unlabelled pixels left out) is at least 0.5, one to one (``match_objects``).
  Precision = matched / predicted objects, recall = matched / true objects, F1 their harmonic
  mean. A predicted object with no labelled pixel, or that matches only a true object under the
  size, is not counted.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
from scipy import ndimage

from changewatch.models.spec import ModelChoice
from changewatch.rs.align import AlignedPair
from changewatch.rs.config import EvalOptions, InferenceConfig, VectorizeConfig
from changewatch.rs.datasets import LABEL_NODATA, LabelledPair, LabelReader, VectorLabels, find_pairs, read_whole
from changewatch.rs.grid import pixel_area_m2
from changewatch.rs.infer import ChangeModel, predict_pair, tiling
from changewatch.rs.io.raster import write_probability
from changewatch.rs.prepare import choose_for, prepare_pair
from changewatch.rs.vectorize import FOUR_CONNECTED, vectorize

HIST_BINS = 1000
PLAIN_PIXEL_M = 1.0  # pixel size assumed for object areas of plain images when none is given
MATCH_IOU = 0.5  # intersection over union from which a predicted object matches a true one


@dataclass(frozen=True)
class PixelMetrics:
    """Pixel figures of the change class: precision, recall, F1, IoU (0–1) and the counts of true
    and false positives, false and true negatives."""

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
    """Object figures (see the module docstring): object recall (share of true objects hit) over
    ``objects`` true objects of which ``objects_hit`` were hit; precision, recall and F1 at IoU ≥
    0.5 over ``objects_predicted`` predicted objects of which ``objects_matched`` matched."""

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
    """What ``evaluate --json`` prints: the pooled figures, the smallest object counted (m²), the
    decision threshold, and each pair's figures."""

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
    """Pixel counts of the change class: true/false positives, false/true negatives."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    @property
    def iou(self) -> float:
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
    """Histograms of predicted probability over true-change and no-change pixels (HIST_BINS bins on [0, 1])."""

    pos: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))
    neg: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))

    def add(self, prob: np.ndarray, truth: np.ndarray) -> None:
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


def best_common_threshold(histograms: dict[str, ProbHistogram], step: float = 0.01) -> tuple[float, dict[str, Confusion]]:
    """The one threshold (multiple of ``step`` in [step, 1 − step]; ties go to the one nearest 0.5)
    maximising the mean F1 over several sets' histograms, and each set's confusion at it."""
    candidates = np.round(np.arange(step, 1.0, step), 6)
    scored = [(float(np.mean([h.confusion_at(t).f1 for h in histograms.values()])), -abs(t - 0.5), t)
              for t in candidates]
    _, _, best = max(scored)
    return float(best), {name: h.confusion_at(best) for name, h in histograms.items()}


@dataclass
class ObjectCounts:
    """True change objects of at least the minimum area and how many the prediction hit (a pixel);
    predicted objects counted and how many of them match a true one at IoU ≥ MATCH_IOU."""

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
        return self.matched / self.predicted if self.predicted else 0.0

    @property
    def recall_iou50(self) -> float:
        return self.matched / self.total if self.total else 0.0

    @property
    def f1_iou50(self) -> float:
        return 2 * self.matched / (self.predicted + self.total) if self.matched else 0.0

    def metrics(self) -> ObjectMetrics:
        """Object recall, precision, recall and F1 at IoU ≥ 0.5, and the counts."""
        return ObjectMetrics(self.recall, self.total, self.hit, self.precision_iou50, self.recall_iou50, self.f1_iou50,
                             self.predicted, self.matched)


@dataclass
class SiteResult:
    """Confusion at the decision threshold, probability histograms and object counts of one pair."""

    name: str
    confusion: Confusion
    histogram: ProbHistogram
    objects: ObjectCounts = field(default_factory=ObjectCounts)


def find_sites(data_dir: str | os.PathLike[str], names: list[str] | None = None) -> list[LabelledPair]:
    """Labelled pairs under ``data_dir`` in any layout (see ``rs.datasets.find_pairs``)."""
    return find_pairs(data_dir, names)


def object_counts(label: np.ndarray, objects: np.ndarray, prob: np.ndarray, threshold: float,
                  min_pixels: float) -> ObjectCounts:
    """Objects (an int label image, 0 = none) of at least ``min_pixels`` pixels, and how many have
    a pixel with probability ≥ ``threshold`` (unlabelled pixels and NaN never count)."""
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


def predicted_objects(prob_path: Path, pair: AlignedPair, threshold: float, options: EvalOptions) -> np.ndarray:
    """Object ids (int32, 0 = none) on the pair's grid of the change objects ``detect`` would write
    from a probability raster (``rs.vectorize`` at ``threshold``, objects under
    ``options.object_min_m2`` dropped, exact outlines)."""
    changes = vectorize(prob_path, VectorizeConfig(threshold, options.object_min_m2),
                        pixel_size_m=(options.pixel_size_m or PLAIN_PIXEL_M) if pair.grid.crs is None else None)
    ids = np.zeros((pair.grid.height, pair.grid.width), np.int32)
    if len(changes):
        shapes = zip(changes.geometry, changes["change_id"].astype(np.int32))
        rasterio.features.rasterize(shapes, out=ids, transform=pair.grid.transform)
    return ids


def _objects(labels: LabelReader, label: np.ndarray, pair: AlignedPair) -> np.ndarray:
    """Object ids on the grid: one per polygon for vector labels, else 4-connected regions."""
    if isinstance(labels, VectorLabels):
        ids = np.zeros(label.shape, np.int32)
        if len(labels.geoms):
            shapes = ((g, i) for i, g in enumerate(labels.geoms, start=1))
            rasterio.features.rasterize(shapes, out=ids, transform=pair.grid.transform)
        return ids
    objects, _ = ndimage.label(label == 1, structure=FOUR_CONNECTED, output=np.int32)
    return objects


def evaluate_site(site: LabelledPair, model: ChangeModel, options: EvalOptions, inference: InferenceConfig,
                  progress: bool = False) -> SiteResult:
    """Run the model over one pair exactly as ``detect`` does (tiles blended into a probability
    GeoTIFF, here a temporary one) and compare with its labels, at ``options.threshold`` (None:
    the model's own).

    The pair is prepared as ``options`` says (bands, GSD, co-registration); the labels are read on
    its common grid. Pixel metrics are counted block by block; object
    metrics need the pair's labels, true and predicted object ids whole (memory: about 20 bytes per
    pixel at the peak), one pair at a time.
    """
    threshold = model.spec.decision_threshold(options.threshold)
    result = SiteResult(site.name, Confusion(), ProbHistogram())
    prepared = prepare_pair(site.before, site.after, options, model.spec, pixel_size_m=options.pixel_size_m)
    with prepared.open() as pair, tempfile.TemporaryDirectory(prefix="changewatch-eval-") as tmp:
        labels = site.labels(pair)
        prob_path = write_probability(pair.grid, tiling(pair.grid, inference),
                                      predict_pair(pair, model, inference, progress), Path(tmp) / "prob.tif",
                                      model.spec.outputs)
        with rasterio.open(prob_path) as probs:
            for _, window in probs.block_windows(1):
                prob = probs.read(1, window=window)
                label = labels.read(window)
                keep = (label != LABEL_NODATA) & ~np.isnan(prob)
                truth = label[keep] == 1
                p = prob[keep]
                result.confusion = result.confusion + confusion(p >= threshold, truth)
                result.histogram.add(p, truth)
            whole = read_whole(pair, labels)
            pixel_m2 = (options.pixel_size_m or PLAIN_PIXEL_M) ** 2 if pair.grid.crs is None else pixel_area_m2(pair.grid)
            truth = _objects(labels, whole, pair)
            min_pixels = options.object_min_m2 / pixel_m2
            touched = object_counts(whole, truth, probs.read(1), threshold, min_pixels)
        predicted, matched = match_objects(predicted_objects(prob_path, pair, threshold, options), truth,
                                           whole != LABEL_NODATA, min_pixels)
        result.objects = replace(touched, predicted=predicted, matched=matched)
    return result


@dataclass
class EvaluationReport:
    """Pooled and per-pair metrics at one threshold."""

    threshold: float
    pooled: Confusion
    sites: dict[str, Confusion]
    histogram: ProbHistogram
    objects: ObjectCounts = field(default_factory=ObjectCounts)
    site_objects: dict[str, ObjectCounts] = field(default_factory=dict)
    object_min_m2: float = EvalOptions.object_min_m2

    def metrics(self) -> Metrics:
        """The figures: pooled, and per pair."""
        return Metrics(PairMetrics(self.pooled.metrics(), self.objects.metrics()), self.object_min_m2, self.threshold,
                       {name: PairMetrics(c.metrics(), self.site_objects.get(name, ObjectCounts()).metrics())
                        for name, c in self.sites.items()})

    def to_dict(self) -> dict[str, object]:
        """JSON form (``Metrics.to_dict``): pooled precision/recall/f1/iou, object_recall and
        object_precision, object_recall_iou50, object_f1 (matches at IoU ≥ 0.5) at the top level,
        per-pair figures under ``sites``."""
        return self.metrics().to_dict()


def evaluate(sites: list[LabelledPair], model: ChangeModel, options: EvalOptions = EvalOptions(),
             inference: InferenceConfig = InferenceConfig(), progress: bool = False) -> EvaluationReport:
    """Evaluate ``model`` on ``sites`` as ``options`` say (threshold None: the model's own; the
    bands of the files compared, GSD, co-registration, object size), running it as ``inference`` says."""
    options = replace(options, threshold=model.spec.decision_threshold(options.threshold))
    report = EvaluationReport(options.threshold, Confusion(), {}, ProbHistogram(), object_min_m2=options.object_min_m2)
    for site in sites:
        r = evaluate_site(site, model, options, inference, progress=progress)
        report.sites[r.name] = r.confusion
        report.site_objects[r.name] = r.objects
        report.pooled = report.pooled + r.confusion
        report.objects = report.objects + r.objects
        report.histogram += r.histogram
    return report


@dataclass(frozen=True)
class Evaluation:
    """An evaluation of a folder of labelled pairs: the report, the model's name and which
    checkpoint was used and why."""

    report: EvaluationReport
    model: str
    choice: ModelChoice


def evaluate_folder(data_dir: str | os.PathLike[str], names: list[str] | None = None, model: str | None = None,
                    options: EvalOptions = EvalOptions(), inference: InferenceConfig = InferenceConfig(),
                    progress: bool = False) -> Evaluation:
    """Evaluate a checkpoint on the labelled pairs under ``data_dir`` (``names``: those pairs only,
    in that order): ``model``, or, when it is None, the shipped model that fits the first pair
    (``rs.prepare.choose_for``: by band count and GSD), loaded on ``inference.device``. Raises
    InputFileError when the folder holds no labelled pairs (or not the ones named), ModelError
    when no model fits, and the errors of ``evaluate``."""
    found = find_sites(data_dir, names)
    with found[0].source(options, options.pixel_size_m).open() as first:
        choice = choose_for(first, model)
    network = ChangeModel.load(choice.path, inference.device)
    return Evaluation(evaluate(found, network, options, inference, progress), network.spec.name, choice)
