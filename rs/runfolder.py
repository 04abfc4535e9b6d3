"""A run folder: what a detect or crosscheck run writes into OUTDIR, by name, and reading it back.

Every file and layer name is defined here once. A detect run writes ``change_prob.tif``,
``changes.gpkg`` (layer ``changes``), ``flagged.gpkg`` (layers ``flagged_changes``,
``flagged_parcels``, the table ``flagged_change_parcels``, and ``review``/``review_unmatched``
once a planner saved decisions) and ``summary.json`` (``rs.summary.RunSummary``); a cross-check
the same layers and ``crosscheck_summary.json``. The GeoPackages carry QGIS styles in their
``layer_styles`` table, and ``change_prob.qml`` beside the raster is its QGIS style (``rs.styles``).
The folder is written through ``StagedOutput``: replaced as a whole when the run succeeds
(``rs.io.staging.StagedDir``). Review decisions a planner saved in the earlier run's
``flagged.gpkg`` are carried to the new flags (``rs.decisions``; written by ``write_run_layers``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import pyogrio

from changewatch.rs.crosscheck.judge import Judgement
from changewatch.rs.errors import InputFileError
from changewatch.rs.io.files import write_json
from changewatch.rs.io.staging import StagedDir, recover
from changewatch.rs.io.vector import layer_names, write_gpkg, write_table
from changewatch.rs.summary import RunSummary

if TYPE_CHECKING:  # rs.decisions reads this module's layer names
    from changewatch.rs.decisions import CarriedReview

CHANGE_PROB = "change_prob.tif"
CHANGE_PROB_STYLE = "change_prob.qml"  # QGIS loads it with change_prob.tif (rs.styles)
CHANGES_GPKG = "changes.gpkg"
FLAGGED_GPKG = "flagged.gpkg"
SUMMARY = "summary.json"
CROSSCHECK_SUMMARY = "crosscheck_summary.json"
DONE_RECORD = "_done.json"  # a batch job's completion record (rs.batch)
DETECT_FILES = (CHANGE_PROB, CHANGES_GPKG, FLAGGED_GPKG, SUMMARY)

LAYER_CHANGES = "changes"
LAYER_FLAGGED = "flagged_changes"
LAYER_PARCELS = "flagged_parcels"
LAYER_LINKS = "flagged_change_parcels"  # attribute table: change_id, parcel_id, overlap_m2
LAYER_REVIEW = "review"
LAYER_UNMATCHED = "review_unmatched"  # earlier decisions that no flag of a re-run matches
LAYERS = (LAYER_CHANGES, LAYER_FLAGGED, LAYER_PARCELS)  # the layers with geometry a run writes
# A monitor store's layers as ``export`` writes them (``rs.monitor.exported``): its tracked changes (layer
# ``changes`` of history.gpkg), their observations and the parcels' history.
LAYER_TRACKED_CHANGES = "tracked_changes"
LAYER_OBSERVATIONS = "observations"
LAYER_PARCEL_HISTORY = "parcel_history"
STORE_LAYERS = (LAYER_TRACKED_CHANGES, LAYER_OBSERVATIONS, LAYER_PARCEL_HISTORY)

EXPORT_GPKG = "changewatch.gpkg"  # rs.export: every layer in one GeoPackage
STAC_ITEM = "item.json"
SHAPEFILE_FOLDER = "shapefile"
# Every name a changewatch command writes into an output folder: detect, crosscheck, export and a
# batch job's completion record. A folder holding only these (and their sidecars) may be replaced.
RUN_FILES = frozenset({
    *DETECT_FILES, CHANGE_PROB_STYLE, CROSSCHECK_SUMMARY, DONE_RECORD, EXPORT_GPKG, STAC_ITEM, SHAPEFILE_FOLDER,
    *(f"{layer}.{ext}" for layer in (*LAYERS, LAYER_LINKS, *STORE_LAYERS) for ext in ("parquet", "geojson", "csv")),
})


class StagedOutput(StagedDir):
    """A run's output folder, replaced as a whole when the run succeeds (``rs.io.staging.StagedDir``).

    Write files under ``.path(name)``; on success the staging folder becomes ``outdir`` (the
    earlier run's files, including any this run does not write, are gone), on failure ``outdir``
    is left as it was. ``outdir`` may hold only names in ``RUN_FILES`` (and their sidecars), and
    none of ``inputs``; raises OutputError otherwise, or when it cannot be written.
    """

    def __init__(self, outdir: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
        super().__init__(outdir, RUN_FILES, inputs)


def write_judgement(judgement: Judgement, changes_path: Path, flagged_path: Path) -> None:
    """Write ``changes.gpkg`` (layer ``changes``) and ``flagged.gpkg`` (layer ``flagged_changes``).

    With parcels ``flagged.gpkg`` also holds ``flagged_parcels`` and the attribute table
    ``flagged_change_parcels``.
    """
    write_gpkg(judgement.changes, changes_path, LAYER_CHANGES)
    write_gpkg(judgement.flagged, flagged_path, LAYER_FLAGGED)
    if judgement.parcels is not None:
        write_gpkg(judgement.parcels, flagged_path, LAYER_PARCELS)
    if judgement.links is not None:
        write_table(judgement.links, flagged_path, LAYER_LINKS)


def read_run_layers(run_dir: str | os.PathLike[str]) -> dict[str, gpd.GeoDataFrame]:
    """The layers of a detect or crosscheck run folder (``flagged_parcels`` only when present).

    The attribute table ``flagged_change_parcels`` comes back as a plain DataFrame when present.
    Raises InputFileError for a folder that is not a run.
    """
    run = Path(run_dir)
    recover(run)  # a run killed while replacing this folder left it beside, whole
    sources = {LAYER_CHANGES: run / CHANGES_GPKG, LAYER_FLAGGED: run / FLAGGED_GPKG,
               LAYER_PARCELS: run / FLAGGED_GPKG, LAYER_LINKS: run / FLAGGED_GPKG}
    layers = {}
    for name, path in sources.items():
        if not path.is_file():
            raise InputFileError(f"{run} does not exist" if not run.exists()
                                 else f"{run} is not a changewatch run folder: {path.name} is missing")
        if name in layer_names(path):
            layers[name] = gpd.read_file(path, layer=name) if name != LAYER_LINKS else \
                pyogrio.read_dataframe(path, layer=name, read_geometry=False)
    if LAYER_CHANGES not in layers or LAYER_FLAGGED not in layers:
        raise InputFileError(f"{run}: {CHANGES_GPKG}/{FLAGGED_GPKG} lack the {LAYER_CHANGES} or {LAYER_FLAGGED} "
                             "layer")
    return layers


def write_summary(summary: RunSummary, path: Path) -> Path:
    """A run's summary as JSON (``RunSummary.to_dict``)."""
    return write_json(summary.to_dict(), path)


def summary_path(run_dir: str | os.PathLike[str]) -> Path | None:
    """The summary file of a run folder; None when there is neither.

    A detect run's ``summary.json``, else a cross-check's ``crosscheck_summary.json``.
    """
    run = Path(run_dir)
    return next((p for p in (run / SUMMARY, run / CROSSCHECK_SUMMARY) if p.is_file()), None)


def read_summary(path: str | os.PathLike[str]) -> RunSummary:
    """The summary in ``path`` (a run folder, or the JSON file itself).

    Raises InputFileError when there is none, or it cannot be read as one.
    """
    p = Path(path)
    found = summary_path(p) if p.is_dir() else (p if p.is_file() else None)
    if found is None:
        raise InputFileError(f"{p} holds no run summary ({SUMMARY} or {CROSSCHECK_SUMMARY})")
    try:
        return RunSummary.from_dict(json.loads(found.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(f"{found} is not a readable run summary ({type(exc).__name__}: {exc})") from exc


def write_run_layers(judgement: Judgement, carried: CarriedReview | None, out: StagedOutput) -> None:
    """Write changes.gpkg and flagged.gpkg into the staging folder, with the review decisions carried over.

    ``carried``: the earlier run's decisions sorted onto the new flags (``rs.decisions.carry``), None
    when there were none. Each layer gets its QGIS style (``rs.styles.write_styles``).
    """
    from changewatch.rs.styles import write_styles  # rs.styles reads this module's layer names

    with out.writing():
        write_judgement(judgement, out.path(CHANGES_GPKG), out.path(FLAGGED_GPKG))
        if carried is not None:
            carried.write(out.path(FLAGGED_GPKG))
        for gpkg in (CHANGES_GPKG, FLAGGED_GPKG):
            write_styles(out.path(gpkg))
