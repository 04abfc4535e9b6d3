"""Batch runs: many areas and dates from one manifest, resumable, optionally on Dask.

Each job is one ``rs.pipeline.detect`` run into ``OUTDIR/<area_id>/`` (replaced as a whole,
``rs.runfolder.StagedOutput``). A job is *done* only when its outputs are in place and its completion
record ``_done.json`` (written last, atomically) agrees with them and with what the job depended
on: the outputs' SHA-256, the changewatch version, the job's settings, the size and modification
time of every input file (scenes with their sidecars, masks, layers) and of the model's files.
``resume`` skips done jobs and redoes every other one (``stale_reason`` says why), so a batch
killed at any moment and resumed ends as an uninterrupted one would, and a job whose inputs,
settings or model changed since it completed is redone. A failing job is recorded with its
error and exit code and does not stop the others.

Jobs run in this process (``scheduler="serial"``), on a Dask ``LocalCluster`` (``"local"``)
or on an existing Dask cluster (``"tcp://host:8786"``). On Dask each job is a task, and the
tiles of a scene larger than ``split_mpx`` megapixels are tasks of their own, so one large
scene also uses every worker; the model is loaded once per worker by a worker plugin, not once
per task. Workers pick a CUDA GPU when torch sees one (``--device auto``).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from datetime import date
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import yaml
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker, worker_client

import changewatch
from changewatch.rs.align import AlignedPair, PairSource
from changewatch.rs.config import BatchConfig, DetectConfig, DetectOptions, InferenceConfig
from changewatch.rs.crosscheck import SEVERITY
from changewatch.rs.errors import ChangewatchError, ManifestError
from changewatch.rs.io.files import TMP_GLOB, atomic_write, sha256, write_json, writing
from changewatch.rs.io.staging import recover_children
from changewatch.rs.io.vector import layer_names, write_gpkg
from changewatch.rs.infer import ChangeModel, ModelCache, predict_pair, predict_tiles, tiling
from changewatch.rs.normalize import BandStats, scene_stats
from changewatch.rs.pipeline import Predictor, detect
from changewatch.rs.prepare import prepare_for_model
from changewatch.rs.runfolder import (DETECT_FILES, DONE_RECORD, FLAGGED_GPKG, LAYER_FLAGGED, LAYER_PARCELS, SUMMARY,
                                      read_summary)
from changewatch.rs.tiling import Tile

AREA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
REQUIRED_COLUMNS = ("area_id", "before", "after")
LAYER_COLUMNS = ("permits", "zoning", "parcels")
OPTIONAL_COLUMNS = (*LAYER_COLUMNS, "as_of", "masks")
COMBINED_CRS = "EPSG:4326"


@dataclass(frozen=True)
class Job:
    """One area: BEFORE/AFTER scenes, its layers (absolute paths) and as-of date (None: AFTER's)."""

    area_id: str
    before: str
    after: str
    permits: str | None = None
    zoning: str | None = None
    parcels: str | None = None
    as_of: date | None = None
    masks: tuple[str, ...] = ()  # cloud/invalid masks of either date


def _resolve(base: Path, value: object) -> str | None:
    text = "" if value is None else str(value).strip()
    return str((base / text).resolve()) if text else None


def _as_of(value: object, source: Path, area: str) -> date | None:
    text = "" if value is None else str(value).strip()
    try:
        return date.fromisoformat(text) if text else None
    except ValueError as exc:
        raise ManifestError(f"manifest {source}, area {area}: as_of {text!r} is not a YYYY-MM-DD date") from exc


def _jobs_from_rows(rows: list[dict[str, Any]], base: Path, shared: dict[str, str | None], source: Path) -> list[Job]:
    if not rows:
        raise ManifestError(f"manifest {source} lists no jobs")
    columns = set().union(*(r.keys() for r in rows))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(f"manifest {source} lacks column(s) {', '.join(missing)}")
    unknown = columns - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS)
    if unknown:
        raise ManifestError(f"manifest {source} has unknown column(s) {', '.join(sorted(unknown))}")
    jobs, seen = [], set()
    for n, row in enumerate(rows, start=1):
        area = str(row.get("area_id") or "").strip()
        if not AREA_ID.match(area):
            raise ManifestError(f"manifest {source}, job {n}: area_id {area!r} must be letters, digits, '_', '-', '.'")
        if area in seen:
            raise ManifestError(f"manifest {source}: area_id {area!r} is listed twice")
        seen.add(area)
        if not str(row.get("before") or "").strip() or not str(row.get("after") or "").strip():
            raise ManifestError(f"manifest {source}, area {area}: before and after are required")
        layers = {k: _resolve(base, row.get(k)) or shared.get(k) for k in LAYER_COLUMNS}
        masks = tuple(p for p in (_resolve(base, m) for m in str(row.get("masks") or "").split(";")) if p)
        jobs.append(Job(area, _resolve(base, row["before"]) or "", _resolve(base, row["after"]) or "",
                        **layers, as_of=_as_of(row.get("as_of"), source, area), masks=masks))
    return jobs


def read_manifest(path: str | os.PathLike[str], shared: dict[str, str | None] | None = None) -> list[Job]:
    """Jobs of a CSV or YAML manifest; relative paths are relative to the manifest's folder.

    CSV columns: ``area_id, before, after`` and optionally ``permits, zoning, parcels`` (a job's
    own layers; ``shared[layer]`` is used where empty), ``as_of`` (YYYY-MM-DD) and ``masks``
    (cloud/invalid masks, several separated by ``;``). YAML: a list of
    such mappings, or a mapping with ``jobs:`` (that list) and optionally ``permits:``,
    ``zoning:``, ``parcels:`` (layers shared by all jobs).
    """
    shared = dict(shared or {})
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest not found: {p}")
    base = p.resolve().parent
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's CSV) is not part of area_id
        if p.suffix.lower() in (".yml", ".yaml"):
            data = yaml.safe_load(text)
            if isinstance(data, dict):
                for key in LAYER_COLUMNS:
                    shared[key] = shared.get(key) or _resolve(base, data.get(key))
                data = data.get("jobs")
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise ManifestError(f"manifest {p}: expected a list of jobs (or a mapping with 'jobs:')")
            rows = data
        else:
            rows = list(csv.DictReader(io.StringIO(text)))
    except (yaml.YAMLError, csv.Error, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {p} cannot be parsed: {exc}") from exc
    return _jobs_from_rows(rows, base, shared, p)


@dataclass
class JobRecord:
    """What became of one job."""

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


# Settings that cannot change a job's outputs: a completed job is not redone when only they change.
NON_RESULT_SETTINGS = frozenset({"outdir", "inference.batch_size", "inference.readers"})


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level with dotted keys (``inference.tile``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def job_settings(job: Job, config: BatchConfig) -> dict[str, Any]:
    """Every setting of ``job``'s detect run (``DetectConfig``, dotted keys, as JSON stores them)
    except NON_RESULT_SETTINGS."""
    flat = _flat(json.loads(json.dumps(asdict(_detect_config(job, config)), default=str)))
    return {k: v for k, v in sorted(flat.items()) if k not in NON_RESULT_SETTINGS}


def dataset_files(path: str, raster: bool) -> list[str]:
    """The files a dataset is made of: GDAL's list for a raster (sidecars such as ``.aux.xml`` and
    ``.ovr``, a VRT's sources), every file of the same stem beside a vector layer (a Shapefile's
    ``.dbf``, ``.prj``…). A ``path.gpkg:layer`` name is reduced to its file."""
    p = Path(path)
    if not p.exists() and ":" in p.name and p.with_name(p.name.rsplit(":", 1)[0]).exists():
        p = p.with_name(p.name.rsplit(":", 1)[0])
    files = {str(p)}
    if raster:
        try:
            with rasterio.open(p) as ds:
                files.update(str(f) for f in ds.files)
        except (rasterio.errors.RasterioError, OSError):
            pass  # not readable: the job itself reports why
    else:
        files.update(str(f) for f in p.parent.glob(f"{glob.escape(p.stem)}.*") if f.is_file())
    return sorted(files)


def job_files(job: Job) -> list[str]:
    """Every file ``job`` reads: its scenes and masks, its layers (``dataset_files``)."""
    rasters = [job.before, job.after, *job.masks]
    vectors = [p for p in (job.permits, job.zoning, job.parcels) if p]
    return sorted({f for p in rasters for f in dataset_files(p, True)}
                  | {f for p in vectors for f in dataset_files(p, False)})


def model_files(model_path: str) -> list[str]:
    """A checkpoint's files: ``NAME.json`` and ``NAME.safetensors``."""
    return [str(Path(model_path).with_suffix(".json")), str(Path(model_path).with_suffix(".safetensors"))]


def fingerprint(paths: list[str]) -> dict[str, list[int] | None]:
    """``{path: [size in bytes, modification time in ns]}`` of each file; None where it cannot be read.
    Size and time, not a hash, so that a resume does not read every scene again."""
    out: dict[str, list[int] | None] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out[path] = None
        else:
            out[path] = [st.st_size, st.st_mtime_ns]
    return out


def _differing(now: dict[str, Any], then: dict[str, Any]) -> list[str]:
    return sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def stale_reason(area_dir: Path, job: Job, config: BatchConfig) -> str | None:
    """Why ``job`` must be (re)done, or None when it is done and still up to date: its completion
    record exists, every output it lists is present and unchanged (SHA-256), and what the job
    depended on is as it was then — the changewatch version, the job's settings
    (``job_settings``), the size and time of every input file (``job_files``) and of the model's files."""
    record_path = area_dir / DONE_RECORD
    if not record_path.is_file():
        return "not done"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        outputs, depends = record["outputs"], record["depends"]
        version, settings, files, model = (depends["changewatch_version"], depends["settings"], depends["files"],
                                           depends["model"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return "its completion record is unreadable or from an older changewatch"
    if set(outputs) != set(DETECT_FILES) or not all(
            (area_dir / name).is_file() and sha256(area_dir / name) == digest for name, digest in outputs.items()):
        return "outputs missing or changed"
    if version != changewatch.__version__:
        return f"changewatch changed ({version} → {changewatch.__version__})"
    changed = _differing(job_settings(job, config), settings)
    if changed:
        return f"settings changed: {_shown(changed)}"
    changed = _differing(fingerprint(job_files(job)), files)
    if changed:
        return f"inputs changed: {_shown(changed)}"
    if fingerprint(model_files(model["path"])) != model["files"]:
        return f"model changed: {model['path']}"
    return None


def is_done(area_dir: Path, job: Job, config: BatchConfig) -> bool:
    """True when ``job``'s outputs in ``area_dir`` are complete and up to date (``stale_reason``)."""
    return stale_reason(area_dir, job, config) is None


def _write_done(area_dir: Path, job: Job, config: BatchConfig, files: dict[str, list[int] | None],
                model_path: str) -> None:
    """The completion record, written last: the job, its outputs' SHA-256 and what it depended on
    (``files``: the inputs' fingerprint taken before the run, so an input edited during the run
    makes the job stale)."""
    record = {"job": asdict(job), "outputs": {name: sha256(area_dir / name) for name in DETECT_FILES},
              "depends": {"changewatch_version": changewatch.__version__, "settings": job_settings(job, config),
                          "files": files, "model": {"path": model_path,
                                                    "files": fingerprint(model_files(model_path))}},
              "finished_unix": time.time()}
    with writing(area_dir / DONE_RECORD), atomic_write(area_dir / DONE_RECORD) as tmp:
        write_json(record, tmp)


def _detect_config(job: Job, config: BatchConfig) -> DetectConfig:
    rules = replace(config.layers.rules, as_of=job.as_of or config.layers.rules.as_of)
    layers = replace(config.layers, permits=job.permits, zoning=job.zoning, parcels=job.parcels, rules=rules)
    shared = {f.name: getattr(config, f.name) for f in fields(DetectOptions)}  # the batch's detect settings
    return DetectConfig(before=job.before, after=job.after, outdir=str(Path(config.outdir) / job.area_id),
                        masks=job.masks, layers=layers, **shared)


def run_job(job: Job, config: BatchConfig, models: ModelCache, predict: Predictor = predict_pair) -> JobRecord:
    """Run one job; a ChangewatchError becomes a failed record (other exceptions are bugs and propagate)."""
    area_dir = Path(config.outdir) / job.area_id
    start = time.perf_counter()
    try:
        with writing(area_dir / DONE_RECORD):
            (area_dir / DONE_RECORD).unlink(missing_ok=True)  # from now on the area is not done
        files = fingerprint(job_files(job))
        result = detect(_detect_config(job, config), progress=False, models=models, predict=predict)
        assert result.summary.model is not None  # a detect run's
        _write_done(area_dir, job, config, files, result.summary.model.path)
    except ChangewatchError as exc:
        return JobRecord(job.area_id, "failed", seconds=time.perf_counter() - start, error=str(exc),
                         exit_code=exc.exit_code)
    return JobRecord(job.area_id, "done", result.n_changes, result.n_flagged, result.flagged_area_m2,
                     time.perf_counter() - start)


def tile_counts(jobs: list[Job], config: BatchConfig) -> dict[str, int]:
    """Tiles each job will be cut into (see ``tile_count``), by area id."""
    return {job.area_id: tile_count(job, config) for job in jobs}


def tile_count(job: Job, config: BatchConfig) -> int:
    """Tiles ``job`` will be cut into, on the grid its model will see: its common grid, or the
    coarser one ``config.gsd`` picks for imagery much finer than the model's GSD. 0 where its
    scenes cannot be aligned or no model fits them (the job itself then reports why)."""
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


def remove_stale_staging(outdir: Path) -> None:
    """Restore area folders a killed run was replacing, and delete the staging folders and
    temporary files killed runs left (``rs.io.staging.recover_children``)."""
    with writing(outdir):
        recover_children(outdir)
        for tmp in outdir.glob(f"*/{TMP_GLOB}"):
            tmp.unlink(missing_ok=True)


# --- running the jobs -----------------------------------------------------------------------

Runner = Callable[[list[Job], BatchConfig], Iterator[JobRecord]]


def run_serial(jobs: list[Job], config: BatchConfig) -> Iterator[JobRecord]:
    """Run jobs one after another in this process, loading each model once."""
    models = ModelCache(config.inference.device, config.inference.amp)
    for job in jobs:
        yield run_job(job, config, models)


class ModelPlugin(WorkerPlugin):
    """Dask worker plugin: each worker keeps one ModelCache, so a model is loaded once per worker
    (the batch's ``--model`` as soon as the worker starts), not once per task."""

    name = "changewatch-model"

    def __init__(self, model: str | None, device: str, threads: int, amp: bool = True) -> None:
        self.model_path, self.device, self.threads, self.amp = model, device, threads, amp
        self.models: ModelCache | None = None

    def setup(self, worker: Any) -> None:
        import torch

        torch.set_num_threads(self.threads)
        self.models = ModelCache(self.device, self.amp)
        if self.model_path:
            self.models.get(self.model_path)

    def teardown(self, worker: Any) -> None:
        self.models = None


def _worker_models() -> ModelCache:
    plugin = get_worker().plugins[ModelPlugin.name]
    assert plugin.models is not None, "ModelPlugin.setup has not run on this worker"
    return plugin.models


def _predict_chunk(source: PairSource, model_path: str, tiles: list[Tile], stats: tuple[BandStats, BandStats],
                   config: InferenceConfig) -> list[tuple[Tile, np.ndarray]]:
    """Dask task: probabilities of some tiles of one scene (the worker opens the pair itself, as prepared)."""
    with source.open() as pair:
        return list(predict_tiles(pair, _worker_models().get(model_path), tiles, stats, config))


@dataclass
class ClusterPredictor:
    """Predictor for ``detect`` that spreads a large scene's tiles over the Dask cluster.

    Scenes up to ``split_mpx`` megapixels run in the calling task; larger ones are cut into tasks
    of ``tiles_per_task`` tiles, normalised with statistics computed once for the whole scene, and
    their results are blended into the raster as they arrive (in any order).
    """

    split_mpx: float
    tiles_per_task: int = 32
    tasks: int = 0  # tile tasks submitted so far (provenance: 0 means the scene ran in one task)

    def __call__(self, pair: AlignedPair, model: ChangeModel, config: InferenceConfig,
                 progress: bool) -> Iterator[tuple[Tile, np.ndarray]]:
        if pair.grid.width * pair.grid.height <= self.split_mpx * 1e6 or model.path is None:
            yield from predict_pair(pair, model, config, progress)
            return
        model.check_bands(pair.band_count)
        stats = scene_stats(pair)
        tiles = list(tiling(pair.grid, config))
        chunks = [tiles[i:i + self.tiles_per_task] for i in range(0, len(tiles), self.tiles_per_task)]
        with worker_client() as client:
            futures = [client.submit(_predict_chunk, pair.source, str(model.path), chunk, stats, config, pure=False)
                       for chunk in chunks]
            self.tasks += len(futures)
            for future in as_completed(futures):
                yield from future.result()
                future.release()


def _run_on_worker(job: Job, config: BatchConfig) -> JobRecord:
    predictor = ClusterPredictor(config.split_mpx, config.tiles_per_task)
    record = run_job(job, config, _worker_models(), predictor)
    record.tile_tasks = predictor.tasks
    return record


def run_dask(jobs: list[Job], config: BatchConfig) -> Iterator[JobRecord]:
    """Run jobs as Dask tasks on a LocalCluster (``local``) or the cluster at ``config.scheduler``."""

    if config.scheduler == "local":
        workers = config.workers or max(1, os.cpu_count() or 1)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        cluster, client = None, Client(config.scheduler)
    try:
        client.register_plugin(ModelPlugin(config.model, config.inference.device, threads=1, amp=config.inference.amp))
        futures = [client.submit(_run_on_worker, job, config, key=f"job-{job.area_id}", pure=False) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def runner_for(scheduler: str) -> Runner:
    """``serial`` runs in this process; ``local`` and ``tcp://…`` run on Dask."""
    if scheduler == "serial":
        return run_serial
    if scheduler == "local" or scheduler.startswith(("tcp://", "tls://")):
        return run_dask
    raise ValueError(f"unknown scheduler {scheduler!r}: use serial, local or tcp://host:port")


# --- batch outputs --------------------------------------------------------------------------

@dataclass
class BatchResult:
    """Every job's record, in manifest order, and where the batch-level outputs are."""

    records: list[JobRecord]
    outdir: Path

    @property
    def failed(self) -> list[JobRecord]:
        return [r for r in self.records if r.status == "failed"]


def _area_layers(out: Path, records: list[JobRecord]) -> tuple[list[gpd.GeoDataFrame], list[gpd.GeoDataFrame]]:
    """Per finished area: its flagged changes and its flagged parcels (EPSG:4326, with ``area_id``;
    parcels also with ``parcels_layer``, the layer they came from)."""
    changes, parcels = [], []
    for r in records:
        if r.status not in ("done", "skipped"):
            continue
        gpkg = out / r.area_id / FLAGGED_GPKG
        flagged = gpd.read_file(gpkg, layer=LAYER_FLAGGED)
        changes.append(flagged.assign(area_id=r.area_id).to_crs(COMBINED_CRS))
        if LAYER_PARCELS in layer_names(gpkg):
            source = read_summary(out / r.area_id / SUMMARY).inputs.parcels
            table = gpd.read_file(gpkg, layer=LAYER_PARCELS)
            parcels.append(table.assign(area_id=r.area_id, parcels_layer=source).to_crs(COMBINED_CRS))
    return changes, parcels


def combine_parcels(tables: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """One row per parcel over all areas: a parcel that flags from several areas touch (areas
    overlap, or a parcel crosses an area edge) has its counts and areas summed, its worst reason
    and highest probability kept. Parcels are told apart by layer and id."""
    rows = pd.concat(tables, ignore_index=True)
    rank = {code: i for i, code in enumerate(SEVERITY)}
    rows["rank"] = rows["worst_reason"].map(rank)
    key = ["parcels_layer", "parcel_id"]
    grouped = rows.groupby(key, sort=True)
    first = grouped.first()
    table = gpd.GeoDataFrame({
        "ward": first["ward"], "areas": grouped["area_id"].agg(lambda a: ",".join(sorted(set(a)))),
        "n_flags": grouped["n_flags"].sum(), "flagged_area_m2": grouped["flagged_area_m2"].sum(),
        "worst_reason": grouped["rank"].min().map(dict(enumerate(SEVERITY))), "max_prob": grouped["max_prob"].max(),
    }, geometry=first["geometry"].values, crs=COMBINED_CRS)
    return table.reset_index()


def write_batch_outputs(result: BatchResult) -> None:
    """``batch_summary.json``/``.csv`` and one combined ``flagged.gpkg`` (EPSG:4326): layer
    ``flagged_changes`` (every area's flags, with ``area_id``) and, when areas had parcels,
    ``flagged_parcels`` combined over the areas (``combine_parcels``)."""
    with writing(result.outdir):
        _write_batch_outputs(result)


def _write_batch_outputs(result: BatchResult) -> None:
    out = result.outdir
    rows = [asdict(r) for r in result.records]
    with atomic_write(out / "batch_summary.json") as tmp:
        write_json({"jobs": rows, "counts": pd.Series([r.status for r in result.records]).value_counts().to_dict()},
                   tmp)
    with atomic_write(out / "batch_summary.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    changes, parcels = _area_layers(out, result.records)
    combined = (gpd.GeoDataFrame(pd.concat(changes, ignore_index=True), crs=COMBINED_CRS) if changes
                else gpd.GeoDataFrame({"area_id": []}, geometry=[], crs=COMBINED_CRS))
    combined = combined[["area_id", *[c for c in combined.columns if c != "area_id"]]]
    with atomic_write(out / FLAGGED_GPKG) as tmp:
        write_gpkg(combined, tmp, LAYER_FLAGGED)
        if parcels:
            write_gpkg(combine_parcels(parcels), tmp, LAYER_PARCELS)


def run_batch(config: BatchConfig, on_record: Callable[[JobRecord], None] | None = None,
              runner: Runner | None = None) -> BatchResult:
    """Run every job of the manifest (skipping done ones when ``config.resume``) and write batch outputs."""
    jobs = read_manifest(config.manifest, config.shared_layers())
    outdir = Path(config.outdir)
    with writing(outdir):
        outdir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(outdir)
    records: dict[str, JobRecord] = {}
    todo, reasons = [], {}
    for job in jobs:
        reason = stale_reason(outdir / job.area_id, job, config) if config.resume else None
        if config.resume and reason is None:
            records[job.area_id] = skipped_record(job, outdir)
            if on_record:
                on_record(records[job.area_id])
        else:
            todo.append(job)
            reasons[job.area_id] = reason or ""
    if todo:
        for record in (runner or runner_for(config.scheduler))(todo, config):
            record.resume_reason = reasons[record.area_id]
            records[record.area_id] = record
            if on_record:
                on_record(record)
    result = BatchResult([records[j.area_id] for j in jobs], outdir)
    write_batch_outputs(result)
    return result
