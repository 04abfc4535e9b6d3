"""The dated scenes of one area (SCENES): a CSV or YAML of ``date,path`` rows, in date order.

CSV: a header ``date,path`` and one row per scene. YAML: a list of mappings with keys ``date``
and ``path`` (or a mapping whose ``scenes:`` is that list). Dates are ISO 8601 calendar dates
(``YYYY-MM-DD``); paths are relative to the SCENES file. Rows may come in any order: they are
sorted by date. A date that is not ISO, a date listed twice, a row without a path, an unknown
column or fewer than two scenes is an error (``ManifestError``, exit code 3) naming where it is:
``line N`` of a CSV (the file's line number: the header is line 1, the first scene line 2) or
``entry N`` of a YAML list (its position, from 1). ``check_readable`` checks the scenes' files.

A row whose scene describes its own date — a STAC Item, a Sentinel-2 L2A product (``.SAFE``) — may leave its
date empty: the scene's date is used (the item's ``datetime``, the product's datatake sensing start; UTC dates,
``rs.io.intake.described_date``). A date given is the scene's date, as for any scene.

SCENES may also be a STAC ItemCollection (a GeoJSON FeatureCollection of items) or a catalog
(``catalog.json``, walked with its children) on disk: one scene per item, dated by the item's
``datetime`` (its UTC date; an item with ``datetime`` null takes its ``start_datetime``'s date when
``start_datetime`` and ``end_datetime`` fall on the same UTC day, and is an error otherwise:
``rs.io.stac_scene.item_date``). Two items of the same date are an error, as in a CSV. An item of a
collection file is the scene path ``collection.json#ID``.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from changewatch.rs.errors import ManifestError
from changewatch.rs.io.dates import iso_date
from changewatch.rs.io.gdalpaths import resolve_scene
from changewatch.rs.io.intake import described_date, is_described
from changewatch.rs.io.raster import open_raster
from changewatch.rs.io.stac_scene import collection_items, is_stac_path, item_date

COLUMNS = ("date", "path")


@dataclass(frozen=True)
class Scene:
    """One dated scene: its acquisition date and its path (absolute)."""

    date: date
    path: str


@dataclass(frozen=True)
class ScenePair:
    """Two consecutive scenes; ``name`` (``<date_a>_<date_b>``) is their run folder under ``STORE/pairs``."""

    before: Scene
    after: Scene

    @property
    def name(self) -> str:
        """The pair's folder name, ``YYYY-MM-DD_YYYY-MM-DD``."""
        return f"{self.before.date.isoformat()}_{self.after.date.isoformat()}"


def _date(value: object, where: str) -> date:
    """The date of the row at ``where``; YAML hands ISO dates over as dates already. Raises ManifestError."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    text = "" if value is None else str(value).strip()
    try:
        return iso_date(text)
    except ValueError:
        pass
    raise ManifestError(f"{where}: date {text!r} is not a YYYY-MM-DD date")


def _row_date(value: object, scene_path: str, where: str) -> date:
    """The date of the row at ``where``; left empty for a STAC item or product scene, that scene's own date."""
    if (value is None or not str(value).strip()) and scene_path and is_described(scene_path):
        return described_date(scene_path)
    return _date(value, where)


def _unknown(keys: list[Any], where: str) -> None:
    """Raise ManifestError naming ``where`` when ``keys`` hold a column other than COLUMNS."""
    unknown = sorted(str(k) for k in keys if k not in COLUMNS)
    if unknown:
        raise ManifestError(f"{where}: unknown column(s) {', '.join(unknown)} (expected {', '.join(COLUMNS)})")


def _scenes(rows: list[tuple[str, Any]], source: Path) -> list[Scene]:
    """Scenes of the rows ``(where, row)``, sorted by date. Raises ManifestError naming where the row at fault is."""
    base = source.resolve().parent
    scenes: dict[date, Scene] = {}
    for where, row in rows:
        if not isinstance(row, dict):
            raise ManifestError(f"{where}: expected a mapping with date and path")
        _unknown(list(row), where)
        path = str(row.get("path") or "").strip()
        scene_path = resolve_scene(base, path) if path else ""
        when = _row_date(row.get("date"), scene_path, where)
        if not path:
            raise ManifestError(f"{where}: path is empty")
        if when in scenes:
            raise ManifestError(f"{where}: date {when} is listed twice")
        scenes[when] = Scene(when, scene_path)
    return _by_date(scenes, source)


def _by_date(scenes: dict[date, Scene], source: Path) -> list[Scene]:
    """The scenes of ``source`` sorted by date. Raises ManifestError when there are fewer than two."""
    if len(scenes) < 2:
        raise ManifestError(f"scenes {source} lists {len(scenes)} scene(s): monitoring needs at least two dates")
    return [scenes[d] for d in sorted(scenes)]


def _yaml_rows(text: str, source: Path) -> list[tuple[str, Any]]:
    """The YAML list's entries, each with where it is (``scenes …, entry N``, from 1). Raises ManifestError."""
    data = yaml.safe_load(text)
    rows = data.get("scenes") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ManifestError(f"scenes {source}: expected a list of date, path rows (or a mapping with 'scenes:')")
    return [(f"scenes {source}, entry {n}", row) for n, row in enumerate(rows, start=1)]


def _csv_rows(text: str, source: Path) -> list[tuple[str, Any]]:
    """The CSV's rows, each with where it is (``scenes …, line N``: the header is line 1). Raises ManifestError."""
    reader = csv.DictReader(io.StringIO(text))
    _unknown([str(k).strip() for k in reader.fieldnames or ()], f"scenes {source}, line 1")
    # line_num: the file's lines read so far, blank lines (which DictReader skips) included
    return [(f"scenes {source}, line {reader.line_num}", {str(k).strip(): v for k, v in row.items()})
            for row in reader]


def read_scenes(path: str | os.PathLike[str]) -> list[Scene]:
    """The scenes listed in ``path`` (CSV or YAML, see the module docstring), sorted by date.

    Raises ManifestError (exit code 3) when the file is missing, cannot be parsed, or a row is
    wrong (the message names its CSV line or YAML entry).
    """
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"scenes file not found: {p}")
    if is_stac_path(p):
        return _stac_scenes(p)
    try:
        text = p.read_text(encoding="utf-8-sig")
        rows = _yaml_rows(text, p) if p.suffix.lower() in (".yml", ".yaml") else _csv_rows(text, p)
    except (yaml.YAMLError, csv.Error, UnicodeDecodeError) as exc:
        raise ManifestError(f"scenes {p} cannot be parsed: {exc}") from exc
    return _scenes(rows, p)


def _stac_scenes(path: Path) -> list[Scene]:
    """The scenes of a STAC ItemCollection or catalog file: one per item, dated by ``item_date``, sorted.

    Raises ManifestError for two items of the same date or fewer than two items, StacItemError for the file.
    """
    scenes: dict[date, Scene] = {}
    for scene_path, item in collection_items(path):
        where = f"scenes {path}, item {item.get('id')!r}"
        when = item_date(item, where)
        if when in scenes:
            raise ManifestError(f"{where}: date {when} is listed twice (also item {scenes[when].path})")
        scenes[when] = Scene(when, scene_path)
    return _by_date(scenes, path)


def check_readable(scenes: list[Scene], bands: tuple[str, ...] | None = None) -> None:
    """Raise InputFileError (exit code 3) unless every scene's file exists and opens as a raster.

    Monitor checks this before any pair is touched, so that a bad SCENES leaves the store as it was.
    ``bands``: the bands compared (``--bands``), which a STAC item scene must offer (else
    IncompatibleScenesError, exit code 4).
    """
    for scene in scenes:
        with open_raster(scene.path, f"scene {scene.date}", bands):
            pass


def consecutive_pairs(scenes: list[Scene]) -> list[ScenePair]:
    """Each scene with the next one, in date order (``len(scenes) - 1`` pairs)."""
    return [ScenePair(a, b) for a, b in zip(scenes[:-1], scenes[1:], strict=True)]
