"""Stage 1 — align: present BEFORE and AFTER on one common pixel grid.

The common grid is where the two scenes overlap: by default on BEFORE's own pixel grid (cropped to
the overlap), or a grid of a user-given CRS and resolution (``GridSpec``). A date whose file is
already on that grid is read directly by window; any other is reprojected lazily through a GDAL
WarpedVRT, so nothing is warped until a window is read and no whole scene is ever held in memory.
Pixels that a date does not cover, that either date marks as nodata, or that a cloud mask covers
come out as invalid and are never reported as change.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
import rasterio.warp
from pyproj import Geod
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window
from scipy import ndimage

from changewatch.rs.errors import IncompatibleScenesError, InputFileError


@dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid: CRS, affine transform (pixel → CRS units) and size in pixels.
    ``crs`` is None only for plain images compared pixel for pixel (identity transform)."""

    crs: CRS | None
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

    def centre_lonlat(self) -> tuple[float, float]:
        """(longitude, latitude) of the grid's centre (degrees, WGS 84)."""
        x, y = self.transform * (self.width / 2, self.height / 2)
        lon, lat = rasterio.warp.transform(self.crs, "EPSG:4326", [x], [y])
        return lon[0], lat[0]

    def pixel_size_m(self) -> float | None:
        """Ground size of a pixel's side in metres at the grid's centre (mean of its two sides);
        None for plain images without a CRS."""
        if self.crs is None:
            return None
        if self.crs.is_projected:
            return abs(self.transform.a * self.transform.e) ** 0.5 * self.crs.linear_units_factor[1]
        lon, lat = self.centre_lonlat()
        geod = Geod(ellps="WGS84")
        dx = geod.inv(lon, lat, lon + abs(self.transform.a), lat)[2]
        dy = geod.inv(lon, lat, lon, lat + abs(self.transform.e))[2]
        return float((dx * dy) ** 0.5)

    def metric_crs(self) -> CRS:
        """The grid's CRS when it is projected, else the UTM zone of its centre."""
        if self.crs is not None and self.crs.is_projected:
            return self.crs
        lon, lat = self.centre_lonlat()
        zone = int((lon + 180) // 6) % 60 + 1
        return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


@dataclass(frozen=True)
class PairWindow:
    """One window of an aligned pair, as float32 arrays on the common grid.

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


def _check_georeferenced(ds: rasterio.io.DatasetReader, role: str) -> None:
    if ds.crs is None:
        raise IncompatibleScenesError(f"{role} scene has no CRS: {ds.name}")
    if ds.transform == Affine.identity():
        raise IncompatibleScenesError(f"{role} scene has no georeferencing: {ds.name}")


def _is_plain(ds: rasterio.io.DatasetReader) -> bool:
    """True for an image with neither CRS nor georeferencing (a PNG chip, say)."""
    return ds.crs is None and ds.transform == Affine.identity()


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


@dataclass(frozen=True)
class GridSpec:
    """Where the common grid of a pair lies.

    Default (both None): BEFORE's own pixel grid, cropped to where BEFORE and AFTER overlap. With
    ``crs`` (any string rasterio reads: "EPSG:32648", WKT, PROJ) and/or ``resolution`` (pixel size
    in that CRS's units: metres for UTM, degrees for EPSG:4326) a new north-up grid over the
    overlap, with pixel edges on multiples of the resolution (like ``gdalwarp -tap``), so grids of
    different runs line up; a missing resolution is BEFORE's, carried over to ``crs``.
    """

    crs: str | None = None
    resolution: float | None = None

    def __post_init__(self) -> None:
        if self.resolution is not None and not self.resolution > 0:
            raise IncompatibleScenesError(f"grid resolution must be positive, got {self.resolution}")


def _overlap_bounds(before: rasterio.io.DatasetReader, after: rasterio.io.DatasetReader,
                    crs: CRS) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in ``crs`` of the intersection of the two footprints' boxes."""
    boxes = [transform_bounds(ds.crs, crs, *ds.bounds, densify_pts=21) for ds in (before, after)]
    left, bottom = max(b[0] for b in boxes), max(b[1] for b in boxes)
    right, top = min(b[2] for b in boxes), min(b[3] for b in boxes)
    return left, bottom, right, top


def common_grid(before: rasterio.io.DatasetReader, after: rasterio.io.DatasetReader, spec: GridSpec) -> Grid:
    """The grid both dates are compared on (see GridSpec). Raises IncompatibleScenesError when the
    scenes do not overlap by at least one pixel."""
    if spec.crs is None and spec.resolution is None:
        left, bottom, right, top = _overlap_bounds(before, after, before.crs)
        window = rasterio.windows.from_bounds(left, bottom, right, top, before.transform)
        col0, row0 = max(0, math.floor(window.col_off + 1e-6)), max(0, math.floor(window.row_off + 1e-6))
        col1 = min(before.width, math.ceil(window.col_off + window.width - 1e-6))
        row1 = min(before.height, math.ceil(window.row_off + window.height - 1e-6))
        if col1 <= col0 or row1 <= row0:
            raise IncompatibleScenesError("BEFORE and AFTER overlap by less than one pixel")
        crop = Window(col0, row0, col1 - col0, row1 - row0)
        return Grid(before.crs, rasterio.windows.transform(crop, before.transform), crop.width, crop.height)
    try:
        crs = CRS.from_user_input(spec.crs) if spec.crs else before.crs
    except rasterio.errors.CRSError as exc:
        raise IncompatibleScenesError(f"unknown grid CRS {spec.crs!r}: {exc}") from exc
    resolution = spec.resolution
    if resolution is None:
        carried, _, _ = calculate_default_transform(before.crs, crs, before.width, before.height, *before.bounds)
        resolution = abs(carried.a)
    left, bottom, right, top = _overlap_bounds(before, after, crs)
    left, top = math.floor(left / resolution) * resolution, math.ceil(top / resolution) * resolution
    width = math.ceil((right - left) / resolution - 1e-6)
    height = math.ceil((top - bottom) / resolution - 1e-6)
    if width <= 0 or height <= 0:
        raise IncompatibleScenesError("BEFORE and AFTER overlap by less than one pixel of the requested grid")
    return Grid(crs, Affine(resolution, 0.0, left, 0.0, -resolution, top), width, height)


GSD_POLICIES = ("auto", "native")


def grid_for_gsd(grid: Grid, model_gsd_m: float, policy: str = "auto") -> GridSpec | None:
    """The grid to compare on for a model trained at ``model_gsd_m`` metres, or None to keep ``grid``.

    ``auto``: imagery more than twice as fine as the model's training GSD (very-high-resolution
    imagery under a 10 m model, say) is compared on a grid at the model's GSD, in the scene's CRS
    if projected, else its UTM zone, so that buildings are the size in pixels the model learnt
    (bench/RESULTS.md measures both ways). ``native``: always the imagery's own pixels.
    """
    if policy not in GSD_POLICIES:
        raise ValueError(f"unknown GSD policy {policy!r}: use one of {', '.join(GSD_POLICIES)}")
    pixel = grid.pixel_size_m()
    if policy == "native" or pixel is None or pixel >= model_gsd_m / 2:
        return None
    return GridSpec(grid.metric_crs().to_string(), model_gsd_m)


def at_model_gsd(pair: AlignedPair, model_gsd_m: float, policy: str = "auto") -> AlignedPair:
    """``pair`` itself, or, when ``grid_for_gsd`` asks for a coarser grid (and the pair is on the
    default grid), the same pair re-opened on that grid; ``pair`` is then closed."""
    coarser = grid_for_gsd(pair.grid, model_gsd_m, policy) if pair.grid_spec == GridSpec() else None
    if coarser is None:
        return pair
    pair.close()
    return pair.reopen(coarser)


def _pixel_offset(ds: rasterio.io.DatasetReader, grid: Grid) -> tuple[int, int] | None:
    """(col, row) of ``grid``'s origin in ``ds`` when ``grid`` is a window of ``ds``'s own pixel grid
    (same CRS, same pixel size, whole-pixel shift, inside the file), else None: then it is warped."""
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


def is_nodata(data: np.ndarray, nodata: float) -> np.ndarray:
    """Where float32 ``data`` equals the nodata value (NaN-aware)."""
    return np.isnan(data) if np.isnan(nodata) else data == np.float32(nodata)


def _has_mask(ds: rasterio.io.DatasetReader) -> bool:
    return any(rasterio.enums.MaskFlags.per_dataset in flags or rasterio.enums.MaskFlags.alpha in flags
               for flags in ds.mask_flag_enums)


class GridReader:
    """One raster presented on a common grid, read a window at a time.

    Read straight from the file when the grid is a window of the file's own grid, otherwise
    through a lazy WarpedVRT (``resampling``: bilinear for imagery, nearest for classes and masks).
    ``read`` returns (bands, rows, cols) float32 and a validity mask: False where the file has
    nodata or does not reach. Not thread-safe: one per thread.
    """

    def __init__(self, ds: rasterio.io.DatasetReader, grid: Grid, resampling: Resampling, role: str,
                 fill: float | None = None, src_transform: Affine | None = None) -> None:
        self.ds, self.grid, self.role = ds, grid, role
        # ``src_transform``: the file's georeferencing corrected (co-registration), used instead of its own.
        self._offset = _pixel_offset(ds, grid) if src_transform is None else None
        self._internal_mask = _has_mask(ds)
        self._vrt: WarpedVRT | None = None
        self._coverage: WarpedVRT | None = None
        self._alpha: int | None = None
        if self._offset is None:
            on_grid = {"crs": grid.crs, "transform": grid.transform, "width": grid.width, "height": grid.height,
                       **({"src_transform": src_transform} if src_transform is not None else {})}
            if fill is None and ds.nodata is not None and not self._internal_mask and resampling != Resampling.nearest:
                # GDAL's warper takes a general, 2–3× slower path for sources with nodata. So the data are
                # warped ignoring nodata, and validity comes from a cheap nearest-neighbour warp (nodata and
                # coverage, an alpha band), eroded by one pixel so that no value blended with nodata or
                # with the outside of the file counts as valid.
                self._vrt = WarpedVRT(ds, resampling=resampling, src_nodata=None, nodata=None, **on_grid)
                self._coverage = WarpedVRT(ds, resampling=Resampling.nearest, src_nodata=None, nodata=None,
                                           add_alpha=True, **on_grid)
                return
            # Without nodata or a mask, an alpha band is the only record of where the file has no
            # pixels on the grid; GDAL does not report it through dataset_mask(). ``fill``: value
            # outside the file instead (then no alpha), e.g. 0 = "not masked" for cloud masks.
            add_alpha = fill is None and ds.nodata is None and not self._internal_mask
            self._vrt = WarpedVRT(ds, resampling=resampling, add_alpha=add_alpha,
                                  **({"nodata": fill} if fill is not None else {}), **on_grid)
            self._alpha = self._vrt.count if add_alpha else None

    def _window(self, window: Window) -> Window:
        if self._offset is None:
            return window
        return Window(window.col_off + self._offset[0], window.row_off + self._offset[1], window.width, window.height)

    def read(self, bands: list[int], window: Window, with_valid: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(data, valid) of ``window`` of the grid; ``valid`` None unless ``with_valid``. A file that
        opens but cannot be decoded (truncated, corrupt blocks) raises InputFileError.

        Each window is read (and warped) once: validity comes from the alpha band read in the
        same call, from the nodata value of the bands read, or — only for files with an internal
        mask — from GDAL's dataset mask.
        """
        source = self._vrt if self._vrt is not None else self.ds
        win = self._window(window)
        try:
            if self._coverage is not None:
                data = source.read(bands, window=win, out_dtype="float32")
                return data, self._eroded_validity(bands, window) if with_valid else None
            if self._alpha is not None:
                data = source.read([*bands, self._alpha], window=win, out_dtype="float32")
                return data[:-1], (data[-1] > 0) if with_valid else None
            data = source.read(bands, window=win, out_dtype="float32")
            if not with_valid:
                return data, None
            if self._internal_mask:
                return data, source.dataset_mask(window=win) > 0
        except RasterioIOError as exc:
            raise InputFileError(f"{self.role} file is corrupt or truncated: {self.ds.name} ({exc})") from exc
        if source.nodata is None:
            return data, np.ones(data.shape[1:], bool)
        return data, ~is_nodata(data, source.nodata).all(axis=0)

    def _eroded_validity(self, bands: list[int], window: Window) -> np.ndarray:
        """Pixels of ``window`` whose whole 3×3 neighbourhood is covered by the file and not nodata
        (read one pixel wider than the window, so that the erosion is exact at its edges)."""
        assert self._coverage is not None
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        pr0, pc0 = max(0, r0 - 1), max(0, c0 - 1)
        pr1, pc1 = min(self.grid.height, r1 + 1), min(self.grid.width, c1 + 1)
        padded = Window(pc0, pr0, pc1 - pc0, pr1 - pr0)
        near = self._coverage.read([*bands, self._coverage.count], window=padded, out_dtype="float32")
        valid = (near[-1] > 0) & ~is_nodata(near[:-1], self.ds.nodata).all(axis=0)
        valid = ndimage.binary_erosion(valid, structure=np.ones((3, 3), bool), border_value=1)
        return valid[r0 - pr0:r0 - pr0 + r1 - r0, c0 - pc0:c0 - pc0 + c1 - c0]

    def close(self) -> None:
        """Close the VRTs (not the file)."""
        for vrt in (self._vrt, self._coverage):
            if vrt is not None:
                vrt.close()


@dataclass(frozen=True)
class Shift:
    """A translation in a grid's CRS units (metres when projected): ``dx`` east, ``dy`` north."""

    dx: float
    dy: float

    @classmethod
    def from_pixels(cls, rows: float, cols: float, grid: Grid) -> Shift:
        """The translation that moves content ``rows`` pixels down and ``cols`` right on ``grid``."""
        return cls(cols * grid.transform.a, rows * grid.transform.e)


class AlignedPair:
    """BEFORE and AFTER on one common grid (see GridSpec), read one window at a time.

    ``bands`` picks the bands compared, the same for both dates, by 1-based index or by name
    (the files' band descriptions), so scenes with different band sets or orders can be compared;
    by default every band, and both dates must have as many. ``masks`` are rasters (any CRS and
    grid; band 1, non-zero = invalid: clouds, shadows, haze) from either date, warped nearest-
    neighbour onto the grid: masked pixels are invalid, like nodata. Use as a context manager.
    Raises InputFileError for missing or unreadable files and IncompatibleScenesError when the
    scenes lack a CRS, have different band counts, lack a selected band or do not overlap.
    Warped dates are resampled bilinearly (they are imagery, not classes). ``after_shift``: a
    translation of AFTER against its own georeferencing (co-registration, see ``rs.coregister``).
    """

    def __init__(self, before_path: str | os.PathLike[str], after_path: str | os.PathLike[str],
                 bands: tuple[str, ...] | None = None, masks: tuple[str, ...] = (),
                 grid: GridSpec | None = None, after_shift: Shift | None = None) -> None:
        self.before_path = Path(before_path)
        self.after_path = Path(after_path)
        self.bands = bands
        self.masks = tuple(masks)
        self.grid_spec = grid or GridSpec()
        self.after_shift = after_shift
        self._files: list[rasterio.io.DatasetReader] = []
        self._readers: list[GridReader] = []
        try:
            before = self._open(before_path, "BEFORE")
            after = self._open(after_path, "AFTER")
            # Two plain images (PNG/JPEG chips, no CRS, no transform) are compared pixel for pixel.
            self.plain = _is_plain(before) and _is_plain(after)
            self._validate(before, after, bands)
            self._before_bands = select_bands(before, bands, "BEFORE")
            self._after_bands = select_bands(after, bands, "AFTER")
            self.grid = (Grid(None, Affine.identity(), before.width, before.height) if self.plain
                         else common_grid(before, after, self.grid_spec))
            self._before = self._reader(before, Resampling.bilinear, "BEFORE")
            self._after = self._reader(after, Resampling.bilinear, "AFTER",
                                       src_transform=self._shifted_transform(after) if after_shift else None)
            self._masks = [self.reader_for(mask, "mask", Resampling.nearest, fill=0) for mask in self.masks]
        except Exception:
            self.close()
            raise

    def reopen(self, grid: GridSpec | None = None, after_shift: Shift | None = None) -> AlignedPair:
        """A second, independent AlignedPair of the same files, bands, masks and AFTER shift, on the
        same grid or on ``grid`` (for another thread: GDAL handles are not thread-safe); with
        ``after_shift``, that shift instead."""
        return AlignedPair(self.before_path, self.after_path, self.bands, self.masks, grid or self.grid_spec,
                           after_shift or self.after_shift)

    def _shifted_transform(self, after: rasterio.io.DatasetReader) -> Affine:
        """AFTER's georeferencing moved by ``after_shift`` (given in the grid's CRS; converted to
        AFTER's own CRS at the grid's centre when they differ: a translation is all it corrects)."""
        assert self.after_shift is not None and self.grid.crs is not None
        dx, dy = self.after_shift.dx, self.after_shift.dy
        if after.crs != self.grid.crs:
            cx, cy = self.grid.transform * (self.grid.width / 2, self.grid.height / 2)
            xs, ys = rasterio.warp.transform(self.grid.crs, after.crs, [cx, cx + dx], [cy, cy + dy])
            dx, dy = xs[1] - xs[0], ys[1] - ys[0]
        return Affine.translation(dx, dy) * after.transform

    def _open(self, path: str | os.PathLike[str], role: str) -> rasterio.io.DatasetReader:
        ds = open_raster(path, role)
        self._files.append(ds)
        return ds

    def _reader(self, ds: rasterio.io.DatasetReader, resampling: Resampling, role: str,
                fill: float | None = None, src_transform: Affine | None = None) -> GridReader:
        reader = GridReader(ds, self.grid, resampling, role, fill, src_transform)
        self._readers.append(reader)
        return reader

    def reader_for(self, path: str | os.PathLike[str], role: str, resampling: Resampling = Resampling.nearest,
                   fill: float | None = None) -> GridReader:
        """Another georeferenced raster (labels, masks) presented on this pair's grid; closed with the pair."""
        ds = self._open(path, role)
        if not self.plain:
            _check_georeferenced(ds, role)
        elif (ds.width, ds.height) != (self.grid.width, self.grid.height):
            raise IncompatibleScenesError(f"{role} {Path(path).name} is not the size of the plain images it labels")
        return self._reader(ds, resampling, role, fill)

    def _validate(self, before: rasterio.io.DatasetReader, after: rasterio.io.DatasetReader,
                  bands: tuple[str, ...] | None) -> None:
        if self.plain:
            if (before.width, before.height) != (after.width, after.height):
                raise IncompatibleScenesError(
                    f"BEFORE and AFTER are plain images (no georeferencing) of different sizes "
                    f"({before.width}×{before.height} vs {after.width}×{after.height}): they cannot be aligned")
            if self.grid_spec != GridSpec():
                raise IncompatibleScenesError("--crs/--resolution need georeferenced scenes")
        else:
            _check_georeferenced(before, "BEFORE")
            _check_georeferenced(after, "AFTER")
        if not bands and before.count != after.count:
            raise IncompatibleScenesError(
                f"BEFORE has {before.count} bands but AFTER has {after.count}: "
                "both dates must carry the same bands in the same order (or pick them with --bands)"
            )
        if not self.plain and overlap_fraction(before, after) <= 0.0:
            raise IncompatibleScenesError(
                f"BEFORE ({self.before_path.name}) and AFTER ({self.after_path.name}) do not overlap"
            )

    @property
    def band_count(self) -> int:
        """Number of bands compared per date."""
        return len(self._before_bands)

    def read(self, window: Window) -> PairWindow:
        """Read one window of both dates on the common grid (memory: the window only).

        A file that opens but cannot be decoded (truncated, corrupt blocks) raises InputFileError.
        """
        before, before_valid = self._before.read(self._before_bands, window)
        after, after_valid = self._after.read(self._after_bands, window)
        valid = before_valid & after_valid
        for mask in self._masks:
            flags, _ = mask.read([1], window, with_valid=False)
            valid &= flags[0] == 0
        return PairWindow(before, after, valid)

    def sample_windows(self, whole_up_to: int = 2_097_152, grid_side: int = 6, sample_size: int = 128) -> list[Window]:
        """Windows to compute scene statistics from, bounded in total size.

        The whole scene when it has at most ``whole_up_to`` pixels (every OSCD site does);
        otherwise a ``grid_side`` × ``grid_side`` grid of ``sample_size``-pixel windows spread
        evenly over the scene (0.6 Mpx by default): plenty for 2nd/50th/98th percentiles, and
        cheap even when every sampled pixel has to be warped.
        """
        h, w = self.grid.height, self.grid.width
        if h * w <= whole_up_to:
            return [Window(0, 0, w, h)]
        rows = np.linspace(0, max(0, h - sample_size), grid_side).astype(int)
        cols = np.linspace(0, max(0, w - sample_size), grid_side).astype(int)
        return [Window(int(c), int(r), min(sample_size, w), min(sample_size, h)) for r in rows for c in cols]

    def close(self) -> None:
        """Close the VRTs and every file."""
        for reader in getattr(self, "_readers", []):
            reader.close()
        for ds in getattr(self, "_files", []):
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
