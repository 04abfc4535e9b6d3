"""The PDF report (fpdf2, A4 portrait): the summary page, then one page per flag in order of priority.

Text is set in DejaVu Sans, the font matplotlib ships (``matplotlib.get_data_path()/fonts/ttf``), embedded in the
PDF: Vietnamese and every other text it covers renders on any machine, with no system font needed. The summary
page holds the facts, the counts by reason code (with the map's colours) and by ward, the priority rule and the
overview map; a long list of wards may carry the summary onto a second page.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Literal

from fpdf import FPDF
from fpdf.fonts import FontFace

from changewatch.rs.report.content import NO_FLAGS, NO_WARDS, ReportContent, sheet

FONT = "DejaVu"
PAGE_W, MARGIN = 210, 15  # A4 width and margins, mm (whole numbers: fpdf2 tables take ints)
TEXT_W = PAGE_W - 2 * MARGIN
LINE_MM = 6  # mm (fpdf2's table takes a whole number)
LABEL_W = 48  # mm, the label column of a case sheet
MAP_MAX_H = 150.0  # mm
MAP_MIN_H = 90.0  # mm: a map with less room left on the page goes on the next


def font_files() -> dict[Literal["", "B"], Path]:
    """DejaVu Sans regular ('') and bold ('B') from matplotlib's data folder, by fpdf2 style."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return {"": folder / "DejaVuSans.ttf", "B": folder / "DejaVuSans-Bold.ttf"}


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height (pixels) of a PNG, from its IHDR chunk."""
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _image(pdf: FPDF, png: bytes, max_h: float) -> None:
    """Place ``png`` at the cursor, as wide as the text column, no taller than ``max_h`` mm; move below it."""
    width, height = png_size(png)
    w = min(TEXT_W, max_h * width / height)
    if pdf.get_y() + w * height / width > pdf.h - MARGIN:
        pdf.add_page()
    pdf.image(io.BytesIO(png), x=MARGIN, y=pdf.get_y(), w=w)
    pdf.set_y(pdf.get_y() + w * height / width + 3)


def _heading(pdf: FPDF, text: str, size: int) -> None:
    pdf.set_font(FONT, "B", size)
    pdf.multi_cell(TEXT_W, size * 0.5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font(FONT, "", 10)


def _pairs(pdf: FPDF, rows: list[tuple[str, str]], swatches: dict[str, str] | None = None) -> None:
    """A two-column table of (label, text); with ``swatches``, a colour square before labels that have one."""
    with pdf.table(col_widths=(LABEL_W, TEXT_W - LABEL_W), width=TEXT_W, first_row_as_headings=False,
                   line_height=LINE_MM, align="LEFT") as table:
        for label, text in rows:
            row = table.row()
            colour = (swatches or {}).get(label)
            row.cell(label, style=None if colour is None else _fill(colour))
            row.cell(text)


def _fill(colour: str) -> FontFace:
    """A cell style filled with ``colour`` (``#rrggbb``), its text kept readable."""
    rgb = (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))
    dark = sum(rgb) < 3 * 110
    return FontFace(fill_color=rgb, color=(255, 255, 255) if dark else (0, 0, 0))


def _counts(pdf: FPDF, counts: dict[str, int], swatches: dict[str, str] | None = None) -> None:
    """A table of flags per reason code or ward; NO_FLAGS as a line when there are none."""
    if counts:
        _pairs(pdf, [(k, str(v)) for k, v in counts.items()], swatches)
    else:
        pdf.multi_cell(TEXT_W, LINE_MM, NO_FLAGS, new_x="LMARGIN", new_y="NEXT")


def _summary(pdf: FPDF, content: ReportContent) -> None:
    pdf.add_page()
    _heading(pdf, content.title, 16)
    _pairs(pdf, content.facts)
    _heading(pdf, "Flags by reason code", 12)
    _counts(pdf, content.cases.by_reason, content.colours)
    _heading(pdf, "Flags by ward", 12)
    by_ward = content.cases.by_ward
    if by_ward is None:
        pdf.multi_cell(TEXT_W, LINE_MM, NO_WARDS, new_x="LMARGIN", new_y="NEXT")
    else:
        _counts(pdf, by_ward)
    pdf.multi_cell(TEXT_W, LINE_MM, f"Flags are listed by priority: {content.priority_rule}.", align="L",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    room = pdf.h - MARGIN - pdf.get_y()
    _image(pdf, content.map_png, min(MAP_MAX_H, room) if room >= MAP_MIN_H else MAP_MAX_H)  # else on a new page


def render_pdf(content: ReportContent) -> bytes:
    """The report as PDF bytes: the summary page(s), then one page per flag (``Cases.table`` order)."""
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(True, MARGIN)
    for style, path in font_files().items():
        pdf.add_font(FONT, style, str(path))
    pdf.set_title(content.title)
    _summary(pdf, content)
    for _, row in content.cases.table.iterrows():
        pdf.add_page()
        change_id = int(row["change_id"])
        _heading(pdf, f"Priority {int(row['priority'])}: change {change_id} ({row['worst_reason']})", 14)
        _image(pdf, content.chips_png[change_id], 80.0)
        _pairs(pdf, sheet(row))
    return bytes(pdf.output())
