"""Reading the cross-check's vector layers (permits, zoning, parcels, changes) and their values.

A layer is a file any pyogrio driver opens (one layer of it: ``path.gpkg:layer`` or ``layer:`` in
the ``--columns`` file when it holds several), a GeoParquet file (``.parquet``, read with
``geopandas.read_parquet``) or a CSV (``.csv``; geometry from a WKT column or x/y columns, CRS
declared in the ``--columns`` file). Every layer is checked before any work starts:

- it has a CRS (its own, or the one declared; both must agree);
- it holds the required columns;
- its geometries are polygons: point and line features are an error (they cannot cover a
  change), geometry collections keep their polygons, and invalid polygons are repaired so that a
  feature covers the *union* of its parts (``shapely.make_valid(method="structure")``: overlapping
  or nested parts of a MultiPolygon never become holes); empty and null geometries are dropped
  and counted;
- permit dates are read by the declared rule (``rs.crosscheck.values``) and zoning's
  ``construction_allowed`` as yes/no: a value that cannot be read is an error naming the rows.

Per layer, the features in the file and those inside the scene are counted (``Layer``); a layer
with features of which none lies inside the scene gets a warning (``Layers.warnings``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyogrio.errors
import shapely
from pyproj import CRS as ProjCRS
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from changewatch.rs.crosscheck.settings import CrosscheckInputs, DateFormat, Source
from changewatch.rs.crosscheck.values import EXAMPLES, parse_allowed, parse_dates
from changewatch.rs.errors import InputFileError, LayerError
from changewatch.rs.summary import LayerInputs

Extent = tuple[tuple[float, float, float, float], CRS]  # (left, bottom, right, top), its CRS
PARQUET_SUFFIXES = (".parquet", ".geoparquet")
CSV_SUFFIXES = (".csv",)
POLYGON_TYPES = (3, 6)  # shapely type ids: Polygon, MultiPolygon
NO_AREA_TYPES = (0, 1, 2, 4, 5)  # Point, LineString, LinearRing, MultiPoint, MultiLineString
COLLECTION = 7


@dataclass(frozen=True)
class Layer:
    """A vector layer read for the cross-check.

    ``repaired``: invalid geometries repaired (and collections reduced to their polygons);
    ``path``: the file; ``layer``: which of its layers (None: its only one); ``features``: features
    in that layer (None: unknown); ``in_scene``: those whose bounding box meets the scene's extent
    (None: read without an extent); ``dropped``: empty, null or zero-area geometries left out.
    """

    data: gpd.GeoDataFrame
    repaired: int
    path: str
    layer: str | None = None
    features: int | None = None
    in_scene: int | None = None
    dropped: int = 0

    @property
    def name(self) -> str:
        """``path`` or ``path:layer``, as a user would write it."""
        return f"{self.path}:{self.layer}" if self.layer else self.path

    def counts(self) -> dict[str, int | None]:
        """Features in the file, inside the scene, repaired, dropped (for summaries)."""
        return {"features": self.features, "in_scene": self.in_scene, "repaired": self.repaired,
                "dropped_empty": self.dropped}


def split_layer_path(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    r"""``file.gpkg:layer`` → (file.gpkg, layer); a path that exists as written is never split.

    So ``C:\data\p.gpkg`` stays whole; nor is one whose part before the last ``:`` does not exist.
    """
    text = os.fspath(path)
    if Path(text).exists() or ":" not in text:
        return Path(text), None
    head, _, layer = text.rpartition(":")
    if head and layer and Path(head).is_file():
        return Path(head), layer
    return Path(text), None


def _ids(gdf: pd.DataFrame, column: str | None, rows: np.ndarray) -> list[str]:
    """How to name some rows in a message: their ids, or their positions when there is no id column."""
    if column and column in gdf:
        return [str(v) for v in gdf[column].to_numpy()[rows][:EXAMPLES]]
    return [f"feature #{i + 1}" for i in rows[:EXAMPLES]]


def _choose_layer(p: Path, role: str, layer: str | None) -> str | None:
    """The layer to read from a pyogrio source: ``layer`` (checked), or its only spatial layer."""
    listed = pyogrio.list_layers(p)
    spatial = [str(n) for n, kind in listed if kind is not None]
    if layer is not None and layer not in spatial:
        names = ", ".join(spatial) or "none"
        raise LayerError(f"{role} file {p} has no layer {layer!r} with geometries (layers with geometries: {names})")
    if layer is not None:
        return layer
    if not spatial:
        raise LayerError(f"{role} file {p} has no layer with geometries")
    if len(spatial) > 1:
        raise LayerError(f"{role} file {p} holds {len(spatial)} layers ({', '.join(spatial)}): say which with "
                         f"FILE:LAYER, e.g. {p.name}:{spatial[0]} (or layer: in the --columns file)")
    return spatial[0]


def _in_extent(gdf: gpd.GeoDataFrame, bbox: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    """Rows whose bounding box meets ``bbox`` (same CRS), as GDAL's spatial filter selects them."""
    b = gdf.geometry.bounds
    keep = (b["minx"] <= bbox[2]) & (b["maxx"] >= bbox[0]) & (b["miny"] <= bbox[3]) & (b["maxy"] >= bbox[1])
    return gdf[keep.to_numpy()]


def _bbox(extent: Extent | None, crs: ProjCRS | str | None) -> tuple[float, float, float, float] | None:
    if extent is None or crs is None:
        return None
    return cast("tuple[float, float, float, float]",
                transform_bounds(extent[1], CRS.from_user_input(crs), *extent[0], densify_pts=21))


def _declared_crs(p: Path, role: str, found: ProjCRS | str | None, source: Source) -> ProjCRS | None:
    """The layer's CRS: its own, else the declared one; LayerError when both exist and disagree."""
    own = ProjCRS.from_user_input(found) if found is not None else None
    declared = ProjCRS.from_user_input(source.crs) if source.crs else None
    if own is not None and declared is not None and not own.equals(declared, ignore_axis_order=True):
        raise LayerError(f"{role} layer {p} has CRS {own.to_string()} but the --columns file declares "
                         f"{declared.to_string()}: remove crs: from its {role} section, or fix the file")
    return own or declared


def _no_crs_hint(p: Path, role: str) -> str:
    if p.suffix.lower() == ".shp":
        return (f"a Shapefile without its .prj file: put the .prj that came with it beside {p.name}, or declare "
                f"the CRS in the --columns file, e.g. {role}: {{crs: EPSG:32648}}")
    return f"declare it in the --columns file, e.g. {role}: {{crs: EPSG:4326}}"


def _read_csv(p: Path, role: str, source: Source) -> gpd.GeoDataFrame:
    """A CSV (UTF-8, every column as text) with its geometry from a WKT column or x/y columns."""
    example = f"{role}: {{crs: EPSG:4326, wkt: WKT}} or {role}: {{crs: EPSG:4326, x: lon, y: lat}}"
    if source.crs is None:
        raise LayerError(f"{role} layer {p} is a CSV, which carries no CRS: declare its CRS and geometry "
                         f"column(s) in the --columns file, e.g. {example}")
    try:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputFileError(f"{role} layer {p} is not a readable UTF-8 CSV ({' '.join(str(exc).split())})") from exc
    wkt = None if source.x else source.wkt or next((c for c in frame.columns if c.lower() == "wkt"), None)
    wanted = [wkt] if wkt else [source.x, source.y] if source.x and source.y else []
    if not wanted:
        raise LayerError(f"{role} layer {p}: say which column(s) hold the geometry, e.g. {example}")
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise LayerError(f"{role} layer {p} lacks geometry column(s) {', '.join(missing)} "
                         f"(has: {', '.join(frame.columns)})")
    blank = frame[wanted].isna().all(axis=1).to_numpy()
    if wkt:
        geometry = shapely.from_wkt(frame[wkt].to_numpy(dtype=object), on_invalid="ignore")
        frame = frame.drop(columns=wkt)
    else:
        xy = frame[wanted].apply(pd.to_numeric, errors="coerce")
        geometry = shapely.points(xy.to_numpy())
        geometry[xy.isna().any(axis=1).to_numpy()] = None
    bad = np.flatnonzero(pd.isna(geometry) & ~blank)
    if len(bad):
        raise LayerError(f"{role} layer {p}: {len(bad)} row(s) have geometry that cannot be read from "
                         f"{', '.join(wanted)} (CSV lines {', '.join(str(i + 2) for i in bad[:EXAMPLES])})")
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=source.crs)


def _read_parquet(p: Path, role: str, source: Source) -> gpd.GeoDataFrame:
    """A GeoParquet file (as ``export`` writes it), with its CRS or the declared one."""
    try:
        gdf = gpd.read_parquet(p)
    except (ValueError, OSError) as exc:
        raise InputFileError(f"{role} layer is not a readable GeoParquet file: {p} "
                             f"({' '.join(str(exc).split())})") from exc
    crs = _declared_crs(p, role, gdf.crs, source)
    return gdf if gdf.crs is not None or crs is None else gdf.set_crs(crs)


def _read(p: Path, role: str, layer: str | None, source: Source, extent: Extent | None,
          text_dates: bool) -> tuple[gpd.GeoDataFrame, int | None]:
    """The features of ``p`` meeting ``extent`` (all without one), with the CRS set, and the layer's feature count.

    The count is how many features the layer holds (None: unknown).
    """
    suffix = p.suffix.lower()
    if (source.wkt or source.x) and suffix not in CSV_SUFFIXES:
        raise LayerError(f"{role} layer {p}: wkt/x/y in the --columns file are for CSV files only")
    if suffix in CSV_SUFFIXES or suffix in PARQUET_SUFFIXES:
        if layer is not None:
            raise LayerError(f"{role} file {p} has one layer: drop ':{layer}' (or layer:) for it")
        gdf = _read_csv(p, role, source) if suffix in CSV_SUFFIXES else _read_parquet(p, role, source)
        if gdf.crs is None:
            raise LayerError(f"{role} layer has no CRS: {p} ({_no_crs_hint(p, role)})")
        bbox = _bbox(extent, gdf.crs)
        return (_in_extent(gdf, bbox) if bbox else gdf), len(gdf)
    layer = _choose_layer(p, role, layer)
    info = pyogrio.read_info(p, layer=layer, force_feature_count=True)
    crs = _declared_crs(p, role, info["crs"], source)
    if crs is None:
        raise LayerError(f"{role} layer has no CRS: {p} ({_no_crs_hint(p, role)})")
    # with text_dates, date columns come back as the text GDAL holds (ISO 8601 with each value's own UTC
    # offset), not converted to UTC as pyogrio does when offsets are mixed: a date stays the day written
    gdf = pyogrio.read_dataframe(p, layer=layer, bbox=_bbox(extent, crs), datetime_as_string=text_dates)
    if text_dates:  # columns the file types as dates are used as they are, whatever rule the text follows
        for column, kind in zip(info["fields"], info["ogr_types"], strict=True):
            if kind in ("OFTDate", "OFTDateTime") and column in gdf:
                gdf[column] = parse_dates(gdf[column], DateFormat(), str(column), role)
    if gdf.crs is None:
        gdf = gdf.set_crs(crs)
    features = int(info["features"])
    return gdf, features if features >= 0 else None


def polygons(gdf: gpd.GeoDataFrame, role: str, name: str, ids: str | None = None) -> tuple[gpd.GeoDataFrame, int, int]:
    """The layer's polygons: (layer, repaired, dropped).

    Invalid geometries are repaired with ``shapely.make_valid(method="structure")``, so a feature
    covers the union of its parts (overlapping or nested parts of a MultiPolygon are unioned, a
    bow-tie becomes its two triangles); geometry collections keep their polygonal parts (lines in
    them add no area); empty, null and zero-area geometries are dropped. Raises LayerError when
    features are points or lines (naming them by ``ids`` column, or position).
    """
    geoms = gdf.geometry.to_numpy().copy()
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    types = shapely.get_type_id(geoms)
    no_area = np.isin(types, NO_AREA_TYPES) & ~missing
    if no_area.any():
        rows = np.flatnonzero(no_area)
        kinds = ", ".join(sorted({g.geom_type for g in geoms[rows]}))
        raise LayerError(f"{role} layer {name}: {len(rows)} of {len(geoms)} features are not polygons ({kinds}; "
                         f"e.g. {', '.join(_ids(gdf, ids, rows))}): {role} must be polygons (an outline covers a "
                         f"change; a point or a line cannot)")
    fix = ~missing & (~shapely.is_valid(geoms) | (types == COLLECTION))
    if fix.any():
        fixed = shapely.make_valid(geoms[fix], method="structure", keep_collapsed=False)
        for i in np.flatnonzero(~np.isin(shapely.get_type_id(fixed), POLYGON_TYPES)):  # keep the polygonal parts
            parts = shapely.get_parts(fixed[i])
            fixed[i] = shapely.union_all(parts[np.isin(shapely.get_type_id(parts), POLYGON_TYPES)])
        lines_only = (types[fix] == COLLECTION) & shapely.is_empty(fixed)
        if lines_only.any():
            rows = np.flatnonzero(fix)[lines_only]
            raise LayerError(f"{role} layer {name}: {len(rows)} of {len(geoms)} features are geometry collections "
                             f"without polygons (e.g. {', '.join(_ids(gdf, ids, rows))}): {role} must be polygons")
        geoms[fix] = fixed
    keep = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    keep[keep] = shapely.area(geoms[keep]) > 0
    out = gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs))
    return out[keep].reset_index(drop=True), int(fix.sum()), int((~keep).sum())


def read_layer(path: str | os.PathLike[str], role: str, required: tuple[str, ...] = (), extent: Extent | None = None,
               source: Source = Source(), ids: str | None = None, text_dates: bool = False) -> Layer:
    """Read one polygon layer (see the module docstring), check it and repair its geometries.

    ``path``: a file, or ``file:layer``; ``extent`` = ((left, bottom, right, top), crs): read only
    features whose bounding boxes meet it (through the file's spatial index where it has one), so a
    city-wide layer costs a scene only its own share; ``source``: layer, CRS and CSV geometry
    columns from the ``--columns`` file; ``ids``: the column naming rows in messages;
    ``text_dates``: read date columns as the text the file holds (for ``parse_dates``).
    Raises InputFileError when the file is missing or unreadable, LayerError when it has no CRS
    (or not the declared one), several layers and none chosen, lacks a ``required`` column, or
    holds points or lines.
    """
    p, layer = split_layer_path(path)
    if layer and source.layer and layer != source.layer:
        raise LayerError(f"{role} layer: {path} names layer {layer!r} but the --columns file says {source.layer!r}")
    layer = layer or source.layer
    if not p.exists():
        raise InputFileError(f"{role} layer not found: {p}")
    try:
        gdf, features = _read(p, role, layer, source, extent, text_dates)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError,
            pyogrio.errors.GeometryError, ValueError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{role} layer is not a readable vector file: {p} ({' '.join(str(exc).split())})") from exc
    name = f"{p}:{layer}" if layer else str(p)
    missing = [c for c in required if c not in gdf.columns]
    if missing:
        raise LayerError(f"{role} layer {name} lacks column(s) {', '.join(missing)} "
                         f"(has: {', '.join(map(str, gdf.columns.drop([gdf.geometry.name])))})")
    in_scene = len(gdf) if extent is not None else None
    data, repaired, dropped = polygons(gdf, role, name, ids)
    return Layer(data, repaired, str(p), layer, features, in_scene, dropped)


@dataclass(frozen=True)
class Layers:
    """The reference layers a cross-check runs against (each optional)."""

    permits: Layer | None = None
    zoning: Layer | None = None
    parcels: Layer | None = None

    def provenance(self) -> LayerInputs:
        """Paths (``path`` or ``path:layer``), repaired-geometry counts and per layer its feature counts.

        Under ``layer_counts``, each layer's features in the file and inside the scene (see
        ``Layer.counts``).
        """
        out: dict[str, Any] = {}
        counts: dict[str, Any] = {}
        for role in ("permits", "zoning", "parcels"):
            layer = getattr(self, role)
            where = str(Path(layer.path).resolve()) + (f":{layer.layer}" if layer.layer else "") if layer else None
            out[role] = where
            out[f"{role}_repaired_geometries"] = layer.repaired if layer else 0
            counts[role] = layer.counts() if layer else None
        return LayerInputs(**out, layer_counts=counts)

    def files(self) -> list[Path]:
        """The files of the layers read (a Shapefile by its ``.shp``)."""
        return [Path(layer.path) for layer in (self.permits, self.zoning, self.parcels) if layer is not None]

    def warnings(self) -> list[str]:
        """One line per layer that has features but none inside the scene, and per layer with dropped geometries.

        A layer with none inside: a wrong file, lon/lat swapped, coordinates in another CRS than the
        file says.
        """
        lines = []
        for role in ("permits", "zoning", "parcels"):
            layer = getattr(self, role)
            if layer is None:
                continue
            if layer.in_scene == 0 and layer.features:
                lines.append(f"{role} layer {layer.name}: none of its {layer.features} features lies inside the "
                             f"scene (the wrong file? lon/lat swapped? coordinates in another CRS than the file "
                             f"says?): every change is judged as if there were no {role}")
            if layer.dropped:
                lines.append(f"{role} layer {layer.name}: {layer.dropped} feature(s) with an empty, null or zero-area "
                             f"geometry were left out")
        return lines


def read_layers(inputs: CrosscheckInputs, extent: Extent | None = None) -> Layers:
    """Read and check every layer ``inputs`` gives (see ``read_layer``) before any work starts.

    Permit dates are parsed (``parse_dates``) and zoning's construction_allowed read as yes/no
    here, so an unreadable value stops the run before it writes anything. ``extent``: read only
    the features whose bounding boxes meet it.
    """
    pc, zc, qc = inputs.rules.permit_columns, inputs.rules.zoning_columns, inputs.parcel_columns
    permits = zoning = parcels = None
    if inputs.permits:
        permits = read_layer(inputs.permits, "permits", (pc.permit_id, pc.issued, pc.expires), extent,
                             inputs.sources.permits, pc.permit_id, text_dates=True)
        data = permits.data.copy()
        for column in dict.fromkeys((pc.issued, pc.expires)):
            data[column] = parse_dates(data[column], inputs.rules.dates, column, "permits", data[pc.permit_id])
        permits = replace(permits, data=data)
    if inputs.zoning:
        zoning = read_layer(inputs.zoning, "zoning", (zc.zone_id, zc.construction_allowed), extent,
                            inputs.sources.zoning, zc.zone_id)
        parse_allowed(zoning.data[zc.construction_allowed], zc.construction_allowed)
    if inputs.parcels:
        parcels = read_layer(inputs.parcels, "parcels", tuple(c for c in (qc.parcel_id, qc.ward, qc.owner) if c),
                             extent, inputs.sources.parcels, qc.parcel_id)
    return Layers(permits, zoning, parcels)
