"""Stage 5 — crosscheck: judge each change polygon against permits and zoning, as of a date.

Two polygons *touch* when their intersection has an area > 0 (m², local UTM): sharing only an
edge does not count. A permit is *valid* on the as-of date when issued ≤ as-of ≤ expires (no
expiry date: open-ended; no issue date: never valid; a date that cannot be read is an error, see
``rs.layers.parse_dates``). The rules, each a reason code:

- ``NO_PERMIT``: no permit touches the change;
- ``PERMIT_NOT_YET_VALID``: permits touch it, none is valid, and all were issued after as-of;
- ``PERMIT_EXPIRED``: permits touch it, none is valid, otherwise;
- ``EXCEEDS_PERMIT``: a valid permit touches it, but the part of the change outside the union of
  the valid permits' footprints is larger than ``exceed_min_m2`` *and* ``exceed_min_fraction``
  of the change;
- ``NO_BUILD_ZONE``: it touches a zone where new construction is not allowed;
- ``DEMOLISHED``: a change whose ``change_type`` is ``demolished`` (``rs.buildings``) gets this
  code alone instead of the rules above — removing a building is not construction — unless
  ``RuleConfig.demolition_needs_permit``, when it is judged like construction. It is the least
  severe code (SEVERITY): a parcel's worst reason is a construction rule whenever it has one.

A change may carry several codes (sorted, comma-separated in ``reasons``); one with none is
``PERMITTED`` and stays in the output, unflagged, so the record is complete.

Spatial work is one STRtree bulk query per layer (queried from a thread pool, or dask-geopandas over
Hilbert-sorted partitions for large layers) plus vectorised shapely intersections — no Python
loop over features.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from changewatch.rs.buildings import DEMOLISHED as DEMOLISHED_TYPE
from changewatch.rs.layers import CrosscheckInputs, Layer, Layers, parse_allowed, parse_dates, read_layer
from changewatch.rs.settings import (
    DASK_MIN_FEATURES,
    ParcelColumns,
    PermitColumns,
    RuleConfig,
    ZoningColumns,
)
from changewatch.rs.grid import metric_crs
from changewatch.rs.summary import Areas, Counts

# Reading layers and settings moved to rs.layers and rs.settings; these names stay importable from here.
__all__ = ["DEMOLISHED", "EXCEEDS_PERMIT", "NO_BUILD_ZONE", "NO_PERMIT", "PERMITTED", "PERMIT_EXPIRED", "PERMIT_NOT_YET_VALID",
           "SEVERITY", "CrosscheckInputs", "Judgement", "Layer", "Layers", "ParcelColumns", "PermitColumns",
           "RuleConfig", "ZoningColumns", "attribute_parcels", "crosscheck", "judge", "read_layer",
           "reasons_from_codes", "worst_reason"]

NO_PERMIT = "NO_PERMIT"
PERMIT_NOT_YET_VALID = "PERMIT_NOT_YET_VALID"
PERMIT_EXPIRED = "PERMIT_EXPIRED"
EXCEEDS_PERMIT = "EXCEEDS_PERMIT"
NO_BUILD_ZONE = "NO_BUILD_ZONE"
DEMOLISHED = "DEMOLISHED"
PERMITTED = "PERMITTED"
SEVERITY = (NO_BUILD_ZONE, NO_PERMIT, EXCEEDS_PERMIT, PERMIT_EXPIRED, PERMIT_NOT_YET_VALID, DEMOLISHED,
            PERMITTED)  # worst first
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
    """``func(*arrays)`` over chunks in a thread pool: shapely 2 releases the GIL, so vectorised
    geometry operations use every core."""
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
        area[partial] = threaded(lambda x, y: shapely.area(shapely.intersection(x, y)), a[partial], b[partial])
    return area


def touching(changes_m: gpd.GeoDataFrame, other: gpd.GeoDataFrame, dask_min_features: int,
             with_area: bool = False) -> pd.DataFrame:
    """Pairs (``change`` index, ``other`` index) whose intersection has an area > 0.

    Polygons that intersect but only *touch* (share boundary, no interior) are left out. With
    ``with_area`` the overlap in m² is added as ``area_m2``. ``changes_m`` must be in a metric
    CRS; ``other`` is reprojected to it.
    """
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
    strings are concatenated with one ``np.add.reduceat`` over object arrays (a C loop)."""
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


def _ids_by_change(pairs: pd.DataFrame, ids: pd.Series, index: pd.Index) -> pd.Series:
    """Sorted, comma-separated ids of the ``other`` rows paired with each change ("" for none)."""
    result = pd.Series("", index=index, dtype=object)
    if not pairs.empty:
        names, ranks = id_ranks(ids)
        rows = ids.index.get_indexer(pairs["other"])
        keys, joined = join_ids(pairs["change"].to_numpy(), ranks[rows], names[rows])
        result.loc[keys] = joined
    return result


def _permit_rules(changes_m: gpd.GeoDataFrame, permits: gpd.GeoDataFrame, rules: RuleConfig,
                  codes: dict[str, np.ndarray], out: gpd.GeoDataFrame) -> None:
    cols = rules.permit_columns
    pairs = touching(changes_m, permits, rules.dask_min_features)
    as_of = pd.Timestamp(rules.as_of or date.today())
    ids = permits[cols.permit_id]
    issued = parse_dates(permits[cols.issued], rules.dates, cols.issued, "permits", ids)
    expires = parse_dates(permits[cols.expires], rules.dates, cols.expires, "permits", ids)
    valid = ((issued <= as_of) & (expires.isna() | (as_of <= expires))).to_numpy()
    not_yet = (issued > as_of).to_numpy()
    other = permits.index.get_indexer(pairs["other"])
    pairs = pairs.assign(valid=valid[other], not_yet=not_yet[other])
    grouped = pairs.assign(valid=pairs["valid"].astype(np.int8), not_yet=pairs["not_yet"].astype(np.int8)).groupby("change")
    touched = out.index.isin(pairs["change"])
    any_valid = grouped["valid"].max().reindex(out.index, fill_value=0).to_numpy().astype(bool)
    all_not_yet = grouped["not_yet"].min().reindex(out.index, fill_value=0).to_numpy().astype(bool)
    codes[NO_PERMIT] = ~touched
    codes[PERMIT_NOT_YET_VALID] = touched & ~any_valid & all_not_yet
    codes[PERMIT_EXPIRED] = touched & ~any_valid & ~all_not_yet
    codes[EXCEEDS_PERMIT] = _exceeds(changes_m, permits, pairs[pairs["valid"]], rules)
    out["permit_ids"] = _ids_by_change(pairs, permits[cols.permit_id], out.index)
    out["valid_permit_ids"] = _ids_by_change(pairs[pairs["valid"]], permits[cols.permit_id], out.index)


def _exceeds(changes_m: gpd.GeoDataFrame, permits: gpd.GeoDataFrame, valid_pairs: pd.DataFrame,
             rules: RuleConfig) -> np.ndarray:
    """Changes whose area outside their valid permits' union exceeds both tolerances.

    Changes with one valid permit (nearly all) need only the overlap area; for changes that
    several valid permits touch, the permits are cut out of the change one rank at a time.
    """
    result = np.zeros(len(changes_m), bool)
    if valid_pairs.empty:
        return result
    footprints = permits.geometry.to_crs(changes_m.crs)
    counts = valid_pairs["change"].value_counts()
    single = valid_pairs[valid_pairs["change"].map(counts).to_numpy() == 1]
    change_geoms = changes_m.geometry.loc[single["change"]].values.to_numpy()
    covered = overlap_area(change_geoms, footprints.loc[single["other"]].values.to_numpy())
    total = threaded(shapely.area, change_geoms)
    outside = {"single": (single["change"].to_numpy(), total - covered, total)}
    several = valid_pairs[valid_pairs["change"].map(counts).to_numpy() > 1].sort_values("change", kind="stable")
    if not several.empty:
        # change minus its k-th valid permit, for k = 1, 2, …: one vectorised difference per rank,
        # instead of a union per change
        changes_idx = several["change"].drop_duplicates().to_numpy()
        rest = changes_m.geometry.loc[changes_idx].values.to_numpy().copy()
        multi_total = threaded(shapely.area, rest)
        position = pd.Index(changes_idx).get_indexer(several["change"])
        rank = several.groupby("change").cumcount().to_numpy()
        permit_geoms = footprints.loc[several["other"]].values.to_numpy()
        for k in range(rank.max() + 1):
            at = rank == k
            rest[position[at]] = threaded(shapely.difference, rest[position[at]], permit_geoms[at])
        outside["several"] = (changes_idx, threaded(shapely.area, rest), multi_total)
    for index, out_area, area in outside.values():
        over = (out_area > rules.exceed_min_m2) & (out_area > rules.exceed_min_fraction * area)
        result[changes_m.index.get_indexer(index)] = over
    return result


def _zoning_rules(changes_m: gpd.GeoDataFrame, zoning: gpd.GeoDataFrame, rules: RuleConfig,
                  codes: dict[str, np.ndarray], out: gpd.GeoDataFrame) -> None:
    cols = rules.zoning_columns
    allowed = parse_allowed(zoning[cols.construction_allowed], cols.construction_allowed)
    pairs = touching(changes_m, zoning, rules.dask_min_features)
    banned = pairs[~allowed.to_numpy()[zoning.index.get_indexer(pairs["other"])]]
    codes[NO_BUILD_ZONE] = out.index.isin(banned["change"])
    out["zone_ids"] = _ids_by_change(pairs, zoning[cols.zone_id], out.index)


def reasons_from_codes(codes: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Per change: the codes that apply, sorted and comma-separated, or PERMITTED (object array)."""
    names = sorted(codes)
    bits = np.zeros(n, np.int64)
    for i, name in enumerate(names):
        bits |= codes[name].astype(np.int64) << i
    combos, inverse = np.unique(bits, return_inverse=True)
    text = [",".join(name for i, name in enumerate(names) if combo >> i & 1) or PERMITTED for combo in combos]
    return np.array(text, dtype=object)[inverse.reshape(-1)] if n else np.array([], dtype=object)


def worst_reason(reasons: pd.Series) -> pd.Series:
    """The most severe code of each ``reasons`` string (order: SEVERITY)."""
    rank = {code: i for i, code in enumerate(SEVERITY)}
    worst = {r: min(r.split(","), key=rank.__getitem__) for r in reasons.unique()}
    return reasons.map(worst)


def crosscheck(changes: gpd.GeoDataFrame, permits: gpd.GeoDataFrame | None,
               zoning: gpd.GeoDataFrame | None = None, rules: RuleConfig = RuleConfig()) -> gpd.GeoDataFrame:
    """Judge every change; returns a copy of ``changes`` (CRS kept) with ``permit_ids``,
    ``valid_permit_ids``, ``zone_ids``, ``reasons`` and ``flagged``.

    Without a permit layer there is nothing to check against, and every change is ``NO_PERMIT``;
    without zoning, ``NO_BUILD_ZONE`` is not judged. Changes whose ``change_type`` column says
    ``demolished`` are ``DEMOLISHED`` unless ``rules.demolition_needs_permit``.
    """
    out = changes.copy()
    for column in ("permit_ids", "valid_permit_ids", "zone_ids"):
        out[column] = pd.Series("", index=out.index, dtype=object)
    codes: dict[str, np.ndarray] = {NO_PERMIT: np.ones(len(out), bool)}
    if not out.empty:
        changes_m = out[["geometry"]].to_crs(metric_crs(out))
        if permits is not None and not permits.empty:
            _permit_rules(changes_m, permits, rules, codes, out)
        if zoning is not None and not zoning.empty:
            _zoning_rules(changes_m, zoning, rules, codes, out)
    if "change_type" in out and not rules.demolition_needs_permit:
        demolished = (out["change_type"] == DEMOLISHED_TYPE).to_numpy()
        codes = {name: hit & ~demolished for name, hit in codes.items()}
        codes[DEMOLISHED] = demolished
    out["reasons"] = pd.Series(reasons_from_codes(codes, len(out)), index=out.index, dtype=object)
    out["flagged"] = out["reasons"] != PERMITTED
    return out


def attribute_parcels(flagged: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame,
                      columns: ParcelColumns = ParcelColumns(),
                      dask_min_features: int = DASK_MIN_FEATURES) -> tuple[pd.DataFrame, gpd.GeoDataFrame]:
    """Which parcels each flagged change overlaps, and a per-parcel table.

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
    flagged_m = flagged[["geometry"]].to_crs(metric_crs(flagged))
    pairs = touching(flagged_m, parcels, dask_min_features, with_area=True)
    if pairs.empty:
        return empty_links, empty_table
    change_pos = flagged.index.get_indexer(pairs["change"])
    parcel_ids = parcels[columns.parcel_id].astype(str).to_numpy(dtype=object)
    links = pd.DataFrame({
        "change_id": flagged["change_id"].to_numpy()[change_pos],
        "parcel_id": parcel_ids[parcels.index.get_indexer(pairs["other"])],
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


@dataclass(frozen=True)
class Judgement:
    """A cross-check's result: every change with its reasons, the flagged ones (with ``parcel_ids``
    when parcels were given), the per-parcel table and the change–parcel overlaps (``change_id``,
    ``parcel_id``, ``overlap_m2``); the last two are None without parcels."""

    changes: gpd.GeoDataFrame
    flagged: gpd.GeoDataFrame
    parcels: gpd.GeoDataFrame | None
    links: pd.DataFrame | None = None

    def counts(self, by_change_type: dict[str, int] | None = None) -> Counts:
        """Numbers of changes, flags per reason code and flagged parcels (and ``by_change_type``, as
        given: the judgement does not know whether the model could tell)."""
        by_reason = self.flagged["reasons"].str.split(",").explode().value_counts().to_dict() if len(self.flagged) else {}
        return Counts(len(self.changes), len(self.flagged), len(self.changes) - len(self.flagged), by_reason,
                      None if self.parcels is None else len(self.parcels), by_change_type)

    def areas(self) -> Areas:
        """Area of all changes and of the flagged ones, m² (None without an ``area_m2`` column)."""
        return Areas(float(self.changes["area_m2"].sum()) if "area_m2" in self.changes else None,
                     float(self.flagged["area_m2"].sum()) if "area_m2" in self.flagged else None)


def judge(changes: gpd.GeoDataFrame, layers: Layers, rules: RuleConfig,
          parcel_columns: ParcelColumns = ParcelColumns()) -> Judgement:
    """Cross-check ``changes`` against ``layers`` and attribute the flagged ones to parcels."""
    checked = crosscheck(changes, layers.permits.data if layers.permits else None,
                         layers.zoning.data if layers.zoning else None, rules)
    flagged = checked[checked["flagged"]].reset_index(drop=True)
    if layers.parcels is None:
        return Judgement(checked, flagged, None)
    links, table = attribute_parcels(flagged, layers.parcels.data, parcel_columns, rules.dask_min_features)
    names, ranks = id_ranks(links["parcel_id"])
    keys, joined = join_ids(links["change_id"].to_numpy(), ranks, names)
    flagged["parcel_ids"] = flagged["change_id"].map(pd.Series(joined, index=keys)).fillna("").astype(object)
    return Judgement(checked, flagged, table, links)
