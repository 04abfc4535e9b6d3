"""A store's change history: the change polygons of consecutive pairs tracked across dates into ``history.gpkg``.

The history is rebuilt from every pair folder on each run (deterministic: the same folders give
the same file) and replaces ``STORE/history.gpkg`` atomically when it differs from the file's (``write_history``).
Its CRS is the first pair's.

Tracking. Pairs are read in date order. A pair's change polygon is an observation of the tracked
change whose footprint it overlaps or comes within ``MATCH_REACH_PX`` pixels of (the pair's pixel
size), the one it shares the most area with (footprint grown by that reach) when several qualify:
consecutive pairs see only what changed between their dates, so a building's extension is a
polygon *beside* its earlier footprint, not over it. A polygon that matches no tracked change
starts one. A tracked change's footprint is the union of its observed polygons.

Layer ``changes``, one row per tracked change: ``change_id`` (``YYYYMMDD-NNN``: the date first seen
and the number of the pair polygon that started it, so ids never change when later scenes are
added), ``first_seen`` and ``last_seen`` (ISO dates of the AFTER scenes of the first and last pairs
that observed it), ``n_observations``, ``status``, ``area_m2`` (footprint, local UTM),
``previous_area_m2`` (before its last observation; 0 for a new one), ``change_type`` (of its last
observation) and ``reasons`` (``build_history``: of its last observation; ``rs.monitor.run.judged``
replaces them by its footprint's, judged with ``first_seen``, and adds ``permit_ids``), and the
footprint. ``status`` is judged at the latest date:

- ``gone``: observed at the latest date as ``demolished`` (models with building outputs only);
- ``new``: first seen at the latest date;
- ``growing``: observed again at the latest date, its footprint larger than
  ``(1 + GROWTH_SHARE)`` × ``previous_area_m2``;
- ``stable``: otherwise (not observed changing at the latest date, or changing without growing).

Layer ``observations``, one row per tracked change and date it was observed: ``change_id``,
``date``, ``pair`` (the pair folder's name), ``pair_change_ids`` (``change_id`` of the pair's
polygons, comma-separated), ``area_m2`` (their area), ``max_prob``, ``footprint_m2`` (the tracked
change's footprint after this observation) and the observed polygons.

Layer ``parcel_history``: what each pair flagged on each parcel (``rs.monitor.parcels``). Table
``dates`` (no geometry), one row per pair in date order: ``date`` (its AFTER date, ISO) and ``pair``
(its folder's name) — every date of the history, those where nothing changed included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import cast

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from changewatch.rs.config import DEMOLISHED
from changewatch.rs.errors import InputFileError
from changewatch.rs.grid import metric_crs
from changewatch.rs.io.files import atomic_write, writing
from changewatch.rs.io.vector import write_gpkg, write_table
from changewatch.rs.monitor.digest import DIGEST_KEY, stored_digest, tables_digest
from changewatch.rs.monitor.parcels import build_parcel_history
from changewatch.rs.runfolder import (
    CHANGES_GPKG,
    LAYER_CHANGES,
    LAYER_OBSERVATIONS,
    LAYER_PARCEL_HISTORY,
    read_summary,
)
from changewatch.rs.summary import SceneInputs

HISTORY_GPKG = "history.gpkg"
LAYER_TRACKED = "changes"
LAYER_DATES = "dates"
MATCH_REACH_PX = 1.0  # a pair polygon within this many pixels of a tracked footprint is an observation of it
GROWTH_SHARE = 0.1  # growing: footprint grew by more than this share of its area at the previous observation
STATUSES = ("new", "growing", "stable", "gone")
TRACKED_COLUMNS = ("change_id", "first_seen", "last_seen", "n_observations", "status", "area_m2",
                   "previous_area_m2", "change_type", "reasons")
TRACKED_TYPES = {"n_observations": "int64", "area_m2": "float64", "previous_area_m2": "float64"}
OBSERVATION_COLUMNS = ("change_id", "date", "pair", "pair_change_ids", "area_m2", "max_prob", "footprint_m2")


@dataclass(frozen=True)
class History:
    """The layers of ``history.gpkg``: tracked changes, their observations, the parcels' history, the dates.

    See the module: ``changes``, ``observations`` and ``parcels`` (layer ``parcel_history``) in the
    store's CRS; ``dates`` (``date``, ``pair``), one row per pair in date order.
    """

    changes: gpd.GeoDataFrame
    observations: gpd.GeoDataFrame
    parcels: gpd.GeoDataFrame
    dates: pd.DataFrame


def read_pair(folder: Path) -> tuple[gpd.GeoDataFrame, float]:
    """A pair folder's change polygons (layer ``changes`` of ``changes.gpkg``) and its pixel size in metres.

    Raises InputFileError when the folder holds no readable detect run.
    """
    inputs = read_summary(folder).inputs
    if not isinstance(inputs, SceneInputs) or inputs.pixel_size_m is None:
        raise InputFileError(f"{folder} is not a detect run folder")
    try:
        changes = gpd.read_file(folder / CHANGES_GPKG, layer=LAYER_CHANGES, engine="pyogrio")
    except Exception as exc:  # pyogrio's errors, or a file that is not a GeoPackage
        raise InputFileError(f"{folder / CHANGES_GPKG} cannot be read: {exc}") from exc
    return changes, inputs.pixel_size_m


@dataclass
class _Tracked:
    """One tracked change while the pairs are read (a row of layer ``changes``)."""

    change_id: str
    first_seen: str
    last_seen: str
    footprint: BaseGeometry
    area_m2: float
    previous_area_m2: float = 0.0
    n_observations: int = 1
    change_type: str | None = None
    reasons: str = ""


def _matches(changes: gpd.GeoDataFrame, tracked: dict[str, _Tracked], reach: float) -> dict[int, str]:
    """For each pair polygon (by index label) that observes a tracked change, that change's id.

    The tracked change whose footprint grown by ``reach`` (CRS units) it intersects, with the
    largest shared area (ties: the smallest id).
    """
    if changes.empty or not tracked:
        return {}
    grown = gpd.GeoDataFrame({"tracked_id": list(tracked)},
                             geometry=shapely.buffer([t.footprint for t in tracked.values()], reach), crs=changes.crs)
    joined = gpd.sjoin(changes[["geometry"]], grown, predicate="intersects", how="inner")
    if joined.empty:
        return {}
    other = grown.geometry.to_numpy()[joined["index_right"].to_numpy()]
    joined["shared"] = shapely.area(shapely.intersection(joined.geometry.to_numpy(), other))
    joined["polygon"] = joined.index
    best = joined.sort_values(["polygon", "shared", "tracked_id"], ascending=[True, False, True])
    first = best.groupby("polygon")["tracked_id"].first()
    return {int(k): str(v) for k, v in zip(first.index.to_numpy(), first.to_numpy(), strict=True)}


def _observe(tracked: dict[str, _Tracked], changes: gpd.GeoDataFrame, metric: CRS, when: date, pair: str,
             reach: float) -> list[dict[str, object]]:
    """Update ``tracked`` with one pair's polygons (store CRS); returns that pair's observation rows.

    ``metric``: the local UTM CRS footprint areas are measured in (as ``rs.vectorize`` measures change
    polygons); ``reach``: ``MATCH_REACH_PX`` pixels in store CRS units.
    """
    matched = _matches(changes, tracked, reach)
    ids = [matched.get(int(i), f"{when:%Y%m%d}-{int(n):03d}") for i, n in zip(changes.index, changes["change_id"],
                                                                               strict=True)]
    groups = [(str(key), group, shapely.union_all(group.geometry.to_numpy()))
              for key, group in changes.groupby(np.asarray(ids, dtype=object), sort=True)]
    footprints = [shapely.union(tracked[k].footprint, seen) if k in tracked else seen for k, _, seen in groups]
    areas: list[float] = gpd.GeoSeries(footprints, crs=changes.crs).to_crs(metric).area.tolist() if groups else []
    rows: list[dict[str, object]] = []
    for (change_id, group, observed), footprint, area in zip(groups, footprints, areas, strict=True):
        earlier = tracked.get(change_id)
        kinds = set(group["change_type"].dropna())
        tracked[change_id] = _Tracked(
            change_id, earlier.first_seen if earlier else when.isoformat(), when.isoformat(), footprint,
            float(area), earlier.area_m2 if earlier else 0.0, earlier.n_observations + 1 if earlier else 1,
            str(kinds.pop()) if len(kinds) == 1 else None,
            ",".join(sorted({r for text in group["reasons"].dropna() for r in str(text).split(",") if r})))
        rows.append({"change_id": change_id, "date": when.isoformat(), "pair": pair,
                     "pair_change_ids": ",".join(str(int(i)) for i in group["change_id"]),
                     "area_m2": float(group["area_m2"].sum()), "max_prob": float(group["max_prob"].max()),
                     "footprint_m2": float(area), "geometry": observed})
    return rows


def status(tracked: pd.DataFrame, latest: date) -> pd.Series:
    """Each tracked change's status at ``latest`` (the rule in the module docstring).

    ``tracked``: columns ``first_seen``, ``last_seen`` (ISO dates), ``area_m2``,
    ``previous_area_m2``, ``change_type``.
    """
    now = tracked["last_seen"] == latest.isoformat()
    out = pd.Series("stable", index=tracked.index, dtype=object)
    out[now & (tracked["area_m2"] > (1.0 + GROWTH_SHARE) * tracked["previous_area_m2"])] = "growing"
    out[tracked["first_seen"] == latest.isoformat()] = "new"
    out[now & (tracked["change_type"] == DEMOLISHED)] = "gone"
    return out


def build_history(pairs: list[tuple[date, Path]]) -> History:
    """The history of the pair folders ``(AFTER date, folder)`` in date order; CRS: the first pair's.

    Raises InputFileError when a folder holds no readable detect run, or its changes no CRS.
    """
    tracked: dict[str, _Tracked] = {}
    rows: list[dict[str, object]] = []
    crs: CRS | None = None
    metric: CRS | None = None
    for when, folder in pairs:
        changes, pixel_m = read_pair(folder)
        crs = crs or changes.crs
        if crs is None:
            raise InputFileError(f"{folder / CHANGES_GPKG} has no CRS")
        changes = changes.to_crs(crs)
        if changes.empty:
            continue
        metric = metric or metric_crs(changes)
        rows += _observe(tracked, changes, metric, when, folder.name, MATCH_REACH_PX * pixel_m * _units_per_metre(crs))
    table = pd.DataFrame([{c: getattr(t, c) for c in TRACKED_COLUMNS if c != "status"} for t in tracked.values()],
                         columns=[c for c in TRACKED_COLUMNS if c != "status"])
    table["status"] = status(table, pairs[-1][0]) if pairs else pd.Series(dtype=object)
    changes_layer = gpd.GeoDataFrame(table[list(TRACKED_COLUMNS)].astype(TRACKED_TYPES),
                                     geometry=[t.footprint for t in tracked.values()], crs=crs)
    observations = gpd.GeoDataFrame(rows, columns=[*OBSERVATION_COLUMNS, "geometry"], geometry="geometry", crs=crs)
    dates = pd.DataFrame({"date": [when.isoformat() for when, _ in pairs], "pair": [f.name for _, f in pairs]},
                         dtype=object)
    return History(changes_layer.sort_values("change_id").reset_index(drop=True),
                   observations.sort_values(["change_id", "date"]).reset_index(drop=True),
                   build_parcel_history(pairs, observations, crs), dates)


def _units_per_metre(crs: CRS) -> float:
    """CRS units per metre (1 for metres; about 1/111 320 for degrees, one degree of latitude)."""
    if crs.is_projected:
        return 1.0 / float(crs.axis_info[0].unit_conversion_factor)
    return 1.0 / 111_320.0


def write_history(history: History, path: Path) -> bool:
    """Replace ``path`` with ``history`` atomically, unless it holds that history already; True when written.

    Layers ``changes``, ``observations``, ``parcel_history`` and the table ``dates``, whose layer metadata keeps
    the digest of all four (``rs.monitor.digest``): a file with the same digest is left untouched (a re-run
    that changed nothing writes nothing, so it works on a read-only store). Raises OutputError when ``path``
    cannot be written.
    """
    digest = tables_digest([history.changes, history.observations, history.parcels, history.dates])
    if stored_digest(path, LAYER_DATES) == digest:
        return False
    with writing(path), atomic_write(path) as tmp:
        write_gpkg(history.changes, tmp, LAYER_TRACKED)
        write_gpkg(history.observations, tmp, LAYER_OBSERVATIONS)
        write_gpkg(history.parcels, tmp, LAYER_PARCEL_HISTORY)
        write_table(history.dates, tmp, LAYER_DATES, metadata={DIGEST_KEY: digest})
    return True


def _read_layer(path: Path, layer: str, geometry: bool = True) -> gpd.GeoDataFrame | pd.DataFrame:
    """One layer (or table, without ``geometry``) of ``path``; raises InputFileError when it cannot be read."""
    try:
        if geometry:
            return gpd.read_file(path, layer=layer, engine="pyogrio")
        return cast(pd.DataFrame, pyogrio.read_dataframe(path, layer=layer, read_geometry=False))
    except Exception as exc:  # pyogrio's errors: a missing file or layer, a file that is not a GeoPackage
        raise InputFileError(f"{path} cannot be read (layer {layer}): {exc}; run monitor again to rebuild it") from exc


def read_history(path: Path) -> History:
    """The history in ``path`` (a store's ``history.gpkg``; layers as ``write_history`` writes them).

    Raises InputFileError when the file or one of its layers cannot be read (a store written
    before a layer existed: run monitor again to rebuild it).
    """
    layers = [_read_layer(path, name) for name in (LAYER_TRACKED, LAYER_OBSERVATIONS, LAYER_PARCEL_HISTORY)]
    changes, observations, parcels = (gpd.GeoDataFrame(layer) for layer in layers)
    return History(changes, observations, parcels, pd.DataFrame(_read_layer(path, LAYER_DATES, geometry=False)))
