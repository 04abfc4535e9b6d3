"""Which pixels of a date hold data — inferred from the file when it does not say.

Files declare invalid pixels in several ways, and often do not declare them at all: float
reflectance exported with NaN for clouds but no nodata tag (GeoTools, xarray), Sentinel-2 tiles
whose 0-filled swath edge has no nodata tag (Planetary Computer L2A COGs), RGB exports whose alpha
band marks the footprint (QGIS, tile downloaders, drone software). The rule (``infer_validity``),
applied to the bands compared, one pixel at a time:

- NaN in any band: always invalid;
- every band equal to the declared nodata value: invalid;
- an alpha band (colour interpretation alpha) is a mask, never a colour band: 0 = invalid;
- every band 0: invalid (Sentinel-2's NO_DATA, and what most tools fill with), unless the file
  declares its own nodata, mask or alpha band, or the user says zeros are data (``zero_is_valid``,
  ``--zero-is-valid``);
- GDAL's internal mask (a .msk file or internal mask band), when the file has one: 0 = invalid.

``Validity`` records what was decided, and ``sample_counts`` what a bounded sample of the file
shows (NaN and all-zero pixels), for ``summary.json``. Nothing here reads a whole scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.windows import Window

Dataset = Any  # a rasterio DatasetReader or WarpedVRT

SAMPLE_SIDE = 6  # sample windows per side of the file's grid
SAMPLE_SIZE = 128  # pixels per side of a sample window


def is_nodata(data: np.ndarray, nodata: float) -> npt.NDArray[np.bool_]:
    """Element-wise ``data == nodata`` as the file means it.

    NaN matches NaN, and the value is compared at float32 precision (the dtype bands are read as).
    """
    same: npt.NDArray[np.bool_] = np.isnan(data) if np.isnan(nodata) else data == np.float32(nodata)
    return same


def alpha_band(ds: Dataset) -> int | None:
    """1-based index of ``ds``'s alpha band (colour interpretation alpha), or None."""
    return next((i for i, c in enumerate(ds.colorinterp, start=1) if c == ColorInterp.alpha), None)


def colour_bands(ds: Dataset) -> list[int]:
    """1-based indexes of ``ds``'s bands that are not its alpha band, in file order."""
    alpha = alpha_band(ds)
    return [i for i in range(1, ds.count + 1) if i != alpha]


def has_internal_mask(ds: Dataset) -> bool:
    """True when GDAL reports a per-dataset mask that is not an alpha band (a .msk file, an internal mask)."""
    return alpha_band(ds) is None and any(MaskFlags.per_dataset in flags for flags in ds.mask_flag_enums)


@dataclass(frozen=True)
class Validity:
    """How invalid pixels of one date are recognised (see the module docstring for the rule).

    ``nodata``: the declared value; ``alpha_band``: 1-based index of the alpha band used as the
    mask; ``internal_mask``: GDAL's mask is used; ``zero_fill``: all-bands-zero pixels are invalid,
    for the reason ``zero_rule``; ``floating``: the file holds floats (NaN is tested).
    """

    nodata: float | None = None
    alpha_band: int | None = None
    internal_mask: bool = False
    zero_fill: bool = False
    zero_rule: str = ""
    floating: bool = False

    @property
    def tests_values(self) -> bool:
        """Whether validity depends on the pixel values (nodata, zero fill or NaN), not only on a mask."""
        return self.nodata is not None or self.zero_fill or self.floating

    def valid(self, data: np.ndarray) -> np.ndarray:
        """(rows, cols) True where the (bands, rows, cols) values of the bands compared are data by this rule.

        By this rule's value tests; masks and alpha bands are read separately.
        """
        ok = np.ones(data.shape[1:], bool)
        if self.floating:
            ok &= ~np.isnan(data).any(axis=0)
        if self.nodata is not None:
            ok &= ~is_nodata(data, self.nodata).all(axis=0)
        if self.zero_fill:
            ok &= (data != 0).any(axis=0)
        return ok

    def to_dict(self) -> dict[str, object]:
        """JSON form for ``summary.json`` (a NaN nodata is written "nan")."""
        nodata: object = self.nodata
        if self.nodata is not None and math.isnan(self.nodata):
            nodata = "nan"
        return {"declared_nodata": nodata, "alpha_band_as_mask": self.alpha_band,
                "internal_mask": self.internal_mask, "nan_is_invalid": True,
                "zero_fill": self.zero_fill, "zero_rule": self.zero_rule}


def infer_validity(ds: Dataset, bands: list[int], zero_is_valid: bool,
                   declared: Dataset | None = None) -> Validity:
    """The validity rule of one date, for ``bands`` (1-based) of ``ds``; reads no pixels.

    ``declared``: the file whose declarations count (nodata, alpha band, mask) when ``ds`` is a
    virtual view of it (a GCP-only raster warped through its GCPs); by default ``ds`` itself.
    """
    declared = declared if declared is not None else ds
    alpha = alpha_band(ds)
    internal = has_internal_mask(declared)
    nodata = declared.nodata
    if zero_is_valid:
        zero_fill, rule = False, "off: zero is valid (--zero-is-valid)"
    elif nodata is not None:
        zero_fill, rule = False, f"off: the file declares nodata {nodata}"
    elif alpha_band(declared) is not None:
        zero_fill, rule = False, "off: the file has an alpha band"
    elif internal:
        zero_fill, rule = False, "off: the file has a mask"
    else:
        zero_fill, rule = True, "on: no nodata declared, so pixels 0 in every band compared are nodata"
    floating = any(np.issubdtype(np.dtype(ds.dtypes[b - 1]), np.floating) for b in bands)
    return Validity(nodata, alpha, internal and alpha is None, zero_fill, rule, floating)


def sample_counts(ds: Dataset, bands: list[int]) -> dict[str, int]:
    """What a bounded sample of ``ds`` holds (``sample_windows``: at most 0.6 Mpx).

    Pixels read, pixels NaN in some band and pixels 0 in every band, of ``bands`` (1-based).
    """
    pixels = nan = zero = 0
    for window in sample_windows(ds.height, ds.width):
        data = ds.read(bands, window=window, out_dtype="float32")
        pixels += data.shape[1] * data.shape[2]
        nan += int(np.isnan(data).any(axis=0).sum())
        zero += int((data == 0).all(axis=0).sum())
    return {"pixels": pixels, "nan": nan, "all_bands_zero": zero}


def sample_windows(height: int, width: int, side: int = SAMPLE_SIDE, size: int = SAMPLE_SIZE) -> list[Window]:
    """Windows of a raster to sample, at most ``side``² of ``size``² pixels.

    The whole raster when it is no larger than that, else windows spread evenly over it without
    overlapping.
    """
    if height * width <= (side * size) ** 2:
        return [Window(0, 0, width, height)]
    rows = np.linspace(0, max(0, height - size), min(side, max(1, height // size))).astype(int)
    cols = np.linspace(0, max(0, width - size), min(side, max(1, width // size))).astype(int)
    return [Window(int(c), int(r), min(size, width), min(size, height)) for r in rows for c in cols]
