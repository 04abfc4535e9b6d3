"""The cross-check's rules: judge each change polygon against permits and zoning, as of a date.

Two polygons *touch* when their intersection has an area > 0 (m², local UTM): sharing only an
edge does not count. A permit is *valid* on the as-of date when issued ≤ as-of ≤ expires (no
expiry date: open-ended; no issue date: never valid; a date that cannot be read is an error, see
``rs.crosscheck.values.parse_dates``). The rules, each a reason code:

- ``NO_PERMIT``: no permit touches the change;
- ``PERMIT_NOT_YET_VALID``: permits touch it, none is valid, and all were issued after as-of;
- ``PERMIT_EXPIRED``: permits touch it, none is valid, otherwise;
- ``EXCEEDS_PERMIT``: a valid permit touches it, but the part of the change outside the union of
  the valid permits' footprints is larger than ``exceed_min_m2`` *and* ``exceed_min_fraction``
  of the change;
- ``NO_BUILD_ZONE``: it touches a zone where new construction is not allowed;
- ``STARTED_BEFORE_PERMIT`` (changes with a ``first_seen`` date, as ``monitor`` tracks them; no
  date: not judged): permits touch it, none was valid on the day it was first seen, and one was
  issued after that day — the construction started before its permit. A change first seen after
  a touching permit expired, none being valid that day, is ``PERMIT_EXPIRED`` too, whatever the
  as-of date (a later scene does not make it permitted);
- ``DEMOLISHED``: a change whose ``change_type`` is ``demolished`` (``rs.buildings``) gets this
  code alone instead of the rules above — removing a building is not construction — unless
  ``RuleConfig.demolition_needs_permit``, when it is judged like construction. It is the least
  severe code (SEVERITY): a parcel's worst reason is a construction rule whenever it has one.

A change may carry several codes (sorted, comma-separated in ``reasons``); one with none is
``PERMITTED`` and stays in the output, unflagged, so the record is complete.

Which polygons overlap is found by ``rs.crosscheck.spatial`` (no Python loop over features).
"""

from __future__ import annotations

from datetime import date

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from changewatch.rs.config import DEMOLISHED as DEMOLISHED_TYPE
from changewatch.rs.crosscheck.settings import RuleConfig
from changewatch.rs.crosscheck.spatial import id_ranks, join_ids, overlap_area, threaded, touching
from changewatch.rs.crosscheck.values import parse_allowed, parse_dates
from changewatch.rs.grid import metric_crs

NO_PERMIT = "NO_PERMIT"
PERMIT_NOT_YET_VALID = "PERMIT_NOT_YET_VALID"
PERMIT_EXPIRED = "PERMIT_EXPIRED"
EXCEEDS_PERMIT = "EXCEEDS_PERMIT"
NO_BUILD_ZONE = "NO_BUILD_ZONE"
STARTED_BEFORE_PERMIT = "STARTED_BEFORE_PERMIT"
FIRST_SEEN = "first_seen"  # optional column of the changes: the date a change was first seen (rs.monitor)
DEMOLISHED = "DEMOLISHED"
PERMITTED = "PERMITTED"
SEVERITY = (NO_BUILD_ZONE, NO_PERMIT, EXCEEDS_PERMIT, STARTED_BEFORE_PERMIT, PERMIT_EXPIRED, PERMIT_NOT_YET_VALID,
            DEMOLISHED, PERMITTED)  # worst first


def _ids_by_change(pairs: pd.DataFrame, ids: pd.Series, index: pd.Index) -> pd.Series:
    """Sorted, comma-separated ids of the ``other`` rows paired with each change ("" for none)."""
    result = pd.Series("", index=index, dtype=object)
    if not pairs.empty:
        names, ranks = id_ranks(ids)
        rows = ids.index.get_indexer(pd.Index(pairs["other"]))
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
    other = permits.index.get_indexer(pd.Index(pairs["other"]))
    pairs = pairs.assign(valid=valid[other], not_yet=not_yet[other])
    grouped = pairs.assign(valid=pairs["valid"].astype(np.int8),
                           not_yet=pairs["not_yet"].astype(np.int8)).groupby("change")
    touched = out.index.isin(pairs["change"])
    any_valid = grouped["valid"].max().reindex(out.index, fill_value=0).to_numpy().astype(bool)
    all_not_yet = grouped["not_yet"].min().reindex(out.index, fill_value=0).to_numpy().astype(bool)
    codes[NO_PERMIT] = ~touched
    codes[PERMIT_NOT_YET_VALID] = touched & ~any_valid & all_not_yet
    codes[PERMIT_EXPIRED] = touched & ~any_valid & ~all_not_yet
    codes[EXCEEDS_PERMIT] = _exceeds(changes_m, permits, pairs[pairs["valid"]], rules)
    if FIRST_SEEN in out:
        _timing_rules(pd.to_datetime(out[FIRST_SEEN], errors="coerce"), pairs, issued.to_numpy()[other],
                      expires.to_numpy()[other], codes)
    out["permit_ids"] = _ids_by_change(pairs, permits[cols.permit_id], out.index)
    out["valid_permit_ids"] = _ids_by_change(pairs[pairs["valid"]], permits[cols.permit_id], out.index)


def _timing_rules(first_seen: pd.Series, pairs: pd.DataFrame, issued: np.ndarray, expires: np.ndarray,
                  codes: dict[str, np.ndarray]) -> None:
    """STARTED_BEFORE_PERMIT, and PERMIT_EXPIRED, judged on the day each change was first seen (module docstring).

    ``first_seen``: per change (NaT: unknown, not judged); ``pairs``: the touching change–permit
    pairs; ``issued``, ``expires``: the dates (datetime64, NaT for none) of each pair's permit.
    """
    start = first_seen.reindex(pd.Index(pairs["change"])).to_numpy()
    known = ~np.isnat(start)
    flags = pd.DataFrame({"change": pairs["change"].to_numpy(),
                          "valid": known & (issued <= start) & (np.isnat(expires) | (start <= expires)),
                          "later": known & (issued > start), "expired": known & (expires < start)})
    per_change = flags.groupby("change")[["valid", "later", "expired"]].max().reindex(first_seen.index,
                                                                                     fill_value=False)
    none_valid = ~per_change["valid"].to_numpy(bool)
    codes[STARTED_BEFORE_PERMIT] = none_valid & per_change["later"].to_numpy(bool)
    codes[PERMIT_EXPIRED] = codes[PERMIT_EXPIRED] | (none_valid & per_change["expired"].to_numpy(bool))


def _exceeds(changes_m: gpd.GeoDataFrame, permits: gpd.GeoDataFrame, valid_pairs: pd.DataFrame,
             rules: RuleConfig) -> np.ndarray:
    """Changes whose area outside their valid permits' union exceeds both tolerances.

    Changes with one valid permit (nearly all) need only the overlap area; for changes that
    several valid permits touch, the permits are cut out of the change one rank at a time.
    """
    result = np.zeros(len(changes_m), bool)
    if valid_pairs.empty:
        return result
    assert changes_m.crs is not None, "changes_m is in a metric CRS"
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
        rest = changes_m.geometry.loc[changes_idx].array.to_numpy().copy()
        multi_total = threaded(shapely.area, rest)
        position = pd.Index(changes_idx).get_indexer(several["change"])
        rank = several.groupby("change").cumcount().to_numpy()
        permit_geoms = footprints.loc[several["other"]].array.to_numpy()
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
    banned = pairs[~allowed.to_numpy()[zoning.index.get_indexer(pd.Index(pairs["other"]))]]
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
               zoning: gpd.GeoDataFrame | None = None, rules: RuleConfig = RuleConfig(),
               metric: CRS | None = None) -> gpd.GeoDataFrame:
    """Judge every change; returns a copy of ``changes`` (CRS kept) with the judgement's columns.

    Overlaps are measured in ``metric`` (a CRS in metres; None: the changes' local UTM zone).

    The columns added are ``permit_ids``, ``valid_permit_ids``, ``zone_ids``, ``reasons`` and
    ``flagged``.

    Without a permit layer there is nothing to check against, and every change is ``NO_PERMIT``;
    without zoning, ``NO_BUILD_ZONE`` is not judged. Changes whose ``change_type`` column says
    ``demolished`` are ``DEMOLISHED`` unless ``rules.demolition_needs_permit``.
    """
    out = changes.copy()
    for column in ("permit_ids", "valid_permit_ids", "zone_ids"):
        out[column] = pd.Series("", index=out.index, dtype=object)
    codes: dict[str, np.ndarray] = {NO_PERMIT: np.ones(len(out), bool)}
    if not out.empty:
        changes_m = out[["geometry"]].to_crs(metric or metric_crs(out))
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
