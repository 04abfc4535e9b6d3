"""Running a whole batch: every job of the manifest (skipping done ones on resume), then the batch's own outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from changewatch.rs.batch.jobs import JobRecord, skipped_record
from changewatch.rs.batch.manifest import AnyJob, Job, read_manifest
from changewatch.rs.batch.outputs import BatchResult, write_batch_outputs
from changewatch.rs.batch.resume import remove_stale_staging, stale_reason
from changewatch.rs.batch.scheduler import check_scheduler
from changewatch.rs.config import BatchConfig
from changewatch.rs.io.files import writing

if TYPE_CHECKING:
    from changewatch.rs.batch.cluster import Runner


def run_batch(config: BatchConfig, on_record: Callable[[JobRecord], None] | None = None,
              runner: Runner | None = None) -> BatchResult:
    """Run every job of the manifest (skipping done ones when ``config.resume``) and write batch outputs.

    Scenes rows (``AreaJob``) always run: their monitor skips the pairs done already (``rs.batch.areas``).
    Raises SchedulerError, before anything is written, when ``config.scheduler`` is an address where no Dask
    scheduler answers (``runner`` None: the scheduler's runner).
    """
    jobs = read_manifest(config.manifest, config.shared_layers())
    if runner is None:
        check_scheduler(config.scheduler)
    outdir = Path(config.outdir)
    with writing(outdir):
        outdir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(outdir)
    records: dict[str, JobRecord] = {}
    todo: list[AnyJob] = []
    reasons: dict[str, str] = {}
    for job in jobs:
        reason = stale_reason(outdir / job.area_id, job, config) if config.resume and isinstance(job, Job) else ""
        if reason is None and isinstance(job, Job):  # done earlier and up to date
            records[job.area_id] = skipped_record(job, outdir)
            if on_record:
                on_record(records[job.area_id])
        else:
            todo.append(job)
            reasons[job.area_id] = reason or ""
    if todo:
        from changewatch.rs.batch.cluster import runner_for  # Dask: only when there are jobs to run

        for record in (runner or runner_for(config.scheduler))(todo, config):
            record.resume_reason = reasons[record.area_id]
            records[record.area_id] = record
            if on_record:
                on_record(record)
    result = BatchResult([records[j.area_id] for j in jobs], outdir)
    write_batch_outputs(result)
    return result
