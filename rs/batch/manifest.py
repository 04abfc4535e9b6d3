"""A batch manifest: one job per area, from a CSV or YAML file, and the detect or monitor run each job is.

A job is BEFORE, AFTER, its layers, as-of date and masks (``Job``: a detect run), or an area's
SCENES file and its layers and as-of date (``AreaJob``: a monitor run into a store).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, fields, replace
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from changewatch.rs.config import BatchConfig, DetectConfig, DetectOptions, MonitorConfig
from changewatch.rs.errors import ManifestError
from changewatch.rs.io.dates import iso_date
from changewatch.rs.io.gdalpaths import resolve_scene

AREA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


REQUIRED_COLUMNS = ("area_id", "before", "after")


SCENES_COLUMN = "scenes"  # instead of before, after: the area's SCENES file, run as a monitor store


LAYER_COLUMNS = ("permits", "zoning", "parcels")


OPTIONAL_COLUMNS = (*LAYER_COLUMNS, "as_of", "masks", SCENES_COLUMN)


DETECT, MONITOR = "detect", "monitor"  # the kinds of job (``JobRecord.kind``): a before/after row, a scenes row


@dataclass(frozen=True)
class Job:
    """One area: BEFORE/AFTER scenes, its layers (absolute paths) and as-of date (None: AFTER's).

    ``as_of_source``: where ``as_of`` came from (``DetectConfig.as_of_source``).
    """

    area_id: str
    before: str
    after: str
    permits: str | None = None
    zoning: str | None = None
    parcels: str | None = None
    as_of: date | None = None
    masks: tuple[str, ...] = ()  # cloud/invalid masks of either date
    as_of_source: str = DetectConfig.as_of_source


@dataclass(frozen=True)
class AreaJob:
    """One area watched over many dates: a ``monitor`` of its SCENES file into ``OUTDIR/<area_id>/`` (a store).

    ``scenes``, the layers: absolute paths; ``as_of``: None judges each pair as of its AFTER date.
    """

    area_id: str
    scenes: str
    permits: str | None = None
    zoning: str | None = None
    parcels: str | None = None
    as_of: date | None = None


AnyJob = Job | AreaJob


def _resolve(base: Path, value: object) -> str | None:
    text = "" if value is None else str(value).strip()
    return resolve_scene(base, text) if text else None  # GDAL paths (/vsizip/…) as given, archives resolved


def _as_of(value: object, where: str) -> date | None:
    text = "" if value is None else str(value).strip()
    try:
        return iso_date(text) if text else None
    except ValueError as exc:
        raise ManifestError(f"{where}: as_of {text!r} is not a YYYY-MM-DD date") from exc


def _check_columns(rows: list[tuple[str, dict[str, Any]]], source: Path) -> None:
    """Raise ManifestError when the manifest lists no job, lacks a column or has an unknown one."""
    if not rows:
        raise ManifestError(f"manifest {source} lists no jobs")
    columns = set().union(*(r.keys() for _, r in rows))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns and not (c != "area_id" and SCENES_COLUMN in columns)]
    if missing:
        also = "" if "area_id" in missing else f" (or {SCENES_COLUMN})"
        raise ManifestError(f"manifest {source} lacks column(s) {', '.join(missing)}{also}")
    unknown = columns - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS)
    if unknown:
        raise ManifestError(f"manifest {source} has unknown column(s) {', '.join(sorted(unknown))}")


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value).strip()


def _job(row: dict[str, Any], where: str, base: Path, shared: dict[str, str | None]) -> AnyJob:
    """The job of one manifest row (``where``: its line or entry, ``area_id`` already checked).

    A row names either its BEFORE and AFTER scenes (a detect job, ``Job``) or its SCENES file (a
    monitor job, ``AreaJob``), never both; masks belong to a pair. Raises ManifestError naming
    ``where``.
    """
    pair = [_text(row, k) for k in ("before", "after")]
    scenes, masks = _text(row, SCENES_COLUMN), _text(row, "masks")
    if scenes and any(pair):
        raise ManifestError(f"{where}: give either scenes (a monitor of many dates) or before and after, not both")
    if scenes and masks:
        raise ManifestError(f"{where}: masks belong to one before/after pair; a scenes row takes none")
    if not scenes and not all(pair):
        raise ManifestError(f"{where}: before and after are required (or scenes)")
    permits, zoning, parcels = (_resolve(base, row.get(k)) or shared.get(k) for k in LAYER_COLUMNS)
    area, as_of = _text(row, "area_id"), _as_of(row.get("as_of"), where)
    if scenes:
        return AreaJob(area, _resolve(base, scenes) or "", permits, zoning, parcels, as_of)
    mask_paths = tuple(p for p in (_resolve(base, m) for m in masks.split(";")) if p)
    return Job(area, _resolve(base, pair[0]) or "", _resolve(base, pair[1]) or "", permits, zoning, parcels, as_of,
               mask_paths)


def _jobs_from_rows(rows: list[tuple[str, dict[str, Any]]], base: Path, shared: dict[str, str | None],
                    source: Path) -> list[AnyJob]:
    """The jobs of the rows ``(where, row)``; raises ManifestError naming the row at fault."""
    _check_columns(rows, source)
    jobs: list[AnyJob] = []
    seen: set[str] = set()
    for where, row in rows:
        area = _text(row, "area_id")
        if not AREA_ID.match(area):
            raise ManifestError(f"{where}: area_id {area!r} must be letters, digits, '_', '-', '.'")
        if area in seen:
            raise ManifestError(f"{where}: area_id {area!r} is listed twice")
        seen.add(area)
        jobs.append(_job(row, f"{where} (area {area})", base, shared))
    return jobs


def _csv_rows(text: str, source: Path) -> list[tuple[str, dict[str, Any]]]:
    """The CSV's rows, each with where it is (``manifest …, line N``: the header is line 1)."""
    reader = csv.DictReader(io.StringIO(text))
    # line_num: the file's lines read so far, blank lines (which DictReader skips) included
    return [(f"manifest {source}, line {reader.line_num}", dict(row)) for row in reader]


def _yaml_rows(text: str, source: Path, shared: dict[str, str | None]) -> list[tuple[str, dict[str, Any]]]:
    """The YAML list's entries with where each is (``manifest …, entry N``, from 1); fills ``shared``'s layers."""
    data = yaml.safe_load(text)
    if isinstance(data, dict):
        for key in LAYER_COLUMNS:
            shared[key] = shared.get(key) or _resolve(source.resolve().parent, data.get(key))
        data = data.get("jobs")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ManifestError(f"manifest {source}: expected a list of jobs (or a mapping with 'jobs:')")
    return [(f"manifest {source}, entry {n}", row) for n, row in enumerate(data, start=1)]


def read_manifest(path: str | os.PathLike[str], shared: dict[str, str | None] | None = None) -> list[AnyJob]:
    """Jobs of a CSV or YAML manifest; relative paths are relative to the manifest's folder.

    CSV columns: ``area_id, before, after`` and optionally ``permits, zoning, parcels`` (a job's
    own layers; ``shared[layer]`` is used where empty), ``as_of`` (YYYY-MM-DD) and ``masks``
    (cloud/invalid masks, several separated by ``;``). A row may name ``scenes`` (an area's SCENES
    file, see ``rs.monitor.scenes``) instead of ``before, after``: it is a monitor of that area
    (``AreaJob``); a manifest may mix both kinds of rows. YAML: a list of such mappings, or a
    mapping with ``jobs:`` (that list) and optionally ``permits:``, ``zoning:``, ``parcels:``
    (layers shared by all jobs).

    Raises ManifestError (exit code 3) when the file is missing or cannot be parsed, or a row is
    wrong: the message names its CSV line (the header is line 1) or YAML entry (from 1).
    """
    shared = dict(shared or {})
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's CSV) is not part of area_id
        rows = _yaml_rows(text, p, shared) if p.suffix.lower() in (".yml", ".yaml") else _csv_rows(text, p)
    except (yaml.YAMLError, csv.Error, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {p} cannot be parsed: {exc}") from exc
    return _jobs_from_rows(rows, p.resolve().parent, shared, p)


def detect_config(job: Job, config: BatchConfig) -> DetectConfig:
    """The detect run of ``job``, into ``OUTDIR/<area_id>``, with the batch's detect settings.

    Its scenes, masks and layers (the batch's where its row names none; its as-of date, else the
    batch's), with the batch's detect settings (``DetectOptions``).
    """
    rules = replace(config.layers.rules, as_of=job.as_of or config.layers.rules.as_of)
    layers = replace(config.layers, permits=job.permits, zoning=job.zoning, parcels=job.parcels, rules=rules)
    shared = {f.name: getattr(config, f.name) for f in fields(DetectOptions)}  # the batch's detect settings
    return DetectConfig(before=job.before, after=job.after, outdir=str(Path(config.outdir) / job.area_id),
                        masks=job.masks, layers=layers, as_of_source=job.as_of_source, **shared)


def monitor_config(job: AreaJob, config: BatchConfig) -> MonitorConfig:
    """The monitor run of ``job``: its SCENES into the store ``OUTDIR/<area_id>``, with the batch's detect settings.

    Its layers (the batch's where its row names none) and as-of date (its own, else the batch's,
    else each pair's AFTER date).
    """
    rules = replace(config.layers.rules, as_of=job.as_of or config.layers.rules.as_of)
    layers = replace(config.layers, permits=job.permits, zoning=job.zoning, parcels=job.parcels, rules=rules)
    shared = {f.name: getattr(config, f.name) for f in fields(DetectOptions)}
    return MonitorConfig(scenes=job.scenes, store=str(Path(config.outdir) / job.area_id), layers=layers, **shared)
