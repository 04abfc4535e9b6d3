"""The command that turns a detect run into inspection case sheets and work orders: ``report``."""

from __future__ import annotations

import click

from changewatch.rs.commands.options import defaults, reports_errors, warn
from changewatch.rs.config import ReportConfig

REPORT = defaults(ReportConfig)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Folder for report.html, report.pdf and work_orders.csv, replaced as a whole when all three are "
                   "written; it may hold only what report wrote before, and may not lie inside RUN_DIR.")
@click.option("--chip-pad-px", type=click.IntRange(0), default=REPORT["chip_pad_px"], show_default=True,
              help="Pixels of the run's grid shown around each flag on its before/after chips.")
@click.option("--map-px", type=click.IntRange(64), default=REPORT["map_px"], show_default=True,
              help="Longer side, in pixels, the AFTER scene is reduced to behind the overview map.")
@reports_errors
def report(run_dir: str, outdir: str, chip_pad_px: int, map_px: int) -> None:
    """Write inspection case sheets of a detect run (RUN_DIR) for inspectors and field apps.

    \b
    OUTDIR/report.html  one self-contained page (images inline, no network needed to view it):
                        counts by reason code and by ward, the overview map with a legend of
                        reason colours, then one section per flag by priority
    OUTDIR/report.pdf   the same: a summary page, then one page per flag
    OUTDIR/work_orders.csv  one row per flag (UTF-8 with BOM, for Excel): id, priority, reason,
                        parcel, ward, lon, lat, status, assignee

    Each flag's sheet shows its before/after chips with the polygon outlined, reason codes, permits,
    parcels and ward, area (m²), maximum probability, the centroid's lon/lat and the review decision.
    Priority: most severe reason code first (NO_BUILD_ZONE, NO_PERMIT, EXCEEDS_PERMIT, ...), then
    larger area, then higher probability. Status: open (not reviewed), visit (needs_visit),
    confirmed (confirm), closed (dismiss); assignee is left empty.
    """
    from changewatch.rs.report.write import write_report

    result = write_report(ReportConfig(run_dir, outdir, chip_pad_px, map_px))
    warn(result.warnings)
    for path in result.files:
        click.echo(str(path))
    click.echo(f"{result.flags} flags reported in {result.outdir}")
