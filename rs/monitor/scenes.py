"""The dated scenes of one area (SCENES): a CSV or YAML of ``date,path`` rows, in date order.

CSV: a header ``date,path`` and one row per scene. YAML: a list of mappings with keys ``date``
and ``path`` (or a mapping whose ``scenes:`` is that list). Dates are ISO 8601 calendar dates
(``YYYY-MM-DD``); paths are relative to the SCENES file. Rows may come in any order: they are
sorted by date. A date that is not ISO, a date listed twice, a row without a path, an unknown
column or fewer than two scenes is an error (``ManifestError``, exit code 3) naming the row.
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


def _date(value: object, source: Path, n: int) -> date:
    """The date of row ``n``; YAML hands ISO dates over as dates already. Raises ManifestError."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    text = "" if value is None else str(value).strip()
    try:
        if len(text) == 10:  # YYYY-MM-DD only: fromisoformat also takes 20240105 and week dates
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise ManifestError(f"scenes {source}, row {n}: date {text!r} is not a YYYY-MM-DD date")


def _scenes(rows: list[Any], source: Path) -> list[Scene]:
    """Scenes of the rows, sorted by date. Raises ManifestError naming the row at fault."""
    base = source.resolve().parent
    scenes: dict[date, Scene] = {}
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise ManifestError(f"scenes {source}, row {n}: expected a mapping with date and path")
        unknown = sorted(str(k) for k in row if k not in COLUMNS)
        if unknown:
            raise ManifestError(f"scenes {source}, row {n}: unknown column(s) {', '.join(unknown)} "
                                f"(expected {', '.join(COLUMNS)})")
        when = _date(row.get("date"), source, n)
        path = str(row.get("path") or "").strip()
        if not path:
            raise ManifestError(f"scenes {source}, row {n}: path is empty")
        if when in scenes:
            raise ManifestError(f"scenes {source}, row {n}: date {when} is listed twice")
        scenes[when] = Scene(when, str((base / path).resolve()))
    if len(scenes) < 2:
        raise ManifestError(f"scenes {source} lists {len(scenes)} scene(s): monitoring needs at least two dates")
    return [scenes[d] for d in sorted(scenes)]


def read_scenes(path: str | os.PathLike[str]) -> list[Scene]:
    """The scenes listed in ``path`` (CSV or YAML, see the module docstring), sorted by date.

    Raises ManifestError (exit code 3) when the file is missing, cannot be parsed, or a row is
    wrong (the message names the row).
    """
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"scenes file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
        if p.suffix.lower() in (".yml", ".yaml"):
            data = yaml.safe_load(text)
            rows = data.get("scenes") if isinstance(data, dict) else data
            if not isinstance(rows, list):
                raise ManifestError(f"scenes {p}: expected a list of date, path rows (or a mapping with 'scenes:')")
        else:
            reader = csv.DictReader(io.StringIO(text))
            rows = [{str(k).strip(): v for k, v in r.items()} for r in reader]
    except (yaml.YAMLError, csv.Error, UnicodeDecodeError) as exc:
        raise ManifestError(f"scenes {p} cannot be parsed: {exc}") from exc
    return _scenes(rows, p)


def consecutive_pairs(scenes: list[Scene]) -> list[ScenePair]:
    """Each scene with the next one, in date order (``len(scenes) - 1`` pairs)."""
    return [ScenePair(a, b) for a, b in zip(scenes[:-1], scenes[1:], strict=True)]
