"""Stage 5 — crosscheck: compare change polygons with the city's permit layer.

A permit *touches* a change when their intersection has an area > 0 (measured in m², local
UTM): sharing only an edge does not count. A change no permit touches gets the reason code
``NO_PERMIT``; a change with none of the reason codes is ``PERMITTED`` and stays in the output
(unflagged) so the record is complete. Reason codes are a sorted, comma-separated string so that
more rules (permit dates, zoning, parcels) can add codes without changing the schema.

Spatial work is one STRtree-backed bulk join (``geopandas.sjoin``) plus vectorised shapely
intersections — no Python loop over features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio.errors
import shapely

from rs.errors import InputFileError, LayerError
from rs.vectorize import metric_crs

NO_PERMIT = "NO_PERMIT"
PERMITTED = "PERMITTED"
MIN_OVERLAP_M2 = 1e-6  # intersection area (m²) above which two polygons overlap rather than touch


@dataclass(frozen=True)
class Layer:
    """A vector layer read for the cross-check, with how many invalid geometries were repaired."""

    data: gpd.GeoDataFrame
    repaired: int
    path: str


def read_layer(path: str | os.PathLike[str], role: str, required: tuple[str, ...] = ()) -> Layer:
    """Read a vector layer any pyogrio driver can open, check it, and repair invalid geometries.

    Raises InputFileError when the file is missing or unreadable, LayerError when it has no CRS
    or lacks a ``required`` column. Invalid geometries are repaired with ``make_valid`` (and
    counted); empty geometries are dropped.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{role} layer not found: {p}")
    try:
        gdf = gpd.read_file(p)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError) as exc:
        raise InputFileError(f"{role} layer is not a readable vector file: {p} ({exc})") from exc
    if gdf.crs is None:
        raise LayerError(f"{role} layer has no CRS: {p}")
    missing = [c for c in required if c not in gdf.columns]
    if missing:
        raise LayerError(f"{role} layer {p} lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, gdf.columns.drop('geometry')))})")
    invalid = ~gdf.geometry.is_valid & gdf.geometry.notna()
    if invalid.any():
        gdf.loc[invalid, "geometry"] = shapely.make_valid(gdf.geometry[invalid].values)
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].reset_index(drop=True)
    return Layer(gdf, int(invalid.sum()), str(p))


@dataclass(frozen=True)
class PermitColumns:
    """Column names of the permit layer."""

    permit_id: str = "permit_id"


def overlapping_permits(changes: gpd.GeoDataFrame, permits: gpd.GeoDataFrame, id_column: str) -> pd.Series:
    """For each change (by index), the sorted ids of permits whose overlap with it has area > 0."""
    crs = metric_crs(changes)
    left = changes[["geometry"]].to_crs(crs)
    right = permits[[id_column, "geometry"]].to_crs(crs)
    pairs = gpd.sjoin(left, right, how="inner", predicate="intersects")
    if pairs.empty:
        return pd.Series([[] for _ in range(len(changes))], index=changes.index, dtype=object)
    overlap = shapely.area(shapely.intersection(pairs.geometry.values, right.geometry.values[pairs["index_right"].to_numpy()]))
    pairs = pairs[overlap > MIN_OVERLAP_M2]
    ids = pairs.groupby(level=0)[id_column].agg(lambda s: sorted(map(str, s)))
    return ids.reindex(changes.index).apply(lambda v: v if isinstance(v, list) else [])


def crosscheck(changes: gpd.GeoDataFrame, permits: gpd.GeoDataFrame | None,
               columns: PermitColumns = PermitColumns()) -> gpd.GeoDataFrame:
    """Add ``permit_ids``, ``reasons`` and ``flagged`` to a copy of ``changes`` (CRS kept).

    With ``permits`` None there is nothing to check against, and every change is ``NO_PERMIT``.
    """
    out = changes.copy()
    if permits is None or permits.empty or out.empty:
        ids = pd.Series([[] for _ in range(len(out))], index=out.index, dtype=object)
    else:
        ids = overlapping_permits(out, permits, columns.permit_id)
    out["permit_ids"] = ids.apply(",".join).astype(str)
    codes = [[NO_PERMIT] if not touching else [] for touching in ids]
    out["reasons"] = pd.Series([",".join(sorted(c)) or PERMITTED for c in codes], index=out.index, dtype=object)
    out["flagged"] = out["reasons"] != PERMITTED
    return out
