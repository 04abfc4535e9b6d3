"""Rasters in and out: opening rasters, scene dates, a raster on a common grid, the probability COG.

Opening any raster with one clear error, the acquisition date of a scene, one raster presented
on a common grid a window at a time (``GridReader``: read in place, or warped lazily through a
GDAL WarpedVRT), and the change-probability Cloud-Optimised GeoTIFF a run writes (tiles blended
as they arrive).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Literal, overload

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from scipy import ndimage

from changewatch.rs.errors import InputFileError
from changewatch.rs.georef import Dataset
from changewatch.rs.grid import Grid
from changewatch.rs.io.gdalpaths import archive_of, is_gdal_path
from changewatch.rs.io.intake import described_date, is_described, read_described
from changewatch.rs.tiling import Tile, TileGrid
from changewatch.rs.validity import Validity, alpha_band, has_internal_mask, is_nodata

# Largest error LERC may make storing a probability (absolute, 0–1 scale). Raw float32
# probabilities barely compress (71 MB for 4096² with deflate); within 1/2000 they shrink ~50×
# and write 3× faster (bench/RESULTS.md), far below any meaningful difference in a probability.
PROB_MAX_ERROR = 0.0005
# Descriptions of the probability raster's bands, by model output (``write_probability`` writes them;
# ``rs.vectorize`` finds the building bands by them).
BAND_DESCRIPTIONS = {"change": "change probability", "building_before": "building probability, BEFORE",
                     "building_after": "building probability, AFTER"}


def open_raster(path: str | os.PathLike[str], role: str,
                bands: tuple[str, ...] | None = None) -> rasterio.io.DatasetReader:
    """Open a raster for reading, turning every way it can fail into one clear InputFileError.

    ``path``: a local file, a GDAL path (``/vsizip/archive.zip/scene.tif``, ``/vsicurl/…``:
    ``rs.io.gdalpaths``; a missing archive is reported as a missing file), a STAC Item JSON or a Sentinel-2
    L2A product, opened as the VRT of its ``bands`` (names; None: blue, green, red, nir) on one grid
    (``rs.io.intake``, which raises StacItemError, ProductError or IncompatibleScenesError). ``role`` names it
    in messages ("BEFORE").
    """
    text = os.fspath(path)
    if is_described(text):
        return open_vrt(read_described(text, bands, role).image_vrt(), f"{role} {text}")
    missing = archive_of(text) if is_gdal_path(text) else Path(text)
    if missing is not None and not missing.exists():
        raise InputFileError(f"{role} file not found: {missing}" + (f" (in {text})" if str(missing) != text else ""))
    try:
        with warnings.catch_warnings():  # plain images (PNG chips) are legitimate input: compared pixel for pixel
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(text)
    except RasterioIOError as exc:
        raise InputFileError(f"{role} file is not a readable raster: {text} ({' '.join(str(exc).split())})") from exc


def open_vrt(xml: str, what: str) -> rasterio.io.DatasetReader:
    """Open a VRT given as its XML (``rs.io.vrt``); ``what`` names it in the InputFileError raised on failure."""
    try:
        return rasterio.open(xml)
    except RasterioIOError as exc:
        raise InputFileError(f"{what} cannot be opened: {' '.join(str(exc).split())}") from exc


def shown_name(ds: Dataset) -> str:
    """A dataset's name for messages: its path, or "(a VRT of STAC assets)" for one opened from XML."""
    name = str(ds.name)
    return "(a VRT of STAC assets)" if name.lstrip().startswith("<") else name


DATE_TAGS = ("ACQUISITION_DATE", "DATE_ACQUIRED", "datetime", "TIFFTAG_DATETIME")


def scene_date(path: str | os.PathLike[str]) -> date | None:
    """Acquisition date from a raster's metadata tags (first of DATE_TAGS that parses), else None.

    ``TIFFTAG_DATETIME`` is written ``YYYY:MM:DD HH:MM:SS``; the others ISO 8601. A STAC Item's date is
    its ``datetime``'s (UTC; ``rs.io.stac_scene.item_date``); a Sentinel-2 product's, its datatake sensing
    start's (UTC; ``rs.io.s2_product.product_date``).
    """
    if is_described(path):
        return described_date(path)
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


def _pixel_offset(ds: rasterio.io.DatasetReader, grid: Grid) -> tuple[int, int] | None:
    """(col, row) of ``grid``'s origin in ``ds`` when ``grid`` is a window of ``ds``'s own grid, else None.

    A window: same CRS, same pixel size, whole-pixel shift, inside the file. When None, ``ds`` is
    warped.
    """
    if ds.crs != grid.crs or not ds.transform.almost_equals(
            Affine(grid.transform.a, grid.transform.b, ds.transform.c, grid.transform.d, grid.transform.e,
                   ds.transform.f)):
        return None
    col, row = ~ds.transform * (grid.transform.c, grid.transform.f)
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    col, row = round(col), round(row)
    if col < 0 or row < 0 or col + grid.width > ds.width or row + grid.height > ds.height:
        return None
    return col, row


class GridReader:
    """One raster presented on a common grid, read a window at a time.

    Read straight from the file when the grid is a window of the file's own grid, otherwise
    through a lazy WarpedVRT (``resampling``: bilinear for imagery, nearest for classes and masks).
    ``read`` returns (bands, rows, cols) float32 and a validity mask: False where the file does not
    reach or, for imagery (``validity`` given, see ``rs.validity``), where its rule says so; for
    other rasters where their nodata value is. Not thread-safe: one per thread.

    ``role`` names the file in error messages ("BEFORE", "mask"…); ``fill``: the value outside the
    file instead of an alpha band (e.g. 0 = "not masked" for cloud masks); ``src_transform``: the
    file's georeferencing corrected (co-registration), used instead of its own.
    """

    def __init__(self, ds: Dataset, grid: Grid, resampling: Resampling, role: str,
                 fill: float | None = None, src_transform: Affine | None = None,
                 validity: Validity | None = None) -> None:
        self.ds, self.grid, self.role, self.validity = ds, grid, role, validity
        # ``src_transform``: the file's georeferencing corrected (co-registration), used instead of its own.
        self._offset = _pixel_offset(ds, grid) if src_transform is None else None
        self._internal_mask = validity.internal_mask if validity is not None else has_internal_mask(ds)
        self._vrt: WarpedVRT | None = None
        self._coverage: WarpedVRT | None = None
        # An alpha band read with the data: the file's own (a mask, warped as alpha by GDAL) or one
        # the warper adds to mark where the file reaches.
        self._alpha: int | None = validity.alpha_band if validity is not None else alpha_band(ds)
        if self._offset is not None:
            return
        on_grid = {"crs": grid.crs, "transform": grid.transform, "width": grid.width, "height": grid.height,
                   **({"src_transform": src_transform} if src_transform is not None else {})}
        if validity is not None and validity.tests_values and self._alpha is None and not self._internal_mask:
            # Validity depends on the values (nodata, zero fill, NaN) at the file's own pixels, and GDAL's
            # warper takes a general, 2–3× slower path for sources with nodata. So the data are warped
            # ignoring nodata, and validity comes from a cheap nearest-neighbour warp of the same bands
            # (with an alpha band for coverage), eroded by one pixel so that no value blended with an
            # invalid pixel or with the outside of the file counts as valid.
            self._vrt = WarpedVRT(ds, resampling=resampling, src_nodata=None, nodata=None, **on_grid)
            self._coverage = WarpedVRT(ds, resampling=Resampling.nearest, src_nodata=None, nodata=None,
                                       add_alpha=True, **on_grid)
            return
        # Without nodata or a mask, an alpha band is the only record of where the file has no
        # pixels on the grid; GDAL does not report it through dataset_mask(). ``fill``: value
        # outside the file instead (then no alpha), e.g. 0 = "not masked" for cloud masks.
        add_alpha = fill is None and ds.nodata is None and not self._internal_mask and self._alpha is None
        self._vrt = WarpedVRT(ds, resampling=resampling, add_alpha=add_alpha,
                              **({"nodata": fill} if fill is not None else {}), **on_grid)
        if add_alpha:
            self._alpha = self._vrt.count

    def _window(self, window: Window) -> Window:
        if self._offset is None:
            return window
        return Window(window.col_off + self._offset[0], window.row_off + self._offset[1], window.width, window.height)

    @overload
    def read(self, bands: list[int], window: Window, with_valid: Literal[True] = True) -> tuple[np.ndarray, np.ndarray]:
        ...

    @overload
    def read(self, bands: list[int], window: Window, with_valid: Literal[False]) -> tuple[np.ndarray, None]:
        ...

    def read(self, bands: list[int], window: Window, with_valid: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(data, valid) of ``window`` of the grid; ``valid`` None unless ``with_valid``.

        A file that opens but cannot be decoded (truncated, corrupt blocks) raises InputFileError.

        Each window is read (and warped) once: validity comes from the alpha band read in the
        same call, from the values of the bands read (imagery: ``rs.validity``; others: their
        nodata value), or — only for files with an internal mask — from GDAL's dataset mask. NaN
        is never valid imagery, whichever way validity is known.
        """
        source = self._vrt if self._vrt is not None else self.ds
        win = self._window(window)
        try:
            if self._alpha is not None:
                data = source.read([*bands, self._alpha], window=win, out_dtype="float32")
                data, valid = data[:-1], data[-1] > 0
            else:
                data = source.read(bands, window=win, out_dtype="float32")
                valid = None
            if not with_valid:
                return data, None
            if self._coverage is not None:
                valid = self._eroded_validity(bands, window)
            elif valid is None and self._internal_mask:
                valid = source.dataset_mask(window=win) > 0
        except RasterioIOError as exc:
            raise InputFileError(f"{self.role} file is corrupt or truncated: {shown_name(self.ds)} ({exc})") from exc
        if valid is None and self.validity is not None:
            return data, self.validity.valid(data)
        if valid is None:
            valid = (~is_nodata(data, source.nodata).all(axis=0) if source.nodata is not None
                     else np.ones(data.shape[1:], bool))
        if self.validity is not None and self.validity.floating:
            valid &= ~np.isnan(data).any(axis=0)
        return data, valid

    def _eroded_validity(self, bands: list[int], window: Window) -> np.ndarray:
        """Pixels of ``window`` whose whole 3×3 neighbourhood is covered by the file and valid by its rule.

        Read one pixel wider than the window, so that the erosion is exact at its edges.
        """
        assert self._coverage is not None and self.validity is not None
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        pr0, pc0 = max(0, r0 - 1), max(0, c0 - 1)
        pr1, pc1 = min(self.grid.height, r1 + 1), min(self.grid.width, c1 + 1)
        padded = Window(pc0, pr0, pc1 - pc0, pr1 - pr0)
        near = self._coverage.read([*bands, self._coverage.count], window=padded, out_dtype="float32")
        valid = (near[-1] > 0) & self.validity.valid(near[:-1])
        valid = ndimage.binary_erosion(valid, structure=np.ones((3, 3), bool), border_value=1)
        return valid[r0 - pr0:r0 - pr0 + r1 - r0, c0 - pc0:c0 - pc0 + c1 - c0]

    def close(self) -> None:
        """Close the VRTs (not the file)."""
        for vrt in (self._vrt, self._coverage):
            if vrt is not None:
                vrt.close()


def write_probability(grid: Grid, tiles: TileGrid, chunks: Iterable[tuple[Tile, np.ndarray]],
                      path: str | os.PathLike[str], outputs: tuple[str, ...] = ("change",)) -> Path:
    """Blend (tile, probabilities (outputs, rows, cols)) chunks of ``tiles`` into a float32 COG at ``path``.

    CRS and transform of ``grid``; nodata NaN where either date was invalid; one band per
    ``outputs`` (band 1: change probability; semantic models add building probabilities).

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
