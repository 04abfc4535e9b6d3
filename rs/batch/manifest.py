"""A batch manifest: one job per area, from a CSV or YAML file, and the detect run each job is.

A job is BEFORE, AFTER, its layers, as-of date and masks.
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

from changewatch.rs.config import BatchConfig, DetectConfig, DetectOptions
from changewatch.rs.errors import ManifestError
from changewatch.rs.io.gdalpaths import resolve_scene

AREA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


REQUIRED_COLUMNS = ("area_id", "before", "after")


LAYER_COLUMNS = ("permits", "zoning", "parcels")


OPTIONAL_COLUMNS = (*LAYER_COLUMNS, "as_of", "masks")


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
    return resolve_scene(base, text) if text else None  # GDAL paths (/vsizip/…) as given, archives resolved


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


def detect_config(job: Job, config: BatchConfig) -> DetectConfig:
    """The detect run of ``job``, into ``OUTDIR/<area_id>``, with the batch's detect settings.

    Its scenes, masks and layers (the batch's where its row names none; its as-of date, else the
    batch's), with the batch's detect settings (``DetectOptions``).
    """
    rules = replace(config.layers.rules, as_of=job.as_of or config.layers.rules.as_of)
    layers = replace(config.layers, permits=job.permits, zoning=job.zoning, parcels=job.parcels, rules=rules)
    shared = {f.name: getattr(config, f.name) for f in fields(DetectOptions)}  # the batch's detect settings
    return DetectConfig(before=job.before, after=job.after, outdir=str(Path(config.outdir) / job.area_id),
                        masks=job.masks, layers=layers, **shared)
