"""Sentinel-2 radiometry and scene classification, as a STAC item describes them.

Reflectance from digital numbers (ESA, Sentinel-2 Products Specification Document, S2-PDGS-TAS-DI-PSD, L1C/L2A
radiometry; and the processing-baseline 04.00 note, https://sentiwiki.copernicus.eu/web/s2-products):
``reflectance = (DN + BOA_ADD_OFFSET) / QUANTIFICATION_VALUE`` with ``QUANTIFICATION_VALUE = 10000``;
``BOA_ADD_OFFSET = -1000`` DN for every band from processing baseline 04.00 (25 January 2022) on, 0 before.
DN 0 stays NO_DATA. The rule (``s2_radiometry``), per item:

1. ``earthsearch:boa_offset_applied: true`` (Element 84's catalogue: the offset was already added to the DNs
   of its COGs): reflectance = DN / 10000;
2. else the processing baseline (``s2:processing_baseline``, else ``processing:version``, else the older
   ``sentinel:processing_baseline``) decides: ≥ 04.00 → (DN − 1000) / 10000, below → DN / 10000;
3. neither → ``StacItemError``: the offset is never guessed.

The items' ``raster:bands`` scale and offset are not used for Sentinel-2: published catalogues set them for a
whole collection, whatever the baseline (Element84/earth-search#66, #71).

The scene classification layer (SCL, L2A; PSD Table "Scene Classification Values") becomes the invalid mask:
classes 0 NO_DATA, 1 SATURATED_OR_DEFECTIVE, 3 CLOUD_SHADOWS, 8 CLOUD_MEDIUM_PROBABILITY, 9
CLOUD_HIGH_PROBABILITY and 10 THIN_CIRRUS are invalid (``SCL_INVALID``); 2 dark area pixels, 4 vegetation,
5 not vegetated, 6 water, 7 unclassified and 11 snow/ice are data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from changewatch.rs.errors import StacItemError

QUANTIFICATION_VALUE = 10_000  # DN per unit reflectance
BOA_ADD_OFFSET = -1_000  # DN, every band, processing baseline 04.00 and later
OFFSET_BASELINE = (4, 0)  # the first processing baseline with BOA_ADD_OFFSET
SCL_CLASSES = 12  # SCL values 0..11
SCL_INVALID = (0, 1, 3, 8, 9, 10)  # NO_DATA, SATURATED_OR_DEFECTIVE, CLOUD_SHADOWS, CLOUD_MEDIUM/HIGH, THIN_CIRRUS
BASELINE_KEYS = ("s2:processing_baseline", "processing:version", "sentinel:processing_baseline")
# A Sentinel-2 product: a SENTINEL2_L2A:… subdataset name, a .SAFE folder or its MTD_MSIL2A.xml, the product zipped
PRODUCT_PATH = re.compile(r"(^SENTINEL2_L[12][ABC]?:)|(\.SAFE/?$)|(MTD_MSIL[12][AC]\.xml$)|(\.SAFE\.zip$)"
                          r"|((^|/)S2[A-D]_MSIL[12][AC]_[^/]*\.zip$)", re.IGNORECASE)
OFFSET_APPLIED_KEYS = ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")


@dataclass(frozen=True)
class Radiometry:
    """How a band's values become reflectance: ``value * scale + offset``, and the rule that decided it."""

    scale: float = 1.0
    offset: float = 0.0
    rule: str = "none: values as stored"


def is_sentinel2(properties: dict[str, Any]) -> bool:
    """Whether an item's properties describe a Sentinel-2 product (platform, constellation or ``s2:`` fields)."""
    platform = str(properties.get("platform", "")).lower()
    constellation = str(properties.get("constellation", "")).lower()
    return (platform.startswith("sentinel-2") or constellation == "sentinel-2"
            or any(key.startswith(("s2:", "sentinel:")) for key in properties))


def is_product_path(path: str) -> bool:
    """Whether ``path`` names a Sentinel-2 product (``.SAFE`` folder, zipped, ``MTD_MSIL2A.xml``, a subdataset)."""
    return PRODUCT_PATH.search(path) is not None


def _baseline(text: str) -> tuple[int, int] | None:
    """``"04.00"`` → (4, 0); None when it is not MAJOR.MINOR numbers."""
    parts = text.strip().lstrip("N").split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def s2_radiometry(properties: dict[str, Any], where: str) -> Radiometry:
    """The reflectance rule of a Sentinel-2 item (see the module docstring); ``where`` names it in errors.

    Raises StacItemError when neither the offset flag nor a readable processing baseline decides the offset.
    """
    scale = 1 / QUANTIFICATION_VALUE
    applied = next((properties[k] for k in OFFSET_APPLIED_KEYS if k in properties), None)
    if applied is True:
        return Radiometry(scale, 0.0, "Sentinel-2, earthsearch:boa_offset_applied true: DN / 10000")
    key = next((k for k in BASELINE_KEYS if properties.get(k) not in (None, "")), None)
    if key is None:
        raise StacItemError(f"{where}: cannot decide the Sentinel-2 radiometric offset: the item has no processing "
                            f"baseline ({', '.join(BASELINE_KEYS)}) nor earthsearch:boa_offset_applied true")
    version = _baseline(str(properties[key]))
    if version is None:
        raise StacItemError(f"{where}: cannot decide the Sentinel-2 radiometric offset: {key} "
                            f"{properties[key]!r} is not a processing baseline like 04.00")
    if version >= OFFSET_BASELINE:
        return Radiometry(scale, BOA_ADD_OFFSET / QUANTIFICATION_VALUE,
                          f"Sentinel-2 baseline {properties[key]} (>= 04.00): (DN - 1000) / 10000")
    return Radiometry(scale, 0.0, f"Sentinel-2 baseline {properties[key]} (< 04.00): DN / 10000")


def raster_radiometry(band: dict[str, Any]) -> Radiometry:
    """The scale and offset a (non-Sentinel-2) band's ``raster:bands`` entry (or STAC 1.1 band) declares."""
    scale, offset = band.get("scale"), band.get("offset")
    if scale is None and offset is None:
        return Radiometry()
    return Radiometry(float(scale if scale is not None else 1.0), float(offset or 0.0), "raster:bands scale/offset")


def scl_lut() -> str:
    """A GDAL VRT ``<LUT>`` mapping every SCL class to 1 (invalid) or 0 (data)."""
    return ",".join(f"{c}:{int(c in SCL_INVALID)}" for c in range(SCL_CLASSES))
