"""Change metrics of a model on labelled pairs: pixel-level (pooled over all pixels and per pair) and object-level.

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
  over union (pixels, unlabelled pixels left out) is at least 0.5, one to one
  (``rs.metrics.match_objects``).
  Precision = matched / predicted objects, recall = matched / true objects, F1 their harmonic
  mean. A predicted object with no labelled pixel, or that matches only a true object under the
  size, is not counted.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features

from changewatch.models.spec import ModelChoice
from changewatch.rs.align import AlignedPair
from changewatch.rs.buildings import FOUR_CONNECTED, label_int32
from changewatch.rs.config import EvalOptions, InferenceConfig, VectorizeConfig
from changewatch.rs.datasets import LABEL_NODATA, LabelledPair, LabelReader, VectorLabels, find_pairs, read_whole
from changewatch.rs.grid import pixel_area_m2
from changewatch.rs.infer import ChangeModel, predict_pair, tiling
from changewatch.rs.io.raster import write_probability
from changewatch.rs.metrics import (
    Confusion,
    Metrics,
    ObjectCounts,
    PairMetrics,
    ProbHistogram,
    confusion,
    match_objects,
    object_counts,
)
from changewatch.rs.prepare import choose_for, prepare_pair
from changewatch.rs.vectorize import vectorize

PLAIN_PIXEL_M = 1.0  # pixel size assumed for object areas of plain images when none is given


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


def predicted_objects(prob_path: Path, pair: AlignedPair, threshold: float, options: EvalOptions) -> np.ndarray:
    """Object ids (int32, 0 = none) on the pair's grid of the change objects ``detect`` would write.

    From a probability raster: ``rs.vectorize`` at ``threshold``, objects under
    ``options.object_min_m2`` dropped, exact outlines.

    Raises:
        ValueError: ``options.object_min_m2`` is None: resolve it first (``ModelSpec.smallest_change_m2``).
    """
    if options.object_min_m2 is None:
        raise ValueError("options.object_min_m2 must be given (ModelSpec.smallest_change_m2 resolves None)")
    changes = vectorize(prob_path, VectorizeConfig(threshold, options.object_min_m2),
                        pixel_size_m=(options.pixel_size_m or PLAIN_PIXEL_M) if pair.grid.crs is None else None)
    ids = np.zeros((pair.grid.height, pair.grid.width), np.int32)
    if len(changes):
        shapes = zip(changes.geometry, changes["change_id"].astype(np.int32), strict=True)
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
    objects, _ = label_int32(label == 1, FOUR_CONNECTED)
    return objects


def evaluate_site(site: LabelledPair, model: ChangeModel, options: EvalOptions, inference: InferenceConfig,
                  progress: bool = False) -> SiteResult:
    """Run the model over one pair exactly as ``detect`` does and compare with its labels.

    Tiles are blended into a probability GeoTIFF (here a temporary one); the threshold is
    ``options.threshold`` (None: the model's own).

    The pair is prepared as ``options`` says (bands, GSD, co-registration); the labels are read on
    its common grid. Pixel metrics are counted block by block; object metrics need the pair's
    labels, true and predicted object ids whole (memory: about 20 bytes per pixel at the peak),
    one pair at a time.
    """
    object_min_m2 = model.spec.smallest_change_m2(options.object_min_m2)
    options = replace(options, object_min_m2=object_min_m2)
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
            pixel_m2 = ((options.pixel_size_m or PLAIN_PIXEL_M) ** 2 if pair.grid.crs is None
                        else pixel_area_m2(pair.grid))
            truth = _objects(labels, whole, pair)
            min_pixels = object_min_m2 / pixel_m2
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
    object_min_m2: float = 0.0  # as used: the model's own when the options gave none

    def metrics(self) -> Metrics:
        """The figures: pooled, and per pair."""
        return Metrics(PairMetrics(self.pooled.metrics(), self.objects.metrics()), self.object_min_m2, self.threshold,
                       {name: PairMetrics(c.metrics(), self.site_objects.get(name, ObjectCounts()).metrics())
                        for name, c in self.sites.items()})

    def to_dict(self) -> dict[str, object]:
        """JSON form (``Metrics.to_dict``): pooled figures at the top level, per-pair figures under ``sites``.

        The top level holds precision/recall/f1/iou, object_recall and object_precision,
        object_recall_iou50, object_f1 (matches at IoU ≥ 0.5).
        """
        return self.metrics().to_dict()


def evaluate(sites: list[LabelledPair], model: ChangeModel, options: EvalOptions = EvalOptions(),
             inference: InferenceConfig = InferenceConfig(), progress: bool = False) -> EvaluationReport:
    """Evaluate ``model`` on ``sites`` as ``options`` say, running it as ``inference`` says.

    ``options``: threshold (None: the model's own), the bands of the files compared, GSD,
    co-registration, object size.
    """
    threshold = model.spec.decision_threshold(options.threshold)
    object_min_m2 = model.spec.smallest_change_m2(options.object_min_m2)
    options = replace(options, threshold=threshold, object_min_m2=object_min_m2)
    report = EvaluationReport(threshold, Confusion(), {}, ProbHistogram(), object_min_m2=object_min_m2)
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
    """An evaluation of a folder of labelled pairs: the report, the model's name, which checkpoint and why."""

    report: EvaluationReport
    model: str
    choice: ModelChoice


def evaluate_folder(data_dir: str | os.PathLike[str], names: list[str] | None = None, model: str | None = None,
                    options: EvalOptions = EvalOptions(), inference: InferenceConfig = InferenceConfig(),
                    progress: bool = False) -> Evaluation:
    """Evaluate a checkpoint on the labelled pairs under ``data_dir``.

    ``names``: those pairs only, in that order. The checkpoint is ``model``, or, when it is None,
    the shipped model that fits the first pair (``rs.prepare.choose_for``: by band count and GSD),
    loaded on ``inference.device``. Raises InputFileError when the folder holds no labelled pairs
    (or not the ones named), ModelError when no model fits, and the errors of ``evaluate``.
    """
    found = find_sites(data_dir, names)
    with found[0].source(options, options.pixel_size_m).open() as first:
        choice = choose_for(first, model)
    network = ChangeModel.load(choice.path, inference.device)
    return Evaluation(evaluate(found, network, options, inference, progress), network.spec.name, choice)
