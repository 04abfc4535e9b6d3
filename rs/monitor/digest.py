"""Whether a store's ``history.gpkg`` already holds a history: a digest of its tables, kept in the file.

``write_history`` (``rs.monitor.history``) records ``tables_digest`` of what it writes in the layer metadata of the
table ``dates`` (key ``DIGEST_KEY``) and does not rewrite the file when the history rebuilt by a later run has the
same digest. So a re-run that detected no pair and whose layers judge the same leaves ``history.gpkg`` untouched,
and works on a read-only store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from pyogrio.errors import DataLayerError, DataSourceError

DIGEST_KEY = "changewatch-history-digest"  # layer metadata key of table ``dates``
DIGEST_VERSION = "1"  # part of the digest: a new way of writing the history rewrites every store's file


def _table_text(table: pd.DataFrame) -> str:
    """A table as text that differs whenever its columns, types, values, geometries (WKB) or CRS differ."""
    crs = ""
    if isinstance(table, gpd.GeoDataFrame) and table.geometry.name in table.columns:
        crs = table.crs.to_wkt() if table.crs is not None else "no CRS"
        table = pd.DataFrame(table.drop(columns=table.geometry.name)).assign(
            **{f"{table.geometry.name} (WKB)": table.geometry.to_wkb(hex=True)})
    types = ",".join(f"{name}:{dtype}" for name, dtype in table.dtypes.items())
    return f"{crs}\n{types}\n{table.to_csv(index=False)}"


def tables_digest(tables: Sequence[pd.DataFrame]) -> str:
    """SHA-256 (hex) of ``tables`` in order and DIGEST_VERSION: equal digests, equal tables (floats by repr)."""
    h = hashlib.sha256(DIGEST_VERSION.encode())
    for table in tables:
        h.update(_table_text(table).encode("utf-8"))
    return h.hexdigest()


def stored_digest(path: Path, layer: str) -> str | None:
    """The digest recorded in ``layer``'s metadata of the GeoPackage ``path``; None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        metadata = pyogrio.read_info(path, layer=layer).get("layer_metadata") or {}
    except (DataSourceError, DataLayerError):  # not a GeoPackage, no such table: rewrite it
        return None
    value = metadata.get(DIGEST_KEY)
    return str(value) if value is not None else None
