"""A run folder: what a detect or crosscheck run writes into OUTDIR, by name, and reading it back.

Every file and layer name is defined here once. A detect run writes ``change_prob.tif``,
``changes.gpkg`` (layer ``changes``), ``flagged.gpkg`` (layers ``flagged_changes``,
``flagged_parcels``, the table ``flagged_change_parcels``, and ``review``/``review_unmatched``
once a planner saved decisions) and ``summary.json`` (``rs.summary.RunSummary``); a cross-check
the same layers and ``crosscheck_summary.json``. The folder is written through ``StagedOutput``:
replaced as a whole when the run succeeds (``rs.io.staging.StagedDir``). Review decisions a
planner saved in the earlier run's ``flagged.gpkg`` are carried to the new flags
(``previous_decisions``, ``match_decisions``, ``write_run_layers``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from changewatch.rs.crosscheck.judge import Judgement
from changewatch.rs.errors import InputFileError, OutputError
from changewatch.rs.io.files import write_json
from changewatch.rs.io.staging import StagedDir, recover
from changewatch.rs.io.vector import layer_names, write_gpkg, write_table
from changewatch.rs.summary import ReviewRecord, RunSummary

CHANGE_PROB = "change_prob.tif"
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

EXPORT_GPKG = "changewatch.gpkg"  # rs.export: every layer in one GeoPackage
STAC_ITEM = "item.json"
SHAPEFILE_FOLDER = "shapefile"
MATCH_IOU = 0.5  # an earlier decision follows a new flag whose outline overlaps its own by at least this IoU
MATCH_COLUMNS = ("previous_change_id", "match_iou")  # added to carried decisions: where they came from
# Every name a changewatch command writes into an output folder: detect, crosscheck, export and a
# batch job's completion record. A folder holding only these (and their sidecars) may be replaced.
RUN_FILES = frozenset({
    *DETECT_FILES, CROSSCHECK_SUMMARY, DONE_RECORD, EXPORT_GPKG, STAC_ITEM, SHAPEFILE_FOLDER,
    *(f"{layer}.{ext}" for layer in (*LAYERS, LAYER_LINKS) for ext in ("parquet", "geojson", "csv")),
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
            raise InputFileError(f"{run} is not a changewatch run folder: {path.name} is missing")
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


# --- carrying decisions over a re-run ---------------------------------------------------------

@dataclass(frozen=True)
class CarriedReview:
    """Earlier decisions sorted onto a re-run's flags.

    ``review``: one row per new flag that an earlier decision matched (its new ``change_id``,
    ``reasons`` and outline, the decision's other columns — ``review``, ``note``, any a planner
    added — and MATCH_COLUMNS: the earlier ``change_id`` and the IoU of the two outlines);
    ``unmatched``: the earlier decisions no new flag matched, as they were (in the new CRS).
    """

    review: gpd.GeoDataFrame
    unmatched: gpd.GeoDataFrame
    source: Path

    def record(self) -> ReviewRecord:
        """What ``summary.json`` records under ``review``."""
        return ReviewRecord(str(self.source.resolve()), len(self.review), len(self.unmatched), MATCH_IOU)

    def write(self, gpkg: Path) -> None:
        """Add layers ``review`` and ``review_unmatched`` (each only when it has rows) to ``gpkg``."""
        if len(self.review):
            write_gpkg(self.review, gpkg, LAYER_REVIEW)
        if len(self.unmatched):
            write_gpkg(self.unmatched, gpkg, LAYER_UNMATCHED)


def previous_decisions(flagged_gpkg: str | os.PathLike[str]) -> gpd.GeoDataFrame | None:
    """The decisions an earlier run's ``flagged.gpkg`` holds.

    Its ``review`` layer, then its ``review_unmatched`` layer (in the first one's CRS); None when
    the file or both layers are absent or empty. Raises OutputError when the file exists but cannot
    be read: the decisions it may hold would otherwise be lost when the folder is replaced.
    """
    import pyogrio.errors

    path = Path(flagged_gpkg)
    if not path.exists():
        return None
    try:
        names = layer_names(path)
        parts = [gpd.read_file(path, layer=n) for n in (LAYER_REVIEW, LAYER_UNMATCHED) if n in names]
    except (OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise OutputError(f"{path} cannot be read ({' '.join(str(exc).split())}), so the review decisions it may "
                          "hold cannot be carried over: move it away and run again") from exc
    if not all(isinstance(p, gpd.GeoDataFrame) for p in parts):
        raise OutputError(f"a review layer of {path} has no geometry, so its decisions cannot be matched to the new "
                          "flags: move the file away and run again")
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    crs = parts[0].crs
    return gpd.GeoDataFrame(pd.concat([p.to_crs(crs) if p.crs and crs else p for p in parts], ignore_index=True),
                            geometry="geometry", crs=crs)


def match_decisions(previous: gpd.GeoDataFrame, flagged: gpd.GeoDataFrame, source: Path,
                    min_iou: float = MATCH_IOU) -> CarriedReview:
    """Match earlier decisions to new flags one to one, by outline.

    Pairs are taken by decreasing IoU (intersection over union of the areas, in ``flagged``'s
    CRS), earlier rows first on ties, down to ``min_iou``. See ``CarriedReview`` for what comes
    back.
    """
    previous = previous.to_crs(flagged.crs) if previous.crs and flagged.crs else previous
    old = shapely.make_valid(previous.geometry.values)
    new = flagged.geometry.values
    pairs = flagged.sindex.query(old, predicate="intersects") if len(flagged) and len(old) else np.zeros((2, 0), int)
    old_at, new_at = pairs[0], pairs[1]  # (index into the queried geometries, index into the tree)
    union = shapely.area(shapely.union(old[old_at], new[new_at]))
    iou = np.divide(shapely.area(shapely.intersection(old[old_at], new[new_at])), union,
                    out=np.zeros(len(union)), where=union > 0)
    matched: dict[int, tuple[int, float]] = {}  # new row -> (earlier row, IoU)
    used: set[int] = set()
    for k in np.lexsort((old_at, -iou)):
        if iou[k] < min_iou:
            break
        if old_at[k] in used or new_at[k] in matched:
            continue
        used.add(int(old_at[k]))
        matched[int(new_at[k])] = (int(old_at[k]), float(iou[k]))
    carried_columns = [c for c in previous.columns
                       if c not in ("change_id", "reasons", previous.geometry.name, *MATCH_COLUMNS)]
    rows = sorted(matched)
    earlier = previous.iloc[[matched[n][0] for n in rows]].reset_index(drop=True)
    review = gpd.GeoDataFrame({
        "change_id": flagged["change_id"].iloc[rows].to_numpy(),
        "reasons": flagged["reasons"].iloc[rows].to_numpy(),
        **{c: earlier[c].to_numpy() for c in carried_columns},
        "previous_change_id": (earlier["change_id"] if "change_id" in earlier else pd.Series([None] * len(rows))
                               ).to_numpy(),
        "match_iou": np.round([matched[n][1] for n in rows], 4),
    }, geometry=flagged.geometry.iloc[rows].array.to_numpy(), crs=flagged.crs)
    unmatched = previous.iloc[[i for i in range(len(previous)) if i not in used]].reset_index(drop=True)
    return CarriedReview(review, gpd.GeoDataFrame(unmatched, geometry=previous.geometry.name, crs=previous.crs), source)


def write_run_layers(judgement: Judgement, previous: gpd.GeoDataFrame | None,
                     out: StagedOutput) -> CarriedReview | None:
    """Write changes.gpkg and flagged.gpkg into the staging folder, with earlier review decisions carried over.

    The earlier run's review decisions are carried to the new flags (``match_decisions``; None when
    there were none).
    """
    carried = match_decisions(previous, judgement.flagged, out.final(FLAGGED_GPKG)) if previous is not None else None
    with out.writing():
        write_judgement(judgement, out.path(CHANGES_GPKG), out.path(FLAGGED_GPKG))
        if carried is not None:
            carried.write(out.path(FLAGGED_GPKG))
    return carried
