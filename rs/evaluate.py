"""Change metrics of a model on labelled pairs: pixel-level (pooled over all pixels and per pair)
and object-level recall.

Pairs come in any layout ``rs.datasets`` reads (OSCD-style sites, LEVIR-CD A/B/label folders of
plain or georeferenced images, scenes with a vector layer of changed polygons). Predictions come
from the same tiled, blended path as ``detect`` (``rs.infer``), so the figures describe what users
get. *Object recall* is the share of true change objects of at least ``object_min_m2`` — connected
regions of a label raster, or the polygons of a vector layer — that have at least one pixel
predicted as change.
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

from changewatch.rs.align import AlignedPair, at_model_gsd
from changewatch.rs.coregister import coregister
from changewatch.rs.datasets import LABEL_NODATA, LabelledPair, LabelReader, VectorLabels, find_pairs, read_whole
from changewatch.rs.infer import ChangeModel, InferenceConfig, predict_pair, tiling, write_probability
from changewatch.rs.vectorize import FOUR_CONNECTED, pixel_area_m2

HIST_BINS = 1000


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

    def metrics(self) -> dict[str, float | int]:
        """Precision, recall, F1, IoU (0–1) and the raw counts."""
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "iou": self.iou, **asdict(self)}


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
        candidates = np.round(np.arange(step, 1.0, step), 6)
        scored = [(self.confusion_at(t).f1, -abs(t - 0.5), t) for t in candidates]
        _, _, best = max(scored)
        return float(best), self.confusion_at(best)


@dataclass
class ObjectCounts:
    """True change objects of at least the minimum area, and how many the prediction hit."""

    total: int = 0
    hit: int = 0

    def __add__(self, other: ObjectCounts) -> ObjectCounts:
        return ObjectCounts(self.total + other.total, self.hit + other.hit)

    @property
    def recall(self) -> float:
        return self.hit / self.total if self.total else 0.0


@dataclass
class SiteResult:
    """Confusion at the decision threshold, probability histograms and object counts of one pair."""

    name: str
    confusion: Confusion
    histogram: ProbHistogram
    objects: ObjectCounts = field(default_factory=ObjectCounts)


@dataclass(frozen=True)
class EvalOptions:
    """How to score: the decision threshold (None: the model's own), the smallest true object
    counted for object recall (m² of ground), the pixel size assumed for plain images without
    georeferencing (metres), whether imagery much finer than the model's GSD is compared at
    that GSD ("auto") or at its own ("native"), whether AFTER's residual shift is measured
    and removed (``rs.coregister``), as ``detect`` does, and whether pixels 0 in every band are
    data (``rs.validity``)."""

    threshold: float | None = None
    object_min_m2: float = 200.0
    pixel_size_m: float = 1.0
    gsd: str = "auto"
    coregister: bool = True
    zero_is_valid: bool = False


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


def evaluate_site(site: LabelledPair, model: ChangeModel, config: InferenceConfig, options: EvalOptions,
                  progress: bool = False, bands: tuple[str, ...] | None = None) -> SiteResult:
    """Run the model over one pair exactly as ``detect`` does (tiles blended into a probability
    GeoTIFF, here a temporary one) and compare with its labels.

    ``bands``: the bands of the pair's files fed to the model, by 1-based index or name (None: all).
    The labels are read on the common grid. Pixel metrics are counted block by block; object
    recall needs the pair's labels and probabilities whole (memory: about 9 bytes per pixel).
    """
    threshold = model.spec.threshold if options.threshold is None else options.threshold
    result = SiteResult(site.name, Confusion(), ProbHistogram())
    pair = at_model_gsd(site.open(bands, options.zero_is_valid), model.spec.gsd_m, options.gsd)
    if options.coregister:
        pair, _ = coregister(pair)
    with pair, tempfile.TemporaryDirectory(prefix="changewatch-eval-") as tmp:
        labels = site.labels(pair)
        prob_path = write_probability(pair.grid, tiling(pair.grid, config),
                                      predict_pair(pair, model, config, progress), Path(tmp) / "prob.tif")
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
            pixel_m2 = options.pixel_size_m ** 2 if pair.grid.crs is None else pixel_area_m2(pair.grid)
            result.objects = object_counts(whole, _objects(labels, whole, pair), probs.read(1), threshold,
                                           options.object_min_m2 / pixel_m2)
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
    object_min_m2: float = 200.0

    def to_dict(self) -> dict[str, object]:
        """JSON form: pooled precision/recall/f1/iou and object_recall at the top level, per-pair
        figures under ``sites``."""
        def objects(o: ObjectCounts) -> dict[str, object]:
            return {"object_recall": o.recall, "objects": o.total, "objects_hit": o.hit}

        return {**self.pooled.metrics(), **objects(self.objects), "object_min_m2": self.object_min_m2,
                "threshold": self.threshold,
                "sites": {name: {**c.metrics(), **objects(self.site_objects.get(name, ObjectCounts()))}
                          for name, c in self.sites.items()}}


def evaluate(sites: list[LabelledPair], model: ChangeModel, threshold: float | None = None,
             config: InferenceConfig | None = None, progress: bool = False,
             bands: tuple[str, ...] | None = None, options: EvalOptions | None = None) -> EvaluationReport:
    """Evaluate ``model`` on ``sites`` at ``threshold`` (default: ``options.threshold``, else the
    model's own), on ``bands`` of the files."""
    options = options or EvalOptions()
    thr = next(t for t in (threshold, options.threshold, model.spec.threshold) if t is not None)
    options = replace(options, threshold=thr)
    config = config or InferenceConfig()
    report = EvaluationReport(thr, Confusion(), {}, ProbHistogram(), object_min_m2=options.object_min_m2)
    for site in sites:
        r = evaluate_site(site, model, config, options, progress=progress, bands=bands)
        report.sites[r.name] = r.confusion
        report.site_objects[r.name] = r.objects
        report.pooled = report.pooled + r.confusion
        report.objects = report.objects + r.objects
        report.histogram += r.histogram
    return report
