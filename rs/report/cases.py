"""Inspection cases: one row per flag of a run, in order of priority, with what an inspector needs.

The priority rule, defined here once (``PRIORITY_RULE``): flags are sorted by their most severe reason code
(``rs.crosscheck.rules.SEVERITY``: NO_BUILD_ZONE first), then by area (largest first), then by maximum change
probability (highest first), then by ``change_id``; priority 1 is the first. A flag's status on a work order
follows its review decision (``STATUS``): none → ``open``, ``needs_visit`` → ``visit``, ``confirm`` →
``confirmed``, ``dismiss`` → ``closed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import pandas as pd

from changewatch.rs.crosscheck.rules import SEVERITY, worst_reason
from changewatch.rs.grid import metric_crs
from changewatch.rs.review import Run, review_table
from changewatch.rs.runfolder import LAYER_FLAGGED, LAYER_LINKS, LAYER_PARCELS

PRIORITY_RULE = ("most severe reason code first (order: " + ", ".join(SEVERITY) + "), then larger area, then higher "
                 "maximum probability, then lower change_id")
UNREVIEWED = "open"
STATUS = {"needs_visit": "visit", "confirm": "confirmed", "dismiss": "closed"}  # decision → work-order status
NO_WARD = "(outside the parcels)"  # the ward of a flag that overlaps no parcel, in the counts by ward
BLANK_WARD = "(parcels without a ward)"  # the ward of a flag whose parcels name none, in the counts by ward
PARCEL_FIELDS = ("parcel_id", "ward", "owner")  # the parcel attributes shown on a case sheet, where present
LONLAT_DECIMALS = 7  # decimals of a centroid's lon/lat on work orders and case sheets: 1e-7° ≈ 1 cm


@dataclass(frozen=True)
class Cases:
    """A run's flags as inspection cases, and the counts on the report's summary page.

    ``table``: one row per flag sorted by priority (``cases``' columns); ``by_reason``: flags per
    reason code in SEVERITY order (a flag with two codes counts for both); ``by_ward``: flags per
    ward, largest first (a flag over two wards counts in both; NO_WARD for flags outside every
    parcel, BLANK_WARD for flags on parcels that name no ward), None when the run was given no parcels.
    """

    table: pd.DataFrame
    by_reason: dict[str, int]
    by_ward: dict[str, int] | None


def status(decision: object) -> str:
    """A work order's status for a review decision (``STATUS``; no decision: UNREVIEWED)."""
    return STATUS.get(decision, UNREVIEWED) if isinstance(decision, str) else UNREVIEWED


def _parcels(run: Run) -> pd.DataFrame | None:
    """One row per (change_id, parcel) with the parcel's PARCEL_FIELDS and ``overlap_m2``; None without parcels."""
    links, parcels = run.layers.get(LAYER_LINKS), run.layers.get(LAYER_PARCELS)
    if links is None or parcels is None:
        return None
    keep = [c for c in PARCEL_FIELDS if c in parcels]
    table = pd.DataFrame(links[["change_id", "parcel_id", "overlap_m2"]])
    table["parcel_id"] = table["parcel_id"].astype(str)
    attributes = pd.DataFrame(parcels[keep]).astype({"parcel_id": str})
    return table.merge(attributes, on="parcel_id", how="left")


def _per_flag(links: pd.DataFrame | None) -> dict[int, list[dict[str, Any]]]:
    """The parcels of each flag (``_parcels``' rows without ``change_id``), by change_id."""
    out: dict[int, list[dict[str, Any]]] = {}
    for record in [] if links is None else links.to_dict("records"):
        out.setdefault(int(record["change_id"]), []).append({str(k): v for k, v in record.items() if k != "change_id"})
    return out


def _joined(values: pd.Series) -> str:
    """Distinct non-empty texts of ``values``, sorted, joined by '; '."""
    return "; ".join(sorted({str(v) for v in values if pd.notna(v) and str(v)}))


def _centroids(flagged: gpd.GeoDataFrame) -> tuple[pd.Series, pd.Series]:
    """Longitude and latitude (EPSG:4326, degrees) of each flag's centroid, computed in local UTM."""
    if flagged.empty:
        return pd.Series(dtype=float), pd.Series(dtype=float)
    centres = flagged.geometry.to_crs(metric_crs(flagged)).centroid.to_crs("EPSG:4326")
    return centres.x, centres.y


def degrees(value: float) -> str:
    """A longitude or latitude (EPSG:4326, degrees) as text with LONLAT_DECIMALS decimals, trailing zeros kept."""
    return f"{value:.{LONLAT_DECIMALS}f}"


def sort_by_priority(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (columns ``worst_reason``, ``area_m2``, ``max_prob``, ``change_id``) in PRIORITY_RULE's order.

    Adds column ``priority`` (1 = first) and returns a new frame with a fresh index.
    """
    rank = table["worst_reason"].map({code: i for i, code in enumerate(SEVERITY)}).fillna(len(SEVERITY))
    ordered = table.assign(_rank=rank).sort_values(["_rank", "area_m2", "max_prob", "change_id"],
                                                    ascending=[True, False, False, True], na_position="last")
    ordered = ordered.drop(columns="_rank").reset_index(drop=True)
    ordered.insert(0, "priority", range(1, len(ordered) + 1))
    return ordered


def cases(run: Run) -> Cases:
    """The flags of ``run`` as inspection cases, sorted by priority (PRIORITY_RULE).

    Columns of ``Cases.table``: ``priority``, ``change_id``, ``reasons``, ``worst_reason``, ``area_m2``
    (m²), ``max_prob`` (0–1; NaN when the layer has none), ``permit_ids``, ``valid_permit_ids``,
    ``zone_ids`` (text, '' when none), ``parcels`` (list of dicts: PARCEL_FIELDS present and
    ``overlap_m2``), ``parcel_ids`` and ``ward`` (text, '; '-joined), ``lon``/``lat`` of the centroid
    (EPSG:4326, degrees), the review columns of ``rs.review.review_table`` (None where nobody
    decided) and ``status`` (``STATUS``). Raises DecisionError for a saved decision that cannot be read.
    """
    flagged: gpd.GeoDataFrame = run.layers[LAYER_FLAGGED]
    table = pd.DataFrame({"change_id": flagged["change_id"].astype(int), "reasons": flagged["reasons"].astype(str)})
    table["worst_reason"] = worst_reason(table["reasons"])
    table["area_m2"] = flagged["area_m2"].astype(float) if "area_m2" in flagged else float("nan")
    table["max_prob"] = flagged["max_prob"].astype(float) if "max_prob" in flagged else float("nan")
    for column in ("permit_ids", "valid_permit_ids", "zone_ids"):
        table[column] = flagged[column].fillna("").astype(str) if column in flagged else ""
    table["lon"], table["lat"] = (s.to_numpy() for s in _centroids(flagged))
    links = _parcels(run)
    per_flag = _per_flag(links)
    table["parcels"] = pd.Series([per_flag.get(int(i), []) for i in table["change_id"]], index=table.index,
                                 dtype=object)
    table["parcel_ids"] = [_joined(pd.Series([p["parcel_id"] for p in ps], dtype=object)) for ps in table["parcels"]]
    table["ward"] = [_joined(pd.Series([p.get("ward") for p in ps], dtype=object)) for ps in table["parcels"]]
    review = review_table(run).drop(columns=["reasons", "area_m2"])
    table = table.merge(review, on="change_id", how="left")
    table["status"] = [status(d) for d in table["decision"]]
    return Cases(sort_by_priority(table), _by_reason(table), None if links is None else _by_ward(table))


def _by_reason(table: pd.DataFrame) -> dict[str, int]:
    """Flags per reason code, in SEVERITY order (each code of a flag counts)."""
    counts = table["reasons"].str.split(",").explode().value_counts()
    return {code: int(counts[code]) for code in SEVERITY if code in counts}


def _by_ward(table: pd.DataFrame) -> dict[str, int]:
    """Flags per ward, most first.

    A flag over two wards counts in both; NO_WARD outside every parcel, BLANK_WARD on parcels that name no ward.
    """
    wards = pd.Series([w.split("; ") if w else [BLANK_WARD if p else NO_WARD]
                       for w, p in zip(table["ward"], table["parcel_ids"], strict=True)], dtype=object).explode()
    counts = wards.value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))}
