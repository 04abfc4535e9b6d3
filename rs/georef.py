"""Where a raster lies: pixel grids, a north-up grid for any georeferencing, and where data can be.

Rasters reach users north-up (most GeoTIFFs), bottom-up (a positive y pixel size: NetCDF and
xarray exports, GDAL#6946), rotated (rotation terms in the geotransform: the QGIS Georeferencer,
some orthophotos) or located by ground control points only (scanned maps, some L1 products).

- ``georeferenced`` presents a GCP-only raster as a north-up virtual raster warped through its GCPs
  (GDAL's polynomial fit, as ``gdalwarp`` does) and names the fix for rasters it cannot place;
- ``native_grid`` gives the north-up grid, in the raster's CRS and at its own pixel size, that
  covers it: its own grid when it is north-up already, so common grids are always north-up and
  GDAL's warper reads any of the others onto them;
- ``data_bounds`` gives the part of a raster that can hold data: for a virtual mosaic (VRT) the
  rectangles its sources fill, so a 200 000² VRT holding a few tiles is worked on where its tiles are.

Nothing here reads pixels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import rasterio
import rasterio.transform
import rasterio.warp
import rasterio.windows
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import WindowError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from changewatch.rs.errors import IncompatibleScenesError
from changewatch.rs.grid import Grid

Dataset = Any  # a rasterio DatasetReader or WarpedVRT: both read the same way


def is_plain(ds: Dataset) -> bool:
    """True for an image with no CRS, no geotransform, no GCPs and no RPCs (a PNG chip, say)."""
    return ds.crs is None and ds.transform == Affine.identity() and not ds.gcps[0] and not ds.rpcs


# Where plain images of a known pixel size are placed: UTM zone 31N at its central meridian and the
# equator, where the zone's own metres are ground metres (scale 0.9996), so areas and GSDs come out in
# metres. The place is arbitrary: nothing is mapped from such images, they are only compared.
LOCAL_FRAME_CRS = CRS.from_epsg(32631)
LOCAL_FRAME_ORIGIN = (500_000.0, 0.0)  # easting, northing of the image's bottom-left corner


def placed(ds: Dataset, pixel_size_m: float) -> WarpedVRT:
    """A plain image (``is_plain``) presented as lying on a local metric grid; the caller closes it.

    The grid has pixels of ``pixel_size_m`` metres (``LOCAL_FRAME_CRS``), north-up and pixel for
    pixel, so that GSD rules, resampling and areas work on it as on georeferenced imagery. The
    caller closes what it gets.
    """
    x0, y0 = LOCAL_FRAME_ORIGIN
    transform = Affine(pixel_size_m, 0.0, x0, 0.0, -pixel_size_m, y0 + ds.height * pixel_size_m)
    return WarpedVRT(ds, src_crs=LOCAL_FRAME_CRS, src_transform=transform, crs=LOCAL_FRAME_CRS, transform=transform,
                     width=ds.width, height=ds.height, resampling=Resampling.nearest)


def georeferenced(ds: Dataset, role: str) -> Dataset:
    """``ds`` itself when it has a CRS and a geotransform, else a north-up WarpedVRT through its GCPs.

    ``ds`` itself when it has a CRS and a geotransform (north-up, bottom-up or rotated); for a
    raster located only by ground control points, a north-up WarpedVRT of it in the GCPs' CRS
    (bilinear; an alpha band marks where the image lies). The caller closes what it gets.

    Raises IncompatibleScenesError, naming the fix, for rasters without a usable location.
    """
    if ds.crs is not None and ds.transform != Affine.identity():
        return ds
    gcps, gcp_crs = ds.gcps
    if gcps and gcp_crs is not None:
        has_alpha = any(c == rasterio.enums.ColorInterp.alpha for c in ds.colorinterp)
        return WarpedVRT(ds, src_crs=gcp_crs, resampling=Resampling.bilinear,
                         add_alpha=ds.nodata is None and not has_alpha)
    if gcps:
        raise IncompatibleScenesError(f"{role} scene has ground control points but no CRS for them: {ds.name} "
                                      "(set it, e.g. gdal_edit.py -a_srs EPSG:4326 FILE)")
    if ds.rpcs:
        raise IncompatibleScenesError(
            f"{role} scene is located only by RPCs (a sensor model, not a map grid): {ds.name}; orthorectify it "
            "first, e.g. gdalwarp -rpc -t_srs EPSG:32648 -r bilinear IN.tif OUT.tif")
    if ds.crs is None:
        raise IncompatibleScenesError(f"{role} scene has no CRS: {ds.name}")
    raise IncompatibleScenesError(f"{role} scene has no georeferencing: {ds.name}")


def is_north_up(transform: Affine) -> bool:
    """True for a geotransform without rotation whose rows run north to south and columns west to east."""
    return transform.b == 0 and transform.d == 0 and transform.a > 0 and transform.e < 0


def _corners(window: Window, transform: Affine) -> tuple[list[float], list[float]]:
    """The x and y coordinates (CRS units) of a window's four corners."""
    c0, r0 = window.col_off, window.row_off
    c1, r1 = c0 + window.width, r0 + window.height
    points = [transform * (c, r) for c, r in ((c0, r0), (c1, r0), (c0, r1), (c1, r1))]
    return [p[0] for p in points], [p[1] for p in points]


def native_grid(ds: Dataset) -> Grid:
    """The north-up grid covering ``ds`` in its CRS at its pixel size.

    Its own grid when it is north-up; for a bottom-up raster the same pixels stored the other way
    up; for a rotated one the north-up grid of its pixel size around its rotated footprint (``ds``
    must have a CRS and a geotransform: see ``georeferenced``).
    """
    t = ds.transform
    if is_north_up(t):
        return Grid(ds.crs, t, ds.width, ds.height)
    xres, yres = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    xs, ys = _corners(Window(0, 0, ds.width, ds.height), t)
    width = max(1, math.ceil((max(xs) - min(xs)) / xres - 1e-6))
    height = max(1, math.ceil((max(ys) - min(ys)) / yres - 1e-6))
    return Grid(ds.crs, Affine(xres, 0.0, min(xs), 0.0, -yres, max(ys)), width, height)


VRT_SOURCES = ("SimpleSource", "ComplexSource", "AveragedSource", "KernelFilteredSource", "NoDataFromMaskSource")


def data_window(ds: Dataset) -> Window:
    """The window of ``ds``'s pixels that can hold data.

    For a VRT mosaic file, the bounding box of the destination rectangles of its sources (parsed
    from the .vrt; nothing is read); for any other raster, or a VRT it cannot parse, the whole
    raster.
    """
    whole = Window(0, 0, ds.width, ds.height)
    path = Path(str(ds.name))
    if ds.driver != "VRT" or path.suffix.lower() != ".vrt" or not path.is_file():
        return whole
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return whole
    rects = []
    for band in root.iter("VRTRasterBand"):
        for source in band:
            if source.tag not in VRT_SOURCES:
                continue
            rect = source.find("DstRect")
            if rect is None:  # a source without DstRect fills the whole raster
                return whole
            try:
                rects.append(Window(*(float(rect.get(k, "nan")) for k in ("xOff", "yOff", "xSize", "ySize"))))
            except ValueError:
                return whole
    if not rects or any(math.isnan(v) for r in rects for v in r.flatten()):
        return whole
    try:
        return rasterio.windows.intersection(rasterio.windows.union(*rects), whole)
    except WindowError:  # every source lies outside the raster
        return whole


def data_bounds(ds: Dataset) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in ``ds``'s CRS of the part that can hold data (``data_window``).

    For any geotransform (bottom-up and rotated included).
    """
    xs, ys = _corners(data_window(ds), ds.transform)
    return min(xs), min(ys), max(xs), max(ys)
