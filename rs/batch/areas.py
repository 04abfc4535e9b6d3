"""Many areas at once: a batch's scenes rows, each a ``monitor`` of its area into ``OUTDIR/<area_id>/``.

A scenes row (``rs.batch.manifest.AreaJob``) names an area's SCENES file instead of BEFORE and
AFTER. It runs on the batch's runner (``rs.batch.cluster``) like any job: ``rs.monitor.run.run_monitor``
into the store ``OUTDIR/<area_id>/`` (``pairs/`` and ``history.gpkg``), each consecutive pair a
batch job with its own completion record. So a pair done and up to date is never detected again —
with or without ``--resume``, as ``monitor`` itself does — and a batch killed at any moment
resumes: the pairs it finished stay done, the one it was writing is restored and run again.
"""

from __future__ import annotations

import time

from changewatch.rs.batch.jobs import JobRecord
from changewatch.rs.batch.manifest import MONITOR, AreaJob, monitor_config
from changewatch.rs.config import BatchConfig
from changewatch.rs.crosscheck.rules import PERMITTED
from changewatch.rs.errors import ChangewatchError
from changewatch.rs.infer import ModelCache
from changewatch.rs.monitor.run import run_monitor
from changewatch.rs.pipeline import Predictor


def run_area(job: AreaJob, config: BatchConfig, models: ModelCache, predict: Predictor) -> JobRecord:
    """Run the monitor of ``job`` (``monitor_config``); a ChangewatchError becomes a failed record.

    The record: status ``done`` when a pair was detected now, ``skipped`` when every pair was done
    already (the history is rebuilt either way); ``changes``: tracked changes; ``flagged``: those
    whose ``reasons`` are not PERMITTED, ``flagged_area_m2`` their footprints' area (m², local UTM).
    """
    start = time.perf_counter()
    try:
        result = run_monitor(monitor_config(job, config), models=models, predict=predict)
    except ChangewatchError as exc:
        return JobRecord(job.area_id, "failed", seconds=time.perf_counter() - start, error=str(exc),
                         exit_code=exc.exit_code, kind=MONITOR)
    changes = result.history.changes
    flagged = changes[changes["reasons"] != PERMITTED]
    return JobRecord(job.area_id, "done" if result.detected else "skipped", len(changes), len(flagged),
                     float(flagged["area_m2"].sum()), time.perf_counter() - start, kind=MONITOR,
                     pairs_detected=len(result.detected))
