"""Single-date VHR imagery with building footprints, put on a metric grid (the synthetic pairs' raw material).

The imagery of a source folder is read by ``rs.synth.mosaic`` (XYZ tiles or GeoTIFF chips, with
their building polygons; ``find_areas``).

Each *area* (a town) yields one ``Source`` per contiguous block of imagery: mosaicked in its own
CRS, reprojected into the UTM zone of its centre at the requested GSD with area-averaging
resampling (GDAL ``average``), with the footprints rasterised as instance ids on the same grid.
Memory: a block is mosaicked at its native resolution before warping (the largest here, 4×8
zoom-19 tiles read at zoom 21, takes about 130 MB for a moment); a Source then holds about 6 bytes
per pixel of its metric grid (0.7 km² at 0.3 m: about 50 MB for all areas).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
import rasterio.features
import rasterio.merge
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

from changewatch.rs.errors import InputFileError
from changewatch.rs.grid import Grid, utm_crs
from changewatch.rs.synth.mosaic import (
    AreaFiles,
    Mosaic,
    find_areas,
    geotiff_mosaic,
    tile_blocks,
    tile_index,
    xyz_mosaic,
)
from changewatch.rs.synth.shadow import Sun, estimate_sun

SUN_GSD_M = 0.3  # shadows are measured on a grid this fine (or the source's own, when finer)


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
        zoom, tiles = tile_index(area.images)
        for k, block in enumerate(tile_blocks(tiles), start=count + 1):
            block_tiles = {t: tiles[t] for t in block}
            sources.append(_source(area, f"{area.area}-{k}", xyz_mosaic(block_tiles, zoom), gsd_m,
                                   _relative((*block_tiles.values(), *area.labels), base)))
    return sources
