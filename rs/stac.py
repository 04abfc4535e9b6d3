"""The STAC Item of an export (``item.json``): what the export wrote, where it came from, checked offline.

``stac_item`` describes one export folder as a STAC 1.1 Item that stays valid when the folder is moved or
zipped:

- assets: only the files this export wrote, each with a relative href (``./changes.geojson``), its media type,
  its roles (``data``; ``metadata`` for styles and the Shapefile field-name table) and its size and SHA-256
  (File Info extension: ``file:size``, ``file:checksum`` as a multihash). A Shapefile is one asset per layer
  (``shapefile/LAYER``): its href is the ``.shp``, which GDAL, QGIS and STAC browsers open and which finds its
  parts beside it; the parts (``.shx``, ``.dbf``, ``.prj``, ``.cpg``) are listed with their own size and checksum
  under ``changewatch:parts``. They are not ``alternate`` hrefs: the alternate-assets extension means the same
  file elsewhere, and a client falling back to one would fetch a ``.dbf`` as the layer;
- links: one ``derived_from`` link per input (the run folder's files the export read, checksummed now, and the
  files the run itself read, checksummed when it ran: ``RunSummary.inputs.files``), with its absolute
  ``file://`` href on the machine that ran, ``file:size`` and ``file:checksum``;
- ``datetime``: the date the rules were judged on (as-of); ``start_datetime``/``end_datetime``: the whole UTC
  days of the BEFORE and AFTER acquisitions when the run recorded both (a detect run of dated scenes).

``validate_item`` checks an item against the JSON schemas bundled in ``rs/schemas`` (pystac's validator, never
the network).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd

from changewatch.rs.monitor.history import HISTORY_GPKG
from changewatch.rs.runfolder import (
    CHANGE_PROB,
    CHANGES_GPKG,
    FLAGGED_GPKG,
    LAYER_CHANGES,
    LAYER_TRACKED_CHANGES,
    summary_path,
)
from changewatch.rs.summary import FileRecord, RunSummary

SCHEMAS = Path(__file__).with_name("schemas")  # each schema under the path of its URI (see its README)
FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
GEOGRAPHIC = "EPSG:4326"
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
# media type and roles by file suffix; a Shapefile's parts by theirs
ASSET_KINDS: dict[str, tuple[str, list[str]]] = {
    ".gpkg": ("application/geopackage+sqlite3", ["data"]), ".parquet": ("application/vnd.apache.parquet", ["data"]),
    ".geojson": ("application/geo+json", ["data"]), ".csv": ("text/csv", ["data"]), ".tif": (COG, ["data"]),
    ".qml": ("application/xml", ["metadata"]), ".shp": ("application/vnd.shp", ["data"]),
}
SHAPEFILE_PARTS = {".shx": "application/vnd.shx", ".dbf": "application/vnd.dbf", ".prj": "text/plain",
                   ".cpg": "text/plain"}
METADATA_FILES = ("field_names.csv",)  # tables about the data rather than data (shapefile/field_names.csv)
INPUT_TYPES = {".tif": "image/tiff; application=geotiff", ".tiff": "image/tiff; application=geotiff",
               ".json": "application/json", **{k: v[0] for k, v in ASSET_KINDS.items() if k != ".tif"}}


def _file_fields(path: Path) -> dict[str, Any]:
    record = FileRecord.of(path)
    return {"file:size": record.size, "file:checksum": record.checksum}


def _asset(root: Path, path: Path) -> dict[str, Any]:
    """The asset of one file of the export: relative href, media type, roles, size and checksum."""
    kind, roles = ASSET_KINDS.get(path.suffix.lower(), ("application/octet-stream", ["data"]))
    if path.name in METADATA_FILES:
        roles = ["metadata"]
    asset = {"href": "./" + path.relative_to(root).as_posix(), "type": kind, "roles": roles, **_file_fields(path)}
    if path.suffix.lower() == ".shp":
        asset["changewatch:parts"] = {
            suffix: {"href": "./" + part.relative_to(root).as_posix(), "type": part_type, **_file_fields(part)}
            for suffix, part_type in SHAPEFILE_PARTS.items() if (part := path.with_suffix(suffix)).is_file()}
    return asset


def export_assets(root: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The assets of what the export wrote, keyed by path relative to ``root``.

    ``names``: what the export wrote, relative to ``root`` (a folder stands for the files in it). A Shapefile is
    one asset (``shapefile/LAYER``), its parts in it.
    """
    assets = {}
    for name in names:
        p = root / name
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for f in files:
            if f.suffix.lower() in SHAPEFILE_PARTS:
                continue  # in the asset of its .shp
            key = f.relative_to(root).with_suffix("").as_posix() if f.suffix.lower() == ".shp" else \
                f.relative_to(root).as_posix()
            assets[key] = _asset(root, f)
    return assets


def _derived_from(path: str | Path, record: FileRecord | None, title: str) -> dict[str, Any]:
    """A ``derived_from`` link to an input file (absolute ``file://`` href), with its size and checksum."""
    p = Path(path)
    link = {"rel": "derived_from", "href": p.as_uri(), "title": title,
            "type": INPUT_TYPES.get(p.suffix.lower(), "application/octet-stream")}
    fields = _file_fields(p) if record is None else {"file:size": record.size, "file:checksum": record.checksum}
    return {**link, **fields}


def _input_role(path: str, summary: RunSummary) -> str:
    """What an input file of the run was (``before scene``, ``permits``, ``model``…), else its name."""
    inputs = summary.inputs
    roles = {getattr(inputs, name, None): f"{name} scene" for name in ("before", "after")}
    roles[getattr(inputs, "changes", None)] = "change layer"
    roles.update({mask: "mask" for mask in getattr(inputs, "masks", [])})
    if summary.model:
        model = Path(summary.model.path)
        roles[str(model.with_suffix(".json"))] = "model"
        roles[str(model.with_suffix(".safetensors"))] = "model weights"
    for name in ("permits", "zoning", "parcels"):
        where = getattr(inputs, name)
        if where:
            roles[where if Path(where).exists() else where.rsplit(":", 1)[0]] = name
    return roles.get(path) or Path(path).name


def input_links(run_dir: Path, summary: RunSummary | None) -> list[dict[str, Any]]:
    """The ``derived_from`` links of an export of ``run_dir``.

    First the run folder's files the export read (checksummed now), then the files the run read (checksummed when
    it ran, as its summary records).
    """
    read = [p for p in (summary_path(run_dir), run_dir / CHANGES_GPKG, run_dir / FLAGGED_GPKG, run_dir / CHANGE_PROB,
                        run_dir / HISTORY_GPKG) if p is not None and p.is_file()]
    links = [_derived_from(p.resolve(), None, f"run folder: {p.name}") for p in read]
    if summary is not None:
        links += [_derived_from(path, record, _input_role(path, summary))
                  for path, record in summary.inputs.files.items()]
    return links


def _times(summary: RunSummary | None, latest: date | None = None) -> dict[str, Any]:
    """The item's times: ``datetime`` (as-of, else ``latest``, else now), and the scenes' start/end datetimes.

    ``start_datetime``/``end_datetime`` only when the run recorded both scene dates; they span whole UTC days.
    """
    as_of = summary.rules.as_of if summary else (latest.isoformat() if latest else None)
    when = datetime.combine(date.fromisoformat(as_of), datetime.min.time(), tzinfo=UTC) if as_of \
        else datetime.now(UTC)
    times: dict[str, Any] = {"datetime": when}
    before, after = (getattr(summary.inputs, f"{d}_date", None) if summary else None for d in ("before", "after"))
    if before and after:
        times["start_datetime"] = datetime.combine(date.fromisoformat(before), datetime.min.time(), UTC)
        times["end_datetime"] = datetime.combine(date.fromisoformat(after), datetime.max.time(), UTC) \
            .replace(microsecond=0)
    return times


def stac_item(run_dir: Path, export_dir: Path, names: list[str], layers: dict[str, gpd.GeoDataFrame],
              shapefile: dict[str, Any] | None = None, latest: date | None = None) -> dict[str, Any]:
    """The STAC Item (as a dict) of an export of ``run_dir`` written into ``export_dir``.

    ``names``: what the export wrote, relative to ``export_dir`` (see the module docstring). The item holds the
    footprint (EPSG:4326 bounding box of the changes), times, inputs, model, thresholds, rules, software version,
    and under ``changewatch:shapefile`` what the Shapefiles could not hold (``rs.export.Exports.shapefile_record``).
    A monitor store (``run_dir`` holding ``history.gpkg``, no summary): footprint of its ``tracked_changes``,
    ``datetime`` its ``latest`` AFTER date, ``history.gpkg`` its input.
    """
    import pystac
    import shapely

    import changewatch
    from changewatch.rs.runfolder import read_summary

    summary = read_summary(run_dir) if summary_path(run_dir) else None
    record = summary.to_dict() if summary else {}
    changes = layers[LAYER_CHANGES] if LAYER_CHANGES in layers else layers[LAYER_TRACKED_CHANGES]
    bounds = [float(v) for v in changes.to_crs(GEOGRAPHIC).total_bounds] if len(changes) else None
    times = _times(summary, latest)
    item = pystac.Item(
        id=f"changewatch-{run_dir.resolve().name}", bbox=bounds, datetime=times["datetime"],
        geometry=shapely.geometry.mapping(shapely.box(bounds[0], bounds[1], bounds[2], bounds[3])) if bounds else None,
        start_datetime=times.get("start_datetime"), end_datetime=times.get("end_datetime"),
        properties={"changewatch:version": changewatch.__version__, "changewatch:counts": record.get("counts"),
                    "changewatch:inputs": record.get("inputs"), "changewatch:model": record.get("model"),
                    "changewatch:thresholds": record.get("thresholds"), "changewatch:rules": record.get("rules"),
                    "changewatch:shapefile": shapefile or {}},
        stac_extensions=[FILE_EXTENSION],
    )
    data = item.to_dict(include_self_link=False)
    data["assets"] = export_assets(export_dir, names)
    data["links"] = input_links(run_dir, summary)
    return data


def bundled_schemas() -> dict[str, dict[str, Any]]:
    """The JSON schemas in ``rs/schemas``, keyed by the URI each is published at (``https://`` + its path)."""
    import json

    return {"https://" + p.relative_to(SCHEMAS).as_posix(): json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(SCHEMAS.rglob("*.json"))}


def validate_item(item: dict[str, Any]) -> None:
    """Check a STAC Item (a dict) against the bundled JSON schemas of its STAC version and extensions.

    pystac's ``JsonSchemaSTACValidator`` does the checking, with only the bundled schemas: nothing is fetched.

    Raises ValueError when the item names a schema that is not bundled, pystac's STACValidationError when it is
    not valid.
    """
    from pystac import STACObjectType
    from pystac.validation import JsonSchemaSTACValidator, validate_dict
    from pystac.validation.schema_uri_map import DefaultSchemaUriMap

    schemas = bundled_schemas()
    core = DefaultSchemaUriMap().get_object_schema_uri(STACObjectType.ITEM, item["stac_version"])
    missing = [uri for uri in (core, *item.get("stac_extensions", [])) if uri not in schemas]
    if missing:
        raise ValueError(f"no bundled schema for {', '.join(map(str, missing))} (see {SCHEMAS / 'README.md'})")
    validator = JsonSchemaSTACValidator()
    validator.schema_cache = schemas  # only these: a schema not among them would be fetched
    validate_dict(item, validator=validator)
