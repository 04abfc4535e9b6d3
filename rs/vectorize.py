"""Stage 4 — vectorize: change probabilities → change polygons with areas in m².

Threshold the probability raster, remove specks smaller than the minimum area with a sieve,
label connected regions (4-connectivity) and trace each as one polygon (holes kept) in the
scene CRS. Areas are measured in the local UTM zone of the scene, so they are in m² whatever
the scene CRS (geographic EPSG:4326 included).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
from pyproj import CRS
from scipy import ndimage

from rs.align import Grid

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class VectorizeConfig:
    """Decision threshold on probability (0–1) and smallest change kept, in m² of ground."""

    threshold: float = 0.5
    min_area_m2: float = 200.0


def metric_crs(gdf: gpd.GeoDataFrame) -> CRS:
    """The local UTM CRS of a layer (for areas and distances in metres)."""
    return gdf.estimate_utm_crs()


def pixel_area_m2(grid: Grid) -> float:
    """Ground area of one pixel at the centre of the grid, in m² (measured in local UTM)."""
    col, row = grid.width // 2, grid.height // 2
    corners = [grid.transform @ (c, r) for c, r in ((col, row), (col + 1, row), (col + 1, row + 1), (col, row + 1))]
    pixel = gpd.GeoSeries([shapely.Polygon(corners)], crs=grid.crs)
    return float(pixel.to_crs(pixel.estimate_utm_crs()).area.iloc[0])


def change_mask(prob: np.ndarray, threshold: float, min_pixels: int) -> np.ndarray:
    """Boolean change mask: prob ≥ threshold (NaN is never change), specks < ``min_pixels`` removed."""
    valid = ~np.isnan(prob)
    binary = (np.where(valid, prob, 0.0) >= threshold).astype(np.uint8)
    if min_pixels > 1 and binary.any():
        binary = rasterio.features.sieve(binary, size=min_pixels, connectivity=4, mask=valid)
    return binary.astype(bool) & valid


def polygons_from_mask(mask: np.ndarray, prob: np.ndarray, grid: Grid) -> gpd.GeoDataFrame:
    """One polygon per 4-connected region of ``mask``, with mean and max probability, in ``grid.crs``."""
    labels, n = ndimage.label(mask, structure=FOUR_CONNECTED)
    if n == 0:
        return gpd.GeoDataFrame({"mean_prob": [], "max_prob": []}, geometry=[], crs=grid.crs)
    ids = np.arange(1, n + 1)
    mean_prob = ndimage.mean(prob, labels, ids)
    max_prob = ndimage.maximum(prob, labels, ids)
    shapes = rasterio.features.shapes(labels.astype(np.int32), mask=mask, connectivity=4, transform=grid.transform)
    by_label = {int(v): shapely.geometry.shape(g) for g, v in shapes}
    return gpd.GeoDataFrame(
        {"mean_prob": np.asarray(mean_prob, np.float32), "max_prob": np.asarray(max_prob, np.float32)},
        geometry=[by_label[i] for i in ids], crs=grid.crs,
    )


def vectorize(prob_path: str | os.PathLike[str], config: VectorizeConfig) -> gpd.GeoDataFrame:
    """Change polygons from a probability GeoTIFF (as written by ``rs.infer.write_probability``).

    Returns columns ``change_id`` (1-based, raster scan order), ``area_m2``, ``mean_prob``,
    ``max_prob`` and the geometry in the raster's CRS. Polygons under ``min_area_m2`` are dropped.
    """
    with rasterio.open(prob_path) as ds:
        prob = ds.read(1)
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    min_pixels = max(1, math.ceil(config.min_area_m2 / pixel_area_m2(grid)))
    gdf = polygons_from_mask(change_mask(prob, config.threshold, min_pixels), prob, grid)
    gdf["area_m2"] = gdf.to_crs(metric_crs(gdf)).area if len(gdf) else np.zeros(0)
    gdf = gdf[gdf["area_m2"] >= config.min_area_m2].reset_index(drop=True)
    gdf.insert(0, "change_id", np.arange(1, len(gdf) + 1, dtype=np.int64))
    return gdf[["change_id", "area_m2", "mean_prob", "max_prob", "geometry"]]
