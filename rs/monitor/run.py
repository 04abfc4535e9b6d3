"""A monitor run: detect every consecutive pair not yet done, then rebuild the store's change history.

Each pair is one ``rs.batch`` job (``Job``) into ``STORE/pairs/<date_a>_<date_b>/`` run by
``rs.batch.jobs.run_job``, so a pair is *done* exactly when a batch job is: its completion record
``_done.json`` agrees with its outputs, the settings, the scenes' and model's files
(``rs.batch.resume.stale_reason``). A run killed at any moment resumes: folders it was replacing
are restored (``remove_stale_staging``) and unfinished pairs are run again. Torch is imported only
when a pair is actually detected.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from changewatch.rs.batch.manifest import Job
from changewatch.rs.batch.resume import remove_stale_staging, stale_reason
from changewatch.rs.config import AS_OF_GIVEN, AS_OF_SCENES, BatchConfig, DetectOptions, MonitorConfig
from changewatch.rs.crosscheck.rules import crosscheck
from changewatch.rs.errors import ChangewatchError, OutputError
from changewatch.rs.infer import ModelCache
from changewatch.rs.io.files import writing
from changewatch.rs.io.staging import foreign_names
from changewatch.rs.monitor.history import HISTORY_GPKG, History, build_history, write_history
from changewatch.rs.monitor.scenes import ScenePair, check_readable, consecutive_pairs, read_scenes
from changewatch.rs.monitor.timeline import TIMELINE_PNG, write_timeline

if TYPE_CHECKING:
    from changewatch.rs.pipeline import Predictor

PAIRS = "pairs"  # STORE/pairs/<date_a>_<date_b>/: one detect run folder per consecutive pair
# all monitor writes into STORE (with sidecars and temporary files)
STORE_FILES = frozenset({PAIRS, HISTORY_GPKG, TIMELINE_PNG})


@dataclass(frozen=True)
class PairRecord:
    """What became of one pair: ``status`` "done" (detected now) or "skipped" (done earlier, up to date).

    ``reason``: why it was (re)detected (``stale_reason``: "not done", "inputs changed: …"), "" when skipped.
    """

    name: str
    status: str
    reason: str = ""


@dataclass(frozen=True)
class MonitorResult:
    """The pairs in date order with what became of each, the history rebuilt and where it was written."""

    pairs: list[PairRecord]
    history: History
    path: Path

    @property
    def detected(self) -> list[str]:
        """Names of the pairs detected by this run (the others were done already)."""
        return [p.name for p in self.pairs if p.status == "done"]


def pair_settings(config: MonitorConfig) -> BatchConfig:
    """The batch whose jobs are the pairs: folder ``STORE/pairs``, serial, resumable, the monitor's detect settings."""
    shared = {f.name: getattr(config, f.name) for f in fields(DetectOptions)}
    return BatchConfig(manifest=config.scenes, outdir=str(Path(config.store) / PAIRS), layers=config.layers,
                       resume=True, scheduler="serial", **shared)


def pair_job(pair: ScenePair, config: MonitorConfig) -> Job:
    """The batch job of ``pair``: judged as of ``--as-of`` when given, else as of the AFTER scene's date.

    Its ``as_of_source`` (``rules.as_of_source`` of the pair's ``summary.json``) says which:
    ``AS_OF_GIVEN`` or ``AS_OF_SCENES``.
    """
    given = config.layers.rules.as_of
    return Job(pair.name, pair.before.path, pair.after.path, config.layers.permits, config.layers.zoning,
               config.layers.parcels, as_of=given or pair.after.date,
               as_of_source=AS_OF_GIVEN if given else AS_OF_SCENES)


def check_store(store: str | Path) -> None:
    """Raise OutputError (exit code 8) unless ``store`` is absent or a folder holding only what monitor writes.

    That is ``STORE_FILES``, their sidecars (``history.gpkg-wal``), ``atomic_write``'s temporary files
    and a desktop's litter (``rs.io.staging.foreign_names``): a folder of other files, or a detect
    run folder, is not a store.
    """
    path = Path(store)
    if not path.is_dir():
        if path.exists():
            raise OutputError(f"store {store} is a file")
        return
    foreign = foreign_names(path, STORE_FILES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputError(f"store {store} holds files monitor did not write ({shown}); a store holds only "
                          f"{', '.join(sorted(STORE_FILES))}: choose a new or empty folder, or an existing store")


def run_monitor(config: MonitorConfig, models: ModelCache | None = None,
                predict: Predictor | None = None) -> MonitorResult:
    """Detect every consecutive pair of ``config.scenes`` not done yet, then rebuild and write the history.

    Pairs are detected in date order into ``STORE/pairs/<date_a>_<date_b>/`` (``rs.pipeline.detect``);
    ``STORE/history.gpkg`` is rebuilt from all pair folders (``rs.monitor.history``), its changes
    judged with their ``first_seen`` dates (``judged``), and replaced atomically when it differs from the file's
    (``write_history``: a re-run that detects nothing and judges the same writes nothing), and ``STORE/timeline.png``
    redrawn when what it shows changed (``rs.monitor.timeline``). ``models``: loaded
    models to reuse (tests pass a fixed one); by default a fresh cache on ``config.inference.device``.
    ``predict``: how a pair's tiles are predicted (``rs.pipeline.Predictor``; a batch on Dask spreads
    them over its workers); by default in this process.

    Raises ManifestError for a bad SCENES and InputFileError for a scene file that is missing or
    not a raster, OutputError for a store holding other files (``check_store``) — all three before
    the store is touched —, the ChangewatchError of the first pair that fails (with its exit code;
    the pairs before it stay done), LayerError for unusable layers, OutputError when the store
    cannot be written.
    """
    scenes = read_scenes(config.scenes)
    check_store(config.store)
    check_readable(scenes, config.bands)
    pairs = consecutive_pairs(scenes)
    batch = pair_settings(config)
    folder = Path(batch.outdir)
    created = [p for p in (Path(config.store), folder) if not p.exists()]
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(folder)  # an interrupted run: folders it was replacing restored, its litter gone
    models = models or ModelCache(config.inference.device, config.inference.amp)  # loads nothing yet
    try:
        records = [_run_pair(pair, pair_job(pair, config), batch, models, predict) for pair in pairs]
    except ChangewatchError:
        for made in reversed(created):  # the first pair failed: the folders this run made, still empty, go
            with contextlib.suppress(OSError):
                made.rmdir()
        raise
    history = judged(build_history([(p.after.date, folder / p.name) for p in pairs]), config, pairs[-1].after.date)
    write_history(history, Path(config.store) / HISTORY_GPKG)
    write_timeline(history, Path(config.store) / TIMELINE_PNG)  # redrawn only when what it shows changed
    return MonitorResult(records, history, Path(config.store) / HISTORY_GPKG)


def judged(history: History, config: MonitorConfig, latest: date) -> History:
    """The tracked changes with ``reasons`` and ``permit_ids`` of their footprints, judged with their ``first_seen``.

    Judged against ``config.layers`` as of ``--as-of``, else the latest scene's date; a change's
    ``first_seen`` feeds STARTED_BEFORE_PERMIT and PERMIT_EXPIRED (``rs.crosscheck.rules``).
    Raises LayerError, InputFileError for layers that cannot be used.
    """
    changes = history.changes
    if changes.empty or changes.crs is None:
        return replace(history, changes=changes.assign(permit_ids=""))
    left, bottom, right, top = (float(v) for v in changes.total_bounds)
    layers = config.layers.read(extent=((left, bottom, right, top), changes.crs))
    rules = replace(config.layers.rules, as_of=config.layers.rules.as_of or latest)
    checked = crosscheck(changes, layers.permits.data if layers.permits else None,
                         layers.zoning.data if layers.zoning else None, rules)
    return replace(history, changes=changes.assign(reasons=checked["reasons"], permit_ids=checked["permit_ids"]))


def _run_pair(pair: ScenePair, job: Job, batch: BatchConfig, models: ModelCache,
              predict: Predictor | None = None) -> PairRecord:
    """Detect ``pair`` unless its folder is done and up to date; raises the pair's ChangewatchError."""
    reason = stale_reason(Path(batch.outdir) / job.area_id, job, batch)
    if reason is None:
        return PairRecord(pair.name, "skipped")
    from changewatch.rs.batch.jobs import run_job  # the pipeline: only when a pair is detected

    record = run_job(job, batch, models) if predict is None else run_job(job, batch, models, predict)
    if record.status == "failed":
        error = ChangewatchError(f"pair {pair.name}: {record.error}")
        error.exit_code = record.exit_code
        raise error
    return PairRecord(pair.name, "done", reason)
