"""What a report shows, once, for both its HTML and its PDF: the summary, the map, and each flag's sheet.

``build_content`` reads a detect run's cases (``rs.report.cases``) and draws its figures (``rs.report.figures``);
``sheet`` gives one flag's fields as (label, text) pairs in the order both formats print them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from changewatch.rs.config import ReportConfig
from changewatch.rs.report.cases import PRIORITY_RULE, Cases, cases, degrees
from changewatch.rs.review import Run
from changewatch.rs.styles import reason_colours

NO_FLAGS = "No flags."  # in place of the counts by reason code and by ward of a run without flags
NO_WARDS = "The run was given no parcels: no wards."


@dataclass(frozen=True)
class ReportContent:
    """Everything a report shows: the run, its cases, the figures as PNG bytes.

    ``title``: the report's heading; ``facts``: (label, text) pairs of the summary page (run folder,
    judged as of, model, counts); ``cases``: the flags by priority; ``map_png``: the overview map;
    ``chips_png``: each flag's chips by change_id; ``colours``: reason code → ``#rrggbb``.
    """

    title: str
    facts: list[tuple[str, str]]
    cases: Cases
    map_png: bytes
    chips_png: dict[int, bytes]
    colours: dict[str, str]
    priority_rule: str = PRIORITY_RULE


def _text(value: Any) -> str:
    """A cell as text: '' for None/NaN, else ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _listed(value: Any) -> str:
    """A comma-separated list of ids or codes as the run stores them (``a,b``), spaced for reading (``a, b``)."""
    return ", ".join(part for part in _text(value).split(",") if part)


def _parcel(parcel: dict[str, Any]) -> str:
    """One parcel of a flag as text: id, ward, owner where present, and the flag's area on it (m²)."""
    parts = [_text(parcel.get(k)) for k in ("parcel_id", "ward", "owner")]
    overlap = parcel.get("overlap_m2")
    text = " · ".join(p for p in parts if p)
    return text + (f" ({float(overlap):,.0f} m² of the flag)" if overlap is not None else "")


def sheet(row: pd.Series) -> list[tuple[str, str]]:
    """One flag's fields (a row of ``Cases.table``) as (label, text) pairs, in the order a case sheet prints them."""
    decision = _text(row.get("decision"))
    review = "not reviewed" if not decision else \
        f"{decision} by {_text(row.get('reviewer'))} at {_text(row.get('reviewed_at'))}"
    parcels = row.get("parcels") or []
    return [
        ("reason codes", _listed(row["reasons"])),
        ("area", f"{float(row['area_m2']):,.0f} m²" if pd.notna(row["area_m2"]) else ""),
        ("max. probability", f"{float(row['max_prob']):.2f}" if pd.notna(row["max_prob"]) else ""),
        ("centroid (lon, lat)", f"{degrees(float(row['lon']))}, {degrees(float(row['lat']))}"),
        ("permits overlapping", _listed(row.get("permit_ids")) or "none"),
        ("permits valid on the date", _listed(row.get("valid_permit_ids")) or "none"),
        ("no-build zones", _listed(row.get("zone_ids")) or "none"),
        ("parcels", "; ".join(_parcel(p) for p in parcels) or "none"),
        ("ward", _text(row.get("ward"))),
        ("review", review),
        ("review note", _text(row.get("note"))),
        ("work-order status", _text(row.get("status"))),
    ]


def _facts(run: Run, found: Cases) -> list[tuple[str, str]]:
    """The summary page's facts: run folder, scenes, date judged, model, counts."""
    s = run.summary
    facts = [("run folder", str(run.path.resolve())), ("BEFORE scene", run.before), ("AFTER scene", run.after),
             ("judged as of", _text(s.rules.as_of)), ("model", s.model.name if s.model else ""),
             ("changes", str(s.counts.changes)), ("flagged changes", str(len(found.table)))]
    return facts + [("flagged parcels", str(s.counts.flagged_parcels))] if s.counts.flagged_parcels is not None \
        else facts


def build_content(run: Run, config: ReportConfig) -> ReportContent:
    """Read ``run``'s cases and draw its map and every flag's chips (matplotlib; imported here).

    Raises InputFileError when a scene cannot be read, DecisionError for a saved decision that cannot be read.
    """
    from changewatch.rs.report.figures import chip_figure, overview_map, png

    found = cases(run)
    chips = {int(i): png(chip_figure(run, int(i), config.chip_pad_px)) for i in found.table["change_id"]}
    return ReportContent(f"Inspection cases: {run.path.resolve().name}", _facts(run, found), found,
                         png(overview_map(run, config.map_px)), chips, reason_colours())
