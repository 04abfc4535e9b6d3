"""Resuming a batch: a job is done only when its record agrees with its outputs and its dependencies.

A job's completion record must agree with its outputs and with everything the job depended on
(see the package docstring); ``stale_reason`` says why a job must be redone.
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import rasterio

import changewatch
from changewatch.rs.batch.manifest import Job, detect_config
from changewatch.rs.config import BatchConfig
from changewatch.rs.io.files import TMP_GLOB, atomic_write, sha256, write_json, writing
from changewatch.rs.io.gdalpaths import archive_of, is_gdal_path
from changewatch.rs.io.intake import described_files, is_described
from changewatch.rs.io.staging import recover_children
from changewatch.rs.runfolder import DETECT_FILES, DONE_RECORD

# Settings that cannot change a job's outputs: a completed job is not redone when only they change
# (as_of_source is provenance: where the as-of date came from, recorded in summary.json).
NON_RESULT_SETTINGS = frozenset({"outdir", "inference.batch_size", "inference.readers", "as_of_source"})


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
    """Every setting of ``job``'s detect run except NON_RESULT_SETTINGS.

    Settings of ``DetectConfig``, by dotted keys, as JSON stores them.
    """
    flat = _flat(json.loads(json.dumps(asdict(detect_config(job, config)), default=str)))
    return {k: v for k, v in sorted(flat.items()) if k not in NON_RESULT_SETTINGS}


def dataset_files(path: str, raster: bool) -> list[str]:
    """The files a dataset is made of.

    GDAL's list for a raster (sidecars such as ``.aux.xml`` and ``.ovr``, a VRT's sources), every
    file of the same stem beside a vector layer (a Shapefile's ``.dbf``, ``.prj``…). A
    ``path.gpkg:layer`` name is reduced to its file. A STAC item scene: its JSON and its assets'
    local files; a Sentinel-2 product: its metadata and band files (zipped: its archive); a GDAL archive
    path (``/vsizip/…``): the archive.
    """
    if raster and is_described(path):
        return sorted(set(described_files(path)))  # a STAC item or product scene: its metadata and band files
    if is_gdal_path(path):  # /vsizip/ARCHIVE/…: the archive; a URL: nothing local to fingerprint
        archive = archive_of(path)
        return [str(archive)] if archive is not None else []
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

    Size and time, not a hash, so that a resume does not read every scene again.
    """
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
    """Why ``job`` must be (re)done, or None when it is done and still up to date.

    Done and up to date: its completion record exists, every output it lists is present and
    unchanged (SHA-256), and what the job depended on is as it was then — the changewatch version,
    the job's settings (``job_settings``), the size and time of every input file (``job_files``)
    and of the model's files.
    """
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


def write_done(area_dir: Path, job: Job, config: BatchConfig, files: dict[str, list[int] | None],
                model_path: str) -> None:
    """The completion record, written last: the job, its outputs' SHA-256 and what it depended on.

    ``files``: the inputs' fingerprint taken before the run, so an input edited during the run
    makes the job stale.
    """
    record = {"job": asdict(job), "outputs": {name: sha256(area_dir / name) for name in DETECT_FILES},
              "depends": {"changewatch_version": changewatch.__version__, "settings": job_settings(job, config),
                          "files": files, "model": {"path": model_path,
                                                    "files": fingerprint(model_files(model_path))}},
              "finished_unix": time.time()}
    with writing(area_dir / DONE_RECORD), atomic_write(area_dir / DONE_RECORD) as tmp:
        write_json(record, tmp)


def remove_stale_staging(outdir: Path) -> None:
    """Restore area folders a killed run was replacing, and delete what killed runs left.

    That is their staging folders and temporary files (``rs.io.staging.recover_children``).
    """
    with writing(outdir):
        recover_children(outdir)
        for tmp in outdir.glob(f"*/{TMP_GLOB}"):
            tmp.unlink(missing_ok=True)
