"""Seeded generators of tiny single-date VHR sources for the rs.synth tests: painted roofs with
shadows on textured ground, written in both layouts ``rs.synth.sources`` reads (XYZ web-map tiles
with labels.geojson; georeferenced GeoTIFF chips with osm/*.geojson), with known footprints."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import mercantile
import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from pyproj import Transformer
from shapely.geometry import Polygon

RAMP = Path("oam-ramp/ramp-data/TRAIN/HOTOSM/2/data")
ZOOM = 19
SENTINEL = (255, 0, 255)  # colour of the coarser-zoom tile, which must never be read
TO_LONLAT = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)


def painted_block(rows: int, cols: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """An (rows, cols, 3) uint8 scene: smooth, noisy ground with roofs (uniform colour, a ridge
    line) and their shadows 4 px to the east; returns it and the roofs as (row, col, height, width)."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float32)
    ground = 110 + 25 * np.sin(r / 23 + seed) * np.cos(c / 31) + rng.normal(0, 6, (rows, cols))
    image = np.stack([ground * 1.05, ground * 1.1, ground * 0.8], axis=-1)
    taken = np.zeros((rows, cols), bool)
    boxes = []
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(18, 40, 2))
        r0, c0 = int(rng.integers(6, rows - h - 12)), int(rng.integers(6, cols - w - 12))
        if taken[r0 - 6:r0 + h + 10, c0 - 6:c0 + w + 10].any():
            continue
        taken[r0:r0 + h, c0:c0 + w] = True
        image[r0:r0 + h, c0 + w:c0 + w + 4] *= 0.5  # shadow to the east
        image[r0:r0 + h, c0:c0 + w] = rng.uniform(60, 230, 3)
        image[r0 + h // 2, c0:c0 + w] *= 0.8  # ridge
        boxes.append((r0, c0, h, w))
        if len(boxes) == 14:
            break
    return np.clip(image, 0, 255).astype(np.uint8), boxes


def _polygons(boxes: list[tuple[int, int, int, int]], transform: Affine) -> list[Polygon]:
    """The roofs as lon/lat polygons, from their pixel corners on a Web-Mercator grid."""
    out = []
    for r0, c0, h, w in boxes:
        corners = [transform * (c, r) for c, r in ((c0, r0), (c0 + w, r0), (c0 + w, r0 + h), (c0, r0 + h))]
        out.append(Polygon([TO_LONLAT.transform(x, y) for x, y in corners]))
    return out


def write_xyz_area(folder: Path, lon: float, lat: float, seed: int, tiles: int = 2) -> list[Polygon]:
    """``tiles``² zoom-19 tiles of a painted block at (lon, lat) (RGBA, with one enclosed alpha-0
    speck on a roof, as the real tiles mark black pixels), their zoom-18 parent painted
    SENTINEL, and labels.geojson; returns the footprints (EPSG:4326)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = mercantile.tile(lon, lat, ZOOM)
    x0, y0 = t.x - t.x % 2, t.y - t.y % 2
    image, boxes = painted_block(256 * tiles, 256 * tiles, seed)
    alpha = np.full(image.shape[:2], 255, np.uint8)
    r0, c0, h, w = boxes[0]
    alpha[r0 + 2:r0 + 5, c0 + 2:c0 + 5] = 0
    image[alpha == 0] = 0
    for dy in range(tiles):
        for dx in range(tiles):
            window = (slice(dy * 256, (dy + 1) * 256), slice(dx * 256, (dx + 1) * 256))
            rgba = np.dstack([image[window], alpha[window]])
            Image.fromarray(rgba, "RGBA").save(folder / f"OAM-{x0 + dx}-{y0 + dy}-{ZOOM}.png")
    Image.fromarray(np.full((256, 256, 3), SENTINEL, np.uint8)).save(folder / f"OAM-{x0 // 2}-{y0 // 2}-{ZOOM - 1}.png")
    b = mercantile.xy_bounds(x0, y0, ZOOM)
    res = (b.right - b.left) / 256
    polygons = _polygons(boxes, Affine(res, 0, b.left, 0, -res, b.top))
    gpd.GeoDataFrame({"osm_id": range(len(polygons))}, geometry=polygons, crs="EPSG:4326").to_file(
        folder / "labels.geojson", driver="GeoJSON")
    return polygons


def write_geotiff_area(folder: Path, lon: float, lat: float, seed: int) -> list[Polygon]:
    """Two adjacent 384² RGB GeoTIFF chips (EPSG:4326, about 0.2 m) of a painted block at
    (lon, lat) in ``folder/oam`` and its footprints in ``folder/osm/buildings.geojson``."""
    (folder / "oam").mkdir(parents=True, exist_ok=True)
    (folder / "osm").mkdir(parents=True, exist_ok=True)
    image, boxes = painted_block(384, 768, seed)
    res = 2e-6
    transform = Affine(res, 0, lon, 0, -res, lat)
    for k in range(2):
        chip = image[:, k * 384:(k + 1) * 384]
        with rasterio.open(folder / "oam" / f"chip-{k}.tif", "w", driver="GTiff", width=384, height=384, count=3,
                           dtype="uint8", crs="EPSG:4326", transform=transform * Affine.translation(k * 384, 0)) as dst:
            dst.write(np.moveaxis(chip, -1, 0))
    polygons = [Polygon([transform * (c, r) for c, r in ((c0, r0), (c0 + w, r0), (c0 + w, r0 + h), (c0, r0 + h))])
                for r0, c0, h, w in boxes]
    gpd.GeoDataFrame({"building": ["yes"] * len(polygons)}, geometry=polygons, crs="EPSG:4326").to_file(
        folder / "osm" / "buildings.geojson", driver="GeoJSON")
    return polygons


def make_source_tree(root: Path, seed: int = 0) -> Path:
    """A source folder in the shared data's layout: zanzibar (data/1) and kampala (data/2) as XYZ
    tiles, 'testtown' as GeoTIFF chips (plus an unlabelled predict/oam folder, to be ignored)."""
    write_xyz_area(root / RAMP / "1", 39.2430, -6.0550, seed)
    write_xyz_area(root / RAMP / "2", 32.5920, 0.3500, seed + 1)
    write_geotiff_area(root / "oam-testtown" / "data" / "sample" / "train", 85.5200, 27.6300, seed + 2)
    (root / "oam-testtown" / "data" / "sample" / "predict" / "oam").mkdir(parents=True)
    return root
