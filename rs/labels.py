"""Labelled training data from reviewed runs (``cli.py labels``): planners' decisions back into the model.

Each detect run folder given becomes one site of a data set in the vector-label layout that
``train`` and ``evaluate`` read (``rs.datasets``), named as the run's folder:

- ``LABELS/<site>/changes.gpkg``, layer ``changes``: the flags decided on in layer ``review`` of the
  run's ``flagged.gpkg`` (``rs.decisions``), with ``change_label`` (``rs.datasets.LABEL_COLUMN``):
  ``confirm`` → ``change``, ``dismiss`` → ``no_change``; the decision's ``change_id``, ``decision``,
  ``reviewer``, ``reviewed_at``, ``note`` and the flag's ``reasons`` kept beside it. Flags marked
  ``needs_visit``, flags nobody decided on, decisions in ``review_unmatched`` (no current flag: they
  may have been made on other scenes) and every other pixel are not labelled (255): nobody looked.
- ``LABELS/<site>/before.tif``, ``after.tif``: the two dates as the run compared them — its scenes
  opened as it opened them (bands compared, masks, common grid, AFTER's measured shift, validity
  rule: all read from its ``summary.json``) — cut to the extent of the confirmed and dismissed
  flags plus ``margin_px`` pixels of the run's grid on every side (clipped to the grid), written as
  float32 Cloud-Optimised GeoTIFFs on that grid in the files' own units, NaN where either date was
  invalid, the bands named as BEFORE names them. Read and written a block at a time (memory: one
  block). Each file records in its tag ``rs.normalize.STATS_TAG`` the statistics the run normalised
  that date's whole scene with; ``train`` and ``evaluate`` normalise the site with them
  (``rs.normalize.recorded_stats``), so the model sees a flag on its site as the run saw it.
- ``LABELS/labels.json``: what each site came from (run, summary, decisions counted, reviewers,
  window on the run's grid) and the rule above.

LABELS is replaced as a whole when every site is written (``rs.io.staging.StagedDir``); it may hold
only what an earlier ``labels`` wrote. Light: no torch.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window, from_bounds

import changewatch
from changewatch.rs.align import AlignedPair, PairSource, Shift
from changewatch.rs.config import PairOptions
from changewatch.rs.datasets import LABEL_COLUMN, LABEL_VALUES, SITE_IMAGES, VECTOR_LABELS
from changewatch.rs.decisions import counts, read_decisions
from changewatch.rs.errors import InputFileError
from changewatch.rs.io.files import write_json
from changewatch.rs.io.staging import StagedDir
from changewatch.rs.io.vector import layer_names, write_gpkg
from changewatch.rs.normalize import STATS_TAG, scene_stats
from changewatch.rs.runfolder import (
    FLAGGED_GPKG,
    LAYER_FLAGGED,
    LAYER_UNMATCHED,
    SUMMARY,
    read_run_layers,
    read_summary,
)
from changewatch.rs.runinputs import check_scene_files, not_checked
from changewatch.rs.summary import RunSummary, SceneInputs
from changewatch.rs.training.config import LabelsConfig

LABELS_RECORD = "labels.json"
LABEL_OF = {"confirm": LABEL_VALUES[0], "dismiss": LABEL_VALUES[1]}  # decisions that label; the others do not
LABEL_LAYER = Path(VECTOR_LABELS[0]).stem  # the layer of changes.gpkg
BLOCK = 512  # pixels per side of the blocks copied
RULE = ("confirm -> change polygon, dismiss -> no_change polygon (change_label); needs_visit, unreviewed flags, "
        "decisions matching no current flag and everything else -> not labelled (255)")


@dataclass(frozen=True)
class ReviewedRun:
    """A detect run folder with decisions.

    Its site name (the folder's), summary, the flags decided ``confirm`` or ``dismiss`` (in the
    run's CRS, with ``change_label``), and counts: decisions per word, flags nobody decided on
    (``unreviewed``), decisions matching no current flag (``unmatched``), and its scene files that
    could not be checked against the run (``rs.runinputs.check_scene_files``: no checksum recorded).
    """

    name: str
    path: Path
    summary: RunSummary
    labelled: gpd.GeoDataFrame
    counts: dict[str, int]
    unchecked: list[str]

    @property
    def inputs(self) -> SceneInputs:
        """What the run read (a detect run's inputs)."""
        inputs = self.summary.inputs
        assert isinstance(inputs, SceneInputs)  # reviewed_run reads detect runs only
        return inputs

    def source(self) -> PairSource:
        """What opens the pair as the run opened it, but for AFTER's shift (``open_as_run`` adds it)."""
        inputs = self.inputs
        bands = tuple(inputs.bands) if isinstance(inputs.bands, list) else None
        zero_is_valid = bool(self.summary.config.get("zero_is_valid", PairOptions.zero_is_valid))
        return PairSource(inputs.before, inputs.after, bands, tuple(inputs.masks), inputs.grid,
                          zero_is_valid=zero_is_valid)


def reviewed_run(run_dir: str | os.PathLike[str]) -> ReviewedRun:
    """Read a detect run folder's summary, flags and decisions.

    Raises InputFileError for a folder that is not a detect run or holds no ``confirm`` or
    ``dismiss`` decision, DecisionError (``rs.decisions``) for decisions that cannot be read,
    InputChangedError for a scene file changed since the run (``rs.runinputs.check_scene_files``).
    """
    path = Path(run_dir)
    if not (path / SUMMARY).is_file():
        what = "a cross-check run folder" if _summary_or_none(path) else "not a detect run folder"
        raise InputFileError(f"{path} is {what}: labels need a detect run, whose {SUMMARY} records the scenes")
    summary = read_summary(path / SUMMARY)
    layers = read_run_layers(path)
    decisions = read_decisions(path / FLAGGED_GPKG)
    found = counts(decisions)
    if decisions is None or not decisions["decision"].isin(list(LABEL_OF)).any():
        held = ", ".join(f"{n} {w}" for w, n in found.items() if n) or "none"
        raise InputFileError(f"{path} holds no confirm or dismiss decision (decisions in layer review of its "
                             f"{FLAGGED_GPKG}: {held}): review its flags first (notebooks/review.ipynb)")
    crs = layers[LAYER_FLAGGED].crs
    labelled = decisions[decisions["decision"].isin(list(LABEL_OF))].copy()
    labelled = labelled.to_crs(crs) if labelled.crs and crs else labelled
    labelled.insert(1, LABEL_COLUMN, labelled["decision"].map(LABEL_OF))
    assert isinstance(summary.inputs, SceneInputs)  # a detect run's summary
    unchecked = check_scene_files(summary.inputs)
    return ReviewedRun(path.resolve().name, path, summary, labelled.reset_index(drop=True),
                       {**found, "unreviewed": len(layers[LAYER_FLAGGED]) - sum(found.values()),
                        "unmatched": _unmatched(path)}, unchecked)


def _summary_or_none(path: Path) -> RunSummary | None:
    """The run summary of a folder, None when it holds none that reads."""
    try:
        return read_summary(path)
    except InputFileError:
        return None


def _unmatched(path: Path) -> int:
    """Rows of layer review_unmatched of a run's flagged.gpkg (0 when absent)."""
    gpkg = path / FLAGGED_GPKG
    return len(gpd.read_file(gpkg, layer=LAYER_UNMATCHED)) if LAYER_UNMATCHED in layer_names(gpkg) else 0


def open_as_run(run: ReviewedRun) -> AlignedPair:
    """The run's pair, open on its grid with AFTER moved by the shift it applied (close it when done).

    Raises InputFileError when the scenes no longer give the grid the run recorded (they changed; runs
    that recorded no checksums, ``reviewed_run`` checks the others),
    and the errors of ``rs.align.AlignedPair`` for scenes that cannot be read.
    """
    source = run.source()
    coreg = run.inputs.coregistration or {}
    if coreg.get("applied"):
        with source.open() as probe:
            rows, cols = coreg["shift_px"]
            source = replace(source, after_shift=Shift.from_pixels(float(rows), float(cols), probe.grid))
    pair = source.open()
    grid, inputs = pair.grid, run.inputs
    crs = grid.crs.to_string() if grid.crs is not None else None
    if (crs, grid.width, grid.height) != (inputs.crs, inputs.width, inputs.height):
        pair.close()
        raise InputFileError(f"{run.path}: its scenes now give a {grid.width}×{grid.height} grid in {crs}, the run "
                             f"recorded {inputs.width}×{inputs.height} in {inputs.crs}: they changed since it ran "
                             "(run detect again, then review)")
    return pair


def _crs(pair: AlignedPair) -> Any:
    """The pair's CRS (a detect run's pair is always georeferenced)."""
    assert pair.grid.crs is not None, "detect runs are georeferenced"
    return pair.grid.crs


def site_window(run: ReviewedRun, pair: AlignedPair, margin_px: int) -> Window:
    """The window of the pair's grid a site covers.

    The confirmed and dismissed flags' extent in whole pixels, grown by ``margin_px`` on every side
    and clipped to the grid.
    """
    left, bottom, right, top = run.labelled.to_crs(_crs(pair)).total_bounds
    w = from_bounds(left, bottom, right, top, transform=pair.grid.transform)
    col0 = max(0, math.floor(w.col_off + 1e-6) - margin_px)
    row0 = max(0, math.floor(w.row_off + 1e-6) - margin_px)
    col1 = min(pair.grid.width, math.ceil(w.col_off + w.width - 1e-6) + margin_px)
    row1 = min(pair.grid.height, math.ceil(w.row_off + w.height - 1e-6) + margin_px)
    return Window(col0, row0, max(1, col1 - col0), max(1, row1 - row0))


def write_scenes(pair: AlignedPair, window: Window, before: Path, after: Path) -> None:
    """Write BEFORE and AFTER of ``window`` of the pair's grid as float32 COGs.

    NaN where either date is invalid; the bands described as BEFORE names them; CRS and transform
    of the window. Copied a block of BLOCK² pixels at a time (memory: one block of both dates).
    """
    names = pair.band_choice.before_names
    stats = scene_stats(pair)  # the run's, on its whole scenes: recorded so that the site is normalised as it was
    profile = {"driver": "GTiff", "dtype": "float32", "count": pair.band_count, "width": int(window.width),
               "height": int(window.height), "crs": pair.grid.crs, "transform": pair.grid.window_transform(window),
               "nodata": float("nan"), "tiled": True, "blockxsize": 256, "blockysize": 256}
    with tempfile.TemporaryDirectory(dir=before.parent, prefix=".raw-") as scratch:
        raw = [Path(scratch) / "before.tif", Path(scratch) / "after.tif"]
        with rasterio.open(raw[0], "w", **profile) as b, rasterio.open(raw[1], "w", **profile) as a:
            for dst, date_stats in zip((b, a), stats, strict=True):
                dst.update_tags(**{STATS_TAG: json.dumps(date_stats.to_dict())})
                if all(names):
                    dst.descriptions = tuple(str(n) for n in names)
            for block, at in _blocks(window):
                data = pair.read(block)
                b.write(np.where(data.valid, data.before, np.nan).astype(np.float32), window=at)
                a.write(np.where(data.valid, data.after, np.nan).astype(np.float32), window=at)
        for src, dst_path in zip(raw, (before, after), strict=True):
            rasterio.shutil.copy(src, dst_path, driver="COG", compress="DEFLATE", predictor="YES", blocksize=256,
                                 overview_resampling="AVERAGE")


def _blocks(window: Window) -> list[tuple[Window, Window]]:
    """(block of the grid, the same block in the window's own pixels) covering ``window``."""
    col0, row0, width, height = int(window.col_off), int(window.row_off), int(window.width), int(window.height)
    return [(Window(col0 + c, row0 + r, min(BLOCK, width - c), min(BLOCK, height - r)),
             Window(c, r, min(BLOCK, width - c), min(BLOCK, height - r)))
            for r in range(0, height, BLOCK) for c in range(0, width, BLOCK)]


@dataclass(frozen=True)
class LabelledSite:
    """One site written.

    Its name, the run it came from, the window of the run's grid it covers, the run's decisions
    counted (``ReviewedRun.counts``) and who made them.
    """

    name: str
    run: Path
    window: Window
    counts: dict[str, int]
    reviewers: list[str]

    def record(self) -> dict[str, Any]:
        """The site's entry in ``labels.json``."""
        w = self.window
        return {"run": str(self.run.resolve()), "window": {"col_off": int(w.col_off), "row_off": int(w.row_off),
                                                           "width": int(w.width), "height": int(w.height)},
                "decisions": self.counts, "reviewers": self.reviewers}


def write_site(run: ReviewedRun, margin_px: int, folder: Path) -> LabelledSite:
    """``folder``/before.tif, after.tif and changes.gpkg of one reviewed run (see the module docstring)."""
    folder.mkdir()
    with open_as_run(run) as pair:
        window = site_window(run, pair, margin_px)
        write_scenes(pair, window, folder / SITE_IMAGES[0], folder / SITE_IMAGES[1])
        write_gpkg(run.labelled.to_crs(_crs(pair)), folder / VECTOR_LABELS[0], LABEL_LAYER)
    reviewers = sorted({str(r) for r in run.labelled["reviewer"].dropna() if str(r).strip()})
    return LabelledSite(run.name, run.path, window, run.counts, reviewers)


@dataclass(frozen=True)
class LabelsResult:
    """Where the data set is, what each site holds, and one warning line per scene file not checked."""

    outdir: Path
    sites: list[LabelledSite]
    warnings: list[str]


def write_labels(config: LabelsConfig) -> LabelsResult:
    """Write the labelled data set of ``config.runs`` into ``config.outdir`` (see the module docstring).

    Every run's decisions are read and checked before anything is written, and on any error LABELS
    is left as it was. Raises InputFileError for a folder that is not a detect run, holds no confirm
    or dismiss decision, shares its name with another run given, or whose scenes are missing or
    changed (InputChangedError: a scene's checksum differs from the recorded one); DecisionError for
    unreadable decisions; OutputError when LABELS cannot be written or holds files ``labels`` did not write.
    """
    runs = [reviewed_run(r) for r in config.runs]
    names = [r.name for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputFileError(f"runs named {', '.join(twice)} twice: each run becomes the site named as its folder, "
                             "so the folders given must have different names")
    inputs = [str(p) for r in runs for p in (r.path, r.inputs.before, r.inputs.after, *r.inputs.masks)]
    known = {LABELS_RECORD, *names, *_earlier_sites(Path(config.outdir))}
    with StagedDir(config.outdir, known, inputs) as out:
        with out.writing():
            sites = [write_site(run, config.margin_px, out.path(run.name)) for run in runs]
            record = {"changewatch_version": changewatch.__version__,
                      "created_utc": datetime.now(UTC).isoformat(timespec="seconds"), "rule": RULE,
                      "margin_px": config.margin_px, "sites": {s.name: s.record() for s in sites}}
            write_json(record, out.path(LABELS_RECORD))
    return LabelsResult(Path(config.outdir), sites, not_checked([p for r in runs for p in r.unchecked]))


def _earlier_sites(outdir: Path) -> list[str]:
    """The sites an earlier ``labels`` wrote into ``outdir`` (from its labels.json; none when unreadable)."""
    try:
        return [str(n) for n in json.loads((outdir / LABELS_RECORD).read_text(encoding="utf-8"))["sites"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
