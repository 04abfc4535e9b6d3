"""Single-date VHR imagery with building footprints, put on a metric grid (the synthetic pairs' raw material).

Two layouts are read under one source folder (``find_areas``):

- **XYZ tiles** — a folder of ``OAM-<x>-<y>-<z>.png`` web-map tiles (256² RGB or RGBA, alpha 0 = no
  data; no georeferencing inside) and a ``labels.geojson`` of building polygons (any CRS, usually
  EPSG:4326), as ``oam-ramp/ramp-data/TRAIN/HOTOSM/2/data/<n>/``. Each tile's EPSG:3857 bounds
  follow from x, y, z (``tile_bounds``). Only the finest zoom present is used (the coarser zooms
  cover the same ground);
- **GeoTIFF chips** — a folder with ``oam/*.tif`` (georeferenced RGB chips) beside ``osm/*.geojson``
  (building polygons), as ``oam-banepa/data/sample/train/``. Folders without ``osm/`` (unlabelled
  ``predict/``) are ignored.

Each *area* (a town) yields one ``Source`` per contiguous block of imagery: mosaicked in its own
CRS, reprojected into the UTM zone of its centre at the requested GSD with area-averaging
resampling (GDAL ``average``), with the footprints rasterised as instance ids on the same grid.
Memory: a block is mosaicked at its native resolution before warping (the largest here, 4×8
zoom-19 tiles read at zoom 21, takes about 130 MB for a moment); a Source then holds about 6 bytes
per pixel of its metric grid (0.7 km² at 0.3 m: about 50 MB for all areas).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import geopandas as gpd
import mercantile
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
import rasterio.features
import rasterio.merge
import shapely
from affine import Affine
from PIL import Image, UnidentifiedImageError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds
from scipy import ndimage

from changewatch.rs.errors import InputFileError
from changewatch.rs.grid import Grid, utm_crs
from changewatch.rs.synth.shadow import Sun, estimate_sun

RAMP_AREAS = {"1": "zanzibar", "2": "kampala", "3": "banepa", "4": "catanduanes", "5": "nairobi"}
TILE_NAME = re.compile(r"^OAM-(\d+)-(\d+)-(\d+)\.png$")
TILE_PX = 256
WEB_MERCATOR = CRS.from_epsg(3857)
SUN_GSD_M = 0.3  # shadows are measured on a grid this fine (or the source's own, when finer)
MAX_DARK_HOLE_M2 = 50.0  # enclosed alpha-0 regions up to this size are black shadow pixels, not missing imagery


@dataclass(frozen=True)
class AreaFiles:
    """The files of one labelled block of imagery: ``kind`` is ``"xyz"`` or ``"geotiff"``."""

    area: str
    kind: str
    images: tuple[Path, ...]
    labels: tuple[Path, ...]


@dataclass(frozen=True)
class Mosaic:
    """An RGB image on a georeferenced grid: ``image`` (H, W, 3) uint8, ``valid`` (H, W) bool."""

    image: np.ndarray
    valid: np.ndarray
    crs: CRS
    transform: Affine


@dataclass(frozen=True)
class Source:
    """One contiguous block of imagery of an area on a north-up metric grid (UTM, metres).

    ``image`` (H, W, 3) uint8 RGB, ``valid`` (H, W) bool (False: outside the imagery, written
    black), ``instances`` (H, W) uint16 with ``i`` where footprint ``footprints[i - 1]`` covers
    the pixel centre (0: no building); ``footprints`` are shapely polygons in ``crs``.
    ``files`` are relative to the source folder.
    """

    area: str
    name: str
    files: tuple[str, ...]
    crs: CRS
    transform: Affine
    gsd_m: float
    image: np.ndarray
    valid: np.ndarray
    footprints: np.ndarray
    instances: np.ndarray
    sun: Sun

    @property
    def valid_m2(self) -> float:
        """Ground covered by imagery, m²."""
        return float(self.valid.sum()) * self.gsd_m ** 2


def tile_bounds(x: int, y: int, z: int) -> tuple[float, float, float, float]:
    """EPSG:3857 bounds (left, bottom, right, top, metres) of XYZ ("slippy map") tile x, y at zoom z.

    ``mercantile.xy_bounds``: the Web-Mercator square of side 2πR (R = 6 378 137 m) cut into
    2^z × 2^z tiles, x eastwards from −πR and y southwards from +πR (OpenStreetMap wiki,
    "Slippy map tilenames").
    """
    b = mercantile.xy_bounds(x, y, z)
    return b.left, b.bottom, b.right, b.top


def _is_geotiff_block(folder: Path) -> bool:
    return (folder / "oam").is_dir() and (folder / "osm").is_dir()


def _area_name(folder: Path, root: Path) -> str:
    """Area (town) name of a source folder.

    The ramp dataset's numbered folders by their town, ``oam-<town>/...`` by its town, else the
    folder's own name.
    """
    if folder.name in RAMP_AREAS and folder.parent.name == "data":
        return RAMP_AREAS[folder.name]
    top = folder.relative_to(root).parts[0] if folder != root else folder.name
    return top.removeprefix("oam-") if top.startswith("oam-") else folder.name


def find_areas(root: str | Path) -> list[AreaFiles]:
    """Every labelled block of imagery under ``root`` (both layouts), sorted by path.

    Raises InputFileError when ``root`` is not a folder or holds no labelled imagery.
    """
    base = Path(root)
    if not base.is_dir():
        raise InputFileError(f"source folder not found: {base}")
    found = []
    for labels in sorted(base.rglob("labels.geojson")):
        tiles = tuple(sorted(p for p in labels.parent.iterdir() if TILE_NAME.match(p.name)))
        if tiles:
            found.append(AreaFiles(_area_name(labels.parent, base), "xyz", tiles, (labels,)))
    for folder in sorted({p.parent for p in base.rglob("oam") if p.is_dir() and _is_geotiff_block(p.parent)}):
        images = tuple(sorted((folder / "oam").glob("*.tif")))
        labels_ = tuple(sorted((folder / "osm").glob("*.geojson")))
        if images and labels_:
            found.append(AreaFiles(_area_name(folder, base), "geotiff", images, labels_))
    if not found:
        raise InputFileError(
            f"no labelled VHR imagery under {base}: expected folders of OAM-<x>-<y>-<z>.png tiles with a "
            f"labels.geojson, or oam/*.tif beside osm/*.geojson")
    return found


def read_tile(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One 256² web-map tile as (RGB (256, 256, 3) uint8, valid (256, 256) bool: alpha > 0).

    Raises InputFileError for an unreadable image or one of another size.
    """
    try:
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputFileError(f"tile is not a readable image: {path} ({exc})") from exc
    if rgba.shape[:2] != (TILE_PX, TILE_PX):
        raise InputFileError(f"tile {path} is {rgba.shape[1]}×{rgba.shape[0]}, expected {TILE_PX}×{TILE_PX}")
    return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3] > 0


def _tile_index(paths: Iterable[Path]) -> tuple[int, dict[tuple[int, int], Path]]:
    """The finest zoom among the tiles, and its tiles by (x, y)."""
    parsed = [(tuple(int(v) for v in TILE_NAME.match(p.name).groups()), p) for p in paths]  # type: ignore[union-attr]
    zoom = max(xyz[2] for xyz, _ in parsed)
    return zoom, {(x, y): p for (x, y, z), p in parsed if z == zoom}


def tile_blocks(tiles: Iterable[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Tiles grouped into edge-connected blocks, ordered by their first tile.

    Each block is mosaicked alone, so that ground between scattered blocks is never held in memory.
    """
    tiles = sorted(tiles)
    xs, ys = [t[0] for t in tiles], [t[1] for t in tiles]
    grid = np.zeros((max(ys) - min(ys) + 1, max(xs) - min(xs) + 1), bool)
    for x, y in tiles:
        grid[y - min(ys), x - min(xs)] = True
    labels, _ = ndimage.label(grid)
    blocks: dict[int, list[tuple[int, int]]] = {}
    for x, y in tiles:
        blocks.setdefault(int(labels[y - min(ys), x - min(xs)]), []).append((x, y))
    return sorted(blocks.values())


def xyz_mosaic(tiles: dict[tuple[int, int], Path], zoom: int) -> Mosaic:
    """Tiles (x, y) → path of one zoom mosaicked in EPSG:3857 at the zoom's own resolution.

    The resolution is 2πR / 2^z / 256 m per pixel; missing tiles and alpha-0 regions that are not
    enclosed dark holes (``real_nodata``) are not valid. Raises InputFileError for an unreadable
    tile.
    """
    xs, ys = [t[0] for t in tiles], [t[1] for t in tiles]
    x0, y0 = min(xs), min(ys)
    rows, cols = (max(ys) - y0 + 1) * TILE_PX, (max(xs) - x0 + 1) * TILE_PX
    image = np.zeros((rows, cols, 3), np.uint8)
    valid = np.zeros((rows, cols), bool)
    for (x, y), path in tiles.items():
        rgb, ok = read_tile(path)
        r, c = (y - y0) * TILE_PX, (x - x0) * TILE_PX
        image[r:r + TILE_PX, c:c + TILE_PX], valid[r:r + TILE_PX, c:c + TILE_PX] = rgb, ok
    left, _, right, top = tile_bounds(x0, y0, zoom)
    res = (right - left) / TILE_PX
    valid = ~real_nodata(~valid, int(MAX_DARK_HOLE_M2 / res ** 2))
    return Mosaic(image, valid, WEB_MERCATOR, Affine(res, 0.0, left, 0.0, -res, top))


def real_nodata(missing: np.ndarray, max_hole_px: int) -> np.ndarray:
    """The part of ``missing`` (H, W bool) that is really outside the imagery.

    Regions that touch the mosaic's edge or exceed ``max_hole_px``. The tiles mark pure black
    (0, 0, 0) pixels, deep shadows, with alpha 0 too; enclosed small holes are such pixels and stay
    valid (black).
    """
    labels, _ = ndimage.label(missing)
    sizes = np.bincount(labels.ravel())
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = sizes > max_hole_px
    outside[edge] = True
    outside[0] = False
    return outside[labels]


def geotiff_mosaic(paths: tuple[Path, ...]) -> Mosaic:
    """Adjacent georeferenced RGB chips (any CRS, the same for all) merged on the first chip's grid.

    ``rasterio.merge``; pixels no chip covers: not valid. Raises InputFileError for an unreadable
    file, a chip without CRS or with fewer than three bands.
    """
    try:
        datasets = [rasterio.open(p) for p in paths]
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"not a readable raster among {paths[0].parent}: {exc}") from exc
    try:
        if any(ds.count < 3 or ds.crs is None for ds in datasets):
            raise InputFileError(f"GeoTIFF chips in {paths[0].parent} must be georeferenced RGB")
        data, transform = rasterio.merge.merge(datasets, indexes=[1, 2, 3])
        cover = rasterio.features.geometry_mask([shapely.box(*ds.bounds) for ds in datasets], data.shape[1:],
                                                transform, invert=True)
        crs = datasets[0].crs
    finally:
        for ds in datasets:
            ds.close()
    return Mosaic(np.ascontiguousarray(np.moveaxis(data, 0, -1)).astype(np.uint8), cover, crs, transform)


def metric_grid(mosaic: Mosaic, gsd_m: float) -> tuple[CRS, Affine, int, int]:
    """The UTM grid (CRS, transform, width, height) covering ``mosaic`` at ``gsd_m`` metres.

    Pixel edges on multiples of ``gsd_m``, in the UTM zone of the mosaic's centre.
    """
    h, w = mosaic.valid.shape
    crs = utm_crs(*Grid(mosaic.crs, mosaic.transform, w, h).centre_lonlat())
    bounds = rasterio.transform.array_bounds(h, w, mosaic.transform)
    left, bottom, right, top = transform_bounds(mosaic.crs, crs, *bounds, densify_pts=21)
    left, bottom = np.floor(left / gsd_m) * gsd_m, np.floor(bottom / gsd_m) * gsd_m
    width, height = int(np.ceil((right - left) / gsd_m)), int(np.ceil((top - bottom) / gsd_m))
    return crs, Affine(gsd_m, 0.0, left, 0.0, -gsd_m, bottom + height * gsd_m), width, height


def to_metric(mosaic: Mosaic, gsd_m: float) -> Mosaic:
    """``mosaic`` reprojected onto ``metric_grid`` with area-averaging resampling (GDAL ``average``).

    A pixel is valid only when every source pixel under it was valid (so no pixel mixes imagery
    with the black outside it).
    """
    crs, transform, width, height = metric_grid(mosaic, gsd_m)
    image = np.zeros((3, height, width), np.uint8)
    cover = np.zeros((height, width), np.uint8)
    common = dict(src_transform=mosaic.transform, src_crs=mosaic.crs, dst_transform=transform, dst_crs=crs,
                  resampling=Resampling.average)
    reproject(np.moveaxis(mosaic.image, -1, 0), image, **common)
    reproject(mosaic.valid.astype(np.uint8) * 255, cover, **common)
    valid = cover == 255
    image = np.ascontiguousarray(np.moveaxis(image, 0, -1))
    image[~valid] = 0
    return Mosaic(image, valid, crs, transform)


def read_footprints(paths: tuple[Path, ...], crs: CRS) -> np.ndarray:
    """Building polygons of the label files in ``crs``.

    Made valid; multipolygons split; empty and non-polygonal geometries dropped. Raises
    InputFileError for unreadable files or a layer without CRS.
    """
    frames = []
    for path in paths:
        try:
            layer = gpd.read_file(path)
        except Exception as exc:  # pyogrio raises several types for unreadable files
            raise InputFileError(f"building labels are not a readable vector file: {path} ({exc})") from exc
        if layer.crs is None:
            raise InputFileError(f"building labels have no CRS: {path}")
        frames.append(layer.to_crs(crs).geometry)
    geoms = shapely.make_valid(np.asarray(pd.concat(frames).values, dtype=object))
    parts = shapely.get_parts(geoms)
    polygons = parts[(shapely.get_type_id(parts) == 3) & ~shapely.is_empty(parts) & (shapely.area(parts) > 0)]
    return np.asarray(polygons, dtype=object)


def rasterise_instances(footprints: np.ndarray, transform: Affine, shape: tuple[int, int],
                        ids: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint16: ``ids[k]`` (default k + 1) where ``footprints[k]`` covers the pixel centre, 0 elsewhere.

    A later footprint wins where two overlap. Raises ValueError beyond 65 535 ids.
    """
    ids = np.arange(1, len(footprints) + 1) if ids is None else ids
    if len(ids) and int(np.max(ids)) > np.iinfo(np.uint16).max:
        raise ValueError(f"footprint id {int(np.max(ids))} does not fit uint16 instance ids")
    if len(footprints) == 0:
        return np.zeros(shape, np.uint16)
    instances: npt.NDArray[np.uint16] = rasterio.features.rasterize(
        zip(footprints, (int(i) for i in ids), strict=True), out_shape=shape, transform=transform, fill=0,
        dtype="uint16")
    return instances


@dataclass(frozen=True)
class Chip:
    """A square window of a Source resampled to ``gsd_m``: image, validity, footprint ids, grid and window.

    ``image`` (S, S, 3) uint8, ``valid`` (S, S) bool, ``instances`` (S, S) uint16 (the source's
    footprint ids, rasterised on the chip's own grid), ``transform`` its grid in ``source.crs``,
    ``window`` where it was cut.
    """

    source: Source
    image: np.ndarray
    valid: np.ndarray
    instances: np.ndarray
    transform: Affine
    gsd_m: float
    window: tuple[int, int, int]  # (row, col, side) on the source's grid

    def around(self, factor: int = 3) -> Chip:
        """The window ``factor`` times as wide centred on this chip, at its GSD.

        This chip lies at ((factor − 1) / 2 · size) pixels in it, both ways.
        """
        row, col, side = self.window
        margin = (factor - 1) // 2
        return cut_chip(self.source, row - margin * side, col - margin * side, factor * side,
                        factor * self.image.shape[0])


def _window(array: np.ndarray, row: int, col: int, side: int) -> np.ndarray:
    """``array[row:row + side, col:col + side]``, zero where the window leaves the array."""
    out = np.zeros((side, side, *array.shape[2:]), array.dtype)
    h, w = array.shape[:2]
    r0, c0, r1, c1 = max(row, 0), max(col, 0), min(row + side, h), min(col + side, w)
    if r1 > r0 and c1 > c0:
        out[r0 - row:r1 - row, c0 - col:c1 - col] = array[r0:r1, c0:c1]
    return out


def cut_chip(source: Source, row: int, col: int, side: int, size: int) -> Chip:
    """The ``side``² window of ``source``'s grid at (row, col), area-averaged to ``size``² pixels.

    The window may leave the grid (not valid there); averaged with ``cv2.INTER_AREA``; its GSD is
    ``source.gsd_m · side / size``. A pixel is valid only when all it averages was valid.
    """
    image, valid = _window(source.image, row, col, side), _window(source.valid, row, col, side)
    if side != size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        valid = cv2.resize(valid.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) > 0.999
    transform = source.transform * Affine.translation(col, row) * Affine.scale(side / size)
    box = shapely.box(*rasterio.transform.array_bounds(size, size, transform))
    hits = np.flatnonzero(shapely.intersects(source.footprints, box)) if len(source.footprints) else np.array([], int)
    instances = rasterise_instances(source.footprints[hits], transform, (size, size), hits + 1)
    return Chip(source, image, valid, instances, transform, source.gsd_m * side / size, (row, col, side))


def _relative(paths: Iterable[Path], root: Path) -> tuple[str, ...]:
    return tuple(str(p.relative_to(root)) for p in paths)


def _source(area: AreaFiles, name: str, mosaic: Mosaic, gsd_m: float, files: tuple[str, ...]) -> Source:
    metric = to_metric(mosaic, gsd_m)
    footprints = read_footprints(area.labels, metric.crs)
    h, w = metric.valid.shape
    box = shapely.box(*rasterio.transform.array_bounds(h, w, metric.transform))
    footprints = footprints[shapely.intersects(footprints, box)] if len(footprints) else footprints
    instances = rasterise_instances(footprints, metric.transform, (h, w))
    return Source(area.area, name, files, metric.crs, metric.transform, gsd_m, metric.image, metric.valid,
                  footprints, instances, _sun(mosaic, footprints, metric, instances, gsd_m))


def _sun(mosaic: Mosaic, footprints: np.ndarray, metric: Mosaic, instances: np.ndarray, gsd_m: float) -> Sun:
    """The block's shadows measured at SUN_GSD_M (or finer), so that they do not depend on the GSD asked for."""
    if gsd_m <= SUN_GSD_M:
        return estimate_sun(metric.image, instances, metric.valid, gsd_m)
    fine = to_metric(mosaic, SUN_GSD_M)
    fine_instances = rasterise_instances(footprints, fine.transform, fine.valid.shape)
    return estimate_sun(fine.image, fine_instances, fine.valid, SUN_GSD_M)


def load_sources(root: str | Path, gsd_m: float) -> list[Source]:
    """Every block of imagery under ``root`` as a Source at ``gsd_m`` metres, named ``<area>-<k>``.

    k counts an area's blocks from 1, in path and tile order.

    Raises InputFileError for a missing folder, no labelled imagery, or an unreadable file.
    """
    base = Path(root)
    sources: list[Source] = []
    for area in find_areas(base):
        count = sum(s.area == area.area for s in sources)
        if area.kind == "geotiff":
            sources.append(_source(area, f"{area.area}-{count + 1}", geotiff_mosaic(area.images), gsd_m,
                                   _relative((*area.images, *area.labels), base)))
            continue
        zoom, tiles = _tile_index(area.images)
        for k, block in enumerate(tile_blocks(tiles), start=count + 1):
            block_tiles = {t: tiles[t] for t in block}
            sources.append(_source(area, f"{area.area}-{k}", xyz_mosaic(block_tiles, zoom), gsd_m,
                                   _relative((*block_tiles.values(), *area.labels), base)))
    return sources
