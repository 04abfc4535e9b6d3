"""The demo data shipped with changewatch, found with ``importlib.resources``.

A real Sentinel-2 pair of Hong Kong (``hongkong/``) and made-up permit, zoning and parcel layers
(see ``ATTRIBUTION.md``).
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
    permits: Path
    zoning: Path
    parcels: Path


def demo_data() -> DemoData:
    """The demo's scenes and its made-up permit, zoning and parcel layers, wherever the package is installed.

    The scenes: Sentinel-2, Hong Kong, 2016 → 2018, 4 bands at 10 m, EPSG:4326.
    """
    root = Path(str(files(__name__)))
    return DemoData(before=root / "hongkong" / "before.tif", after=root / "hongkong" / "after.tif",
                    permits=root / "hongkong_permits_demo.gpkg", zoning=root / "hongkong_zoning_demo.gpkg",
                    parcels=root / "hongkong_parcels_demo.gpkg")
