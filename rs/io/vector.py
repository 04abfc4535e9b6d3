"""Writing vector layers (pyogrio) and listing a file's layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio


def write_vector(gdf: gpd.GeoDataFrame, path: Path, driver: str, **options: Any) -> Path:
    """Write a vector file (pyogrio) keeping the GeoDataFrame's CRS.

    An empty layer is still written, as a Polygon layer with the same columns.
    """
    extra: dict[str, Any] = {"geometry_type": "Polygon"} if gdf.empty else {}
    gdf.to_file(path, driver=driver, engine="pyogrio", **extra, **options)
    return path


def write_gpkg(gdf: gpd.GeoDataFrame, path: Path, layer: str) -> Path:
    """Write one GeoPackage layer (see ``write_vector``)."""
    return write_vector(gdf, path, "GPKG", layer=layer)


def layer_names(path: Path) -> set[str]:
    """Names of the layers (and attribute tables) in a vector file such as a GeoPackage."""
    return {str(name) for name, _ in pyogrio.list_layers(path)}


def write_table(table: pd.DataFrame, path: Path, layer: str) -> Path:
    """Write a table without geometry as a GeoPackage attribute table (QGIS opens it as a layer)."""
    pyogrio.write_dataframe(table, path, layer=layer, driver="GPKG")
    return path
