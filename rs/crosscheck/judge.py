"""A cross-check's result: every change judged, the flagged ones attributed to parcels."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import pandas as pd

from changewatch.rs.crosscheck.layers import Layers
from changewatch.rs.crosscheck.parcels import attribute_parcels
from changewatch.rs.crosscheck.rules import crosscheck
from changewatch.rs.crosscheck.settings import ParcelColumns, RuleConfig
from changewatch.rs.crosscheck.spatial import id_ranks, join_ids
from changewatch.rs.grid import metric_crs
from changewatch.rs.summary import Areas, Counts


@dataclass(frozen=True)
class Judgement:
    """A cross-check's result: every change with its reasons, the flags, the parcel table and overlaps.

    Every change with its reasons, the flagged ones (with ``parcel_ids`` when parcels were given),
    the per-parcel table and the change–parcel overlaps (``change_id``, ``parcel_id``,
    ``overlap_m2``); the last two are None without parcels.
    """

    changes: gpd.GeoDataFrame
    flagged: gpd.GeoDataFrame
    parcels: gpd.GeoDataFrame | None
    links: pd.DataFrame | None = None

    def counts(self, by_change_type: dict[str, int] | None = None) -> Counts:
        """Numbers of changes, flags per reason code and flagged parcels.

        ``by_change_type`` is as given: the judgement does not know whether the model could tell.
        """
        by_reason: dict[str, int] = {}
        if len(self.flagged):
            reasons = self.flagged["reasons"].str.split(",").explode().value_counts()
            by_reason = {str(k): int(v) for k, v in reasons.items()}
        return Counts(len(self.changes), len(self.flagged), len(self.changes) - len(self.flagged), by_reason,
                      None if self.parcels is None else len(self.parcels), by_change_type)

    def areas(self) -> Areas:
        """Area of all changes and of the flagged ones, m² (None without an ``area_m2`` column)."""
        return Areas(float(self.changes["area_m2"].sum()) if "area_m2" in self.changes else None,
                     float(self.flagged["area_m2"].sum()) if "area_m2" in self.flagged else None)


def judge(changes: gpd.GeoDataFrame, layers: Layers, rules: RuleConfig,
          parcel_columns: ParcelColumns = ParcelColumns()) -> Judgement:
    """Cross-check ``changes`` against ``layers`` and attribute the flagged ones to parcels.

    Overlaps and areas are measured in one CRS for the whole judgement: the changes' local UTM zone.
    """
    metric = metric_crs(changes) if len(changes) else None
    checked = crosscheck(changes, layers.permits.data if layers.permits else None,
                         layers.zoning.data if layers.zoning else None, rules, metric)
    flagged = checked[checked["flagged"]].reset_index(drop=True)
    if layers.parcels is None:
        return Judgement(checked, flagged, None)
    links, table = attribute_parcels(flagged, layers.parcels.data, parcel_columns, rules.dask_min_features, metric)
    names, ranks = id_ranks(links["parcel_id"])
    keys, joined = join_ids(links["change_id"].to_numpy(), ranks, names)
    flagged["parcel_ids"] = flagged["change_id"].map(pd.Series(joined, index=keys)).fillna("").astype(object)
    return Judgement(checked, flagged, table, links)
