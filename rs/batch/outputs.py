"""A batch's own outputs: ``batch_summary.json``/``.csv`` and one combined ``flagged.gpkg``, in EPSG:4326.

``batch_summary`` holds every job's record; ``flagged.gpkg`` every area's flags, and their parcels
combined.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd

from changewatch.rs.batch.jobs import JobRecord
from changewatch.rs.batch.manifest import DETECT
from changewatch.rs.crosscheck.rules import SEVERITY
from changewatch.rs.io.files import atomic_write, write_json, writing
from changewatch.rs.io.vector import layer_names, write_gpkg
from changewatch.rs.runfolder import FLAGGED_GPKG, LAYER_FLAGGED, LAYER_PARCELS, SUMMARY, read_summary

COMBINED_CRS = "EPSG:4326"


@dataclass
class BatchResult:
    """Every job's record, in manifest order, and where the batch-level outputs are."""

    records: list[JobRecord]
    outdir: Path

    @property
    def failed(self) -> list[JobRecord]:
        """The records of the jobs that failed, in manifest order."""
        return [r for r in self.records if r.status == "failed"]


def _area_layers(out: Path, records: list[JobRecord]) -> tuple[list[gpd.GeoDataFrame], list[gpd.GeoDataFrame]]:
    """Per finished area: its flagged changes and its flagged parcels (EPSG:4326, with ``area_id``).

    Parcels also have ``parcels_layer``, the layer they came from. Scenes rows (monitor stores) have
    none: their tracked changes are in ``OUTDIR/<area_id>/history.gpkg``.
    """
    changes, parcels = [], []
    for r in records:
        if r.status not in ("done", "skipped") or r.kind != DETECT:
            continue
        gpkg = out / r.area_id / FLAGGED_GPKG
        flagged = gpd.read_file(gpkg, layer=LAYER_FLAGGED)
        changes.append(flagged.assign(area_id=r.area_id).to_crs(COMBINED_CRS))
        if LAYER_PARCELS in layer_names(gpkg):
            source = read_summary(out / r.area_id / SUMMARY).inputs.parcels
            table = gpd.read_file(gpkg, layer=LAYER_PARCELS)
            parcels.append(table.assign(area_id=r.area_id, parcels_layer=source).to_crs(COMBINED_CRS))
    return changes, parcels


def combine_parcels(tables: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """One row per parcel over all areas; parcels are told apart by layer and id.

    A parcel that flags from several areas touch (areas overlap, or a parcel crosses an area edge)
    has its counts and areas summed, its worst reason and highest probability kept.
    """
    rows = pd.concat(tables, ignore_index=True)
    rank = {code: i for i, code in enumerate(SEVERITY)}
    rows["rank"] = rows["worst_reason"].map(rank)
    key = ["parcels_layer", "parcel_id"]
    grouped = rows.groupby(key, sort=True)
    first = grouped.first()
    table = gpd.GeoDataFrame({
        "ward": first["ward"], "areas": grouped["area_id"].agg(lambda a: ",".join(sorted(set(a)))),
        "n_flags": grouped["n_flags"].sum(), "flagged_area_m2": grouped["flagged_area_m2"].sum(),
        "worst_reason": grouped["rank"].min().map(dict(enumerate(SEVERITY))), "max_prob": grouped["max_prob"].max(),
    }, geometry=first["geometry"].values, crs=COMBINED_CRS)
    return table.reset_index()


def write_batch_outputs(result: BatchResult) -> None:
    """Write ``batch_summary.json``/``.csv`` and one combined ``flagged.gpkg`` (EPSG:4326).

    ``flagged.gpkg`` has layer ``flagged_changes`` (every area's flags, with ``area_id``) and, when
    areas had parcels, ``flagged_parcels`` combined over the areas (``combine_parcels``).
    """
    with writing(result.outdir):
        _write_batch_outputs(result)


def _write_batch_outputs(result: BatchResult) -> None:
    out = result.outdir
    rows = [asdict(r) for r in result.records]
    with atomic_write(out / "batch_summary.json") as tmp:
        write_json({"jobs": rows, "counts": pd.Series([r.status for r in result.records]).value_counts().to_dict()},
                   tmp)
    with atomic_write(out / "batch_summary.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    changes, parcels = _area_layers(out, result.records)
    combined = (gpd.GeoDataFrame(pd.concat(changes, ignore_index=True), crs=COMBINED_CRS) if changes
                else gpd.GeoDataFrame({"area_id": []}, geometry=[], crs=COMBINED_CRS))
    combined = combined[["area_id", *[c for c in combined.columns if c != "area_id"]]]
    with atomic_write(out / FLAGGED_GPKG) as tmp:
        write_gpkg(combined, tmp, LAYER_FLAGGED)
        if parcels:
            write_gpkg(combine_parcels(parcels), tmp, LAYER_PARCELS)
