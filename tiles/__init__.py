"""The demo data shipped with changewatch, found with ``importlib.resources``.

A real Sentinel-2 pair of Hong Kong (``hongkong/``), a SCENES list of three dates made of it
(``hongkong/scenes.csv``: BEFORE, AFTER, and AFTER again tagged six months later) and made-up permit,
zoning and parcel layers (see ``ATTRIBUTION.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path


@dataclass(frozen=True)
class DemoData:
    """Paths of the bundled demo inputs (installed with the package)."""

    before: Path
    after: Path
    scenes: Path
    permits: Path
    zoning: Path
    parcels: Path


def demo_data() -> DemoData:
    """The demo's scenes and its made-up permit, zoning and parcel layers, wherever the package is installed.

    The scenes: Sentinel-2, Hong Kong, 2016 → 2018, 4 bands at 10 m, EPSG:4326. ``scenes``: a
    monitor's SCENES list of three dates, 2016-09-27 (BEFORE), 2018-03-23 (AFTER) and 2018-09-23
    (AFTER again: nothing changes between the last two dates).
    """
    root = Path(str(files(__name__)))
    return DemoData(before=root / "hongkong" / "before.tif", after=root / "hongkong" / "after.tif",
                    scenes=root / "hongkong" / "scenes.csv", permits=root / "hongkong_permits_demo.gpkg",
                    zoning=root / "hongkong_zoning_demo.gpkg", parcels=root / "hongkong_parcels_demo.gpkg")
