"""Helpers for planners reviewing a run in a notebook (``notebooks/review.ipynb``).

Everything the notebook shows comes from here, so a planner can call the same functions in their
own notebook: a run's layers and summary, an overview of the AFTER scene for a web map, before /
after image chips around a flag, and recording review decisions in the run's GeoPackage: only
the decisions a person made, each with its reviewer and time (``record_decisions``; what a
decision is, and how layers of earlier versions are read: ``rs.decisions``).

Decisions survive a re-run: ``detect`` or ``crosscheck`` into a folder whose ``flagged.gpkg``
holds a ``review`` layer carries each decision to the new flag whose outline matches it (IoU ≥
MATCH_IOU; ids may change between runs, outlines barely do) and keeps the decisions no new flag
matches in layer ``review_unmatched`` (``rs.decisions.previous_decisions``, ``match_decisions``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform
from shapely.affinity import affine_transform
from shapely.geometry.base import BaseGeometry

from changewatch.rs.align import AlignedPair
from changewatch.rs.config import CHIP_PAD_PX, OVERVIEW_PX, DemoConfig
from changewatch.rs.decisions import COLUMNS, check, check_new, decided, now, read_decisions, timestamp
from changewatch.rs.errors import DecisionError, InputFileError
from changewatch.rs.grid import GridSpec
from changewatch.rs.io.files import atomic_write
from changewatch.rs.io.raster import open_raster
from changewatch.rs.io.staging import recover
from changewatch.rs.io.vector import write_gpkg
from changewatch.rs.runfolder import (
    CHANGE_PROB,
    FLAGGED_GPKG,
    LAYER_CHANGES,
    LAYER_FLAGGED,
    LAYER_REVIEW,
    SUMMARY,
    read_run_layers,
    read_summary,
)
from changewatch.rs.summary import RunSummary, SceneInputs


@dataclass(frozen=True)
class Run:
    """A detect run folder as the notebook sees it."""

    path: Path
    summary: RunSummary
    layers: dict[str, gpd.GeoDataFrame]

    @property
    def inputs(self) -> SceneInputs:
        """What the run read (a detect run's inputs)."""
        assert isinstance(self.summary.inputs, SceneInputs)  # load_run reads detect runs only
        return self.summary.inputs

    @property
    def before(self) -> str:
        """The BEFORE scene the run read (absolute path)."""
        return self.inputs.before

    @property
    def after(self) -> str:
        """The AFTER scene the run read (absolute path)."""
        return self.inputs.after

    @property
    def grid(self) -> GridSpec:
        """The common grid the run's probability raster is on."""
        return self.inputs.grid

    def summary_table(self) -> pd.DataFrame:
        """One row per figure a planner asks first: counts, areas, date, model, threshold."""
        s = self.summary
        assert s.model is not None and s.thresholds is not None  # a detect run's
        rows = [("changes", s.counts.changes), ("flagged", s.counts.flagged),
                ("flagged parcels", s.counts.flagged_parcels),
                ("flagged area (m²)", round(s.areas_m2.flagged or 0.0)),
                ("judged as of", s.rules.as_of), ("model", s.model.name),
                ("probability threshold", s.thresholds.probability),
                ("minimum area (m²)", s.thresholds.min_area_m2)]
        rows += [(f"reason: {k}", v) for k, v in s.counts.by_reason.items()]
        return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Read a detect run folder (summary.json, changes.gpkg, flagged.gpkg).

    Raises InputFileError for a folder that is not a detect run (``not_a_run`` says what to give instead).
    Does not check that the scenes are still the files the run read: that reads them whole; call
    ``rs.runinputs.check_scene_files(run.inputs)`` before drawing chips from scenes that may have changed.
    """
    path = Path(run_dir)
    recover(path)  # a run killed while replacing this folder left it beside, whole
    if not (path / SUMMARY).is_file():
        raise InputFileError(not_a_run(path))
    return Run(path, read_summary(path / SUMMARY), read_run_layers(path))


def not_a_run(path: Path) -> str:
    """Why ``path`` (without a summary.json) is not a detect run folder, and what to give instead, in one line.

    Missing: it does not exist (for the demo's folder, ``DemoConfig.outdir``: run the demo first); a monitor
    store: report one of its pairs, ``STORE/pairs/<pair>``; a folder of run folders (a batch): one of them.
    """
    from changewatch.rs.monitor.run import PAIRS  # rs.monitor reads runs through this module

    if not path.exists():
        demo = path.resolve() == Path(DemoConfig.outdir).resolve()
        return f"{path} does not exist" + ("; run `python cli.py demo` first" if demo else "")
    pairs = sorted(p.parent.name for p in (path / PAIRS).glob(f"*/{SUMMARY}"))
    if pairs:
        return (f"{path} is a monitor store, not a detect run folder: report one of its pairs, "
                f"{path / PAIRS}/<pair> (e.g. {path / PAIRS / pairs[0]})")
    runs = sorted(p.parent.name for p in path.glob(f"*/{SUMMARY}"))
    if runs:
        return (f"{path} is not a detect run folder (no {SUMMARY}) but holds detect run folders: report one of them, "
                f"e.g. {path / runs[0]}")
    return f"{path} is not a detect run folder (no {SUMMARY}): give the folder detect wrote (its -o OUTDIR)"


def stretch(rgb: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(3, rows, cols) → (rows, cols, 3) float in [0, 1], each band stretched 2–98 %."""
    out = np.zeros(rgb.shape[1:] + (3,), np.float32)
    mask = np.ones(rgb.shape[1:], bool) if valid is None else valid
    for i in range(3):
        band = rgb[i].astype(np.float32)
        lo, hi = np.percentile(band[mask], [2, 98]) if mask.any() else (0.0, 1.0)
        out[..., i] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
    return out


def overview(path: str, rgb_bands: tuple[int, int, int] = (3, 2, 1), max_size: int = OVERVIEW_PX
             ) -> tuple[np.ndarray, list[list[float]]]:
    """A scene warped to EPSG:4326 and decimated to ≤ ``max_size`` px, with its bounds.

    Returns (rows, cols, 3) RGB in [0, 1] and its bounds [[south, west], [north, east]] in degrees.
    Memory: the decimated image only.
    """
    with open_raster(path, "scene") as ds, WarpedVRT(ds, crs="EPSG:4326", resampling=Resampling.bilinear) as vrt:
        scale = max(vrt.width, vrt.height) / max_size
        shape = (max(1, round(vrt.height / max(scale, 1))), max(1, round(vrt.width / max(scale, 1))))
        rgb = vrt.read(list(rgb_bands), out_shape=(3, *shape), resampling=Resampling.average)
        valid = vrt.read_masks(1, out_shape=shape) > 0
        west, south, east, north = vrt.bounds
    return stretch(rgb, valid), [[south, west], [north, east]]


@dataclass(frozen=True)
class Chip:
    """Before / after RGB and change probability around one flag, on the run's common grid, with its outline.

    ``before``, ``after``: (rows, cols, 3) float32 in [0, 1] (``stretch``); ``prob``: (rows, cols)
    change probability 0–1; ``outline``: the flag's polygon in the chip's pixel coordinates (x =
    column, y = row; pixel (0, 0) spans 0–1 on both), ready to draw over the images.
    """

    before: np.ndarray
    after: np.ndarray
    prob: np.ndarray
    outline: BaseGeometry


def flag_chip(run: Run, change_id: int, pad_px: int = CHIP_PAD_PX, rgb_bands: tuple[int, int, int] = (3, 2, 1)
              ) -> Chip:
    """The ``Chip`` of one change: its bounding box on the run's grid plus ``pad_px`` pixels around.

    Raises KeyError for a ``change_id`` the run does not have; InputFileError when a scene cannot be read.
    """
    changes = run.layers[LAYER_CHANGES]
    row = changes[changes["change_id"] == change_id]
    if row.empty:
        raise KeyError(f"no change with change_id {change_id}")
    with AlignedPair(run.before, run.after, grid=run.grid) as pair:
        assert pair.grid.crs is not None  # detect takes georeferenced scenes only (rs.prepare)
        geom = row.to_crs(pair.grid.crs).geometry.iloc[0]
        w = from_bounds(*geom.bounds, transform=pair.grid.transform).round_offsets().round_lengths()
        col0, row0 = max(0, int(w.col_off) - pad_px), max(0, int(w.row_off) - pad_px)
        col1 = min(pair.grid.width, int(w.col_off + w.width) + pad_px)
        row1 = min(pair.grid.height, int(w.row_off + w.height) + pad_px)
        window = Window(col0, row0, col1 - col0, row1 - row0)
        data = pair.read(window)
        to_pixels = ~window_transform(window, pair.grid.transform)
    with open_raster(run.path / CHANGE_PROB, "probability") as ds:
        prob = ds.read(1, window=window)
    idx = [b - 1 for b in rgb_bands]
    outline = affine_transform(geom, [to_pixels.a, to_pixels.b, to_pixels.d, to_pixels.e, to_pixels.c, to_pixels.f])
    return Chip(stretch(data.before[idx], data.valid), stretch(data.after[idx], data.valid), prob, outline)


def chips(run: Run, change_id: int, pad_px: int = CHIP_PAD_PX, rgb_bands: tuple[int, int, int] = (3, 2, 1)
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Before RGB, after RGB and change probability around one change, on the run's common grid (``flag_chip``)."""
    chip = flag_chip(run, change_id, pad_px, rgb_bands)
    return chip.before, chip.after, chip.prob


def review_table(run: Run) -> pd.DataFrame:
    """One row per flagged change, with the decision saved on it.

    Columns ``change_id``, ``reasons``, ``area_m2`` and ``rs.decisions.COLUMNS``: empty (None; note
    '') where nobody has decided (unreviewed). Layers of earlier versions are read by
    ``rs.decisions.upgrade``. Raises DecisionError for a saved decision that cannot be read.
    """
    flagged = run.layers[LAYER_FLAGGED]
    table = pd.DataFrame({"change_id": flagged["change_id"], "reasons": flagged["reasons"],
                          "area_m2": flagged["area_m2"].round(0)})
    saved = read_decisions(run.path / FLAGGED_GPKG)
    columns = pd.DataFrame(columns=["change_id", *COLUMNS]) if saved is None else \
        pd.DataFrame(saved[["change_id", *COLUMNS]])
    table = table.merge(columns, on="change_id", how="left").astype({c: object for c in COLUMNS})
    table["note"] = table["note"].fillna("")
    return table.where(table.notna(), None)


def save_review(run: Run, table: pd.DataFrame) -> Path | None:
    """Write the decisions in ``table`` as layer ``review`` of the run's flagged.gpkg.

    ``table`` has columns ``change_id`` and ``rs.decisions.COLUMNS``, as ``review_table`` gives them;
    its decisions replace those saved before, each written with the flag's ``reasons`` and outline.

    Rows without a decision are unreviewed flags and are not written; when no row has one, nothing
    is written and None is returned. The GeoPackage is copied, written and renamed, so a crash never
    leaves it half-written. Raises DecisionError for a decision not in ``rs.decisions.DECISIONS``, a
    ``reviewed_at`` that is not ISO 8601 with an offset, a new decision without its reviewer or time,
    a flag the run does not have, or a table in the columns of earlier versions (``review``).
    """
    if "decision" not in table and "review" in table:
        raise DecisionError("the table has a 'review' column, as changewatch 0.2.0 wrote: decisions now go in "
                            f"columns {', '.join(COLUMNS)} (see review_table and record_decisions)")
    rows = decided(table)
    if rows.empty:
        return None
    check(rows, "the decisions given")
    gpkg: Path = run.path / FLAGGED_GPKG
    check_new(rows, read_decisions(gpkg))
    flagged = run.layers[LAYER_FLAGGED][["change_id", "reasons", "geometry"]]
    missing = sorted(set(rows["change_id"]) - set(flagged["change_id"]))
    if missing:
        raise DecisionError(f"no flag with change_id {', '.join(map(str, missing[:5]))} in {gpkg}")
    layer = flagged.merge(rows[["change_id", *COLUMNS]], on="change_id", how="inner")
    layer["reviewed_at"] = [None if pd.isna(t) or not str(t).strip() else timestamp(t) for t in layer["reviewed_at"]]
    layer["note"] = layer["note"].fillna("").astype(str)
    with atomic_write(gpkg) as tmp:
        shutil.copyfile(gpkg, tmp)
        write_gpkg(layer, tmp, LAYER_REVIEW)  # replaces an earlier review layer
    return gpkg


def record_decisions(run: Run, decisions: Mapping[int, str | tuple[str, str]], reviewer: str,
                     at: datetime | str | None = None) -> Path | None:
    """Save decisions a person made on flags of ``run``.

    They are kept with those saved before (a new one on the same flag replaces it): ``decisions``
    maps a ``change_id`` to a decision word
    (``rs.decisions.DECISIONS``) or to (decision, note); each is recorded with ``reviewer`` and
    ``at`` (an aware datetime or ISO 8601 text; None: now, with the local UTC offset).

    Nothing is written, and None is returned, when ``decisions`` is empty; otherwise the path of
    the GeoPackage written (``save_review``, whose DecisionErrors apply; also one for an empty
    ``reviewer``).
    """
    if not decisions:
        return None
    if not reviewer or not reviewer.strip():
        raise DecisionError("decisions need the reviewer's name (reviewer=...)")
    stamp = timestamp(at) if at is not None else now()
    table = review_table(run).set_index("change_id")
    unknown = sorted(set(decisions) - set(table.index))
    if unknown:
        raise DecisionError(f"no flag with change_id {', '.join(map(str, unknown[:5]))} in {run.path / FLAGGED_GPKG}")
    for change_id, given in decisions.items():
        word, note = (given, "") if isinstance(given, str) else given
        table.loc[change_id, list(COLUMNS)] = [word, reviewer.strip(), stamp, note]
    return save_review(run, table.reset_index())
