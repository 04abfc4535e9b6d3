"""Rasters in and out: opening any raster with one clear error, the acquisition date of a scene,
and the change-probability Cloud-Optimised GeoTIFF a run writes (tiles blended as they arrive)."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from changewatch.rs.errors import InputFileError
from changewatch.rs.grid import Grid
from changewatch.rs.tiling import Tile, TileGrid

# Largest error LERC may make storing a probability (absolute, 0–1 scale). Raw float32
# probabilities barely compress (71 MB for 4096² with deflate); within 1/2000 they shrink ~50×
# and write 3× faster (bench/RESULTS.md), far below any meaningful difference in a probability.
PROB_MAX_ERROR = 0.0005
# Descriptions of the probability raster's bands, by model output (``write_probability`` writes them;
# ``rs.vectorize`` finds the building bands by them).
BAND_DESCRIPTIONS = {"change": "change probability", "building_before": "building probability, BEFORE",
                     "building_after": "building probability, AFTER"}


def open_raster(path: str | os.PathLike[str], role: str) -> rasterio.io.DatasetReader:
    """Open a raster for reading, turning every way it can fail into one clear InputFileError."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{role} file not found: {p}")
    try:
        with warnings.catch_warnings():  # plain images (PNG chips) are legitimate input: compared pixel for pixel
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(p)
    except RasterioIOError as exc:
        raise InputFileError(f"{role} file is not a readable raster: {p} ({exc})") from exc


DATE_TAGS = ("ACQUISITION_DATE", "DATE_ACQUIRED", "datetime", "TIFFTAG_DATETIME")


def scene_date(path: str | os.PathLike[str]) -> date | None:
    """Acquisition date from a raster's metadata tags (first of DATE_TAGS that parses), else None.

    ``TIFFTAG_DATETIME`` is written ``YYYY:MM:DD HH:MM:SS``; the others ISO 8601.
    """
    with open_raster(path, "scene") as ds:
        tags = ds.tags()
    for key in DATE_TAGS:
        value = tags.get(key, "").strip()
        if not value:
            continue
        text = value[:10].replace(":", "-") if key == "TIFFTAG_DATETIME" else value[:10]
        try:
            return date.fromisoformat(text)
        except ValueError:
            continue
    return None


def write_probability(grid: Grid, tiles: TileGrid, chunks: Iterable[tuple[Tile, np.ndarray]],
                      path: str | os.PathLike[str], outputs: tuple[str, ...] = ("change",)) -> Path:
    """Blend (tile, probabilities (outputs, rows, cols)) chunks of ``tiles`` into a float32 COG at
    ``path`` (CRS and transform of ``grid``; nodata NaN where either date was invalid), one band
    per ``outputs`` (band 1: change probability; semantic models add building probabilities).

    Each chunk is weighted by ``tiles.weights`` and added into a tiled scratch GeoTIFF next to
    ``path`` as it arrives (in any order: Dask tasks finish out of order), so memory holds one tile
    whatever the scene size. The COG (overviews; LERC + deflate, lossy to within PROB_MAX_ERROR,
    compressed on every core) is then written under a temporary name and renamed, so ``path`` is
    either absent or complete.
    """
    path = Path(path)
    profile = {
        "driver": "GTiff", "dtype": "float32", "count": len(outputs),
        "width": grid.width, "height": grid.height, "crs": grid.crs, "transform": grid.transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256,
    }
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".prob-") as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain images (no CRS) are compared too
        raw = Path(scratch) / "raw.tif"
        with rasterio.open(raw, "w+", **profile) as dst:  # no nodata yet: unwritten blocks read as 0
            for band, name in enumerate(outputs, start=1):
                dst.set_band_description(band, BAND_DESCRIPTIONS[name])
            for tile, prob in chunks:
                total = dst.read(window=tile.read)
                total += prob * tiles.weights(tile)  # NaN (invalid) stays NaN: every tile sees it invalid
                dst.write(total, window=tile.read)
            dst.nodata = float("nan")
        cog = Path(scratch) / "cog.tif"
        rasterio.shutil.copy(raw, cog, driver="COG", compress="LERC_DEFLATE", max_z_error=PROB_MAX_ERROR,
                             num_threads="ALL_CPUS", blocksize=256, overview_resampling="AVERAGE")
        os.replace(cog, path)
    return path
