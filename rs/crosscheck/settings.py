"""The cross-check's settings: column names, how each layer file is read, date formats, tolerances.

Everything here can come from the ``--columns`` file (YAML or TOML), read by ``load_settings``::

    permits:                      # our name: the layer's column (and how to read the layer)
      permit_id: SO_GIAY_PHEP
      issued: NGAY_CAP
      expires: NGAY_HET_HAN
      date_format: "%d/%m/%Y"     # or a list of formats, or dayfirst: true
      layer: permits_2018         # which layer of a GeoPackage holding several
      crs: EPSG:4326              # for a layer without a CRS (CSV, Shapefile without .prj)
      wkt: WKT                    # CSV only: the WKT geometry column (or x: lon, y: lat)
    zoning: {construction_allowed: DUOC_XAY}
    parcels: {parcel_id: MA_THUA, ward: PHUONG, owner: CHU_SO_HUU}
    changes: {crs: EPSG:4326}     # crosscheck's CHANGES layer: layer, crs, wkt, x/y only
    exceed_min_m2: 20
    exceed_min_fraction: 0.10
    demolition_needs_permit: false  # true: demolitions are judged like construction, not DEMOLISHED

A file that is not such a mapping, an unknown key, a value of the wrong type (a list where a
column name belongs, a tolerance that is not a number) or an unknown CRS is an InputFileError
(exit 3) naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pyproj import CRS
from pyproj.exceptions import CRSError

from changewatch.rs.errors import InputFileError

if TYPE_CHECKING:
    from changewatch.rs.crosscheck.layers import Extent, Layers

# From this many changes + other features on, the join runs partitioned on dask-geopandas. On one
# 2-core machine the plain STRtree join was faster at every size benchmarked (bench/RESULTS.md), so
# the partitioned join is kept for layers beyond those sizes.
DASK_MIN_FEATURES = 5_000_000


@dataclass(frozen=True)
class PermitColumns:
    """Column names of the permit layer (dates: see ``DateFormat``)."""

    permit_id: str = "permit_id"
    issued: str = "issued"
    expires: str = "expires"
    status: str = "status"


@dataclass(frozen=True)
class ZoningColumns:
    """Column names of the zoning/planning layer (``construction_allowed``: boolean, yes/no, 1/0)."""

    zone_id: str = "zone_id"
    zone_class: str = "zone_class"
    construction_allowed: str = "construction_allowed"


@dataclass(frozen=True)
class ParcelColumns:
    """Column names of the parcel layer (``owner``: optional, carried into the parcel table)."""

    parcel_id: str = "parcel_id"
    ward: str = "ward"
    owner: str | None = None


@dataclass(frozen=True)
class DateFormat:
    """How the permit layer's text dates are read (``rs.crosscheck.values.parse_dates``).

    ``formats``: strptime formats (e.g. ``%d/%m/%Y``, ``%d-%m-%Y %H:%M``); every text date must
    match one of them. ``dayfirst``: day/month/year text in any layout dateutil reads (05/03/2023,
    5-3-2023 10:00, 5 March 2023), and ISO 8601 values read as ISO. Neither: every text date must
    be ISO 8601 (2023-03-05, with or without a time and UTC offset) — anything else is an error
    asking for one of the two, never a guess. Columns the file types as dates are used as they are.
    """

    formats: tuple[str, ...] = ()
    dayfirst: bool = False

    def describe(self) -> str:
        """The rule in words, for messages and summaries."""
        if self.formats:
            return "date_format " + " or ".join(repr(f) for f in self.formats)
        return "day-first dates (dayfirst: true)" if self.dayfirst else "ISO 8601 dates (YYYY-MM-DD)"


@dataclass(frozen=True)
class Source:
    """How one layer file is read: which layer, its CRS when it has none, and a CSV's geometry.

    ``layer`` of a file holding several (a GeoPackage); ``crs`` for a file without one (CSV,
    Shapefile without .prj; must agree with the file's own when it has one); for a CSV, its
    geometry: a ``wkt`` column (default: a column named ``wkt``, any case) or ``x`` and ``y``
    columns (points).
    """

    layer: str | None = None
    crs: str | None = None
    wkt: str | None = None
    x: str | None = None
    y: str | None = None


@dataclass(frozen=True)
class Sources:
    """How each layer's file is read (``changes``: the change layer of ``crosscheck``)."""

    permits: Source = field(default_factory=Source)
    zoning: Source = field(default_factory=Source)
    parcels: Source = field(default_factory=Source)
    changes: Source = field(default_factory=Source)


@dataclass(frozen=True)
class RuleConfig:
    """How changes are judged: as-of date, EXCEEDS_PERMIT tolerances, demolitions, column names, dates.

    The as-of date the rules are judged on (None: today), the EXCEEDS_PERMIT tolerances (m²,
    fraction of the change), whether demolitions are judged like construction (else they get
    DEMOLISHED alone), the permit and zoning column names and how permit dates are read.
    """

    as_of: date | None = None
    exceed_min_m2: float = 20.0
    exceed_min_fraction: float = 0.10
    demolition_needs_permit: bool = False
    permit_columns: PermitColumns = field(default_factory=PermitColumns)
    zoning_columns: ZoningColumns = field(default_factory=ZoningColumns)
    dates: DateFormat = field(default_factory=DateFormat)
    dask_min_features: int = DASK_MIN_FEATURES


@dataclass(frozen=True)
class CrosscheckInputs:
    """The reference layers of a run and how to read and judge them.

    Paths, each optional; ``file:layer`` picks a layer.
    """

    permits: str | None = None
    zoning: str | None = None
    parcels: str | None = None
    rules: RuleConfig = field(default_factory=RuleConfig)
    parcel_columns: ParcelColumns = field(default_factory=ParcelColumns)
    sources: Sources = field(default_factory=Sources)

    def read(self, extent: Extent | None = None) -> Layers:
        """The layers, read and checked (``rs.crosscheck.layers.read_layers``).

        ``extent`` = ((left, bottom, right, top), crs): only the features meeting it.
        """
        from changewatch.rs.crosscheck.layers import read_layers

        return read_layers(self, extent)


@dataclass(frozen=True)
class Settings:
    """What a ``--columns`` file sets (defaults without one)."""

    rules: RuleConfig = field(default_factory=RuleConfig)
    parcel_columns: ParcelColumns = field(default_factory=ParcelColumns)
    sources: Sources = field(default_factory=Sources)


COLUMN_SECTIONS: dict[str, type[PermitColumns | ZoningColumns | ParcelColumns]] = {
    "permits": PermitColumns, "zoning": ZoningColumns, "parcels": ParcelColumns}
DATE_KEYS = ("date_format", "dayfirst")
SOURCE_KEYS = tuple(f.name for f in fields(Source))
TOLERANCES = {"exceed_min_m2": (0.0, None), "exceed_min_fraction": (0.0, 1.0)}  # key: (min, max)
DEMOLITION_KEY = "demolition_needs_permit"


def _read_mapping(p: Path) -> dict[str, Any]:
    try:
        if p.suffix.lower() == ".toml":
            data: Any = tomllib.loads(p.read_text(encoding="utf-8"))
        else:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputFileError(f"columns config {p} cannot be parsed: {' '.join(str(exc).split())}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputFileError(f"columns config {p} must be a mapping with sections permits:, zoning:, parcels: "
                             f"(and exceed_min_m2:, exceed_min_fraction:); found a {type(data).__name__}")
    return data


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputFileError(f"{where} must be text (a column or layer name), not {value!r}")
    return value


def _number(value: object, key: str, where: str) -> float:
    low, high = TOLERANCES[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InputFileError(f"{where}: {key} must be a number, not {value!r}")
    if value < low or (high is not None and value > high):
        raise InputFileError(f"{where}: {key} must be ≥ {low:g}" + (f" and ≤ {high:g}" if high is not None else "")
                             + f", not {value!r}")
    return float(value)


def _dates(values: dict[str, Any], where: str) -> DateFormat:
    given = values.get("date_format")
    dayfirst = values.get("dayfirst", False)
    if not isinstance(dayfirst, bool):
        raise InputFileError(f"{where}: dayfirst must be true or false, not {dayfirst!r}")
    if given is None:
        return DateFormat(dayfirst=dayfirst)
    formats = [given] if isinstance(given, str) else given
    if not isinstance(formats, list) or not formats or not all(isinstance(f, str) and "%" in f for f in formats):
        raise InputFileError(f"{where}: date_format must be a strptime format such as '%d/%m/%Y' (or a list of "
                             f"them), not {given!r}")
    if dayfirst:
        raise InputFileError(f"{where}: give date_format or dayfirst, not both")
    return DateFormat(formats=tuple(formats))


def _source(values: dict[str, Any], where: str) -> Source:
    chosen = {k: _text(values[k], f"{where}: {k}") for k in SOURCE_KEYS if values.get(k) is not None and k != "crs"}
    if "crs" in values:
        try:
            chosen["crs"] = CRS.from_user_input(values["crs"]).to_string()
        except CRSError as exc:
            raise InputFileError(f"{where}: crs {values['crs']!r} is not a CRS (use e.g. EPSG:4326): {exc}") from exc
    if ("x" in chosen) != ("y" in chosen):
        raise InputFileError(f"{where}: x and y name the two coordinate columns: give both")
    if "wkt" in chosen and "x" in chosen:
        raise InputFileError(f"{where}: give the geometry as wkt or as x and y, not both")
    return Source(**chosen)


def load_settings(path: str | os.PathLike[str] | None) -> Settings:
    """Column names, layer sources, date formats and tolerances from a YAML or TOML file; defaults without one.

    The file is YAML (.yaml/.yml) or TOML (.toml); see the module docstring.

    Raises InputFileError (exit 3) when the file is missing, cannot be parsed, is not a mapping,
    has an unknown key, or a value of the wrong type or out of range.
    """
    if path is None:
        return Settings()
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"columns config not found: {p}")
    data = _read_mapping(p)
    unknown = set(data) - set(COLUMN_SECTIONS) - {"changes", DEMOLITION_KEY} - set(TOLERANCES)
    if unknown:
        raise InputFileError(f"columns config {p}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                             f"(known: {', '.join([*COLUMN_SECTIONS, 'changes', *TOLERANCES, DEMOLITION_KEY])})")
    columns: dict[str, Any] = {}  # section: its column names (PermitColumns, ZoningColumns, ParcelColumns)
    sources, dates = {}, DateFormat()
    for section, cls in (*COLUMN_SECTIONS.items(), ("changes", None)):
        where = f"columns config {p}, {section}"
        values = data.get(section) or {}
        names = tuple(cls.__dataclass_fields__) if cls else ()
        if not isinstance(values, dict):
            raise InputFileError(f"{where} must be a mapping of our column name to yours (e.g. "
                                 f"{(names or SOURCE_KEYS)[0]}: NAME), not a {type(values).__name__}")
        allowed = (*names, *SOURCE_KEYS, *(DATE_KEYS if section == "permits" else ()))
        bad = set(values) - set(allowed)
        if bad:
            raise InputFileError(f"{where}: unknown key(s) {', '.join(sorted(map(str, bad)))} "
                                 f"(known: {', '.join(allowed)})")
        if cls:
            columns[section] = cls(**{k: _text(v, f"{where}: {k}") for k, v in values.items() if k in names})
        sources[section] = _source(values, where)
        if section == "permits":
            dates = _dates(values, where)
    tolerances: dict[str, Any] = {k: _number(data[k], k, f"columns config {p}") for k in TOLERANCES if k in data}
    demolition = data.get(DEMOLITION_KEY, RuleConfig.demolition_needs_permit)
    if not isinstance(demolition, bool):
        raise InputFileError(f"columns config {p}: {DEMOLITION_KEY} must be true or false, not {demolition!r}")
    rules = RuleConfig(permit_columns=columns["permits"], zoning_columns=columns["zoning"], dates=dates,
                       demolition_needs_permit=demolition, **tolerances)
    return Settings(rules, columns["parcels"], Sources(**sources))
