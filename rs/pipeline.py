"""One detection run: align → tiling → infer → vectorize → crosscheck → export.

``detect`` checks every input before it writes anything, writes all outputs into a staging
folder that replaces OUTDIR as a whole when the run has succeeded (``rs.export.StagedOutput``:
OUTDIR is at every instant the complete earlier run or the complete new one; a failed run
leaves it as it was), and returns a DetectResult. Review decisions a planner saved in the earlier
run's ``flagged.gpkg`` are carried to the new flags (``rs.review.match_decisions``). Outputs in OUTDIR:

- ``change_prob.tif`` — float32 COG of change probability on the common grid (``rs.align.GridSpec``:
  by default BEFORE's pixels where the two dates overlap; nodata NaN);
- ``changes.gpkg`` — layer ``changes``: every change polygon (scene CRS) with ``change_id``,
  ``area_m2``, ``mean_prob``, ``max_prob``, ``change_type`` (models with building outputs: one
  polygon per building, see ``rs.buildings``; else NULL), ``permit_ids``, ``reasons``, ``flagged``;
- ``flagged.gpkg`` — layer ``flagged_changes``: the changes with a reason code other than
  PERMITTED (with ``parcel_ids`` when parcels are given), and layer ``flagged_parcels``: one row
  per parcel with flags (parcel geometry, ``n_flags``, ``flagged_area_m2``, ``worst_reason``, ``max_prob``);
  layers ``review`` and ``review_unmatched`` when decisions were carried over;
- ``summary.json`` — counts (by reason code and by change type), areas, inputs, model,
  thresholds, how changes were split into buildings, timings and this run's config.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS

import changewatch
from changewatch.rs.align import AlignedPair, scene_date
from changewatch.rs.config import CrosscheckConfig, DetectConfig, InferenceConfig, VectorizeConfig
from changewatch.rs.crosscheck import Judgement, Layers, RuleConfig, judge, read_layer
from changewatch.rs.errors import InputFileError
from changewatch.rs.export import StagedOutput, write_json, write_judgement
from changewatch.rs.infer import ChangeModel, ModelCache, predict_pair, tiling, write_probability
from changewatch.rs.prepare import PreparedPair, prepare_for_model
from changewatch.rs.review import CarriedReview, match_decisions, previous_decisions
from changewatch.rs.tiling import Tile
from changewatch.rs.buildings import CHANGE_TYPES
from changewatch.rs.grid import metric_crs
from changewatch.rs.vectorize import Vectorized, vectorize_changes

OUTPUT_FILES = ("change_prob.tif", "changes.gpkg", "flagged.gpkg", "summary.json")


@dataclass(frozen=True)
class DetectResult:
    """What a run produced: output paths, counts, areas (m²) and the summary written."""

    outdir: Path
    files: dict[str, Path]
    n_changes: int
    n_flagged: int
    flagged_area_m2: float
    summary: dict[str, Any]


Predictor = Callable[[AlignedPair, ChangeModel, InferenceConfig, bool], Iterator[tuple[Tile, np.ndarray]]]


def detect(config: DetectConfig, progress: bool = True, models: ModelCache | None = None,
           predict: Predictor = predict_pair) -> DetectResult:
    """Run the whole pipeline for one scene pair into ``config.outdir`` (replaced as a whole, see the
    module docstring). Raises a ChangewatchError subclass on bad input, OutputError when the outputs
    cannot be written (OUTDIR is then as it was).

    ``models``: where loaded models are kept for reuse (batch runs keep one per worker); by
    default a fresh one on ``config.inference.device``. ``predict``: how the tiles are run — in
    this process by default; ``rs.batch`` passes one that spreads them over Dask workers.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    models = models or ModelCache(config.inference.device, config.inference.amp)
    prepared = prepare_for_model(config.before, config.after, config, config.model, masks=config.masks,
                                 spec_of=models.spec, georeferenced=True)
    assert prepared.choice is not None  # prepare_for_model always chooses
    model = models.get(prepared.choice.path)
    with prepared.open() as pair:
        threshold = model.spec.decision_threshold(config.threshold)
        layers = config.layers.read(extent=(pair.grid.bounds, pair.grid.crs))
        as_of, as_of_source = _as_of(config)
        rules = replace(config.layers.rules, as_of=as_of)
        timings["load_s"] = time.perf_counter() - t0
        with StagedOutput(config.outdir, inputs=_inputs(config)) as out:  # every input is checked: now outputs
            previous = previous_decisions(out.final("flagged.gpkg"))  # unreadable: refused before the long part
            t = time.perf_counter()
            with out.writing("change_prob.tif"):
                write_probability(pair.grid, tiling(pair.grid, config.inference),
                                  _reading(predict(pair, model, config.inference, progress)),
                                  out.path("change_prob.tif"), model.spec.outputs)
            timings["infer_s"] = time.perf_counter() - t
            t = time.perf_counter()
            vectorized = vectorize_changes(out.path("change_prob.tif"), VectorizeConfig(
                threshold, config.min_area_m2, config.simplify_m, config.buildings))
            timings["vectorize_s"] = time.perf_counter() - t
            t = time.perf_counter()
            judgement = judge(vectorized.changes, layers, rules, config.layers.parcel_columns)
            timings["crosscheck_s"] = time.perf_counter() - t
            carried = _write_judgement(judgement, previous, out)
            timings["total_s"] = time.perf_counter() - t0
            summary = _summary(config, model, prepared, pair, threshold, vectorized, judgement, layers, rules,
                               as_of_source, timings)
            summary["review"] = carried.to_dict() if carried else None
            with out.writing("summary.json"):
                write_json(summary, out.path("summary.json"))
    files = {name: out.final(name) for name in OUTPUT_FILES}
    return DetectResult(out.outdir, files, len(judgement.changes), len(judgement.flagged),
                        float(judgement.flagged["area_m2"].sum()), summary)


def _inputs(config: DetectConfig) -> list[str]:
    """Every file a detect run reads (none may lie inside the folder it replaces)."""
    layers = config.layers
    return [p for p in (config.before, config.after, *config.masks, layers.permits, layers.zoning, layers.parcels,
                        config.model) if p]


def _reading(chunks: Iterator[tuple[Tile, np.ndarray]]) -> Iterator[tuple[Tile, np.ndarray]]:
    """``chunks``, with a read failure of the scenes reported as InputFileError (so that it is not
    taken for a failure to write the probability raster they are blended into)."""
    try:
        yield from chunks
    except (OSError, CPLE_BaseError) as exc:
        raise InputFileError(f"the scenes could not be read: {' '.join(str(exc).split())}") from exc


def _write_judgement(judgement: Judgement, previous: gpd.GeoDataFrame | None,
                     out: StagedOutput) -> CarriedReview | None:
    """changes.gpkg and flagged.gpkg into the staging folder, with the earlier run's review
    decisions carried to the new flags (``rs.review.match_decisions``; None when there were none)."""
    carried = match_decisions(previous, judgement.flagged, out.final("flagged.gpkg")) if previous is not None else None
    with out.writing():
        write_judgement(judgement, out.path("changes.gpkg"), out.path("flagged.gpkg"))
        if carried is not None:
            carried.write(out.path("flagged.gpkg"))
    return carried


def _as_of(config: DetectConfig) -> tuple[date, str]:
    """The date the rules are judged on, and where it came from."""
    if config.layers.rules.as_of is not None:
        return config.layers.rules.as_of, "given"
    acquired = scene_date(config.after)
    if acquired is not None:
        return acquired, "AFTER scene date tag"
    return date.today(), "today (AFTER has no date tag)"


def change_type_counts(vectorized: Vectorized) -> dict[str, int] | None:
    """Changes per change type (every type listed), or None when the raster had no building
    probabilities (the model cannot tell)."""
    if not vectorized.buildings:
        return None
    found = vectorized.changes["change_type"].value_counts()
    return {kind: int(found.get(kind, 0)) for kind in CHANGE_TYPES}


def _summary(config: DetectConfig, model: ChangeModel, prepared: PreparedPair, pair: AlignedPair, threshold: float,
             vectorized: Vectorized, judgement: Judgement, layers: Layers, rules: RuleConfig, as_of_source: str,
             timings: dict[str, float]) -> dict[str, Any]:
    choice, coreg = prepared.choice, prepared.coregistration
    assert choice is not None  # prepare_for_model always chooses
    counts = judgement.counts()
    return {
        "changewatch_version": changewatch.__version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": {**{k: v for k, v in counts.items() if not k.endswith("area_m2")},
                   "by_change_type": change_type_counts(vectorized)},
        "areas_m2": {"changes": counts["changes_area_m2"], "flagged": counts["flagged_area_m2"]},
        "inputs": {
            "before": str(Path(config.before).resolve()), "after": str(Path(config.after).resolve()),
            **layers.provenance(),
            "crs": pair.grid.crs.to_string(), "width": pair.grid.width, "height": pair.grid.height,
            "pixel_size_m": pair.grid.pixel_size_m(), "grid": asdict(pair.grid_spec),
            "bands_per_date": pair.band_count, "bands": list(config.bands) if config.bands else "all",
            "masks": [str(Path(m).resolve()) for m in config.masks],
            "coregistration": coreg.to_dict() if coreg else None, **pair.provenance(),
        },
        "model": {"path": str(choice.path.resolve()), "name": model.spec.name, "chosen_because": choice.reason,
                  "gsd_m": model.spec.gsd_m, "serves_gsd_m": list(model.spec.serves_gsd_m),
                  "compared_at_gsd_m": pair.grid.pixel_size_m(),
                  "encoder": model.spec.encoder, "bands": list(model.spec.bands), "device": str(model.device)},
        "thresholds": {"probability": threshold, "min_area_m2": config.min_area_m2, "simplify_m": config.simplify_m},
        "buildings": {"split_per_building": vectorized.buildings, "unsplit_regions": vectorized.unsplit,
                      "notes": list(vectorized.notes)},
        "rules": {"as_of": rules.as_of.isoformat() if rules.as_of else None, "as_of_source": as_of_source,
                  "exceed_min_m2": rules.exceed_min_m2, "exceed_min_fraction": rules.exceed_min_fraction,
                  "demolition_needs_permit": rules.demolition_needs_permit},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "warnings": layers.warnings(),
        "config": asdict(config),
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }


def run_crosscheck(config: CrosscheckConfig) -> tuple[Judgement, dict[str, Any]]:
    """Judge a change layer against the given layers; writes changes.gpkg, flagged.gpkg and
    crosscheck_summary.json into ``config.outdir`` (staged, like ``detect``).

    The as-of date is ``config.layers.rules.as_of``, else the one recorded in a ``summary.json`` beside
    the change layer (a detect run's), else today. Changes without ``change_id`` are numbered 1…n.
    """
    changes = read_layer(config.changes, "changes", ids="change_id", source=config.layers.sources.changes)
    numbered = "change_id" not in changes.data
    data = changes.data.assign(change_id=range(1, len(changes.data) + 1)) if numbered else changes.data
    if "area_m2" not in data:
        data = data.assign(area_m2=data.to_crs(metric_crs(data)).area if len(data) else [])
    # the layers are read where the changes are: their counts say what lies inside the changes' extent
    layers = config.layers.read((tuple(data.total_bounds), CRS.from_user_input(data.crs)) if len(data) else None)
    as_of, source = _crosscheck_as_of(config)
    rules = replace(config.layers.rules, as_of=as_of)
    judgement = judge(data, layers, rules, config.layers.parcel_columns)
    summary = {
        "changewatch_version": changewatch.__version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": judgement.counts(),
        "inputs": {"changes": str(Path(changes.path).resolve()), "changes_repaired_geometries": changes.repaired,
                   "change_ids_assigned": numbered, **layers.provenance()},
        "rules": {"as_of": as_of.isoformat(), "as_of_source": source, "exceed_min_m2": rules.exceed_min_m2,
                  "exceed_min_fraction": rules.exceed_min_fraction,
                  "demolition_needs_permit": rules.demolition_needs_permit},
        "warnings": layers.warnings(),
        "config": asdict(config),
    }
    given = config.layers
    with StagedOutput(config.outdir, inputs=[p for p in (config.changes, given.permits, given.zoning, given.parcels)
                                             if p]) as out:
        carried = _write_judgement(judgement, previous_decisions(out.final("flagged.gpkg")), out)
        summary["review"] = carried.to_dict() if carried else None
        with out.writing("crosscheck_summary.json"):
            write_json(summary, out.path("crosscheck_summary.json"))
    return judgement, summary


def _crosscheck_as_of(config: CrosscheckConfig) -> tuple[date, str]:
    if config.layers.rules.as_of is not None:
        return config.layers.rules.as_of, "given"
    beside = Path(config.changes).parent / "summary.json"
    try:
        return date.fromisoformat(json.loads(beside.read_text())["rules"]["as_of"]), f"{beside}"
    except (OSError, ValueError, KeyError, TypeError):
        return date.today(), "today (no --as-of and no detect summary.json beside the changes)"
