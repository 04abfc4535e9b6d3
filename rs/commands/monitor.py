"""The ``monitor`` command: one area over many dates, each new consecutive pair detected, changes tracked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from changewatch.rs.commands.options import (
    crosscheck_inputs,
    detect_options,
    detect_settings,
    layer_options,
    reports_errors,
)
from changewatch.rs.config import MonitorConfig

if TYPE_CHECKING:
    from changewatch.rs.monitor.run import MonitorResult


@click.command()
@click.argument("scenes", type=click.Path(dir_okay=False))
@click.option("-o", "--store", required=True, type=click.Path(file_okay=False),
              help="Store folder: pairs/<date_a>_<date_b>/ (one detect run folder per consecutive pair), "
                   "history.gpkg (layers changes, observations, parcel_history, table dates) and timeline.png. "
                   "Pairs done earlier are not run again.")
@layer_options
@detect_options
@reports_errors
def monitor(scenes: str, store: str, permits: str | None, zoning: str | None, parcels: str | None, as_of: Any,
            columns_file: str | None, quiet: bool, **options: Any) -> None:
    """Watch one area over many dates: detect each new consecutive pair of SCENES and track changes across dates.

    \b
    SCENES is a CSV with columns date,path (YYYY-MM-DD dates, paths relative to SCENES) or a
    YAML list of such mappings, or a STAC ItemCollection or catalog JSON (one scene per item,
    dated by its datetime); rows are sorted by date. Each consecutive pair is judged as of
    its AFTER date unless --as-of is given. Re-running after adding a scene detects only the
    new pair; an interrupted run resumes.
    """
    from changewatch.rs.monitor.run import run_monitor

    layers = crosscheck_inputs(permits, zoning, parcels, as_of, columns_file)
    report_monitor(run_monitor(MonitorConfig(scenes=scenes, store=store, layers=layers, **detect_settings(options))))


def report_monitor(result: MonitorResult) -> None:
    """Print a line per pair (detected now, or skipped as done) and one with the tracked changes by status."""
    from changewatch.rs.monitor.history import STATUSES

    for record in result.pairs:
        why = f" ({record.reason})" if record.reason not in ("", "not done") else ""
        click.echo(f"[{'detected' if record.status == 'done' else 'skipped'}] {record.name}{why}")
    counts = result.history.changes["status"].value_counts()
    click.echo(f"{len(result.history.changes)} tracked changes ("
               + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in STATUSES)
               + f"); history in {result.path}")
