"""Flagged changes attributed to the parcels they overlap, and one row per parcel with flags."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
from pyproj import CRS

from changewatch.rs.crosscheck.rules import SEVERITY, worst_reason
from changewatch.rs.crosscheck.settings import DASK_MIN_FEATURES, ParcelColumns
from changewatch.rs.crosscheck.spatial import touching
from changewatch.rs.grid import metric_crs


def attribute_parcels(flagged: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame,
                      columns: ParcelColumns = ParcelColumns(),
                      dask_min_features: int = DASK_MIN_FEATURES,
                      metric: CRS | None = None) -> tuple[pd.DataFrame, gpd.GeoDataFrame]:
    """Which parcels each flagged change overlaps, and a per-parcel table.

    Overlap areas are measured in ``metric`` (a CRS in metres; None: the flagged changes' local UTM zone).
    Returns (links, table): ``links`` has one row per (``change_id``, ``parcel_id``) with
    ``overlap_m2``; ``table`` is a GeoDataFrame of the parcels with at least one flag (parcel
    geometry, CRS of ``parcels``): ``parcel_id``, ``ward`` (and owner if mapped), ``n_flags``,
    ``flagged_area_m2`` (area of flagged change inside the parcel), ``worst_reason``, ``max_prob``.
    """
    keep = [c for c in (columns.parcel_id, columns.ward, columns.owner) if c]
    empty_links = pd.DataFrame({"change_id": pd.Series(dtype="int64"), "parcel_id": pd.Series(dtype=object),
                                "overlap_m2": pd.Series(dtype=float)})
    empty_table = gpd.GeoDataFrame({c: [] for c in (*keep, "n_flags", "flagged_area_m2", "worst_reason", "max_prob")},
                                   geometry=[], crs=parcels.crs)
    if flagged.empty or parcels.empty:
        return empty_links, empty_table
    flagged_m = flagged[["geometry"]].to_crs(metric or metric_crs(flagged))
    pairs = touching(flagged_m, parcels, dask_min_features, with_area=True)
    if pairs.empty:
        return empty_links, empty_table
    change_pos = flagged.index.get_indexer(pd.Index(pairs["change"]))
    parcel_ids = parcels[columns.parcel_id].astype(str).to_numpy(dtype=object)
    links = pd.DataFrame({
        "change_id": flagged["change_id"].to_numpy()[change_pos],
        "parcel_id": parcel_ids[parcels.index.get_indexer(pd.Index(pairs["other"]))],
        "overlap_m2": pairs["area_m2"].to_numpy(),
    }).sort_values(["change_id", "parcel_id"], ignore_index=True)
    rank = worst_reason(flagged["reasons"]).map({c: i for i, c in enumerate(SEVERITY)}).to_numpy()
    per_pair = pd.DataFrame({
        "parcel": pairs["other"].to_numpy(),
        "overlap_m2": pairs["area_m2"].to_numpy(),
        "rank": rank[change_pos],
        "max_prob": flagged["max_prob"].to_numpy()[change_pos] if "max_prob" in flagged else np.nan,
    })
    stats = per_pair.groupby("parcel").agg(n_flags=("overlap_m2", "size"), flagged_area_m2=("overlap_m2", "sum"),
                                           rank=("rank", "min"), max_prob=("max_prob", "max"))
    table = parcels.loc[stats.index, [*keep, "geometry"]].copy()
    table[columns.parcel_id] = table[columns.parcel_id].astype(str)
    table["n_flags"] = stats["n_flags"].to_numpy()
    table["flagged_area_m2"] = stats["flagged_area_m2"].to_numpy()
    table["worst_reason"] = [SEVERITY[i] for i in stats["rank"]]
    table["max_prob"] = stats["max_prob"].to_numpy()
    table = table.rename(columns={columns.parcel_id: "parcel_id", columns.ward: "ward"})
    return links, table.sort_values("parcel_id", ignore_index=True)
