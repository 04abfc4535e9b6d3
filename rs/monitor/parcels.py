"""A store's parcel history: what each pair flagged on each parcel, with the tracked changes it was.

Layer ``parcel_history`` of ``STORE/history.gpkg``, one row per parcel and AFTER date on which that
date's pair flagged something on the parcel (a parcel with no flag at a date has no row: consecutive
pairs see only what changed between their dates, so a row is an event on the parcel). Built from
each pair folder's ``flagged.gpkg`` (layer ``flagged_parcels`` and table ``flagged_change_parcels``,
written when the run was given ``--parcels``) and the history's ``observations``, which say which
tracked change each pair polygon is. Columns:

- ``parcel_id``: the parcel layer's id column as the pair's run recorded it (text);
- ``ward``: the parcel's ward when the parcel layer has one, else empty (null);
- ``date``: the pair's AFTER date (ISO ``YYYY-MM-DD``); ``pair``: the pair folder's name;
- ``n_flags``: the pair's flagged changes on the parcel; ``flagged_area_m2``: their area inside the
  parcel (m², local UTM, as ``rs.crosscheck.parcels.attribute_parcels`` measures it);
- ``worst_reason``: the most severe reason code of those flags as that pair judged them (as of its
  AFTER date, or ``--as-of``; order ``rs.crosscheck.rules.SEVERITY``) — a record of that date, not
  the tracked change's judgement with its ``first_seen`` (layer ``changes``, column ``reasons``);
- ``change_ids``: the stable ids (layer ``changes``) of the tracked changes those flags are,
  comma-separated, sorted;
- the parcel's polygon, in the store's CRS.

The polygon is repeated on each of a parcel's rows, so that the layer opens in QGIS as it is and
filters by ``date``: rows exist only where something was flagged, so the repetition is small next
to the parcel layer itself.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from pyproj import CRS

from changewatch.rs.errors import InputFileError
from changewatch.rs.io.vector import layer_names
from changewatch.rs.runfolder import FLAGGED_GPKG, LAYER_LINKS, LAYER_PARCELS

PARCEL_HISTORY_COLUMNS = ("parcel_id", "ward", "date", "pair", "n_flags", "flagged_area_m2", "worst_reason",
                          "change_ids")
PARCEL_HISTORY_TYPES = {"n_flags": "int64", "flagged_area_m2": "float64"}


def empty_parcel_history(crs: CRS | None) -> gpd.GeoDataFrame:
    """A ``parcel_history`` layer without rows (no pair was given parcels), with its columns."""
    table = pd.DataFrame({c: pd.Series(dtype=PARCEL_HISTORY_TYPES.get(c, object)) for c in PARCEL_HISTORY_COLUMNS})
    return gpd.GeoDataFrame(table, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def read_pair_parcels(folder: Path) -> tuple[gpd.GeoDataFrame, pd.DataFrame] | None:
    """A pair folder's ``flagged_parcels`` and ``flagged_change_parcels`` (change_id, parcel_id, overlap_m2).

    None when the pair was run without parcels. Raises InputFileError when ``flagged.gpkg`` cannot be read.
    """
    path = folder / FLAGGED_GPKG
    try:
        if LAYER_PARCELS not in layer_names(path):
            return None
        parcels = gpd.read_file(path, layer=LAYER_PARCELS, engine="pyogrio")
        links = pyogrio.read_dataframe(path, layer=LAYER_LINKS, read_geometry=False)
    except Exception as exc:  # pyogrio's errors, a missing file or one that is not a GeoPackage
        raise InputFileError(f"{path} cannot be read: {exc}") from exc
    return parcels, links


def tracked_ids(observations: pd.DataFrame, pair: str) -> dict[int, str]:
    """For the pair folder ``pair``: each of its change polygons' ``change_id`` → the tracked change's id.

    ``observations``: the history's layer (columns ``pair``, ``pair_change_ids``, ``change_id``).
    """
    rows = observations.loc[observations["pair"] == pair, ["change_id", "pair_change_ids"]]
    return {int(local): str(tracked) for tracked, text in zip(rows["change_id"], rows["pair_change_ids"], strict=True)
            for local in str(text).split(",") if local}


def pair_parcel_rows(when: date, folder: Path, observations: pd.DataFrame, crs: CRS | None) -> gpd.GeoDataFrame:
    """The ``parcel_history`` rows of one pair folder (AFTER date ``when``), parcels in ``crs``.

    Raises InputFileError when its ``flagged.gpkg`` cannot be read.
    """
    found = read_pair_parcels(folder)
    if found is None or found[0].empty:
        return empty_parcel_history(crs)
    parcels, links = found
    ids = tracked_ids(observations, folder.name)
    links = links.assign(tracked=[ids.get(int(c), "") for c in links["change_id"]])
    joined = links.groupby(links["parcel_id"].astype(str))["tracked"].agg(
        lambda values: ",".join(sorted({v for v in values if v})))
    rows = parcels.to_crs(crs) if crs is not None and parcels.crs is not None else parcels
    rows = rows.assign(parcel_id=rows["parcel_id"].astype(str), date=when.isoformat(), pair=folder.name,
                       ward=rows["ward"] if "ward" in rows else None)
    rows["change_ids"] = rows["parcel_id"].map(joined).fillna("")
    return gpd.GeoDataFrame(rows[[*PARCEL_HISTORY_COLUMNS, rows.geometry.name]], crs=rows.crs)


def build_parcel_history(pairs: list[tuple[date, Path]], observations: pd.DataFrame,
                         crs: CRS | None) -> gpd.GeoDataFrame:
    """Layer ``parcel_history`` of the pair folders ``(AFTER date, folder)`` (see the module), in ``crs``.

    Rows sorted by ``parcel_id``, then ``date``. Raises InputFileError when a pair's ``flagged.gpkg``
    cannot be read.
    """
    parts = [pair_parcel_rows(when, folder, observations, crs) for when, folder in pairs]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return empty_parcel_history(crs)
    table = pd.concat(parts, ignore_index=True).astype(PARCEL_HISTORY_TYPES)
    history = gpd.GeoDataFrame(table, geometry=table.geometry.name, crs=crs)
    return history.sort_values(["parcel_id", "date"], ignore_index=True)
