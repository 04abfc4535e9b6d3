"""Stage 4 — vectorize: change probabilities → change objects (polygons) with areas in m².

Threshold the probability raster block by block, label connected regions (4-connectivity) and
trace each as one polygon (holes kept) in the scene CRS; regions cut by block edges are joined
whole. When the raster also has building probabilities of both dates (semantic change models,
bands described as in ``rs.io.raster.BAND_DESCRIPTIONS``), each region is then split into one object
per building and each object gets a ``change_type`` (``rs.buildings``), reading only the region's
own window; without them ``change_type`` is empty (NULL): the model cannot tell. Objects and holes
smaller than the minimum area are dropped or filled, per object. Areas are measured in the local
UTM zone of the scene, so they are in m² whatever the scene CRS (geographic EPSG:4326 included).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from changewatch.rs.buildings import (
    FOUR_CONNECTED,
    change_types,
    label_int32,
    object_counts,
    pixel_classes,
    split_region,
)
from changewatch.rs.config import BuildingConfig, VectorizeConfig
from changewatch.rs.errors import InputFileError
from changewatch.rs.grid import Grid, metric_crs, pixel_area_m2
from changewatch.rs.io.raster import BAND_DESCRIPTIONS

COLUMNS = ("change_id", "area_m2", "mean_prob", "max_prob", "change_type", "geometry")


@dataclass
class Pieces:
    """Change regions of one block of a raster (or merged across blocks), with pixel statistics.

    ``open`` marks regions that reach an inner block edge and may continue in the next block;
    ``classes`` counts (n, 3) each region's building pixels of the classes ``rs.buildings`` NEW,
    GONE, STANDING (zeros without building probabilities); ``wall_m`` is the wall its new building
    shares with standing building (m; only known for regions split into buildings, else 0).
    """

    geometry: np.ndarray
    pixels: np.ndarray
    prob_sum: np.ndarray
    prob_max: np.ndarray
    open: np.ndarray
    classes: np.ndarray
    wall_m: np.ndarray

    @classmethod
    def concat(cls, parts: list[Pieces]) -> Pieces:
        """All regions of ``parts``, in order, as one Pieces (empty without parts)."""
        if not parts:
            return cls(np.zeros(0, object), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, bool),
                       np.zeros((0, 3)), np.zeros(0))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    def select(self, keep: np.ndarray) -> Pieces:
        """The regions where ``keep`` (a boolean or index array over the regions) selects them."""
        return Pieces(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


def block_pieces(prob: np.ndarray, threshold: float, transform: Affine,
                 inner_edges: tuple[bool, bool, bool, bool] = (False, False, False, False),
                 classes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Pieces:
    """4-connected regions of ``prob ≥ threshold`` (NaN is never change) in one block of a raster.

    ``transform`` is the block's own; ``inner_edges`` (top, bottom, left, right) say which of its
    edges are inside the raster, where a region may continue in the neighbouring block;
    ``classes``: boolean arrays (new, gone, standing) of the block's building pixels
    (``rs.buildings.pixel_classes``), counted per region, or None.
    """
    with np.errstate(invalid="ignore"):
        mask = prob >= threshold  # NaN compares False
    labels, n = label_int32(mask, FOUR_CONNECTED)
    if n == 0:
        return Pieces.concat([])
    shapes = rasterio.features.shapes(labels, mask=mask, connectivity=4, transform=transform)
    by_label = {int(v): shapely.geometry.shape(g) for g, v in shapes}
    is_open = np.zeros(n + 1, bool)
    for inner, edge in zip(inner_edges, (labels[0], labels[-1], labels[:, 0], labels[:, -1]), strict=True):
        if inner:
            is_open[edge] = True
    label, value = labels[mask], prob[mask].astype(float)  # change pixels only: few, so cheap
    prob_max = np.zeros(n + 1)
    np.maximum.at(prob_max, label, value)
    counts = np.zeros((n, 3))
    if classes is not None:
        counts = np.stack([np.bincount(labels[c & mask], minlength=n + 1)[1:] for c in classes], axis=1).astype(float)
    return Pieces(np.array([by_label[i] for i in range(1, n + 1)], dtype=object),
                  np.bincount(label, minlength=n + 1)[1:].astype(float),
                  np.bincount(label, weights=value, minlength=n + 1)[1:], prob_max[1:], is_open[1:],
                  counts, np.zeros(n))


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
                  np.maximum.reduceat(pieces.prob_max[order], starts), np.zeros(len(starts), bool),
                  np.add.reduceat(pieces.classes[order], starts, axis=0), np.zeros(len(starts)))


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
    """One polygon per 4-connected region of ``mask``, with mean and max probability, in ``grid.crs``.

    For an in-memory array: demo and test data.
    """
    pieces = block_pieces(np.where(mask, prob, np.nan).astype(np.float32), -np.inf, grid.transform)
    return gpd.GeoDataFrame({"mean_prob": (pieces.prob_sum / np.maximum(pieces.pixels, 1)).astype(np.float32),
                             "max_prob": pieces.prob_max.astype(np.float32)}, geometry=list(pieces.geometry),
                            crs=grid.crs)


def building_bands(ds: rasterio.io.DatasetReader) -> tuple[int, int] | None:
    """1-based indexes of the BEFORE and AFTER building probability bands of a probability raster.

    Found by their descriptions (``rs.io.raster.BAND_DESCRIPTIONS``); None unless both are there.
    """
    found = {d: i for i, d in enumerate(ds.descriptions, start=1) if d}
    before, after = (found.get(BAND_DESCRIPTIONS[name]) for name in ("building_before", "building_after"))
    return (before, after) if before and after else None


@dataclass(frozen=True)
class Vectorized:
    """Change objects of a probability raster and how they were made.

    ``changes``: the layer ``vectorize`` returns; ``buildings``: whether the raster had building
    probabilities of both dates (regions split per building, ``change_type`` decided);
    ``unsplit``: regions left whole because their window exceeds
    ``BuildingConfig.max_split_pixels``; ``notes``: one line each, for the run's summary.
    """

    changes: gpd.GeoDataFrame
    buildings: bool
    unsplit: int = 0
    notes: tuple[str, ...] = ()


def vectorize(prob_path: str | os.PathLike[str], config: VectorizeConfig, block: int = 1024,
              pixel_size_m: float | None = None) -> gpd.GeoDataFrame:
    """Change objects from a probability GeoTIFF: ``vectorize_changes(...).changes``.

    The GeoTIFF as written by ``rs.io.raster.write_probability``.
    """
    return vectorize_changes(prob_path, config, block, pixel_size_m).changes


def vectorize_changes(prob_path: str | os.PathLike[str], config: VectorizeConfig, block: int = 1024,
                      pixel_size_m: float | None = None) -> Vectorized:
    """Change objects from a probability GeoTIFF (as written by ``rs.io.raster.write_probability``).

    Reads ``block`` × ``block`` pixels at a time: regions inside a block are finished there;
    regions that reach an inner block edge are kept aside and joined with their continuations
    once every block is read, so memory holds one block plus the regions along block edges, not
    the scene. With building probabilities of both dates (``building_bands``) each region is then
    split into buildings (``rs.buildings``) by reading only its own window (its bounding box and
    one pixel around), and regions whose window exceeds ``config.buildings.max_split_pixels`` stay
    whole, so memory stays bounded by that size too. Objects under ``min_area_m2`` are dropped and
    their holes under it filled; outlines are simplified to ``simplify_m`` metres when it is above 0
    (areas are those of the simplified outlines).

    Returns columns ``change_id`` (1-based, north to south then west to east), ``area_m2`` (local
    UTM), ``mean_prob``, ``max_prob`` (change probability over the object's pixels),
    ``change_type`` (``rs.buildings.CHANGE_TYPES``; None without building probabilities) and the
    geometry in the raster's CRS. A raster without a CRS (plain images, compared pixel for pixel)
    needs ``pixel_size_m`` (its pixel side in metres), else InputFileError.
    """
    notes: list[str] = []
    unsplit = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain images are compared too
        ds = rasterio.open(prob_path)
    with ds:
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
        m2_per_pixel = _pixel_m2(grid, pixel_size_m, prob_path)
        bands = building_bands(ds)
        pieces = _regions(ds, bands, config, block)
        if bands:
            pieces, unsplit = _split_buildings(ds, bands, pieces, config, m2_per_pixel)
        else:
            notes.append("no building probabilities of both dates in the raster: one object per change region, "
                         "change_type empty")
    if unsplit:
        notes.append(f"{unsplit} change region(s) larger than {config.buildings.max_split_pixels} pixels (bounding "
                     "box) were not split into buildings; typed from their pixel counts, never as enlarged")
    changes = _layer(pieces, grid, m2_per_pixel, config, typed=bands is not None)
    return Vectorized(changes, bands is not None, unsplit, tuple(notes))


def _regions(ds: rasterio.io.DatasetReader, bands: tuple[int, int] | None, config: VectorizeConfig,
             block: int) -> Pieces:
    """Every change region of the raster, read ``block`` × ``block`` pixels at a time.

    Regions reaching an inner block edge are joined with their continuations at the end; each
    region comes with its building pixel classes when the raster has building ``bands``.
    """
    finished, pending = [], []
    for row in range(0, ds.height, block):
        for col in range(0, ds.width, block):
            window = Window(col, row, min(block, ds.width - col), min(block, ds.height - row))
            inner = (row > 0, row + block < ds.height, col > 0, col + block < ds.width)
            classes = None
            if bands:
                b_before, b_after = ds.read(list(bands), window=window)
                classes = pixel_classes(b_before, b_after, config.buildings.building_threshold)
            pieces = block_pieces(ds.read(1, window=window), config.threshold,
                                  ds.transform @ Affine.translation(col, row), inner, classes)
            finished.append(pieces.select(~pieces.open))
            pending.append(pieces.select(pieces.open))
    return Pieces.concat([*finished, merge_across_blocks(Pieces.concat(pending))])


def _layer(pieces: Pieces, grid: Grid, m2_per_pixel: float, config: VectorizeConfig, typed: bool) -> gpd.GeoDataFrame:
    """The change layer of ``pieces`` (see ``vectorize_changes``).

    Small holes filled, outlines simplified, areas measured, small objects dropped, numbered north
    to south then west to east; ``typed``: a change type decided per object (else None).
    """
    m2_per_crs_unit = m2_per_pixel / abs(grid.transform.determinant)
    geoms = drop_small_holes(pieces.geometry, config.min_area_m2 / m2_per_crs_unit)
    if config.simplify_m > 0:  # topology-preserving: no self-intersections, holes stay inside
        geoms = shapely.simplify(geoms, config.simplify_m / np.sqrt(m2_per_crs_unit), preserve_topology=True)
    kinds = (change_types(pieces.pixels, pieces.classes, pieces.wall_m, config.buildings) if typed
             else np.full(len(geoms), None, dtype=object))
    gdf = gpd.GeoDataFrame({"mean_prob": (pieces.prob_sum / np.maximum(pieces.pixels, 1)).astype(np.float32),
                            "max_prob": pieces.prob_max.astype(np.float32), "change_type": kinds},
                           geometry=list(geoms), crs=grid.crs)
    if grid.crs is None:
        gdf["area_m2"] = gdf.area * m2_per_crs_unit
    else:
        gdf["area_m2"] = gdf.to_crs(metric_crs(gdf)).area if len(gdf) else np.zeros(0)
    gdf = gdf[gdf["area_m2"] >= config.min_area_m2]
    bounds = gdf.geometry.bounds
    gdf = gdf.iloc[np.lexsort((bounds["minx"].to_numpy(), -bounds["maxy"].to_numpy()))].reset_index(drop=True)
    gdf.insert(0, "change_id", np.arange(1, len(gdf) + 1, dtype=np.int64))
    return gdf[list(COLUMNS)]


def _pixel_m2(grid: Grid, pixel_size_m: float | None, path: str | os.PathLike[str]) -> float:
    """Ground area of one pixel (m²): measured in local UTM, or ``pixel_size_m``² without a CRS."""
    if grid.crs is not None:
        return pixel_area_m2(grid)
    if pixel_size_m is None:
        raise InputFileError(f"{path} has no CRS: its pixel size in metres is needed to measure areas")
    return pixel_size_m ** 2


# Regions whose convex hull is under this share of the minimum area are dropped whatever their
# split (every object lies inside the hull; the slack covers the scale change of a geographic CRS
# across a scene), so they are not read again.
SPLIT_SLACK = 0.5


def _split_buildings(ds: rasterio.io.DatasetReader, bands: tuple[int, int], pieces: Pieces, config: VectorizeConfig,
                     m2_per_pixel: float) -> tuple[Pieces, int]:
    """Every region split into buildings (``rs.buildings.split_region``), each from its own window.

    Regions whose window exceeds ``config.buildings.max_split_pixels`` are kept whole and counted.
    """
    if not len(pieces.geometry):
        return pieces, 0
    m2_per_crs_unit = m2_per_pixel / abs(ds.transform.determinant)
    hull_m2 = shapely.area(shapely.convex_hull(pieces.geometry)) * m2_per_crs_unit
    whole = np.zeros(len(pieces.geometry), bool)
    parts, unsplit = [], 0
    for k, geom in enumerate(pieces.geometry):
        if hull_m2[k] < SPLIT_SLACK * config.min_area_m2:
            whole[k] = True
            continue
        window = rasterio.features.geometry_window(ds, [geom], pad_x=1, pad_y=1)
        if window.width * window.height > config.buildings.max_split_pixels:
            whole[k] = True
            unsplit += 1
            continue
        parts.append(_split_region(ds, bands, geom, window, config.buildings, float(np.sqrt(m2_per_pixel))))
    return Pieces.concat([pieces.select(whole), *parts]), unsplit


def _split_region(ds: rasterio.io.DatasetReader, bands: tuple[int, int], geom: shapely.Geometry, window: Window,
                  config: BuildingConfig, pixel_m: float) -> Pieces:
    """One region's objects, read from its window (change and building probabilities)."""
    window = Window(int(window.col_off), int(window.row_off), int(window.width), int(window.height))
    transform = ds.window_transform(window)
    prob = ds.read(1, window=window)
    b_before, b_after = ds.read(list(bands), window=window)
    region = rasterio.features.rasterize([geom], out_shape=prob.shape, transform=transform).astype(bool)
    objects = split_region(region, b_before, b_after, pixel_m, config)
    n = int(objects.max(initial=0))
    counts, wall = object_counts(objects, b_before, b_after, pixel_m, config.building_threshold)
    shapes = rasterio.features.shapes(objects, mask=objects > 0, connectivity=4, transform=transform)
    by_id = {int(v): shapely.geometry.shape(g) for g, v in shapes}
    ids, value = objects[region], prob[region].astype(float)
    prob_max = np.zeros(n + 1)
    np.maximum.at(prob_max, ids, value)
    return Pieces(np.array([by_id[i] for i in range(1, n + 1)], dtype=object),
                  np.bincount(ids, minlength=n + 1)[1:].astype(float),
                  np.bincount(ids, weights=value, minlength=n + 1)[1:], prob_max[1:], np.zeros(n, bool), counts, wall)
