"""Stage 5 — crosscheck: compare change polygons with the city's permit layer.

A permit *touches* a change when their intersection has an area > 0 (measured in m², local
UTM): sharing only an edge does not count. A change no permit touches gets the reason code
``NO_PERMIT``; a change with none of the reason codes is ``PERMITTED`` and stays in the output
(unflagged) so the record is complete. Reason codes are a sorted, comma-separated string so that
more rules (permit dates, zoning, parcels) can add codes without changing the schema.

Spatial work is one STRtree-backed bulk join (``geopandas.sjoin``, or dask-geopandas over
Hilbert-sorted partitions for large layers) plus vectorised shapely intersections — no Python
loop over features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pyogrio.errors
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from rs.errors import InputFileError, LayerError
from rs.vectorize import metric_crs

NO_PERMIT = "NO_PERMIT"
PERMITTED = "PERMITTED"
MIN_OVERLAP_M2 = 1e-6  # intersection area (m²) above which two polygons overlap rather than touch
DASK_MIN_FEATURES = 200_000  # from this many changes + permits on, the join is partitioned on dask-geopandas


@dataclass(frozen=True)
class Layer:
    """A vector layer read for the cross-check, with how many invalid geometries were repaired."""

    data: gpd.GeoDataFrame
    repaired: int
    path: str


def read_layer(path: str | os.PathLike[str], role: str, required: tuple[str, ...] = (),
               extent: tuple[tuple[float, float, float, float], CRS] | None = None) -> Layer:
    """Read a vector layer any pyogrio driver can open, check it, and repair invalid geometries.

    ``extent`` = ((left, bottom, right, top), crs): read only features whose bounding boxes meet
    it (through the file's spatial index where it has one), so a city-wide layer costs a scene
    only its own share. Raises InputFileError when the file is missing or unreadable, LayerError
    when it has no CRS or lacks a ``required`` column. Invalid geometries are repaired with
    ``make_valid`` (and counted); empty geometries are dropped.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{role} layer not found: {p}")
    try:
        info = pyogrio.read_info(p)
        if info["crs"] is None:
            raise LayerError(f"{role} layer has no CRS: {p}")
        bbox = transform_bounds(extent[1], CRS.from_user_input(info["crs"]), *extent[0], densify_pts=21) if extent else None
        gdf = gpd.read_file(p, bbox=bbox)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError) as exc:
        raise InputFileError(f"{role} layer is not a readable vector file: {p} ({exc})") from exc
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


def intersecting_pairs(left: gpd.GeoDataFrame, right: gpd.GeoDataFrame, dask_min_features: int) -> gpd.GeoDataFrame:
    """``sjoin(left, right, predicate="intersects")``: left's rows with ``index_right``.

    From ``dask_min_features`` features on (both layers together) the join runs on
    dask-geopandas: both layers are cut into partitions along a Hilbert curve, so only
    partitions whose extents meet are joined, in parallel threads (shapely releases the GIL).
    """
    if len(left) + len(right) < dask_min_features:
        return gpd.sjoin(left, right, how="inner", predicate="intersects")
    import dask_geopandas

    def partitioned(gdf: gpd.GeoDataFrame, key: str) -> dask_geopandas.GeoDataFrame:
        # spatial_shuffle re-indexes by Hilbert distance: keep the original labels in a column
        parts = max(1, min(64, len(gdf) // 25_000))
        keyed = gdf.assign(**{key: gdf.index.to_numpy()})
        return dask_geopandas.from_geopandas(keyed, npartitions=parts).spatial_shuffle(by="hilbert", npartitions=parts)

    joined = dask_geopandas.sjoin(partitioned(left, "_left"), partitioned(right, "_right"),
                                  how="inner", predicate="intersects").compute(scheduler="threads")
    joined = joined.set_index("_left").rename_axis(left.index.name)
    return joined.assign(index_right=joined["_right"]).drop(columns=["_right"], errors="ignore")


def overlapping_permits(changes: gpd.GeoDataFrame, permits: gpd.GeoDataFrame, id_column: str,
                        dask_min_features: int = DASK_MIN_FEATURES) -> pd.Series:
    """For each change (by index), the ids of permits whose overlap with it has area > 0.

    Ids are sorted and comma-separated; "" where no permit overlaps.
    """
    none = pd.Series("", index=changes.index, dtype=object)
    crs = metric_crs(changes)
    left = changes[["geometry"]].to_crs(crs)
    right = permits[[id_column, "geometry"]].to_crs(crs)
    pairs = intersecting_pairs(left, right, dask_min_features)
    if pairs.empty:
        return none
    overlap = shapely.area(shapely.intersection(pairs.geometry.values,
                                                right.geometry.loc[pairs["index_right"].to_numpy()].values))
    hits = pd.DataFrame({"change": pairs.index[overlap > MIN_OVERLAP_M2],
                         "permit": pairs[id_column].astype(str).to_numpy()[overlap > MIN_OVERLAP_M2]})
    joined = hits.sort_values(["change", "permit"]).groupby("change")["permit"].agg(",".join)
    return joined.reindex(changes.index, fill_value="").astype(object)


def crosscheck(changes: gpd.GeoDataFrame, permits: gpd.GeoDataFrame | None,
               columns: PermitColumns = PermitColumns(),
               dask_min_features: int = DASK_MIN_FEATURES) -> gpd.GeoDataFrame:
    """Add ``permit_ids``, ``reasons`` and ``flagged`` to a copy of ``changes`` (CRS kept).

    With ``permits`` None there is nothing to check against, and every change is ``NO_PERMIT``.
    """
    out = changes.copy()
    if permits is None or permits.empty or out.empty:
        out["permit_ids"] = pd.Series("", index=out.index, dtype=object)
    else:
        out["permit_ids"] = overlapping_permits(out, permits, columns.permit_id, dask_min_features)
    codes = [[NO_PERMIT] if not touching else [] for touching in out["permit_ids"]]
    out["reasons"] = pd.Series([",".join(sorted(c)) or PERMITTED for c in codes], index=out.index, dtype=object)
    out["flagged"] = out["reasons"] != PERMITTED
    return out
