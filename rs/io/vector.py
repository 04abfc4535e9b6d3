"""Writing vector layers (pyogrio) and listing a file's layers.

GeoPackages are written as GeoPackage 1.2 (``GPKG_VERSION``), which GDAL 3.6 and QGIS 3.28 LTR read
without a warning; the GDAL pyogrio ships (3.12) would write 1.4 by default (``PRAGMA user_version``
10400), which GDAL 3.6 warns about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio

GPKG_VERSION = "1.2"  # GDAL's VERSION creation option: application_id 'GPKG', user_version 10200


def write_vector(gdf: gpd.GeoDataFrame, path: Path, driver: str, **options: Any) -> Path:
    """Write a vector file (pyogrio) keeping the GeoDataFrame's CRS.

    An empty layer is still written, as a Polygon layer with the same columns.
    """
    extra: dict[str, Any] = {"geometry_type": "Polygon"} if gdf.empty else {}
    gdf.to_file(path, driver=driver, engine="pyogrio", **extra, **options)
    return path


def write_gpkg(gdf: gpd.GeoDataFrame, path: Path, layer: str) -> Path:
    """Write one GeoPackage layer (see ``write_vector``); a new file is GeoPackage 1.2 (``GPKG_VERSION``)."""
    return write_vector(gdf, path, "GPKG", layer=layer, dataset_options={"VERSION": GPKG_VERSION})


def layer_names(path: Path) -> set[str]:
    """Names of the layers (and attribute tables) in a vector file such as a GeoPackage."""
    return {str(name) for name, _ in pyogrio.list_layers(path)}


def write_table(table: pd.DataFrame, path: Path, layer: str, metadata: dict[str, str] | None = None) -> Path:
    """Write a table without geometry as a GeoPackage attribute table (QGIS opens it as a layer).

    A new file is GeoPackage 1.2 (``GPKG_VERSION``). ``metadata``: the table's layer metadata (key → text).
    """
    pyogrio.write_dataframe(table, path, layer=layer, driver="GPKG", dataset_options={"VERSION": GPKG_VERSION},
                            layer_metadata=metadata)
    return path
