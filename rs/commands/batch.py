"""The ``batch`` command: detect for every job of a manifest, resumably, on Dask or in this process."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from changewatch.rs.commands.options import (
    crosscheck_inputs,
    defaults,
    detect_options,
    detect_settings,
    layer_options,
    reports_errors,
)
from changewatch.rs.config import BatchConfig

BATCH = defaults(BatchConfig)


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Batch folder: one sub-folder per area_id (as detect writes), batch_summary.json/.csv and "
                   "a combined flagged.gpkg (EPSG:4326).")
@layer_options
@click.option("--resume", is_flag=True, default=BATCH["resume"],
              help="Skip jobs finished by an earlier run whose outputs, inputs (size and time), settings, model and "
                   "changewatch version are unchanged; redo the rest.")
@click.option("--scheduler", default=BATCH["scheduler"], show_default=True,
              help="serial (this process), local (a Dask LocalCluster on this machine) or tcp://host:8786 "
                   "(an existing Dask cluster).")
@click.option("--workers", type=click.IntRange(1), default=BATCH["workers"],
              help="LocalCluster worker processes (one thread each). Default: one per CPU core.")
@click.option("--split-mpx", type=click.FloatRange(0.0), default=BATCH["split_mpx"], show_default=True,
              help="On Dask, scenes larger than this many megapixels have their tiles spread over all workers.")
@click.option("--json-log", is_flag=True, help="One JSON object per finished job on stdout instead of text lines.")
@detect_options
@reports_errors
def batch(manifest: str, outdir: str, permits: str | None, zoning: str | None, parcels: str | None, as_of: Any,
          columns_file: str | None, resume: bool, scheduler: str, workers: int | None, split_mpx: float,
          json_log: bool, quiet: bool, **options: Any) -> None:
    """Run detect for every job of MANIFEST; failed jobs are recorded and do not stop the others.

    \b
    MANIFEST is a CSV with columns area_id,before,after and optionally permits,zoning,parcels
    (paths relative to the manifest), as_of (YYYY-MM-DD) and masks (cloud masks, ';' between
    several), or a YAML list of such mappings
    (or a mapping with jobs: and shared permits:, zoning:, parcels:). A row may give scenes
    (an area's SCENES file, as monitor takes) instead of before,after: that area is monitored
    into OUTDIR/<area_id>/ (a monitor store); its pairs done earlier are never run again.

    --permits, --zoning and --parcels serve every job whose manifest row names no layer of its
    own; --as-of every job without an as_of. Exit code 7 when the batch finished but some jobs
    failed (see batch_summary.csv).
    """
    from changewatch.rs.batch.jobs import tile_counts
    from changewatch.rs.batch.manifest import read_manifest
    from changewatch.rs.batch.run import run_batch
    from changewatch.rs.batch.scheduler import check_scheduler
    from changewatch.rs.errors import BATCH_JOBS_FAILED

    if not (scheduler in ("serial", "local") or scheduler.startswith(("tcp://", "tls://"))):
        raise click.BadParameter(f"{scheduler!r}: use serial, local or tcp://host:port", param_hint="--scheduler")
    config = BatchConfig(manifest=manifest, outdir=outdir,
                         layers=crosscheck_inputs(permits, zoning, parcels, as_of, columns_file), resume=resume,
                         scheduler=scheduler, workers=workers, split_mpx=split_mpx, **detect_settings(options))
    jobs = read_manifest(manifest, config.shared_layers())
    check_scheduler(scheduler)  # before the progress bars: an unreachable scheduler is one error line
    progress = _Progress(tile_counts(jobs, config), len(jobs), quiet or json_log, json_log)
    try:
        result = run_batch(config, on_record=progress.report)
    finally:
        progress.close()
    if not json_log:
        click.echo(f"{len(result.records) - len(result.failed)} of {len(result.records)} jobs done; "
                   f"summary in {Path(outdir) / 'batch_summary.csv'}")
    if result.failed:
        sys.exit(BATCH_JOBS_FAILED)


class _Progress:
    """Job and tile progress bars, and one line (or, with ``json_log``, one JSON object) per finished job."""

    def __init__(self, tiles: dict[str, int], n_jobs: int, hide: bool, json_log: bool) -> None:
        from tqdm.auto import tqdm

        self.tiles, self.json_log = tiles, json_log
        self.job_bar = tqdm(total=n_jobs, desc="jobs ", unit="job", disable=hide, position=0)
        self.tile_bar = tqdm(total=sum(tiles.values()), desc="tiles", unit="tile", disable=hide, position=1)

    def report(self, record: Any) -> None:
        """Advance the bars by one finished job (a ``rs.batch.jobs.JobRecord``) and print its line."""
        from dataclasses import asdict

        from changewatch.rs.batch.manifest import MONITOR

        self.job_bar.update()
        self.tile_bar.update(self.tiles[record.area_id])
        if self.json_log:
            click.echo(json.dumps(asdict(record)))
        elif record.status == "failed":
            self.job_bar.write(f"[failed]  {record.area_id}: {record.error}")
        elif record.kind == MONITOR:
            self.job_bar.write(f"[{record.status}] {record.area_id}: {record.pairs_detected} pairs detected, "
                               f"{record.changes} tracked changes, {record.flagged} flagged ({record.seconds:.1f} s)")
        else:
            redone = f" — redone: {record.resume_reason}" if record.resume_reason not in ("", "not done") else ""
            self.job_bar.write(f"[{record.status}] {record.area_id}: {record.changes} changes, {record.flagged} "
                               f"flagged ({record.seconds:.1f} s){redone}")

    def close(self) -> None:
        self.tile_bar.close()
        self.job_bar.close()
