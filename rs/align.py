"""Stage 1 — align: present BEFORE and AFTER on one common pixel grid.

The common grid is where the two scenes overlap: by default on BEFORE's own pixel grid (cropped to
the overlap), or a grid of a user-given CRS and resolution (``GridSpec``). A date whose file is
already on that grid is read directly by window; any other is reprojected lazily through a GDAL
WarpedVRT (``rs.io.raster.GridReader``), so nothing is warped until a window is read and no whole
scene is ever held in memory. ``PairSource`` is what opens a pair; ``rs.prepare`` decides it.
Pixels that a date does not cover, that either date marks as nodata, or that a cloud mask covers
come out as invalid and are never reported as change. Which pixels a file leaves invalid is
decided in ``rs.validity`` (declared nodata, NaN, zero fill, alpha bands), which bands are compared
in ``rs.bands`` (by name when both files name them), and where a raster lies in ``rs.georef``
(bottom-up, rotated and GCP-only rasters; the data footprint of VRT mosaics).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np
import pyproj.exceptions
import rasterio
import rasterio.warp
from affine import Affine
from pyproj import CRS as ProjCRS
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from changewatch.rs.bands import RADIOMETRY_NOTE, BandChoice, choose_bands, radiometry
from changewatch.rs.config import PairOptions
from changewatch.rs.errors import IncompatibleScenesError
from changewatch.rs.georef import Dataset, data_bounds, georeferenced, is_plain, native_grid, placed
from changewatch.rs.grid import Grid, GridSpec
from changewatch.rs.io.intake import is_described, read_described
from changewatch.rs.io.raster import GridReader, open_raster, open_vrt
from changewatch.rs.validity import Validity, infer_validity, sample_counts

__all__ = ["AlignedPair", "PairSource", "PairWindow", "Shift", "common_grid", "overlap_fraction"]


@dataclass(frozen=True)
class PairWindow:
    """One window of an aligned pair, as float32 arrays on the common grid.

    ``before`` and ``after`` are (bands, rows, cols) in the files' own units (e.g. Sentinel-2
    reflectance × 10 000); ``valid`` is (rows, cols), False where either date has no data.
    """

    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray


def overlap_fraction(before: Dataset, after: Dataset) -> float:
    """Share of BEFORE's data footprint (``rs.georef.data_bounds``) covered by AFTER's (0–1).

    Compared as bounding boxes in BEFORE's CRS; any geotransform (bottom-up, rotated).
    """
    a_left, a_bottom, a_right, a_top = transform_bounds(after.crs, before.crs, *data_bounds(after), densify_pts=21)
    b_left, b_bottom, b_right, b_top = data_bounds(before)
    width = min(a_right, b_right) - max(a_left, b_left)
    height = min(a_top, b_top) - max(a_bottom, b_bottom)
    if width <= 0 or height <= 0:
        return 0.0
    return float((width * height) / ((b_right - b_left) * (b_top - b_bottom)))


def _overlap_bounds(before: Dataset, after: Dataset, crs: CRS) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in ``crs`` of the intersection of the two data footprints' boxes."""
    boxes = [transform_bounds(ds.crs, crs, *data_bounds(ds), densify_pts=21) for ds in (before, after)]
    left, bottom = max(b[0] for b in boxes), max(b[1] for b in boxes)
    right, top = min(b[2] for b in boxes), min(b[3] for b in boxes)
    return left, bottom, right, top


MAX_DEGREES = 0.01  # a --resolution above this in a geographic CRS (about 1 km) was meant in metres


def common_grid(before: Dataset, after: Dataset, spec: GridSpec) -> Grid:
    """The grid both dates are compared on (see GridSpec), always north-up.

    By default BEFORE's ``native_grid`` (its own pixels; for a bottom-up or rotated BEFORE the
    north-up grid of its pixel size), cropped to where the two data footprints overlap. Raises
    IncompatibleScenesError when the scenes do not overlap by at least one pixel.
    """
    if spec.crs is None and spec.resolution is None:
        base = native_grid(before)
        left, bottom, right, top = _overlap_bounds(before, after, before.crs)
        window = rasterio.windows.from_bounds(left, bottom, right, top, base.transform)
        col0, row0 = max(0, math.floor(window.col_off + 1e-6)), max(0, math.floor(window.row_off + 1e-6))
        col1 = min(base.width, math.ceil(window.col_off + window.width - 1e-6))
        row1 = min(base.height, math.ceil(window.row_off + window.height - 1e-6))
        if col1 <= col0 or row1 <= row0:
            raise IncompatibleScenesError("BEFORE and AFTER overlap by less than one pixel")
        crop = Window(col0, row0, col1 - col0, row1 - row0)
        return Grid(before.crs, rasterio.windows.transform(crop, base.transform), crop.width, crop.height)
    try:
        if spec.crs:
            ProjCRS.from_user_input(spec.crs)  # checked by PROJ first: GDAL would print its own error line too
        crs = CRS.from_user_input(spec.crs) if spec.crs else before.crs
    except (rasterio.errors.CRSError, pyproj.exceptions.CRSError) as exc:
        raise IncompatibleScenesError(f"unknown grid CRS {spec.crs!r}: {exc}") from exc
    resolution = spec.resolution
    if resolution is not None and crs.is_geographic and resolution > MAX_DEGREES:
        raise IncompatibleScenesError(
            f"--resolution {resolution:g} is in the grid CRS's units, degrees for {crs.to_string()} (about "
            f"{resolution * 111:,.0f} km): give a projected --crs (e.g. a UTM zone) for metres, or degrees "
            "(10 m is about 0.00009°)")
    if resolution is None:
        base = native_grid(before)
        carried, _, _ = calculate_default_transform(before.crs, crs, base.width, base.height, *base.bounds)
        resolution = abs(carried.a)
    left, bottom, right, top = _overlap_bounds(before, after, crs)
    left, top = math.floor(left / resolution) * resolution, math.ceil(top / resolution) * resolution
    width = math.ceil((right - left) / resolution - 1e-6)
    height = math.ceil((top - bottom) / resolution - 1e-6)
    if width <= 0 or height <= 0:
        raise IncompatibleScenesError("BEFORE and AFTER overlap by less than one pixel of the requested grid")
    return Grid(crs, Affine(resolution, 0.0, left, 0.0, -resolution, top), width, height)


@dataclass(frozen=True)
class Shift:
    """A translation in a grid's CRS units (metres when projected): ``dx`` east, ``dy`` north."""

    dx: float
    dy: float

    @classmethod
    def from_pixels(cls, rows: float, cols: float, grid: Grid) -> Shift:
        """The translation that moves content ``rows`` pixels down and ``cols`` right on ``grid``."""
        return cls(cols * grid.transform.a, rows * grid.transform.e)


@dataclass(frozen=True)
class PairSource:
    """Everything that opens an ``AlignedPair`` (see there); plain data that pickles.

    Both scenes, the bands compared, cloud or invalid masks, the common grid, AFTER's shift,
    whether pixels 0 in every band are data, and the pixel size of plain images. Plain data: it
    pickles (a Dask task opens the pair on its worker) and opens the pair as often as needed
    (``open``; one per thread). The constructor takes these as its arguments.
    """

    before: str
    after: str
    bands: tuple[str, ...] | None = None
    masks: tuple[str, ...] = ()
    grid: GridSpec = field(default_factory=GridSpec)
    after_shift: Shift | None = None
    zero_is_valid: bool = PairOptions.zero_is_valid
    pixel_size_m: float | None = None

    @classmethod
    def of(cls, before: str | os.PathLike[str], after: str | os.PathLike[str], options: PairOptions,
           masks: tuple[str, ...] = (), pixel_size_m: float | None = None) -> PairSource:
        """The source of two scenes compared as ``options`` say (bands, grid, validity rule)."""
        return cls(str(before), str(after), options.bands, tuple(masks), options.grid,
                   zero_is_valid=options.zero_is_valid, pixel_size_m=pixel_size_m)

    def open(self) -> AlignedPair:
        """The pair, open (a context manager: close it when done)."""
        return AlignedPair(self.before, self.after, self.bands, self.masks, self.grid, self.after_shift,
                           self.zero_is_valid, self.pixel_size_m)


class AlignedPair:
    """BEFORE and AFTER on one common grid (see GridSpec), read one window at a time.

    Bands compared (``rs.bands``): by default every colour band (alpha bands are masks), matched
    by name when both files name their bands, else in file order; ``bands`` picks them, the same
    for both dates, by 1-based index or by name (band descriptions or colour interpretation), so
    scenes with different band sets or orders can be compared. Invalid pixels of each date follow
    ``rs.validity`` (declared nodata, NaN, alpha, all-bands-zero fill unless ``zero_is_valid``).
    ``masks`` are rasters (any CRS and grid; band 1, non-zero = invalid: clouds, shadows, haze)
    from either date, warped nearest-neighbour onto the grid: masked pixels are invalid, like
    nodata. Use as a context manager. Raises InputFileError for missing or unreadable files and
    IncompatibleScenesError when the scenes cannot be located, have different bands, lack a
    selected band or do not overlap. Warped dates are resampled bilinearly (they are imagery, not
    classes). ``after_shift``: a translation of AFTER against its own georeferencing
    (co-registration, see ``rs.coregister``). Leaving the ``with`` block closes every file (``close``).
    """

    def __init__(self, before_path: str | os.PathLike[str], after_path: str | os.PathLike[str],
                 bands: tuple[str, ...] | None = None, masks: tuple[str, ...] = (),
                 grid: GridSpec | None = None, after_shift: Shift | None = None,
                 zero_is_valid: bool = PairOptions.zero_is_valid,
                 pixel_size_m: float | None = None) -> None:
        self.before_path = Path(before_path)
        self.after_path = Path(after_path)
        self._paths = (os.fspath(before_path), os.fspath(after_path))  # as given: Path would fold a GDAL path's //
        self.bands = bands
        self.masks = tuple(masks)
        self.grid_spec = grid or GridSpec()
        self.after_shift = after_shift
        self.zero_is_valid = zero_is_valid
        self.pixel_size_m = pixel_size_m
        self._files: list[Dataset] = []
        self._readers: list[GridReader] = []
        self.intake: dict[str, Any] = {}  # per date, what a STAC item scene read (rs.io.stac_scene.ItemScene.record)
        self._scene_masks: list[tuple[str, str]] = []  # (role, VRT XML) of each item scene's SCL mask
        try:
            before_file = self._open(before_path, "BEFORE")
            after_file = self._open(after_path, "AFTER")
            # Two plain images (PNG/JPEG chips, no CRS, no transform) are compared pixel for pixel; with
            # a known pixel size they are placed on a local metric grid (rs.georef.placed) first.
            plain = is_plain(before_file) and is_plain(after_file)
            if plain:
                self._same_size(before_file, after_file)
            self.plain = plain and pixel_size_m is None
            before, after = (before_file, after_file) if self.plain else (
                self._located(before_file, "BEFORE"), self._located(after_file, "AFTER"))
            self._validate(before, after)
            self.band_choice: BandChoice = choose_bands(before_file, after_file, bands)
            self._before_bands, self._after_bands = list(self.band_choice.before), list(self.band_choice.after)
            self.validity = (infer_validity(before, self._before_bands, zero_is_valid, declared=before_file),
                             infer_validity(after, self._after_bands, zero_is_valid, declared=after_file))
            self.grid = (Grid(None, Affine.identity(), before.width, before.height) if self.plain
                         else common_grid(before, after, self.grid_spec))
            self._before = self._reader(before, Resampling.bilinear, "BEFORE", validity=self.validity[0])
            self._after = self._reader(after, Resampling.bilinear, "AFTER", validity=self.validity[1],
                                       src_transform=self._shifted_transform(after) if after_shift else None)
            self._masks = [self.reader_for(mask, "mask", Resampling.nearest, fill=0) for mask in self.masks]
            self._masks += [self._reader(self._keep(open_vrt(xml, f"{role} SCL mask")), Resampling.nearest,
                                         f"{role} SCL mask", fill=0) for role, xml in self._scene_masks]
        except Exception:
            self.close()
            raise

    @property
    def source(self) -> PairSource:
        """What opens this pair again: files, bands, masks, grid, AFTER's shift, validity rule."""
        return PairSource(*self._paths, self.bands, self.masks, self.grid_spec,
                          self.after_shift, self.zero_is_valid, self.pixel_size_m)

    def reopen(self) -> AlignedPair:
        """A second, independent AlignedPair of the same source (for another thread).

        GDAL handles are not thread-safe.
        """
        return self.source.open()

    def provenance(self) -> dict[str, Any]:
        """What was decided about the inputs, for ``summary.json``.

        ``validity`` (per date, the rule, see ``rs.validity.Validity.to_dict``, and what a bounded
        sample of the file holds: ``rs.validity.sample_counts``), ``bands_compared`` (per date, the
        source band indexes and names, and the rule that paired them) and ``radiometry`` (offset
        tags and scales seen, ``rs.bands.radiometry``) and ``intake`` (per date given as a STAC item, the
        assets read, the scale and offset applied and the mask's source: ``rs.io.stac_scene.ItemScene.record``).
        """
        dates = zip(("before", "after"), self.validity, (self._before, self._after),
                    (self._before_bands, self._after_bands), strict=True)
        files = (self._files[0], self._files[1])
        return {"validity": {role: {**rule.to_dict(), "sample": sample_counts(reader.ds, bands)}
                             for role, rule, reader, bands in dates},
                "bands_compared": self.band_choice.to_dict(),
                "radiometry": {"before": radiometry(files[0], self.band_choice.before),
                               "after": radiometry(files[1], self.band_choice.after), "note": RADIOMETRY_NOTE},
                "intake": dict(self.intake)}

    def _shifted_transform(self, after: Dataset) -> Affine:
        """AFTER's georeferencing moved by ``after_shift`` (given in the grid's CRS).

        The shift is converted to AFTER's own CRS at the grid's centre when they differ: a
        translation is all it corrects.
        """
        assert self.after_shift is not None and self.grid.crs is not None
        dx, dy = self.after_shift.dx, self.after_shift.dy
        if after.crs != self.grid.crs:
            cx, cy = self.grid.transform * (self.grid.width / 2, self.grid.height / 2)
            xs, ys = rasterio.warp.transform(self.grid.crs, after.crs, [cx, cx + dx], [cy, cy + dy])
            dx, dy = xs[1] - xs[0], ys[1] - ys[0]
        return cast(Affine, Affine.translation(dx, dy) * after.transform)

    def _open(self, path: str | os.PathLike[str], role: str) -> Dataset:
        """Open a file of the pair, closed with it; a STAC item scene (BEFORE, AFTER) as the VRT of its bands.

        An item's SCL mask is kept for when the grid is known, and what it read in ``intake``.
        """
        if role in ("BEFORE", "AFTER") and is_described(path):
            scene = read_described(path, self.bands, role)
            self.intake[role.lower()] = scene.record()
            mask = scene.mask_vrt()
            if mask is not None:
                self._scene_masks.append((role, mask))
            return self._keep(open_vrt(scene.image_vrt(), f"{role} {path}"))
        return self._keep(open_raster(path, role))

    def _keep(self, ds: Dataset) -> Dataset:
        self._files.append(ds)
        return ds

    def _located(self, ds: Dataset, role: str) -> Dataset:
        """``ds`` as a georeferenced dataset, closed with the pair.

        A GCP-only raster is warped through its GCPs, a plain image of known pixel size placed on a
        local metric grid.
        """
        view = placed(ds, self.pixel_size_m) if self.pixel_size_m and is_plain(ds) else georeferenced(ds, role)
        if view is not ds:
            self._files.append(view)
        return view

    def _reader(self, ds: Dataset, resampling: Resampling, role: str, fill: float | None = None,
                src_transform: Affine | None = None, validity: Validity | None = None) -> GridReader:
        reader = GridReader(ds, self.grid, resampling, role, fill, src_transform, validity)
        self._readers.append(reader)
        return reader

    def reader_for(self, path: str | os.PathLike[str], role: str, resampling: Resampling = Resampling.nearest,
                   fill: float | None = None) -> GridReader:
        """Another georeferenced raster (labels, masks) presented on this pair's grid; closed with the pair."""
        ds = self._open(path, role)
        if is_plain(ds) and (ds.width, ds.height) != (self._files[0].width, self._files[0].height):
            raise IncompatibleScenesError(f"{role} {Path(path).name} is not the size of the plain images it labels")
        if not self.plain:
            ds = self._located(ds, role)
        return self._reader(ds, resampling, role, fill)

    @staticmethod
    def _same_size(before: Dataset, after: Dataset) -> None:
        if (before.width, before.height) != (after.width, after.height):
            raise IncompatibleScenesError(
                f"BEFORE and AFTER are plain images (no georeferencing) of different sizes "
                f"({before.width}×{before.height} vs {after.width}×{after.height}): they cannot be aligned")

    def _validate(self, before: Dataset, after: Dataset) -> None:
        if self.plain:
            if self.grid_spec != GridSpec():
                raise IncompatibleScenesError("--crs/--resolution need georeferenced scenes")
        elif overlap_fraction(before, after) <= 0.0:
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

    def scan_windows(self, size: int = 512) -> list[Window]:
        """Every ``size``-pixel block of the grid, row by row (for a pass over the whole scene)."""
        h, w = self.grid.height, self.grid.width
        return [Window(c, r, min(size, w - c), min(size, h - r)) for r in range(0, h, size) for c in range(0, w, size)]

    def close(self) -> None:
        """Close the VRTs and every file."""
        for reader in getattr(self, "_readers", []):
            reader.close()
        for ds in reversed(getattr(self, "_files", [])):  # virtual views before the files they read
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
