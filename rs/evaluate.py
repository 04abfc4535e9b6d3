"""Pixel-level change metrics of a model on labelled sites, pooled over all pixels.

A *site* is a folder holding ``before.tif``, ``after.tif`` and ``change.tif`` (uint8, georeferenced:
1 = change, 0 = no change, 255 = not labelled), the layout of ``shared/data/oscd``. Predictions
come from the same tiled, blended path as ``detect`` (``rs.infer``), so the figures describe what
users get.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio

from rs.align import AlignedPair
from rs.errors import InputFileError
from rs.infer import ChangeModel, InferenceConfig, predict_pair, tiling, write_probability

LABEL_NODATA = 255
HIST_BINS = 1000
SITE_FILES = ("before.tif", "after.tif", "change.tif")


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
class SiteResult:
    """Confusion at the decision threshold and probability histograms of one site."""

    name: str
    confusion: Confusion
    histogram: ProbHistogram


def find_sites(data_dir: str | os.PathLike[str], names: list[str] | None = None) -> list[Path]:
    """Site folders under ``data_dir`` (those holding before/after/change.tif), sorted by name.

    With ``names``, exactly those sites, in that order; a missing one is an InputFileError.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise InputFileError(f"data folder not found: {root}")
    if names:
        sites = [root / n for n in names]
        for s in sites:
            missing = [f for f in SITE_FILES if not (s / f).exists()]
            if missing:
                raise InputFileError(f"site {s} lacks {', '.join(missing)}")
        return sites
    sites = sorted(p for p in root.iterdir() if p.is_dir() and all((p / f).exists() for f in SITE_FILES))
    if not sites:
        raise InputFileError(f"no site folders with {', '.join(SITE_FILES)} under {root}")
    return sites


def evaluate_site(site: Path, model: ChangeModel, threshold: float, config: InferenceConfig,
                  progress: bool = False, bands: tuple[str, ...] | None = None) -> SiteResult:
    """Run the model over one site exactly as ``detect`` does (tiles blended into a probability
    GeoTIFF, here a temporary one) and compare with its labels, block by block.

    ``bands``: the bands of the site's files fed to the model, by 1-based index or name (None: all).
    The labels are read on the common grid (nearest neighbour), wherever their own grid lies."""
    result = SiteResult(site.name, Confusion(), ProbHistogram())
    with AlignedPair(site / "before.tif", site / "after.tif", bands) as pair, \
            tempfile.TemporaryDirectory(prefix="changewatch-eval-") as tmp:
        labels = pair.reader_for(site / "change.tif", "label", fill=LABEL_NODATA)
        prob_path = write_probability(pair.grid, tiling(pair.grid, config),
                                      predict_pair(pair, model, config, progress), Path(tmp) / "prob.tif")
        with rasterio.open(prob_path) as probs:
            for _, window in probs.block_windows(1):
                prob = probs.read(1, window=window)
                label = labels.read([1], window, with_valid=False)[0][0]
                keep = (label != LABEL_NODATA) & ~np.isnan(prob)
                truth = label[keep] == 1
                p = prob[keep]
                result.confusion = result.confusion + confusion(p >= threshold, truth)
                result.histogram.add(p, truth)
    return result


@dataclass
class EvaluationReport:
    """Pooled and per-site metrics at one threshold."""

    threshold: float
    pooled: Confusion
    sites: dict[str, Confusion]
    histogram: ProbHistogram

    def to_dict(self) -> dict[str, object]:
        """JSON form: pooled precision/recall/f1/iou at the top level, per-site figures under ``sites``."""
        return {**self.pooled.metrics(), "threshold": self.threshold,
                "sites": {name: c.metrics() for name, c in self.sites.items()}}


def evaluate(sites: list[Path], model: ChangeModel, threshold: float | None = None,
             config: InferenceConfig | None = None, progress: bool = False,
             bands: tuple[str, ...] | None = None) -> EvaluationReport:
    """Evaluate ``model`` on ``sites`` at ``threshold`` (default: the model's own), on ``bands`` of the files."""
    thr = model.spec.threshold if threshold is None else threshold
    config = config or InferenceConfig()
    pooled, per_site, hist = Confusion(), {}, ProbHistogram()
    for site in sites:
        r = evaluate_site(site, model, thr, config, progress=progress, bands=bands)
        per_site[r.name] = r.confusion
        pooled = pooled + r.confusion
        hist += r.histogram
    return EvaluationReport(thr, pooled, per_site, hist)
