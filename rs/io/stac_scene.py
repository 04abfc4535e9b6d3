"""A STAC Item on disk read as a scene: its band assets on one grid, its SCL as the invalid mask.

A scene given as a ``.json`` file is a STAC Item (STAC 1.0 or 1.1). ``read_item`` decides, reading no pixels:

- **which assets**: one per band asked for, in that order — ``--bands`` names, else ``DEFAULT_BANDS`` (blue,
  green, red, nir: the bands of the shipped 4-band model). A name (compared as ``rs.bands.name_key`` does:
  ``B8`` = ``B08``) picks, in this order: (1) the asset whose key it is (``red``, ``B04``); (2) the single-band
  assets whose band's ``common_name`` (``eo:bands``; STAC 1.1 ``bands``: ``eo:common_name``) or ``name`` it is,
  GeoTIFFs before other formats (a catalogue's ``red`` COG before its ``red-jp2``); (3) the one band of a
  multi-band asset (``visual``) so named. Several candidates left at the deciding step, or none, is an error;
  band indexes are refused (an item's assets have no order);
- **where**: hrefs relative to the item file are resolved against its folder; ``http(s)://`` and ``s3://`` hrefs
  are read through GDAL (``/vsicurl/``, ``/vsis3/``);
- **one grid**: every band asset is placed on the grid of the finest of them (its CRS, pixel size and origin,
  over the union of their extents) by a GDAL VRT (``image_vrt``): GDAL does the resampling, nearest-neighbour,
  so a 20 m band on a 10 m grid repeats each pixel 2×2 and no value is invented. Assets in different CRSs or
  rotated are refused;
- **values**: float32 ``value * scale + offset`` per band — Sentinel-2 reflectance by its processing baseline
  (``rs.io.sentinel2.s2_radiometry``), else the asset's ``raster:bands`` scale/offset, else the values as
  stored. The band's nodata (``raster:bands``/``bands`` nodata, else the file's; Sentinel-2: DN 0) becomes NaN,
  which ``rs.validity`` always treats as invalid;
- **the invalid mask**: an asset keyed ``scl`` (Sentinel-2 L2A scene classification), on the same grid,
  nearest-neighbour, mapped by a VRT lookup table to 1 for ``rs.io.sentinel2.SCL_INVALID`` classes
  (``mask_vrt``: band 1 non-zero = invalid, as ``--mask`` rasters are).

An item of an ItemCollection file is the scene path ``collection.json#ID`` (its hrefs relative to that file);
``collection_items`` lists the items of a collection or catalog (``monitor`` SCENES), ``item_date`` dates one.
``item_scene`` reads an item built in memory the same way (a Sentinel-2 product's: ``rs.io.s2_product``).

``ItemScene.record`` is what ``summary.json`` keeps (``inputs.intake``): each asset's href, band, scale and
offset applied and the rule that chose them, and the mask's source. Errors are ``StacItemError`` (exit code 3)
for the file, its JSON and its assets, ``IncompatibleScenesError`` (exit code 4) for a band the item lacks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from datetime import UTC, date
from pathlib import Path
from typing import Any

import rasterio
from affine import Affine
from dateutil.parser import isoparse
from rasterio.errors import RasterioIOError

from changewatch.rs.bands import name_key
from changewatch.rs.errors import IncompatibleScenesError, StacItemError
from changewatch.rs.grid import Grid
from changewatch.rs.io.gdalpaths import is_gdal_path
from changewatch.rs.io.sentinel2 import SCL_INVALID, Radiometry, is_sentinel2, raster_radiometry, s2_radiometry, scl_lut
from changewatch.rs.io.vrt import VrtSource, vrt_xml

DEFAULT_BANDS = ("blue", "green", "red", "nir")  # read from an item when no bands are given
MASK_ASSET = "scl"  # the asset key (name_key) of the scene classification layer
S2_NODATA = 0.0  # Sentinel-2 DN of NO_DATA
ITEM_REF = "#"  # ``collection.json#ID``: item ID of an ItemCollection file
URL_HANDLERS = {"http://": "/vsicurl/http://", "https://": "/vsicurl/https://", "s3://": "/vsis3/"}


def split_ref(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """(file, item id) of a scene path: ``collection.json#ID`` names item ID of an ItemCollection file."""
    text = os.fspath(path)
    cut = text.lower().find(".json" + ITEM_REF)
    return (text, None) if cut < 0 else (text[:cut + 5], text[cut + 6:] or None)


def is_stac_path(path: str | os.PathLike[str]) -> bool:
    """Whether a scene path names a STAC JSON file (by its ``.json`` suffix), or an item in one (``…json#ID``)."""
    return split_ref(path)[0].lower().endswith(".json")


def load_stac(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The STAC object (a JSON object with a ``type``) in the file at ``path``.

    Raises StacItemError when the file is missing, unreadable or not a JSON object with a ``type``.
    """
    p = Path(path)
    if not p.is_file():
        raise StacItemError(f"STAC file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StacItemError(f"STAC file {p} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise StacItemError(f"STAC file {p} is not a STAC object (a JSON object with a 'type')")
    return data


def load_item(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The STAC Item in the file at ``path``, or the item ``ID`` of the ItemCollection file when ``path`` is ``…#ID``.

    Raises StacItemError when it is another kind of file or object, or the collection has no item ``ID``.
    """
    file, ref = split_ref(path)
    data = load_stac(file)
    if ref is not None:
        found = [f for f in data.get("features") or [] if isinstance(f, dict) and f.get("id") == ref]
        if data["type"] != "FeatureCollection" or len(found) != 1:
            raise StacItemError(f"{file} is not an ItemCollection holding one item {ref!r}")
        data = found[0]
    return _as_item(data, path)


def _as_item(data: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """``data`` when it is a STAC Item with assets; else StacItemError naming ``path`` and what it is."""
    if data.get("type") != "Feature" or "stac_version" not in data or not isinstance(data.get("assets"), dict):
        kind = "an ItemCollection or catalog: give one item per date (monitor SCENES may be a collection)" \
            if data.get("type") in ("FeatureCollection", "Catalog", "Collection") else "not a STAC Item"
        raise StacItemError(f"{path} is {kind}")
    return data


def collection_items(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """Every item of an ItemCollection file (as ``FILE#ID`` scene paths) or of a catalog (each item's file).

    A catalog (``catalog.json``, or a Collection) is walked with pystac, child catalogs included. Raises
    StacItemError for a file that is neither, a catalog that cannot be read, or an item that is not STAC.
    """
    import pystac

    p = Path(path).resolve()
    data = load_stac(p)
    if data["type"] == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise StacItemError(f"ItemCollection {p} has no list of features")
        ids = [f.get("id") if isinstance(f, dict) else None for f in features]
        if None in ids or len(set(ids)) != len(ids):
            raise StacItemError(f"ItemCollection {p}: every item needs its own id")
        return [(f"{p}{ITEM_REF}{i}", _as_item(f, f"{p}{ITEM_REF}{i}")) for f, i in zip(features, ids, strict=True)]
    if data["type"] not in ("Catalog", "Collection"):
        raise StacItemError(f"{p} is not a STAC ItemCollection or catalog (its type is {data['type']!r})")
    try:
        root = pystac.read_file(str(p))
        hrefs = [item.get_self_href() for item in root.get_items(recursive=True)] \
            if isinstance(root, pystac.Catalog) else []  # a Collection is a Catalog
    except (pystac.STACError, pystac.STACTypeError, OSError, ValueError, KeyError, TypeError) as exc:
        raise StacItemError(f"catalog {p} cannot be read: {' '.join(str(exc).split())}") from exc
    return [(str(h), load_item(str(h))) for h in hrefs if h]


def item_files(path: str | os.PathLike[str]) -> list[str]:
    """The local files a STAC item scene is made of: its JSON file and every asset's local file (for resume)."""
    file, _ = split_ref(path)
    try:
        assets = load_item(path)["assets"].values()
    except StacItemError:
        return [file]  # the run itself reports why
    hrefs = [_href(Path(file), str(a["href"])) for a in assets if isinstance(a, dict) and a.get("href")]
    return [file, *(h for h in hrefs if not is_gdal_path(h))]


def item_date(item: dict[str, Any], where: str) -> date:
    """The acquisition date (UTC) of an item: its ``datetime``'s, else that of a one-day ``start/end_datetime``.

    Raises StacItemError when it has neither, a date that does not parse, or a range over more than one day.
    """
    props = item.get("properties") or {}
    try:
        if props.get("datetime"):
            return isoparse(str(props["datetime"])).astimezone(UTC).date()
        if props.get("start_datetime") and props.get("end_datetime"):
            start, end = (isoparse(str(props[k])).astimezone(UTC).date() for k in ("start_datetime", "end_datetime"))
        else:
            raise StacItemError(f"{where}: the item has no datetime (nor start_datetime and end_datetime)")
    except ValueError as exc:
        raise StacItemError(f"{where}: its datetime cannot be read: {exc}") from exc
    if start != end:
        raise StacItemError(f"{where}: the item spans {start} to {end}, not one acquisition day: list its scenes "
                            "with their dates in a CSV SCENES instead")
    return start


@dataclass(frozen=True)
class Layout:
    """Where an asset file lies: CRS (WKT), north-up transform, size in pixels, declared nodata."""

    crs: str
    transform: Affine
    width: int
    height: int
    nodata: float | None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the CRS."""
        t = self.transform
        return t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f


@dataclass(frozen=True)
class BandAsset:
    """One band read from an item: the name asked for, its asset and href, its 1-based band, values rule, nodata."""

    name: str
    asset: str
    href: str
    index: int
    radiometry: Radiometry
    nodata: float | None


@dataclass(frozen=True)
class _Candidate:
    """A band an item offers: asset key, 1-based index, names, whether its asset has one band, type, metadata."""

    asset: str
    index: int
    names: tuple[str, ...]
    single: bool
    tiff: bool
    meta: dict[str, Any]


def _candidates(assets: dict[str, Any]) -> list[_Candidate]:
    """Every band of every asset: names from ``eo:bands`` (1.0) or ``bands`` (1.1), metadata from ``raster:bands``."""
    found = []
    for key, asset in assets.items():
        if not isinstance(asset, dict) or not asset.get("href"):
            continue
        bands = asset.get("bands") or asset.get("eo:bands") or [{}]
        raster = asset.get("raster:bands") or []
        for i, band in enumerate(bands):
            meta = {**(raster[i] if i < len(raster) and isinstance(raster[i], dict) else {}),
                    **(band if isinstance(band, dict) else {})}
            names = tuple(name_key(str(meta[k])) for k in ("eo:common_name", "common_name", "name") if meta.get(k))
            found.append(_Candidate(key, i + 1, names, len(bands) == 1, "tiff" in str(asset.get("type", "")).lower(),
                                    meta))
    return found


def _pick(candidates: list[_Candidate], name: str, where: str) -> _Candidate:
    """The candidate for band ``name`` (see the module docstring for the order). Raises IncompatibleScenesError."""
    key = name_key(name)
    if key.isdigit():
        raise IncompatibleScenesError(f"{where}: a STAC item's bands are picked by name (common name such as red, "
                                      f"or asset key such as B04), not by index {name!r}")
    steps = [[c for c in candidates if name_key(c.asset) == key and c.single],
             [c for c in candidates if c.single and key in c.names and c.tiff],
             [c for c in candidates if c.single and key in c.names],
             [c for c in candidates if not c.single and key in c.names]]
    chosen = next((step for step in steps if step), [])
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        raise IncompatibleScenesError(f"{where} has no band {name!r} ({_offered(candidates)}): pick bands by "
                                      "common name or asset key with --bands")
    raise IncompatibleScenesError(f"{where}: band {name!r} could be asset {' or '.join(c.asset for c in chosen)}: "
                                  "name the asset with --bands")


def _offered(candidates: list[_Candidate]) -> str:
    """What can be typed to pick a band, as the item writes it: asset keys, then other band names (never ``scl``)."""
    keys = [c.asset for c in candidates if c.single and name_key(c.asset) != MASK_ASSET]
    taken = {name_key(k) for k in keys} | {MASK_ASSET}
    written = [str(c.meta[k]) for c in candidates for k in ("eo:common_name", "common_name", "name") if c.meta.get(k)]
    shown = list(dict.fromkeys(w for w in written if name_key(w) not in taken))
    parts = [f"assets {', '.join(keys)}"] * bool(keys) + [f"band names {', '.join(shown)}"] * bool(shown)
    return "it offers " + ("; ".join(parts) or "no band")


def _href(item_path: Path, href: str) -> str:
    """An asset's href as GDAL opens it: relative to the item's folder, URLs through GDAL's handlers."""
    for scheme, handler in URL_HANDLERS.items():
        if href.startswith(scheme):
            return handler + href[len(scheme):]
    if href.startswith("file://"):
        href = href[len("file://"):]
    return href if is_gdal_path(href) else str((item_path.parent / href).resolve())


def _layout(href: str, asset: str, where: str) -> Layout:
    """The layout of an asset's file. Raises StacItemError when it is missing, unreadable, rotated or unlocated."""
    if not is_gdal_path(href) and not Path(href).is_file():
        raise StacItemError(f"{where}: asset {asset!r} file not found: {href}")
    try:
        with rasterio.open(href) as ds:
            layout = Layout(ds.crs.to_wkt() if ds.crs else "", ds.transform, ds.width, ds.height, ds.nodata)
    except RasterioIOError as exc:
        raise StacItemError(f"{where}: asset {asset!r} is not a readable raster: {href} "
                            f"({' '.join(str(exc).split())})") from exc
    t = layout.transform
    if not layout.crs or t.b or t.d or t.e >= 0:
        raise StacItemError(f"{where}: asset {asset!r} is not a north-up georeferenced raster: {href}")
    return layout


@dataclass(frozen=True)
class ItemScene:
    """A STAC Item as a scene: its bands, its mask asset, where each file lies and the grid they are put on.

    ``grid``: the finest band asset's pixels over all band assets (see the module docstring); ``mask``: the
    href of its SCL asset, None without one; ``layouts``: each file's layout, by href.
    """

    path: str
    date: date
    bands: tuple[BandAsset, ...]
    mask: str | None
    grid: Grid
    layouts: dict[str, Layout]

    def _source(self, href: str, index: int, **values: Any) -> VrtSource:
        layout = self.layouts[href]
        return VrtSource(href, index, layout.transform, layout.width, layout.height, **values)

    def image_vrt(self) -> str:
        """The bands on ``grid`` as a float32 VRT (XML): ``value * scale + offset``, nodata NaN, named as asked."""
        sources = [self._source(b.href, b.index, description=b.name, nodata=b.nodata, scale=b.radiometry.scale,
                                offset=b.radiometry.offset) for b in self.bands]
        nodata = float("nan") if any(b.nodata is not None for b in self.bands) else None
        return vrt_xml(self.grid, sources, "Float32", nodata)

    def mask_vrt(self) -> str | None:
        """The SCL asset on ``grid`` as a byte VRT (XML): 1 where its class is invalid, else 0; None without SCL."""
        if self.mask is None:
            return None
        return vrt_xml(self.grid, [self._source(self.mask, 1, description="invalid (SCL)", lut=scl_lut())], "Byte",
                       None)

    def record(self) -> dict[str, Any]:
        """What ``summary.json`` keeps of the intake: item, date, each asset read and how, the mask's source."""
        finest = self.grid.transform.a

        def resampled(href: str) -> str | None:
            size = self.layouts[href].transform.a
            return None if size == finest else f"nearest, {size:g} to {finest:g} CRS units"

        assets = [{"band": b.name, "asset": b.asset, "href": b.href, "band_index": b.index,
                   "scale": b.radiometry.scale, "offset": b.radiometry.offset, "values": b.radiometry.rule,
                   "nodata": b.nodata, "resampled": resampled(b.href)} for b in self.bands]
        mask = None if self.mask is None else {
            "source": "SCL asset", "href": self.mask, "invalid_classes": list(SCL_INVALID),
            "resampled": resampled(self.mask)}
        return {"item": self.path, "date": self.date.isoformat(), "assets": assets, "mask": mask}


def _band_asset(item: dict[str, Any], path: Path, candidate: _Candidate, name: str, where: str,
                rule: Radiometry | None) -> BandAsset:
    """The band ``name`` of ``candidate``: its href, values rule (``rule`` when given) and nodata (module docstring)."""
    props = item.get("properties") or {}
    s2 = is_sentinel2(props)
    if rule is None:
        rule = s2_radiometry(props, where) if s2 else raster_radiometry(candidate.meta)
    nodata = candidate.meta.get("nodata")
    href = _href(path, str(item["assets"][candidate.asset]["href"]))
    return BandAsset(name, candidate.asset, href, candidate.index, rule,
                     float(nodata) if nodata is not None else (S2_NODATA if s2 else None))


def _grid(bands: tuple[BandAsset, ...], layouts: dict[str, Layout], where: str) -> Grid:
    """The finest band asset's pixels over the union of the band assets' extents. Raises StacItemError."""
    used = [layouts[b.href] for b in bands]
    if len({layout.crs for layout in used}) > 1:
        raise StacItemError(f"{where}: its band assets are in different CRSs")
    finest = min(used, key=lambda layout: layout.transform.a)
    size = finest.transform.a
    boxes = [layout.bounds for layout in used]
    left, top = min(b[0] for b in boxes), max(b[3] for b in boxes)
    right, bottom = max(b[2] for b in boxes), min(b[1] for b in boxes)
    width, height = round((right - left) / size), round((top - bottom) / size)
    return Grid(rasterio.crs.CRS.from_wkt(finest.crs), Affine(size, 0.0, left, 0.0, -size, top), width, height)


def read_item(path: str | os.PathLike[str], bands: tuple[str, ...] | None, role: str) -> ItemScene:
    """The STAC Item at ``path`` as a scene of ``bands`` (names; None: ``DEFAULT_BANDS``), opening no pixels.

    ``role`` names it in errors ("BEFORE"). Raises StacItemError (the file, its JSON, an asset missing or
    unreadable, an undecidable offset or date) or IncompatibleScenesError (a band it lacks, or ambiguous).
    """
    file, ref = split_ref(path)
    p = Path(file)
    name = str(p.resolve()) + (f"{ITEM_REF}{ref}" if ref else "")
    return item_scene(load_item(path), p, name, bands, f"{role} item {path}")


def item_scene(item: dict[str, Any], path: Path, name: str, bands: tuple[str, ...] | None, where: str,
               rules: dict[str, Radiometry] | None = None) -> ItemScene:
    """The STAC Item ``item`` (a dict, from the file ``path``) as the scene ``name`` of ``bands``, opening no pixels.

    ``rules``: the values rule of an asset (by key) that its description decides itself (a Sentinel-2 product's
    own BOA_ADD_OFFSET, ``rs.io.s2_product``), instead of the item's rule. ``where`` names it in errors. Raises
    as ``read_item``.
    """
    candidates = _candidates(item["assets"])
    picked = [(_pick(candidates, band, where), band) for band in (bands or DEFAULT_BANDS)]
    chosen = tuple(_band_asset(item, path, c, band, where, (rules or {}).get(c.asset)) for c, band in picked)
    mask_key = next((k for k in item["assets"] if name_key(k) == MASK_ASSET), None)
    mask = _href(path, str(item["assets"][mask_key]["href"])) if mask_key else None
    layouts = {b.href: _layout(b.href, b.asset, where) for b in chosen}
    chosen = tuple(b if b.nodata is not None else replace(b, nodata=layouts[b.href].nodata) for b in chosen)
    if mask is not None and mask_key is not None:
        layouts[mask] = _layout(mask, mask_key, where)
        if layouts[mask].crs != layouts[chosen[0].href].crs:
            raise StacItemError(f"{where}: its {mask_key} asset is in another CRS than its bands")
    return ItemScene(name, item_date(item, where), chosen, mask, _grid(chosen, layouts, where), layouts)
