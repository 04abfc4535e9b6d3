"""One detection run: align → tiling → infer → vectorize → crosscheck → export.

``detect`` checks every input before it writes anything, writes all outputs through a staging
folder (``rs.export.StagedOutput``), and returns a DetectResult. Outputs in OUTDIR:

- ``change_prob.tif`` — float32 COG of change probability on BEFORE's grid (nodata NaN);
- ``changes.gpkg`` — layer ``changes``: every change polygon (scene CRS) with ``change_id``,
  ``area_m2``, ``mean_prob``, ``max_prob``, ``permit_ids``, ``reasons``, ``flagged``;
- ``flagged.gpkg`` — layer ``flagged_changes``: the changes with a reason code other than
  PERMITTED (with ``parcel_ids`` when parcels are given), and layer ``flagged_parcels``: one row
  per parcel with flags (parcel geometry, ``n_flags``, ``flagged_area_m2``, ``worst_reason``, ``max_prob``);
- ``summary.json`` — counts, areas, inputs, model, thresholds, timings and this run's config.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
from rasterio.windows import Window

import rs
from models.changenet import DEFAULT_MODEL
from rs.align import AlignedPair, scene_date
from rs.crosscheck import Layer, ParcelColumns, RuleConfig, attribute_parcels, crosscheck, read_layer
from rs.export import StagedOutput, write_gpkg, write_json
from rs.infer import ChangeModel, InferenceConfig, predict_pair, write_probability
from rs.vectorize import VectorizeConfig, vectorize

OUTPUT_FILES = ("change_prob.tif", "changes.gpkg", "flagged.gpkg", "summary.json")


@dataclass(frozen=True)
class DetectConfig:
    """Everything one detection run depends on; serialised into ``summary.json``.

    ``threshold`` None means the model's own (chosen on its validation data);
    ``min_area_m2`` is the smallest change kept, in m² of ground; ``rules.as_of`` None means the
    AFTER scene's acquisition date (its TIFF date tag), or today when it has none.
    """

    before: str
    after: str
    outdir: str
    permits: str | None = None
    zoning: str | None = None
    parcels: str | None = None
    model: str = str(DEFAULT_MODEL)
    threshold: float | None = None
    min_area_m2: float = 200.0
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    rules: RuleConfig = field(default_factory=RuleConfig)
    parcel_columns: ParcelColumns = field(default_factory=ParcelColumns)


@dataclass(frozen=True)
class DetectResult:
    """What a run produced: output paths, counts, areas (m²) and the summary written."""

    outdir: Path
    files: dict[str, Path]
    n_changes: int
    n_flagged: int
    flagged_area_m2: float
    summary: dict[str, Any]


Predictor = Callable[[AlignedPair, ChangeModel, InferenceConfig, bool], Iterator[tuple[Window, np.ndarray]]]


def detect(config: DetectConfig, progress: bool = True, model: ChangeModel | None = None,
           predict: Predictor = predict_pair) -> DetectResult:
    """Run the whole pipeline for one scene pair. Raises a ChangewatchError subclass on bad input.

    ``model``: an already loaded model to reuse (batch runs load it once per worker); by default
    ``config.model`` is loaded onto ``config.inference.device``. ``predict``: how the tiles are
    run — in this process by default; ``rs.batch`` passes one that spreads them over Dask workers.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = model or ChangeModel.load(config.model, config.inference.device)
    threshold = model.spec.threshold if config.threshold is None else config.threshold
    with AlignedPair(config.before, config.after) as pair:
        model.check_bands(pair.band_count)
        extent = (pair.grid.bounds, pair.grid.crs)
        pc, zc = config.rules.permit_columns, config.rules.zoning_columns
        permits = read_layer(config.permits, "permits", (pc.permit_id, pc.issued, pc.expires),
                             extent=extent) if config.permits else None
        zoning = read_layer(config.zoning, "zoning", (zc.zone_id, zc.construction_allowed),
                            extent=extent) if config.zoning else None
        qc = config.parcel_columns
        parcels = read_layer(config.parcels, "parcels", tuple(c for c in (qc.parcel_id, qc.ward, qc.owner) if c),
                             extent=extent) if config.parcels else None
        as_of, as_of_source = _as_of(config)
        rules = replace(config.rules, as_of=as_of)
        timings["load_s"] = time.perf_counter() - t0
        with StagedOutput(config.outdir) as out:  # every input is checked: from here on, outputs
            t = time.perf_counter()
            write_probability(pair.grid, predict(pair, model, config.inference, progress), out.path("change_prob.tif"))
            timings["infer_s"] = time.perf_counter() - t
            t = time.perf_counter()
            changes = vectorize(out.path("change_prob.tif"), VectorizeConfig(threshold, config.min_area_m2))
            timings["vectorize_s"] = time.perf_counter() - t
            t = time.perf_counter()
            checked = crosscheck(changes, permits.data if permits else None, zoning.data if zoning else None, rules)
            flagged = checked[checked["flagged"]].reset_index(drop=True)
            links, parcel_table = attribute_parcels(flagged, parcels.data, qc) if parcels else (None, None)
            if links is not None:
                by_change = links.groupby("change_id")["parcel_id"].agg(",".join)
                flagged["parcel_ids"] = flagged["change_id"].map(by_change).fillna("").astype(object)
            timings["crosscheck_s"] = time.perf_counter() - t
            write_gpkg(checked, out.path("changes.gpkg"), "changes")
            write_gpkg(flagged, out.path("flagged.gpkg"), "flagged_changes")
            if parcel_table is not None:
                write_gpkg(parcel_table, out.path("flagged.gpkg"), "flagged_parcels")
            timings["total_s"] = time.perf_counter() - t0
            summary = _summary(config, model, pair, threshold, checked, flagged, permits, timings)
            summary["rules"] = {"as_of": as_of.isoformat(), "as_of_source": as_of_source,
                                "exceed_min_m2": rules.exceed_min_m2, "exceed_min_fraction": rules.exceed_min_fraction}
            summary["inputs"]["zoning"] = str(Path(zoning.path).resolve()) if zoning else None
            summary["inputs"]["zoning_repaired_geometries"] = zoning.repaired if zoning else 0
            summary["inputs"]["parcels"] = str(Path(parcels.path).resolve()) if parcels else None
            summary["counts"]["flagged_parcels"] = len(parcel_table) if parcel_table is not None else None
            write_json(summary, out.path("summary.json"))
    files = {name: out.final(name) for name in OUTPUT_FILES}
    return DetectResult(out.outdir, files, len(checked), len(flagged), float(flagged["area_m2"].sum()), summary)


def _as_of(config: DetectConfig) -> tuple[date, str]:
    """The date the rules are judged on, and where it came from."""
    if config.rules.as_of is not None:
        return config.rules.as_of, "given"
    acquired = scene_date(config.after)
    if acquired is not None:
        return acquired, "AFTER scene date tag"
    return date.today(), "today (AFTER has no date tag)"


def _summary(config: DetectConfig, model: ChangeModel, pair: AlignedPair, threshold: float,
             checked: gpd.GeoDataFrame, flagged: gpd.GeoDataFrame, permits: Layer | None,
             timings: dict[str, float]) -> dict[str, Any]:
    reasons = flagged["reasons"].str.split(",").explode().value_counts().to_dict() if len(flagged) else {}
    return {
        "changewatch_version": rs.__version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": {"changes": len(checked), "flagged": len(flagged), "permitted": len(checked) - len(flagged),
                   "by_reason": reasons},
        "areas_m2": {"changes": float(checked["area_m2"].sum()), "flagged": float(flagged["area_m2"].sum())},
        "inputs": {
            "before": str(Path(config.before).resolve()), "after": str(Path(config.after).resolve()),
            "permits": str(Path(permits.path).resolve()) if permits else None,
            "permits_repaired_geometries": permits.repaired if permits else 0,
            "crs": pair.grid.crs.to_string(), "width": pair.grid.width, "height": pair.grid.height,
            "bands_per_date": pair.band_count,
        },
        "model": {"path": str(Path(config.model).resolve()), "name": model.spec.name,
                  "encoder": model.spec.encoder, "bands": list(model.spec.bands), "device": str(model.device)},
        "thresholds": {"probability": threshold, "min_area_m2": config.min_area_m2},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "config": asdict(config),
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }
