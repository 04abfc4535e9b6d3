"""GDAL VRT documents that place rasters of any pixel size on one grid, for GDAL to resample as it reads.

``vrt_xml`` writes the XML of a VRT (GDAL's "VRT – GDAL Virtual Format"): one band per ``VrtSource``, each a
``ComplexSource`` whose ``DstRect`` places the source file's pixels on the grid (GDAL resamples them with the
source's ``resampling``), with its nodata, a linear scale/offset (``value * scale + offset``) or a lookup table
applied. rasterio opens the XML text itself (``rasterio.open(xml)``): nothing is written to disk, and what opens a
scene stays a short plain string to rebuild in any process.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from affine import Affine

from changewatch.rs.grid import Grid


@dataclass(frozen=True)
class VrtSource:
    """One band of a VRT: a band of a file (GDAL path), where its pixels lie, and what is done to its values.

    ``transform``, ``width``, ``height``: the file's north-up grid in the VRT's CRS; ``nodata``: its value
    that is not written (the VRT band keeps its own nodata there); ``scale``/``offset``: ``value * scale +
    offset``; ``lut``: a GDAL lookup table (``"0:1,1:0"``) instead; ``description``: the VRT band's name.
    """

    path: str
    band: int
    transform: Affine
    width: int
    height: int
    description: str = ""
    nodata: float | None = None
    scale: float = 1.0
    offset: float = 0.0
    lut: str | None = None
    resampling: str = "nearest"


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def _source(band: ET.Element, source: VrtSource, grid: Grid) -> None:
    """Append ``source`` as a ComplexSource of ``band``, its DstRect in pixels of ``grid``."""
    complex_source = ET.SubElement(band, "ComplexSource", resampling=source.resampling)
    ET.SubElement(complex_source, "SourceFilename", relativeToVRT="0").text = source.path
    ET.SubElement(complex_source, "SourceBand").text = str(source.band)
    ET.SubElement(complex_source, "SrcRect", xOff="0", yOff="0", xSize=str(source.width), ySize=str(source.height))
    g, t = grid.transform, source.transform
    ET.SubElement(complex_source, "DstRect", xOff=repr((t.c - g.c) / g.a), yOff=repr((t.f - g.f) / g.e),
                  xSize=repr(source.width * t.a / g.a), ySize=repr(source.height * t.e / g.e))
    if source.nodata is not None:
        ET.SubElement(complex_source, "NODATA").text = _number(source.nodata)
    if source.lut is not None:
        ET.SubElement(complex_source, "LUT").text = source.lut
    elif (source.scale, source.offset) != (1.0, 0.0):
        ET.SubElement(complex_source, "ScaleOffset").text = repr(source.offset)
        ET.SubElement(complex_source, "ScaleRatio").text = repr(source.scale)


def vrt_xml(grid: Grid, sources: list[VrtSource], dtype: str, nodata: float | None) -> str:
    """The XML of a VRT on ``grid`` (north-up) with one ``dtype`` band per source (1-based, in order).

    ``nodata``: the bands' nodata value (also their value where no source pixel lies), None for none (0 there).
    """
    assert grid.crs is not None
    root = ET.Element("VRTDataset", rasterXSize=str(grid.width), rasterYSize=str(grid.height))
    ET.SubElement(root, "SRS").text = grid.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in grid.transform.to_gdal())
    for i, source in enumerate(sources, start=1):
        band = ET.SubElement(root, "VRTRasterBand", dataType=dtype, band=str(i))
        if source.description:
            ET.SubElement(band, "Description").text = source.description
        if nodata is not None:
            ET.SubElement(band, "NoDataValue").text = _number(nodata)
        _source(band, source, grid)
    return ET.tostring(root, encoding="unicode")
