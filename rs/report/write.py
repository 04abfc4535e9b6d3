"""Write a report folder as a whole: ``report.html``, ``report.pdf`` and ``work_orders.csv`` of one detect run.

The folder is written through ``rs.io.staging.StagedDir``: readers see the earlier report or the complete new
one, never a mix, and a failed report leaves the folder as it was. ``work_orders.csv`` (UTF-8 with a byte order
mark, so Excel shows Vietnamese text) has one row per flag, by priority: ``WORK_ORDER_COLUMNS``; its ``status``
follows the flag's review decision (``rs.report.cases.STATUS``) and ``assignee`` is left empty for the desk that
assigns inspectors; text cells that a spreadsheet would run as a formula get a ``'`` before them (``rs.io.csvcells``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from changewatch.rs.config import ReportConfig
from changewatch.rs.errors import InputFileError
from changewatch.rs.io.csvcells import defuse_formulas
from changewatch.rs.io.staging import StagedDir
from changewatch.rs.report.cases import Cases, degrees
from changewatch.rs.review import load_run
from changewatch.rs.runfolder import CROSSCHECK_SUMMARY, SUMMARY
from changewatch.rs.runinputs import check_scene_files, not_checked

REPORT_HTML = "report.html"
REPORT_PDF = "report.pdf"
WORK_ORDERS = "work_orders.csv"
REPORT_FILES = frozenset({REPORT_HTML, REPORT_PDF, WORK_ORDERS})  # all a report folder may hold
WORK_ORDER_COLUMNS = ("id", "priority", "reason", "parcel", "ward", "lon", "lat", "status", "assignee")


@dataclass(frozen=True)
class Report:
    """What ``write_report`` wrote: the report folder, its files, how many flags it holds, what was not checked.

    ``warnings``: one line per scene file whose checksum the run did not record (``rs.runinputs.not_checked``).
    """

    outdir: Path
    files: list[Path]
    flags: int
    warnings: list[str]


def work_orders(found: Cases) -> pd.DataFrame:
    """One work order per flag, by priority, in WORK_ORDER_COLUMNS.

    ``id``: the flag's change_id; ``reason``: its reason codes (comma-separated); ``parcel``,
    ``ward``: '; '-joined when it lies over several; ``lon``/``lat``: its centroid (EPSG:4326,
    degrees, as text with ``cases.LONLAT_DECIMALS`` (7) decimals, trailing zeros kept); ``status``:
    from its review decision; ``assignee``: empty.
    """
    t = found.table
    orders = pd.DataFrame({"id": t["change_id"], "priority": t["priority"], "reason": t["reasons"],
                           "parcel": t["parcel_ids"], "ward": t["ward"], "lon": t["lon"].map(degrees),
                           "lat": t["lat"].map(degrees), "status": t["status"], "assignee": ""})
    return orders[list(WORK_ORDER_COLUMNS)]


def _check_run(run_dir: Path) -> None:
    """Raise InputFileError for a crosscheck run folder: it has no scenes to draw the map and chips from."""
    if not (run_dir / SUMMARY).is_file() and (run_dir / CROSSCHECK_SUMMARY).is_file():
        raise InputFileError(f"{run_dir} is a crosscheck run folder: report needs a detect run folder, whose scenes "
                             "it draws the map and chips from")


def write_report(config: ReportConfig) -> Report:
    """Write the report of the detect run ``config.run_dir`` into the folder ``config.outdir``, as a whole.

    Reads the run (``rs.review.load_run``) and its scenes, after checking that they are the files the run
    read (``rs.runinputs.check_scene_files``); draws with matplotlib. Raises InputFileError (a missing
    folder, not a detect run folder, an unreadable scene), InputChangedError (a scene file changed since
    the run), OutputError (an output folder inside the run folder, or holding files a report does not
    write, or not writable) and DecisionError (a saved decision that cannot be read), in each case writing nothing.
    """
    from changewatch.rs.report.content import build_content
    from changewatch.rs.report.html import render_html
    from changewatch.rs.report.pdf import render_pdf

    run_dir = Path(config.run_dir)
    _check_run(run_dir)
    run = load_run(run_dir)
    unchecked = check_scene_files(run.inputs)
    with StagedDir(config.outdir, REPORT_FILES, inputs=[run.path, run.before, run.after]) as out:
        content = build_content(run, config)
        with out.writing():
            out.path(REPORT_HTML).write_text(render_html(content), encoding="utf-8")
            out.path(REPORT_PDF).write_bytes(render_pdf(content))
            defuse_formulas(work_orders(content.cases)).to_csv(out.path(WORK_ORDERS), index=False, encoding="utf-8-sig")
    return Report(Path(config.outdir), [out.final(n) for n in sorted(REPORT_FILES)], len(content.cases.table),
                  not_checked(unchecked))
