"""Stage 1 — align: open BEFORE and AFTER and present AFTER on BEFORE's pixel grid.

AFTER is reprojected lazily through a GDAL WarpedVRT onto BEFORE's CRS, transform and shape, so
nothing is warped until a window is read and no whole scene is ever held in memory. The common
grid is BEFORE's grid; pixels that AFTER does not cover, or that either date marks as nodata,
come out as invalid and are never reported as change.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from rs.errors import IncompatibleScenesError, InputFileError


@dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid: CRS, affine transform (pixel → CRS units) and size in pixels."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS units."""
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a window of this grid."""
        return rasterio.windows.transform(window, self.transform)


@dataclass(frozen=True)
class PairWindow:
    """One window of an aligned pair, as float32 arrays on BEFORE's grid.

    ``before`` and ``after`` are (bands, rows, cols) in the files' own units (e.g. Sentinel-2
    reflectance × 10 000); ``valid`` is (rows, cols), False where either date has no data.
    """

    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray


def open_raster(path: str | os.PathLike[str], role: str) -> rasterio.io.DatasetReader:
    """Open a raster for reading, turning every way it can fail into one clear InputFileError."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{role} file not found: {p}")
    try:
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


def _check_georeferenced(ds: rasterio.io.DatasetReader, role: str) -> None:
    if ds.crs is None:
        raise IncompatibleScenesError(f"{role} scene has no CRS: {ds.name}")
    if ds.transform == Affine.identity():
        raise IncompatibleScenesError(f"{role} scene has no georeferencing: {ds.name}")


def overlap_fraction(before: rasterio.io.DatasetReader, after: rasterio.io.DatasetReader) -> float:
    """Share of BEFORE's footprint covered by AFTER's bounding box (0–1), compared in BEFORE's CRS."""
    a_left, a_bottom, a_right, a_top = transform_bounds(after.crs, before.crs, *after.bounds, densify_pts=21)
    b_left, b_bottom, b_right, b_top = before.bounds
    width = min(a_right, b_right) - max(a_left, b_left)
    height = min(a_top, b_top) - max(a_bottom, b_bottom)
    if width <= 0 or height <= 0:
        return 0.0
    return (width * height) / ((b_right - b_left) * (b_top - b_bottom))


def select_bands(ds: rasterio.io.DatasetReader, bands: tuple[str, ...] | None, role: str) -> list[int]:
    """1-based band indexes of ``bands`` in ``ds``: each a 1-based index ("4") or a band name matched,
    case-insensitively, against the file's band descriptions ("B08"). None: every band, in order."""
    if not bands:
        return list(range(1, ds.count + 1))
    names = {(d or "").strip().lower(): i for i, d in enumerate(ds.descriptions, start=1) if d}
    chosen = []
    for band in bands:
        key = str(band).strip()
        if key.isdigit() and 1 <= int(key) <= ds.count:
            chosen.append(int(key))
        elif key.lower() in names:
            chosen.append(names[key.lower()])
        else:
            known = ", ".join(d or "?" for d in ds.descriptions)
            raise IncompatibleScenesError(
                f"{role} has no band {key!r}: give 1-based indexes (1..{ds.count}) or names ({known})")
    return chosen


class AlignedPair:
    """BEFORE and AFTER on BEFORE's grid, read one window at a time.

    ``bands`` picks the bands compared, the same for both dates, by 1-based index or by name
    (the files' band descriptions), so scenes with different band sets or orders can be compared;
    by default every band, and both dates must have as many. ``masks`` are rasters (any CRS and
    grid; band 1, non-zero = invalid: clouds, shadows, haze) from either date, warped nearest-
    neighbour onto BEFORE's grid: masked pixels are invalid, like nodata. Use as a context manager. Raises
    InputFileError for missing or unreadable files and IncompatibleScenesError when the scenes
    lack a CRS, have different band counts, lack a selected band or do not overlap. AFTER is
    resampled bilinearly (it is imagery, not classes).
    """

    def __init__(self, before_path: str | os.PathLike[str], after_path: str | os.PathLike[str],
                 bands: tuple[str, ...] | None = None, masks: tuple[str, ...] = ()) -> None:
        self.before_path = Path(before_path)
        self.after_path = Path(after_path)
        self.bands = bands
        self.masks = tuple(masks)
        self._mask_files: list[rasterio.io.DatasetReader] = []
        self._mask_vrts: list[WarpedVRT] = []
        self._before = open_raster(before_path, "BEFORE")
        try:
            self._after = open_raster(after_path, "AFTER")
        except Exception:
            self._before.close()
            raise
        try:
            self._validate(bands)
            self._before_bands = select_bands(self._before, bands, "BEFORE")
            self._after_bands = select_bands(self._after, bands, "AFTER")
            # Without nodata or a mask in AFTER, an alpha band is the only record of where AFTER
            # has no pixels on BEFORE's grid; GDAL does not report it through dataset_mask().
            add_alpha = self._after.nodata is None and not self._has_mask(self._after)
            self._vrt = WarpedVRT(
                self._after,
                crs=self._before.crs,
                transform=self._before.transform,
                width=self._before.width,
                height=self._before.height,
                resampling=Resampling.bilinear,
                add_alpha=add_alpha,
            )
            self._alpha_band = self._vrt.count if add_alpha else None
            for mask in self.masks:
                ds = open_raster(mask, "mask")
                self._mask_files.append(ds)
                _check_georeferenced(ds, "mask")
                self._mask_vrts.append(WarpedVRT(ds, crs=self._before.crs, transform=self._before.transform,
                                                 width=self._before.width, height=self._before.height,
                                                 resampling=Resampling.nearest, nodata=0))
        except Exception:
            self.close()
            raise
        self.grid = Grid(self._before.crs, self._before.transform, self._before.width, self._before.height)

    @staticmethod
    def _has_mask(ds: rasterio.io.DatasetReader) -> bool:
        return any(rasterio.enums.MaskFlags.per_dataset in flags or rasterio.enums.MaskFlags.alpha in flags
                   for flags in ds.mask_flag_enums)

    def _validate(self, bands: tuple[str, ...] | None) -> None:
        _check_georeferenced(self._before, "BEFORE")
        _check_georeferenced(self._after, "AFTER")
        if not bands and self._before.count != self._after.count:
            raise IncompatibleScenesError(
                f"BEFORE has {self._before.count} bands but AFTER has {self._after.count}: "
                "both dates must carry the same bands in the same order (or pick them with --bands)"
            )
        if overlap_fraction(self._before, self._after) <= 0.0:
            raise IncompatibleScenesError(
                f"BEFORE ({self.before_path.name}) and AFTER ({self.after_path.name}) do not overlap"
            )

    @property
    def band_count(self) -> int:
        """Number of bands compared per date."""
        return len(self._before_bands)

    def read(self, window: Window) -> PairWindow:
        """Read one window of both dates on BEFORE's grid (memory: the window only).

        A file that opens but cannot be decoded (truncated, corrupt blocks) raises InputFileError.
        """
        try:
            before = self._before.read(self._before_bands, window=window, out_dtype="float32", boundless=False)
            before_valid = self._before.dataset_mask(window=window) > 0
        except RasterioIOError as exc:
            raise InputFileError(f"BEFORE file is corrupt or truncated: {self.before_path} ({exc})") from exc
        try:
            after = self._vrt.read(self._after_bands, window=window, out_dtype="float32")
            if self._alpha_band is None:
                after_valid = self._vrt.dataset_mask(window=window) > 0
            else:
                after_valid = self._vrt.read(self._alpha_band, window=window) > 0
        except RasterioIOError as exc:
            raise InputFileError(f"AFTER file is corrupt or truncated: {self.after_path} ({exc})") from exc
        valid = before_valid & after_valid
        for path, vrt in zip(self.masks, self._mask_vrts):
            try:
                valid &= vrt.read(1, window=window) == 0
            except RasterioIOError as exc:
                raise InputFileError(f"mask file is corrupt or truncated: {path} ({exc})") from exc
        return PairWindow(before, after, valid)

    def sample_windows(self, max_pixels: int = 4_194_304, sample_size: int = 512) -> list[Window]:
        """Windows to compute scene statistics from, bounded in total size.

        The whole scene when it has at most ``max_pixels`` pixels; otherwise a regular grid of
        ``sample_size``-pixel windows spread over the scene totalling about ``max_pixels``.
        """
        h, w = self.grid.height, self.grid.width
        if h * w <= max_pixels:
            return [Window(0, 0, w, h)]
        n = max(1, int(math.sqrt(max_pixels / sample_size**2)))
        rows = np.linspace(0, max(0, h - sample_size), n).astype(int)
        cols = np.linspace(0, max(0, w - sample_size), n).astype(int)
        return [Window(int(c), int(r), min(sample_size, w), min(sample_size, h)) for r in rows for c in cols]

    def close(self) -> None:
        """Close the VRTs and every file."""
        for ds in [*getattr(self, "_mask_vrts", []), *getattr(self, "_mask_files", [])]:
            ds.close()
        for name in ("_vrt", "_after", "_before"):
            ds = getattr(self, name, None)
            if ds is not None:
                ds.close()

    def __enter__(self) -> AlignedPair:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
