"""Stage 4 — vectorize: change probabilities → change polygons with areas in m².

Threshold the probability raster block by block, label connected regions (4-connectivity) and
trace each as one polygon (holes kept) in the scene CRS; regions cut by block edges are joined
whole. Regions and holes smaller than the minimum area are dropped or filled. Areas are measured
in the local UTM zone of the scene, so they are in m² whatever the scene CRS (geographic
EPSG:4326 included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.windows import Window
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from changewatch.rs.align import Grid

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class VectorizeConfig:
    """Decision threshold on probability (0–1), smallest change kept (m² of ground), and the
    tolerance outlines are simplified to (metres; 0 keeps the exact pixel outlines)."""

    threshold: float = 0.5
    min_area_m2: float = 200.0
    simplify_m: float = 0.0


def metric_crs(gdf: gpd.GeoDataFrame) -> CRS:
    """The local UTM CRS of a layer (for areas and distances in metres)."""
    return gdf.estimate_utm_crs()


def pixel_area_m2(grid: Grid) -> float:
    """Ground area of one pixel at the centre of the grid, in m² (measured in local UTM)."""
    col, row = grid.width // 2, grid.height // 2
    corners = [grid.transform @ (c, r) for c, r in ((col, row), (col + 1, row), (col + 1, row + 1), (col, row + 1))]
    pixel = gpd.GeoSeries([shapely.Polygon(corners)], crs=grid.crs)
    return float(pixel.to_crs(pixel.estimate_utm_crs()).area.iloc[0])


@dataclass
class Pieces:
    """Change regions of one block of a raster (or merged across blocks), with pixel statistics.

    ``open`` marks regions that reach an inner block edge and may continue in the next block.
    """

    geometry: np.ndarray
    pixels: np.ndarray
    prob_sum: np.ndarray
    prob_max: np.ndarray
    open: np.ndarray

    @classmethod
    def concat(cls, parts: list[Pieces]) -> Pieces:
        if not parts:
            return cls(np.zeros(0, object), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, bool))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    def select(self, keep: np.ndarray) -> Pieces:
        return Pieces(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


def block_pieces(prob: np.ndarray, threshold: float, transform: Affine,
                 inner_edges: tuple[bool, bool, bool, bool] = (False, False, False, False)) -> Pieces:
    """4-connected regions of ``prob ≥ threshold`` (NaN is never change) in one block of a raster.

    ``transform`` is the block's own; ``inner_edges`` (top, bottom, left, right) say which of its
    edges are inside the raster, where a region may continue in the neighbouring block.
    """
    with np.errstate(invalid="ignore"):
        mask = prob >= threshold  # NaN compares False
    labels, n = ndimage.label(mask, structure=FOUR_CONNECTED, output=np.int32)
    if n == 0:
        return Pieces.concat([])
    shapes = rasterio.features.shapes(labels, mask=mask, connectivity=4, transform=transform)
    by_label = {int(v): shapely.geometry.shape(g) for g, v in shapes}
    is_open = np.zeros(n + 1, bool)
    for inner, edge in zip(inner_edges, (labels[0], labels[-1], labels[:, 0], labels[:, -1])):
        if inner:
            is_open[edge] = True
    label, value = labels[mask], prob[mask].astype(float)  # change pixels only: few, so cheap
    prob_max = np.zeros(n + 1)
    np.maximum.at(prob_max, label, value)
    return Pieces(np.array([by_label[i] for i in range(1, n + 1)], dtype=object),
                  np.bincount(label, minlength=n + 1)[1:].astype(float),
                  np.bincount(label, weights=value, minlength=n + 1)[1:], prob_max[1:], is_open[1:])


def merge_across_blocks(pieces: Pieces) -> Pieces:
    """Join regions that share an edge (not just a corner: 4-connectivity) across block edges."""
    n = len(pieces.geometry)
    if n < 2:
        return pieces
    i, j = shapely.STRtree(pieces.geometry).query(pieces.geometry, predicate="intersects")
    pair = i < j
    i, j = i[pair], j[pair]
    edge = shapely.length(shapely.intersection(pieces.geometry[i], pieces.geometry[j])) > 0
    graph = csr_matrix((np.ones(int(edge.sum())), (i[edge], j[edge])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    order = np.argsort(component, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(component[order]) != 0])
    geoms = [shapely.union_all(g) if len(g) > 1 else g[0] for g in np.split(pieces.geometry[order], starts[1:])]
    return Pieces(np.array(geoms, dtype=object),
                  np.add.reduceat(pieces.pixels[order], starts), np.add.reduceat(pieces.prob_sum[order], starts),
                  np.maximum.reduceat(pieces.prob_max[order], starts), np.zeros(len(starts), bool))


def drop_small_holes(geoms: np.ndarray, min_area: float) -> np.ndarray:
    """Polygons with the interior rings smaller than ``min_area`` (CRS units²) filled."""
    out = geoms.copy()
    for k in np.flatnonzero(shapely.get_num_interior_rings(geoms) > 0):
        poly = geoms[k]
        kept = [r for r in poly.interiors if shapely.Polygon(r).area >= min_area]
        if len(kept) < len(poly.interiors):
            out[k] = shapely.Polygon(poly.exterior, kept)
    return out


def polygons_from_mask(mask: np.ndarray, prob: np.ndarray, grid: Grid) -> gpd.GeoDataFrame:
    """One polygon per 4-connected region of ``mask``, with mean and max probability, in ``grid.crs``
    (an in-memory array: demo and test data)."""
    pieces = block_pieces(np.where(mask, prob, np.nan).astype(np.float32), -np.inf, grid.transform)
    return gpd.GeoDataFrame({"mean_prob": (pieces.prob_sum / np.maximum(pieces.pixels, 1)).astype(np.float32),
                             "max_prob": pieces.prob_max.astype(np.float32)}, geometry=list(pieces.geometry),
                            crs=grid.crs)


def vectorize(prob_path: str | os.PathLike[str], config: VectorizeConfig, block: int = 1024) -> gpd.GeoDataFrame:
    """Change polygons from a probability GeoTIFF (as written by ``rs.infer.write_probability``).

    Reads ``block`` × ``block`` pixels at a time: regions inside a block are finished there;
    regions that reach an inner block edge are kept aside and joined with their continuations
    once every block is read, so memory holds one block plus the regions along block edges, not
    the scene. Regions under ``min_area_m2`` are dropped and holes under it filled; outlines are
    simplified to ``simplify_m`` metres when it is above 0 (areas are those of the simplified outlines).

    Returns columns ``change_id`` (1-based, north to south then west to east), ``area_m2`` (local
    UTM), ``mean_prob``, ``max_prob`` and the geometry in the raster's CRS.
    """
    finished, pending = [], []
    with rasterio.open(prob_path) as ds:
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
        for row in range(0, ds.height, block):
            for col in range(0, ds.width, block):
                window = Window(col, row, min(block, ds.width - col), min(block, ds.height - row))
                inner = (row > 0, row + block < ds.height, col > 0, col + block < ds.width)
                pieces = block_pieces(ds.read(1, window=window), config.threshold,
                                      ds.transform @ Affine.translation(col, row), inner)
                finished.append(pieces.select(~pieces.open))
                pending.append(pieces.select(pieces.open))
    pieces = Pieces.concat([*finished, merge_across_blocks(Pieces.concat(pending))])
    m2_per_crs_unit = pixel_area_m2(grid) / abs(grid.transform.a * grid.transform.e)
    geoms = drop_small_holes(pieces.geometry, config.min_area_m2 / m2_per_crs_unit)
    if config.simplify_m > 0:  # topology-preserving: no self-intersections, holes stay inside
        geoms = shapely.simplify(geoms, config.simplify_m / np.sqrt(m2_per_crs_unit), preserve_topology=True)
    gdf = gpd.GeoDataFrame({"mean_prob": (pieces.prob_sum / np.maximum(pieces.pixels, 1)).astype(np.float32),
                            "max_prob": pieces.prob_max.astype(np.float32)}, geometry=list(geoms), crs=grid.crs)
    gdf["area_m2"] = gdf.to_crs(metric_crs(gdf)).area if len(gdf) else np.zeros(0)
    gdf = gdf[gdf["area_m2"] >= config.min_area_m2]
    bounds = gdf.geometry.bounds
    gdf = gdf.iloc[np.lexsort((bounds["minx"].to_numpy(), -bounds["maxy"].to_numpy()))].reset_index(drop=True)
    gdf.insert(0, "change_id", np.arange(1, len(gdf) + 1, dtype=np.int64))
    return gdf[["change_id", "area_m2", "mean_prob", "max_prob", "geometry"]]
