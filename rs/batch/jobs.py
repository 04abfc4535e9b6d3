"""Running one job of a batch: a detect run into its area folder, its completion record written last.

A scenes row (``AreaJob``) is a monitor run into its area folder instead (``rs.batch.areas``). A
failure is recorded, not raised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from changewatch.rs.batch.manifest import DETECT, AnyJob, AreaJob, Job, detect_config
from changewatch.rs.batch.resume import fingerprint, job_files, write_done
from changewatch.rs.config import BatchConfig
from changewatch.rs.errors import ChangewatchError
from changewatch.rs.infer import ModelCache, predict_pair, tiling
from changewatch.rs.io.files import writing
from changewatch.rs.pipeline import Predictor, detect
from changewatch.rs.prepare import prepare_for_model
from changewatch.rs.runfolder import DONE_RECORD, SUMMARY, read_summary


@dataclass
class JobRecord:
    """What became of one job.

    ``kind``: ``detect`` (a before/after row, its folder a detect run folder) or ``monitor`` (a
    scenes row, its folder a monitor store; ``changes``, ``flagged``: its tracked changes,
    ``flagged_area_m2`` their footprints'; ``pairs_detected``: pairs detected by this run).
    """

    area_id: str
    status: str  # "done" (ran now), "skipped" (done earlier), "failed"
    changes: int = 0
    flagged: int = 0
    flagged_area_m2: float = 0.0
    seconds: float = 0.0
    error: str = ""
    exit_code: int = 0
    tile_tasks: int = 0  # Dask tasks the scene's tiles were spread over (0: run within the job's task)
    resume_reason: str = ""  # with --resume: why the job was run again (``stale_reason``)
    kind: str = DETECT
    pairs_detected: int = 0


def run_job(job: AnyJob, config: BatchConfig, models: ModelCache, predict: Predictor = predict_pair) -> JobRecord:
    """Run one job; a ChangewatchError becomes a failed record (other exceptions are bugs and propagate).

    A scenes row (``AreaJob``) runs ``rs.batch.areas.run_area``.
    """
    if isinstance(job, AreaJob):
        from changewatch.rs.batch.areas import run_area

        return run_area(job, config, models, predict)
    area_dir = Path(config.outdir) / job.area_id
    start = time.perf_counter()
    try:
        with writing(area_dir / DONE_RECORD):
            (area_dir / DONE_RECORD).unlink(missing_ok=True)  # from now on the area is not done
        files = fingerprint(job_files(job))
        result = detect(detect_config(job, config), progress=False, models=models, predict=predict)
        assert result.summary.model is not None  # a detect run's
        write_done(area_dir, job, config, files, result.summary.model.path)
    except ChangewatchError as exc:
        return JobRecord(job.area_id, "failed", seconds=time.perf_counter() - start, error=str(exc),
                         exit_code=exc.exit_code)
    return JobRecord(job.area_id, "done", result.n_changes, result.n_flagged, result.flagged_area_m2,
                     time.perf_counter() - start)


def tile_counts(jobs: list[AnyJob], config: BatchConfig) -> dict[str, int]:
    """Tiles each job will be cut into (see ``tile_count``), by area id."""
    return {job.area_id: tile_count(job, config) for job in jobs}


def tile_count(job: AnyJob, config: BatchConfig) -> int:
    """Tiles ``job`` will be cut into, on the grid its model will see.

    That grid is its common grid, or the coarser one ``config.gsd`` picks for imagery much finer
    than the model's GSD. 0 where its scenes cannot be aligned or no model fits them (the job
    itself then reports why), and for a scenes row (its pairs are known only when it runs).
    """
    if isinstance(job, AreaJob):
        return 0
    try:  # masks and AFTER's shift leave the grid as it is
        prepared = prepare_for_model(job.before, job.after, replace(config, coregister=False), config.model)
    except ChangewatchError:
        return 0
    return len(tiling(prepared.grid, config.inference))


def skipped_record(job: Job, outdir: Path) -> JobRecord:
    """The record of a job finished by an earlier run, from its summary.json."""
    summary = read_summary(outdir / job.area_id / SUMMARY)
    return JobRecord(job.area_id, "skipped", summary.counts.changes, summary.counts.flagged,
                     summary.areas_m2.flagged or 0.0, 0.0)
