"""Scenes described by metadata rather than read as one raster: STAC Items and Sentinel-2 L2A products.

Both become an ``rs.io.stac_scene.ItemScene`` (band assets on one grid as a VRT, the SCL mask, the
``inputs.intake`` record): a ``.json`` scene path through ``rs.io.stac_scene.read_item``, a Sentinel-2 product
(``.SAFE`` folder, zipped, ``MTD_MSIL2A.xml``; ``rs.io.sentinel2.is_product_path``) through
``rs.io.s2_product.read_product``. Every other scene path is a raster GDAL opens.
"""

from __future__ import annotations

import os
from datetime import date

from changewatch.rs.io.s2_product import product_date, product_files, read_product
from changewatch.rs.io.sentinel2 import is_product_path
from changewatch.rs.io.stac_scene import ItemScene, is_stac_path, item_date, item_files, load_item, read_item


def is_described(path: str | os.PathLike[str]) -> bool:
    """Whether a scene path names a STAC Item (``.json``, ``…json#ID``) or a Sentinel-2 product."""
    return is_stac_path(path) or is_product_path(os.fspath(path))


def read_described(path: str | os.PathLike[str], bands: tuple[str, ...] | None, role: str) -> ItemScene:
    """The STAC Item or Sentinel-2 product at ``path`` as a scene of ``bands`` (names; None: blue, green, red, nir).

    ``role`` names it in errors ("BEFORE"). Raises StacItemError or ProductError (exit code 3),
    IncompatibleScenesError (a band it lacks, exit code 4).
    """
    if is_stac_path(path):
        return read_item(path, bands, role)
    return read_product(path, bands, role)


def described_date(path: str | os.PathLike[str]) -> date:
    """The acquisition date (UTC) of a STAC Item (its ``datetime``) or product (its datatake sensing start)."""
    where = f"scene {os.fspath(path)}"
    if is_stac_path(path):
        return item_date(load_item(path), where)
    return product_date(path, where)


def described_files(path: str | os.PathLike[str]) -> list[str]:
    """The local files of a STAC Item or product scene (its metadata and band files, or its archive), for resume."""
    return item_files(path) if is_stac_path(path) else product_files(path)
