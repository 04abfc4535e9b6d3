"""``report``'s formatting: centroids with 7 decimals (trailing zeros kept) on work orders and case sheets, and a
run without flags shows "No flags." instead of empty count tables, with a map legend of only what the map shows."""

from __future__ import annotations

import io
import re

import pandas as pd
import pypdf
from matplotlib.figure import Figure

from changewatch.rs.report.cases import Cases
from changewatch.rs.report.content import NO_FLAGS, ReportContent, sheet
from changewatch.rs.report.figures import legend_handles, png
from changewatch.rs.report.html import render_html
from changewatch.rs.report.pdf import render_pdf
from changewatch.rs.report.write import WORK_ORDER_COLUMNS, work_orders

LON, LAT = 106.7, 10.776543  # 106.7000000, 10.7765430: the 7th decimal a zero


def _table(rows: int) -> pd.DataFrame:
    ids = range(1, rows + 1)
    return pd.DataFrame({"priority": ids, "change_id": ids, "reasons": ["NO_PERMIT"] * rows,
                         "worst_reason": ["NO_PERMIT"] * rows, "area_m2": [120.0] * rows, "max_prob": [0.9] * rows,
                         "parcel_ids": [""] * rows, "ward": [""] * rows, "lon": [LON] * rows, "lat": [LAT] * rows,
                         "status": ["open"] * rows})


def test_work_orders_keep_seven_decimals() -> None:
    orders = work_orders(Cases(_table(1), {"NO_PERMIT": 1}, None))
    text = orders.to_csv(index=False)
    assert text.splitlines()[0] == ",".join(WORK_ORDER_COLUMNS)
    assert ",106.7000000,10.7765430," in text


def test_case_sheet_centroid_keeps_seven_decimals() -> None:
    fields = dict(sheet(_table(1).iloc[0]))
    assert fields["centroid (lon, lat)"] == "106.7000000, 10.7765430"


def _empty_content(by_ward: dict[str, int] | None) -> ReportContent:
    fig = Figure(figsize=(1, 1))
    fig.add_subplot()
    return ReportContent("Inspection cases: empty", [("flagged changes", "0")], Cases(_table(0), {}, by_ward),
                         png(fig), {}, {"NO_PERMIT": "#ff0000"})


def test_a_run_without_flags_says_no_flags_in_html_and_pdf() -> None:
    for by_ward in (None, {}):
        html = render_html(_empty_content(by_ward))
        assert 'class="by-reason"' not in html and 'class="by-ward"' not in html
        assert len(re.findall(re.escape(f"<p>{NO_FLAGS}</p>"), html)) == (1 if by_ward is None else 2)
        pages = pypdf.PdfReader(io.BytesIO(render_pdf(_empty_content(by_ward)))).pages
        text = " ".join(p.extract_text() for p in pages)
        assert text.count(NO_FLAGS) == (1 if by_ward is None else 2)


def test_the_legend_shows_only_what_the_map_shows() -> None:
    assert legend_handles([], parcels=False) == []
    assert [h.get_label() for h in legend_handles(["NO_PERMIT"], parcels=False)] == ["NO_PERMIT"]
    assert [h.get_label() for h in legend_handles(["NO_PERMIT"], parcels=True)] == ["NO_PERMIT", "parcel with flags"]
