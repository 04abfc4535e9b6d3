"""The cross-check's spatial joins: which polygons of two layers overlap, and by how much.

Overlap means an intersection with an area > 0, not a shared edge.

One STRtree bulk query per layer (queried from a thread pool, or dask-geopandas over
Hilbert-sorted partitions for large layers) plus vectorised shapely intersections — no Python
loop over features. ``join_ids`` turns the pairs into each change's sorted, comma-separated ids.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely

MIN_OVERLAP_M2 = 1e-6  # intersection area (m²) above which two polygons overlap rather than touch


def intersecting_pairs(left: gpd.GeoSeries, right: gpd.GeoSeries, dask_min_features: int,
                       chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Positions (i, j) of every ``left[i]`` that intersects ``right[j]`` (same CRS).

    One STRtree over ``right``, queried in chunks from a thread pool (the query releases the
    GIL). From ``dask_min_features`` features on (both layers together) the join runs on
    dask-geopandas instead: both layers cut into partitions along a Hilbert curve, only
    partitions whose extents meet joined.
    """
    if len(left) + len(right) >= dask_min_features:
        return _dask_pairs(left, right)
    tree = shapely.STRtree(right.values.to_numpy())
    geoms = left.values.to_numpy()

    def query(start: int) -> np.ndarray:
        found = tree.query(geoms[start:start + chunk], predicate="intersects")
        found[0] += start
        return found

    starts = range(0, len(geoms), chunk)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        parts = list(pool.map(query, starts))
    found = np.concatenate(parts, axis=1) if parts else np.zeros((2, 0), np.int64)
    return found[0], found[1]


def _dask_pairs(left: gpd.GeoSeries, right: gpd.GeoSeries) -> tuple[np.ndarray, np.ndarray]:
    import dask_geopandas

    def partitioned(series: gpd.GeoSeries, key: str) -> dask_geopandas.GeoDataFrame:
        # spatial_shuffle re-indexes by Hilbert distance: keep the positions in a column
        parts = max(1, min(64, len(series) // 25_000))
        frame = gpd.GeoDataFrame({key: np.arange(len(series))}, geometry=series.values, crs=series.crs)
        return dask_geopandas.from_geopandas(frame, npartitions=parts).spatial_shuffle(by="hilbert", npartitions=parts)

    joined = dask_geopandas.sjoin(partitioned(left, "_left"), partitioned(right, "_right"),
                                  how="inner", predicate="intersects").compute(scheduler="threads")
    return joined["_left"].to_numpy(), joined["_right"].to_numpy()


def threaded(func: Callable[..., np.ndarray], *arrays: np.ndarray, threads: int | None = None,
             chunk: int = 50_000) -> np.ndarray:
    """``func(*arrays)`` over chunks in a thread pool.

    Shapely 2 releases the GIL, so vectorised geometry operations use every core.
    """
    n = len(arrays[0])
    if n <= chunk:
        return func(*arrays)
    bounds = range(0, n, chunk)
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        parts = pool.map(lambda i: func(*(a[i:i + chunk] for a in arrays)), bounds)
        return np.concatenate(list(parts))


def overlap_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Area of a ∩ b for aligned arrays of polygons (a shortcut where b covers a: the area of a)."""
    covered = threaded(shapely.covers, b, a)
    area = threaded(shapely.area, a)
    partial = ~covered
    if partial.any():
        area[partial] = threaded(_intersection_area, a[partial], b[partial])
    return area


def _intersection_area(a: npt.NDArray[np.object_], b: npt.NDArray[np.object_]) -> npt.NDArray[np.float64]:
    return shapely.area(shapely.intersection(a, b))


def touching(changes_m: gpd.GeoDataFrame, other: gpd.GeoDataFrame, dask_min_features: int,
             with_area: bool = False) -> pd.DataFrame:
    """Pairs (``change`` index, ``other`` index) whose intersection has an area > 0.

    Polygons that intersect but only *touch* (share boundary, no interior) are left out. With
    ``with_area`` the overlap in m² is added as ``area_m2``. ``changes_m`` must be in a metric
    CRS; ``other`` is reprojected to it.
    """
    assert changes_m.crs is not None, "changes_m must be in a metric CRS"
    right = other.geometry.to_crs(changes_m.crs)
    i, j = intersecting_pairs(changes_m.geometry, right, dask_min_features)
    a, b = changes_m.geometry.values.to_numpy()[i], right.values.to_numpy()[j]
    if with_area:  # the areas are needed anyway: they decide
        area = overlap_area(a, b) if len(a) else np.zeros(0)
        keep = area > MIN_OVERLAP_M2
        return pd.DataFrame({"change": changes_m.index[i[keep]], "other": other.index[j[keep]],
                             "area_m2": area[keep]})
    keep = ~threaded(shapely.touches, a, b) if len(a) else np.zeros(0, bool)
    return pd.DataFrame({"change": changes_m.index[i[keep]], "other": other.index[j[keep]]})


def join_ids(keys: np.ndarray, ranks: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct key, its distinct ``names`` in ``ranks`` order, comma-separated: (keys, strings).

    ``ranks`` are integers ordering the names (e.g. from ``id_ranks``), so the sort is numeric; the
    strings are concatenated with one ``np.add.reduceat`` over object arrays (a C loop).
    """
    order = np.lexsort((ranks, keys))
    keys, ranks, names = keys[order], ranks[order], names[order].astype(object)
    if not len(keys):
        return keys, np.zeros(0, dtype=object)
    first = np.r_[True, (keys[1:] != keys[:-1]) | (ranks[1:] != ranks[:-1])]  # drop repeated names
    keys, names = keys[first], names[first]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    joined = np.add.reduceat(names + ",", starts)
    return keys[starts], np.array([j[:-1] for j in joined], dtype=object)


def id_ranks(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Ids as strings (object array) and their dense lexicographic ranks, in row order."""
    text = ids.astype(str)
    return text.to_numpy(dtype=object), text.rank(method="dense").to_numpy(np.int64)
