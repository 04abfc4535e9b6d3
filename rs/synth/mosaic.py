"""Single-date VHR imagery read into mosaics: the two layouts a source folder may hold.

- **XYZ tiles** — a folder of ``OAM-<x>-<y>-<z>.png`` web-map tiles (256² RGB or RGBA, alpha 0 = no
  data; no georeferencing inside) and a ``labels.geojson`` of building polygons (any CRS, usually
  EPSG:4326), as ``oam-ramp/ramp-data/TRAIN/HOTOSM/2/data/<n>/``. Each tile's EPSG:3857 bounds
  follow from x, y, z (``tile_bounds``). Only the finest zoom present is used (the coarser zooms
  cover the same ground);
- **GeoTIFF chips** — a folder with ``oam/*.tif`` (georeferenced RGB chips) beside ``osm/*.geojson``
  (building polygons), as ``oam-banepa/data/sample/train/``. Folders without ``osm/`` (unlabelled
  ``predict/``) are ignored.

``find_areas`` lists each area's blocks; ``xyz_mosaic`` and ``geotiff_mosaic`` mosaic a block in its
own CRS at its native resolution (``rs.synth.sources`` puts it on a metric grid).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import mercantile
import numpy as np
import rasterio
import rasterio.features
import rasterio.merge
import shapely
from affine import Affine
from PIL import Image, UnidentifiedImageError
from rasterio.crs import CRS
from scipy import ndimage

from changewatch.rs.errors import InputFileError

RAMP_AREAS = {"1": "zanzibar", "2": "kampala", "3": "banepa", "4": "catanduanes", "5": "nairobi"}
TILE_NAME = re.compile(r"^OAM-(\d+)-(\d+)-(\d+)\.png$")
TILE_PX = 256
WEB_MERCATOR = CRS.from_epsg(3857)
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


def tile_index(paths: Iterable[Path]) -> tuple[int, dict[tuple[int, int], Path]]:
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
