"""Stage 6 — export: a run folder's layers in the formats GIS desks use, with a STAC record.

``export_run`` reads a detect or crosscheck run folder (``rs.runfolder``) and writes its layers as
one GeoPackage, GeoParquet, GeoJSON, CSV and Shapefiles (nothing lost: long Shapefile field names
are renamed and recorded, long text kept whole in a side table), and a STAC Item with every file's
checksum, into a folder replaced as a whole when the export has succeeded (``StagedOutput``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from changewatch.rs.config import CsvGeometry, ExportConfig, ExportFormat
from changewatch.rs.grid import metric_crs
from changewatch.rs.io.files import sha256, write_json
from changewatch.rs.io.vector import write_gpkg, write_table, write_vector
from changewatch.rs.runfolder import (
    EXPORT_GPKG,
    LAYER_CHANGES,
    LAYER_LINKS,
    SHAPEFILE_FOLDER,
    STAC_ITEM,
    StagedOutput,
    read_run_layers,
    read_summary,
    summary_path,
)

# Shapefile (dBASE) field names stop at 10 bytes: the long ones get these names (others are cut, see
# ``shapefile_fields``), and text stops at 254 bytes (longer values are cut, and kept whole beside it).
SHAPEFILE_NAMES = {"valid_permit_ids": "valid_pids", "flagged_area_m2": "flag_am2", "worst_reason": "worst_rsn",
                   "change_type": "chg_type"}
DBF_NAME_BYTES = 10
DBF_TEXT_BYTES = 254
SHAPEFILE_KEYS = ("change_id", "parcel_id")  # what a side table of full values is keyed by, first found
GEOGRAPHIC = "EPSG:4326"


def _csv(gdf: gpd.GeoDataFrame, path: Path, geometry: str) -> None:
    """CSV in EPSG:4326: geometry as a ``wkt`` column, or as ``lon``/``lat`` of the centroid."""
    g = gdf.to_crs(GEOGRAPHIC)
    table = pd.DataFrame(g.drop(columns="geometry"))
    if geometry == "wkt":
        table["wkt"] = g.geometry.to_wkt(rounding_precision=10)  # 1e-10° ≈ 0.01 mm
    else:  # centroid of the polygon, computed in local UTM so it is exact on the ground
        centres = gdf.geometry.to_crs(metric_crs(gdf)).centroid.to_crs(GEOGRAPHIC) if len(gdf) else g.geometry
        table["lon"], table["lat"] = centres.x, centres.y
    table.to_csv(path, index=False)


def _utf8_prefix(text: str, limit: int) -> str:
    """The longest prefix of ``text`` of at most ``limit`` bytes in UTF-8, cut between characters."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def shapefile_fields(columns: list[str]) -> dict[str, str]:
    """Shapefile field names for ``columns`` (geometry excluded); only the names that change.

    SHAPEFILE_NAMES for ours, else a name longer than 10 bytes (UTF-8) cut between characters, a
    repeat made unique with ``_1``, ``_2``…; returns only the names that change (our name →
    Shapefile name).
    """
    renamed: dict[str, str] = {}
    taken = {c.lower() for c in columns if len(c.encode("utf-8")) <= DBF_NAME_BYTES and c not in SHAPEFILE_NAMES}
    for column in columns:
        if column not in SHAPEFILE_NAMES and len(column.encode("utf-8")) <= DBF_NAME_BYTES:
            continue
        short = SHAPEFILE_NAMES.get(column) or _utf8_prefix(column, DBF_NAME_BYTES)
        n = 0
        while short.lower() in taken:
            n += 1
            short = _utf8_prefix(column, DBF_NAME_BYTES - len(f"_{n}")) + f"_{n}"
        taken.add(short.lower())
        renamed[column] = short
    return renamed


@dataclass(frozen=True)
class Shortened:
    """What one layer's Shapefile could not hold: fields renamed, text values cut, and their side table.

    Fields renamed (our name → Shapefile name), text values cut to 254 bytes (column → how many),
    and the side table holding those values whole (path relative to the export folder; None when
    nothing was cut).
    """

    fields: dict[str, str] = field(default_factory=dict)
    values: dict[str, int] = field(default_factory=dict)
    full_values: str | None = None


def write_shapefile(gdf: gpd.GeoDataFrame, folder: Path, name: str) -> Shortened:
    """Write ``folder/name.shp`` (UTF-8, CRS kept), with nothing lost silently; returns what was shortened.

    Long field names are renamed (``shapefile_fields``), and text longer than dBASE's 254 bytes is
    cut between characters in the Shapefile and written whole to ``folder/name_full_values.csv``
    (keyed by ``change_id`` or ``parcel_id``, else by ``row``, 1-based; columns under our names).
    """
    table = gdf.copy()
    cut: dict[str, int] = {}
    long_rows = np.zeros(len(table), bool)
    for column in table.columns.drop([table.geometry.name]):
        if not (pd.api.types.is_object_dtype(table[column]) or pd.api.types.is_string_dtype(table[column])):
            continue
        text = table[column].astype(object)
        present = text.notna().to_numpy()
        nbytes = np.zeros(len(text), np.int64)
        nbytes[present] = [len(str(v).encode("utf-8")) for v in text[present]]
        over = nbytes > DBF_TEXT_BYTES
        if over.any():
            cut[column] = int(over.sum())
            long_rows |= over
            table.loc[over, column] = [_utf8_prefix(str(v), DBF_TEXT_BYTES) for v in text[over]]
    full_values = None
    if cut:
        key = next((k for k in SHAPEFILE_KEYS if k in gdf), None)
        side = pd.DataFrame(gdf.loc[long_rows, [*([key] if key else []), *cut]])
        if key is None:
            side.insert(0, "row", np.flatnonzero(long_rows) + 1)
        side.to_csv(folder / f"{name}_full_values.csv", index=False)
        full_values = f"{folder.name}/{name}_full_values.csv"
    renamed = shapefile_fields([c for c in table.columns if c != table.geometry.name])
    write_vector(table.rename(columns=renamed), folder / f"{name}.shp", "ESRI Shapefile", encoding="UTF-8")
    return Shortened(renamed, cut, full_values)


@dataclass(frozen=True)
class Exports:
    """What ``write_exports`` wrote: file and folder names, and per layer what its Shapefile could not hold.

    Only layers with something shortened are listed.
    """

    names: list[str]
    shapefile: dict[str, Shortened]

    def shapefile_record(self) -> dict[str, Any]:
        """The shortenings as plain data (for ``item.json``)."""
        return {layer: asdict(s) for layer, s in self.shapefile.items()}


def write_exports(layers: dict[str, gpd.GeoDataFrame], out: StagedOutput, formats: tuple[ExportFormat, ...],
                  csv_geometry: CsvGeometry) -> Exports:
    """Write ``layers`` in each of ``formats`` into the staging folder.

    Returns the names written and what the Shapefiles could not hold.

    gpkg: one ``changewatch.gpkg`` with every layer (CRS kept); parquet: GeoParquet 1.1 with a
    bbox covering column, one file per layer (CRS kept); geojson: EPSG:4326 (RFC 7946); csv:
    EPSG:4326, WKT or centroid lon/lat; shp: one Shapefile per layer in ``shapefile/``
    (``write_shapefile``: long field names shortened as in SHAPEFILE_NAMES, long text kept whole in
    a side table), and ``shapefile/field_names.csv`` (layer, field, shapefile_field) when a field
    was renamed.
    """
    names = []
    shortened: dict[str, Shortened] = {}
    links = layers.get(LAYER_LINKS)
    if links is not None:  # a table without geometry: GeoPackage attribute table, Parquet and CSV only
        if "gpkg" in formats:
            write_table(links, out.path(EXPORT_GPKG), LAYER_LINKS)
        if "parquet" in formats:
            links.to_parquet(out.path(f"{LAYER_LINKS}.parquet"), index=False)
            names.append(f"{LAYER_LINKS}.parquet")
        if "csv" in formats:
            links.to_csv(out.path(f"{LAYER_LINKS}.csv"), index=False)
            names.append(f"{LAYER_LINKS}.csv")
    for name, gdf in layers.items():
        if name == LAYER_LINKS:
            continue
        if "gpkg" in formats:
            write_gpkg(gdf, out.path(EXPORT_GPKG), name)
        if "parquet" in formats:
            gdf.to_parquet(out.path(f"{name}.parquet"), schema_version="1.1.0", write_covering_bbox=True)
            names.append(f"{name}.parquet")
        if "geojson" in formats:
            write_vector(gdf.to_crs(GEOGRAPHIC), out.path(f"{name}.geojson"), "GeoJSON")
            names.append(f"{name}.geojson")
        if "csv" in formats:
            _csv(gdf, out.path(f"{name}.csv"), csv_geometry)
            names.append(f"{name}.csv")
        if "shp" in formats:
            folder = out.path(SHAPEFILE_FOLDER)
            folder.mkdir(exist_ok=True)
            report = write_shapefile(gdf, folder, name)
            if report.fields or report.values:
                shortened[name] = report
    if "gpkg" in formats:
        names.insert(0, EXPORT_GPKG)
    if "shp" in formats:
        renamed = [(layer, ours, short) for layer, s in shortened.items() for ours, short in s.fields.items()]
        if renamed:
            pd.DataFrame(renamed, columns=["layer", "field", "shapefile_field"]).to_csv(
                out.path(SHAPEFILE_FOLDER) / "field_names.csv", index=False)
        names.append(SHAPEFILE_FOLDER)
    return Exports(names, shortened)


FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"


def _asset_files(root: Path, names: list[str]) -> list[Path]:
    files = []
    for name in names:
        p = root / name
        files.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    return files


def stac_item(run_dir: Path, export_dir: Path, names: list[str], layers: dict[str, gpd.GeoDataFrame],
              shapefile: dict[str, Any] | None = None) -> dict[str, Any]:
    """A STAC Item (pystac) describing one run.

    Footprint, as-of date, inputs, model, thresholds, software version, every output with its size
    and SHA-256 (file extension, multihash), and under ``changewatch:shapefile`` what the
    Shapefiles could not hold (``Exports.shapefile_record``).
    """
    from datetime import UTC, date, datetime

    import pystac
    import shapely

    import changewatch

    summary = read_summary(run_dir).to_dict() if summary_path(run_dir) else {}
    as_of = (summary.get("rules") or {}).get("as_of")
    when = datetime.combine(date.fromisoformat(as_of), datetime.min.time(), tzinfo=UTC) if as_of \
        else datetime.now(UTC)
    changes = layers[LAYER_CHANGES]
    bounds = changes.to_crs(GEOGRAPHIC).total_bounds if len(changes) else None
    footprint = shapely.box(*bounds) if bounds is not None else None
    item = pystac.Item(
        id=f"changewatch-{run_dir.resolve().name}", geometry=shapely.geometry.mapping(footprint) if footprint else None,
        bbox=[float(v) for v in bounds] if bounds is not None else None, datetime=when,
        properties={"changewatch:version": changewatch.__version__, "changewatch:counts": summary.get("counts"),
                    "changewatch:inputs": summary.get("inputs"), "changewatch:model": summary.get("model"),
                    "changewatch:thresholds": summary.get("thresholds"), "changewatch:rules": summary.get("rules"),
                    "changewatch:shapefile": shapefile or {}},
        stac_extensions=[FILE_EXTENSION],
    )
    outputs = [(run_dir, p) for p in sorted(run_dir.iterdir()) if p.is_file()]
    outputs += [(export_dir, p) for p in _asset_files(export_dir, names)]
    for root, path in outputs:
        digest = sha256(path)
        key = ("run/" if root == run_dir else "") + path.relative_to(root).as_posix()
        item.add_asset(key, pystac.Asset(href=str(path.resolve()), roles=["data"],
                                         extra_fields={"file:size": path.stat().st_size,
                                                       "file:checksum": "1220" + digest}))
    return item.to_dict(include_self_link=False)


def export_run(run_dir: str | os.PathLike[str], outdir: str | os.PathLike[str],
               config: ExportConfig = ExportConfig()) -> list[Path]:
    """Export a run folder's layers in ``config.formats`` into ``outdir``, replaced as a whole.

    With ``config.stac``, also a STAC ``item.json``. ``outdir`` is replaced as a whole
    (``StagedOutput``; it may not contain ``run_dir``). Raises InputFileError for a folder that is
    not a run, OutputError when ``outdir`` cannot be written.
    """
    run = Path(run_dir)
    layers = read_run_layers(run)
    with StagedOutput(outdir, inputs=[run]) as out:
        with out.writing():
            exports = write_exports(layers, out, config.formats, config.csv_geometry)
        names = exports.names
        if config.stac:
            item = stac_item(run, out.stage, names, layers, exports.shapefile_record())
            for asset in item["assets"].values():  # point at where the files will be, not the staging folder
                asset["href"] = asset["href"].replace(str(out.stage.resolve()), str(out.outdir.resolve()))
            with out.writing(STAC_ITEM):
                write_json(item, out.path(STAC_ITEM))
    return [out.final(n) for n in (*names, *([STAC_ITEM] if config.stac else []))]
