"""What ``export`` reads from a monitor store, and ``--since``: the tracked changes new since a date.

A folder holding ``history.gpkg`` is a monitor store (``rs.monitor.run``); ``export`` writes its
layers through the same writers as a run folder's (``rs.export.write_exports``), named as in
``rs.runfolder.STORE_LAYERS``:

- ``tracked_changes``: the store's layer ``changes`` (one row per tracked change);
- ``observations``: their observations (change × date);
- ``parcel_history``: parcel × date flagged (``rs.monitor.parcels``).

``since`` (``export --since``, an ISO ``YYYY-MM-DD`` date) keeps the tracked changes first seen on or
after that date, their observations, and the whole history (every date) of each parcel on which one
of them was flagged, so an inspector sees what the parcel had before. ``--since`` applies to stores
only: a detect or crosscheck run folder has a single AFTER date, so it is an error there
(``OptionError``), not a filter that would keep all or nothing.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import geopandas as gpd

from changewatch.rs.errors import OptionError
from changewatch.rs.io.dates import iso_date
from changewatch.rs.monitor.history import HISTORY_GPKG, read_history
from changewatch.rs.runfolder import (
    LAYER_OBSERVATIONS,
    LAYER_PARCEL_HISTORY,
    LAYER_TRACKED_CHANGES,
    read_run_layers,
)


def parse_since(text: str) -> date:
    """The date of ``--since``: ISO ``YYYY-MM-DD`` only. Raises OptionError (exit code 2) naming the value."""
    try:
        return iso_date(text)
    except ValueError as exc:
        raise OptionError(f"--since {text!r} is not a date: give it as YYYY-MM-DD (ISO 8601), e.g. 2024-05-01") from exc


def is_store(folder: Path) -> bool:
    """Whether ``folder`` is a monitor store (it holds ``history.gpkg``)."""
    return (folder / HISTORY_GPKG).is_file()


def read_store_layers(store: Path, since: date | None = None) -> tuple[dict[str, gpd.GeoDataFrame], date | None]:
    """A store's layers as ``export`` writes them (see the module), and its latest AFTER date (None: no pair).

    Kept to the changes first seen on or after ``since`` when given. CRS: the store's. Raises
    InputFileError when ``history.gpkg`` or one of its layers cannot be read.
    """
    history = read_history(store / HISTORY_GPKG)
    changes, observations, parcels = history.changes, history.observations, history.parcels
    if since is not None:
        changes = changes[changes["first_seen"] >= since.isoformat()].reset_index(drop=True)  # ISO dates sort
        kept = set(changes["change_id"])
        observations = observations[observations["change_id"].isin(kept)].reset_index(drop=True)
        on = parcels["change_ids"].fillna("").map(lambda text: bool(kept & set(str(text).split(","))))
        parcels = parcels[parcels["parcel_id"].isin(set(parcels.loc[on, "parcel_id"]))].reset_index(drop=True)
    latest = date.fromisoformat(str(max(history.dates["date"]))) if len(history.dates) else None
    return {LAYER_TRACKED_CHANGES: changes, LAYER_OBSERVATIONS: observations, LAYER_PARCEL_HISTORY: parcels}, latest


def read_export_layers(folder: Path, since: date | None = None) -> tuple[dict[str, gpd.GeoDataFrame], date | None]:
    """The layers ``export`` writes from ``folder`` (a store, or a run folder), and a store's latest date.

    A store's layers (``read_store_layers``) with its latest AFTER date; a run folder's
    (``rs.runfolder.read_run_layers``) with None. Raises OptionError for ``since`` with a run
    folder, InputFileError for a folder that is neither.
    """
    if is_store(folder):
        return read_store_layers(folder, since)
    if since is not None:
        read_run_layers(folder)  # a folder that is no run at all is that error first
        raise OptionError(f"--since applies to a monitor store (a folder with {HISTORY_GPKG}); {folder} is a run "
                          "folder, with a single AFTER date: export it without --since")
    return read_run_layers(folder), None
