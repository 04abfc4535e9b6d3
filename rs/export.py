"""Stage 6 — export: a run folder's layers in the formats GIS desks use, with a STAC record.

``export_run`` reads a detect or crosscheck run folder (``rs.runfolder``) and writes its layers as
one GeoPackage (GeoPackage 1.2, QGIS styles in its ``layer_styles`` table, ``rs.styles``), GeoParquet,
GeoJSON (RFC 7946), CSV (optionally with a UTF-8 BOM for Excel) and Shapefiles (nothing lost: long
Shapefile field names are renamed and recorded, long text kept whole in a side table, booleans as
integers 1/0), the probability raster with its QGIS style, and a STAC Item (``rs.stac``) with relative
hrefs and every file's checksum, into a folder replaced as a whole when the export has succeeded
(``StagedOutput``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from changewatch.rs.config import ExportConfig
from changewatch.rs.errors import InputFileError
from changewatch.rs.grid import metric_crs
from changewatch.rs.io.csvcells import defuse_formulas
from changewatch.rs.io.files import write_json
from changewatch.rs.io.vector import write_gpkg, write_table, write_vector
from changewatch.rs.monitor.exported import read_export_layers
from changewatch.rs.runfolder import (
    CHANGE_PROB,
    CHANGE_PROB_STYLE,
    EXPORT_GPKG,
    LAYER_LINKS,
    SHAPEFILE_FOLDER,
    STAC_ITEM,
    StagedOutput,
)
from changewatch.rs.styles import write_raster_style, write_styles

# Shapefile (dBASE) field names stop at 10 bytes: the long ones get these names (others are cut, see
# ``shapefile_fields``), and text stops at 254 bytes (longer values are cut, and kept whole beside it).
SHAPEFILE_NAMES = {"valid_permit_ids": "valid_pids", "flagged_area_m2": "flag_am2", "worst_reason": "worst_rsn",
                   "change_type": "chg_type"}
DBF_NAME_BYTES = 10
DBF_TEXT_BYTES = 254
SHAPEFILE_KEYS = ("change_id", "parcel_id")  # what a side table of full values is keyed by, first found
GEOGRAPHIC = "EPSG:4326"
# GeoJSON as RFC 7946 asks: EPSG:4326 without a ``crs`` member, exterior rings counterclockwise, and 7 decimals
# (1e-7° ≈ 1 cm), GDAL's layer creation options
GEOJSON_OPTIONS = {"RFC7946": "YES", "COORDINATE_PRECISION": "7"}


def _write_csv(table: pd.DataFrame, path: Path, bom: bool) -> None:
    """A table as UTF-8 CSV; with ``bom``, the UTF-8 byte order mark first (Excel then reads it as UTF-8).

    Text cells that a spreadsheet would run as a formula get a ``'`` before them (``rs.io.csvcells``).
    """
    defuse_formulas(table).to_csv(path, index=False, encoding="utf-8-sig" if bom else "utf-8")


def _csv(gdf: gpd.GeoDataFrame, path: Path, geometry: str, bom: bool = False) -> None:
    """Write CSV in EPSG:4326: geometry as a ``wkt`` column, or as ``lon``/``lat`` of the centroid (``_write_csv``)."""
    g = gdf.to_crs(GEOGRAPHIC)
    table = pd.DataFrame(g.drop(columns="geometry"))
    if geometry == "wkt":
        table["wkt"] = g.geometry.to_wkt(rounding_precision=10)  # 1e-10° ≈ 0.01 mm
    else:  # centroid of the polygon, computed in local UTM so it is exact on the ground
        centres = gdf.geometry.to_crs(metric_crs(gdf)).centroid.to_crs(GEOGRAPHIC) if len(gdf) else g.geometry
        table["lon"], table["lat"] = centres.x, centres.y
    _write_csv(table, path, bom)


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


def write_shapefile(gdf: gpd.GeoDataFrame, folder: Path, name: str, bom: bool = False) -> Shortened:
    """Write ``folder/name.shp`` (UTF-8, CRS kept) with nothing lost silently; returns what was shortened.

    Long field names are renamed (``shapefile_fields``), and text longer than dBASE's 254 bytes is
    cut between characters in the Shapefile and written whole to ``folder/name_full_values.csv``
    (keyed by ``change_id`` or ``parcel_id``, else by ``row``, 1-based; columns under our names).
    Booleans (``flagged``) are written as integers 1/0: dBASE's logical type is read as text, or not
    at all, by many desks. ``bom``: the side table starts with a UTF-8 byte order mark (``_write_csv``).
    """
    table = gdf.copy()
    for column in [c for c in table.columns if c != table.geometry.name]:
        if pd.api.types.is_bool_dtype(table[column]):
            table[column] = table[column].astype("Int32")
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
        _write_csv(side, folder / f"{name}_full_values.csv", bom)
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


def _write_links(links: pd.DataFrame, out: StagedOutput, config: ExportConfig) -> list[str]:
    """The ``flagged_change_parcels`` table (no geometry): GeoPackage attribute table, Parquet and CSV only."""
    names = []
    if "gpkg" in config.formats:
        write_table(links, out.path(EXPORT_GPKG), LAYER_LINKS)
    if "parquet" in config.formats:
        links.to_parquet(out.path(f"{LAYER_LINKS}.parquet"), index=False)
        names.append(f"{LAYER_LINKS}.parquet")
    if "csv" in config.formats:
        _write_csv(links, out.path(f"{LAYER_LINKS}.csv"), config.csv_bom)
        names.append(f"{LAYER_LINKS}.csv")
    return names


def _write_layer(name: str, gdf: gpd.GeoDataFrame, out: StagedOutput, config: ExportConfig) -> list[str]:
    """Write one layer in every format of ``config`` but Shapefile.

    Returns the file names written (the GeoPackage's is added by ``write_exports``).
    """
    names = []
    if "gpkg" in config.formats:
        write_gpkg(gdf, out.path(EXPORT_GPKG), name)
    if "parquet" in config.formats:
        gdf.to_parquet(out.path(f"{name}.parquet"), schema_version="1.1.0", write_covering_bbox=True)
        names.append(f"{name}.parquet")
    if "geojson" in config.formats:
        write_vector(gdf.to_crs(GEOGRAPHIC), out.path(f"{name}.geojson"), "GeoJSON", layer_options=GEOJSON_OPTIONS)
        names.append(f"{name}.geojson")
    if "csv" in config.formats:
        _csv(gdf, out.path(f"{name}.csv"), config.csv_geometry, config.csv_bom)
        names.append(f"{name}.csv")
    return names


def _write_shapefiles(layers: dict[str, gpd.GeoDataFrame], out: StagedOutput, bom: bool) -> dict[str, Shortened]:
    """Write one Shapefile per layer in ``shapefile/``; returns per layer what was shortened.

    ``shapefile/field_names.csv`` (layer, field, shapefile_field) lists the fields renamed, when any was; its
    side tables, like it, start with a UTF-8 byte order mark with ``bom``. Only layers with something shortened
    are returned.
    """
    folder = out.path(SHAPEFILE_FOLDER)
    folder.mkdir(exist_ok=True)
    shortened = {}
    for name, gdf in layers.items():
        report = write_shapefile(gdf, folder, name, bom)
        if report.fields or report.values:
            shortened[name] = report
    renamed = [(layer, ours, short) for layer, s in shortened.items() for ours, short in s.fields.items()]
    if renamed:
        _write_csv(pd.DataFrame(renamed, columns=["layer", "field", "shapefile_field"]), folder / "field_names.csv",
                   bom)
    return shortened


def copy_probability(run_dir: Path, out: StagedOutput) -> list[str]:
    """Copy the run's ``change_prob.tif`` (a COG, as it is) and write its QGIS style ``change_prob.qml`` beside it.

    Writes nothing for a run without one (a cross-check). Returns the names written.
    """
    source = run_dir / CHANGE_PROB
    if not source.is_file():
        return []
    shutil.copyfile(source, out.path(CHANGE_PROB))
    write_raster_style(out.path(CHANGE_PROB_STYLE))
    return [CHANGE_PROB, CHANGE_PROB_STYLE]


def write_exports(layers: dict[str, gpd.GeoDataFrame], out: StagedOutput, config: ExportConfig,
                  run_dir: Path | None = None) -> Exports:
    """Write ``layers`` in each of ``config.formats`` into the staging folder.

    Returns the names written and what the Shapefiles could not hold.

    gpkg: one ``changewatch.gpkg`` (GeoPackage 1.2) with every layer (CRS kept) and their QGIS styles
    (``rs.styles.write_styles``); parquet: GeoParquet 1.1 with a bbox covering column, one file per
    layer (CRS kept); geojson: RFC 7946 (EPSG:4326, no ``crs`` member, 7 decimals); csv: EPSG:4326,
    WKT or centroid lon/lat, UTF-8 (with a BOM when ``config.csv_bom``); shp: one Shapefile per layer
    in ``shapefile/`` (``write_shapefile``: long field names shortened as in SHAPEFILE_NAMES, long
    text kept whole in a side table, booleans as 1/0), and ``shapefile/field_names.csv`` (layer,
    field, shapefile_field) when a field was renamed; cog: ``run_dir``'s probability raster and its
    QGIS style (``copy_probability``).
    """
    names = _write_links(layers[LAYER_LINKS], out, config) if LAYER_LINKS in layers else []
    geometric = {name: gdf for name, gdf in layers.items() if name != LAYER_LINKS}
    for name, gdf in geometric.items():
        names += _write_layer(name, gdf, out, config)
    if "gpkg" in config.formats:
        write_styles(out.path(EXPORT_GPKG))
        names.insert(0, EXPORT_GPKG)
    shortened = {}
    if "shp" in config.formats:
        shortened = _write_shapefiles(geometric, out, config.csv_bom)
        names.append(SHAPEFILE_FOLDER)
    if "cog" in config.formats and run_dir is not None:
        names += copy_probability(run_dir, out)
    return Exports(names, shortened)


def export_run(run_dir: str | os.PathLike[str], outdir: str | os.PathLike[str],
               config: ExportConfig = ExportConfig()) -> list[Path]:
    """Export a run folder's layers, or a monitor store's, in ``config.formats`` into ``outdir``; returns the paths.

    A store's layers are its tracked changes, their observations and the parcels' history, those
    first seen on or after ``config.since`` when given (``rs.monitor.exported``). With
    ``config.stac``, also a STAC ``item.json`` (``rs.stac.stac_item``), checked against the STAC
    schemas bundled with the package. ``outdir`` is replaced as a whole (``StagedOutput``; it may not
    contain ``run_dir`` nor lie inside it). Raises InputFileError for a folder that is not a run or a
    store (or ``cog`` alone from one without a raster), OptionError for ``config.since`` with a run
    folder, OutputError when ``outdir`` cannot be written.
    """
    from changewatch.rs.stac import stac_item, validate_item

    run = Path(run_dir)
    layers, latest = read_export_layers(run, config.since)
    if config.formats == ("cog",) and not (run / CHANGE_PROB).is_file():
        raise InputFileError(f"{run} has no {CHANGE_PROB} (a cross-check run or a monitor store): --formats cog "
                             "exports nothing")
    with StagedOutput(outdir, inputs=[run]) as out:
        with out.writing():
            exports = write_exports(layers, out, config, run)
        names = exports.names
        if config.stac:
            item = stac_item(run, out.stage, names, layers, exports.shapefile_record(), latest)
            validate_item(item)
            with out.writing(STAC_ITEM):
                write_json(item, out.path(STAC_ITEM))
    return [out.final(n) for n in (*names, *([STAC_ITEM] if config.stac else []))]
