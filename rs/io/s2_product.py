"""A Sentinel-2 L2A product read as a scene: its metadata turned into the STAC item ``rs.io.stac_scene`` reads.

A scene path names a product when it is (``rs.io.sentinel2.is_product_path``):

- its ``.SAFE`` folder, or the ``MTD_MSIL2A.xml`` in it;
- the product zipped: ``/vsizip/ARCHIVE.zip/S2…SAFE`` (or ``…SAFE/MTD_MSIL2A.xml``), or the archive itself when it is
  named as ESA names products (``S2B_MSIL2A_….zip``, ``….SAFE.zip``), holding one ``.SAFE`` folder.

What the product metadata (``MTD_MSIL2A.xml``, ESA Sentinel-2 Products Specification Document, User Product
Level-2A) says is read with the standard library's ``xml.etree``, by element names (any PSD namespace):

- the **level**: the root element ``Level-2A_User_Product``. An L1C product (``Level-1C_User_Product``, or a folder
  holding ``MTD_MSIL1C.xml``) is refused: top-of-atmosphere values, another offset (RADIO_ADD_OFFSET), no SCL;
- the **date**: ``DATATAKE_SENSING_START`` (its UTC date), required;
- the **values**: reflectance ``(DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE``, with the product's own
  ``BOA_ADD_OFFSET`` of each band (``band_id`` → band by ``Spectral_Information``'s ``physicalBand``, else the PSD's
  order B1…B12) and quantification (10000 when not listed); a band the product gives no offset for takes the
  processing-baseline rule (``PROCESSING_BASELINE``, required: ``rs.io.sentinel2.s2_radiometry``). DN 0 is no data;
- the **files**: the ``IMAGE_FILE`` entries (``IMAGE_FILE_2A`` before PSD 14; ``GRANULE/*/IMG_DATA/R10m/…_B02_10m``,
  ``.jp2`` added), each band at the finest resolution listed (B02, B03, B04, B08 at 10 m; B05–B07, B8A, B11, B12 at
  20 m; B01, B09 at 60 m), ``SCL`` at 20 m as the invalid mask. Every such file must be in the product (a file
  missing is refused: an incomplete download is not a scene), and the SCL must be listed.

The product becomes a STAC item (assets keyed ``B02``…, with ``eo:bands`` common names blue…; ``scl``) read by
``rs.io.stac_scene.item_scene``: the same band choice (``--bands`` names or asset keys), grid, VRT, SCL mask and
``inputs.intake`` record (``item``: the product's ``MTD_MSIL2A.xml``) as a STAC item's.

A GDAL subdataset name (``SENTINEL2_L2A:…/MTD_MSIL2A.xml:10m:EPSG_32631``) is refused, naming the product folder to
give instead: its resolution would choose the bands and the grid, which changewatch decides from the product.
Errors are ``ProductError`` (exit code 3); a band the product lacks is ``IncompatibleScenesError`` (exit code 4).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from changewatch.rs.bands import SENTINEL2_COMMON_NAMES as COMMON_NAMES
from changewatch.rs.errors import ProductError
from changewatch.rs.io.gdalpaths import archive_of, is_gdal_path
from changewatch.rs.io.sentinel2 import QUANTIFICATION_VALUE, Radiometry
from changewatch.rs.io.stac_scene import MASK_ASSET, ItemScene, item_date, item_scene

L2A_XML = "MTD_MSIL2A.xml"
L1C_XML = "MTD_MSIL1C.xml"
L2A_ROOT = "Level-2A_User_Product"
PSD_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")  # band_id 0…
BAND_FILE = re.compile(r"_(B\d\d|B8A|SCL)_(\d\d)m$", re.IGNORECASE)  # …_B02_10m, …_SCL_20m
IMAGE_SUFFIX = ".jp2"


@dataclass(frozen=True)
class ProductFiles:
    """Where a product's files lie: its ``.SAFE`` folder on disk, or that folder inside a zip ``archive``.

    ``root``: the folder (a local path, or the path inside the archive; ``""`` for the archive's top);
    ``names``: the archive's member names (empty for a folder).
    """

    root: str
    archive: Path | None = None
    names: frozenset[str] = frozenset()

    def _member(self, relative: str) -> str:
        return f"{self.root}/{relative}" if self.root else relative

    def exists(self, relative: str) -> bool:
        """Whether the product holds the file at ``relative`` (``/``-separated, from the product folder)."""
        if self.archive is None:
            return (Path(self.root) / relative).is_file()
        return self._member(relative) in self.names

    def read(self, relative: str) -> bytes:
        """The bytes of the file at ``relative``. Raises OSError (or zipfile.BadZipFile) when it cannot be read."""
        if self.archive is None:
            return (Path(self.root) / relative).read_bytes()
        with zipfile.ZipFile(self.archive) as archive:
            return archive.read(self._member(relative))

    def href(self, relative: str) -> str:
        """The file at ``relative`` as GDAL opens it: an absolute path, or ``/vsizip//ARCHIVE/…``."""
        if self.archive is None:
            return str((Path(self.root) / relative).resolve())
        return f"/vsizip/{self.archive.resolve()}/{self._member(relative)}"


@dataclass(frozen=True)
class ProductMetadata:
    """What a scene needs from ``MTD_MSIL2A.xml``: baseline, sensing start (ISO 8601), offsets (DN) by band, images.

    ``images``: the ``IMAGE_FILE`` entries, relative to the product folder, without ``.jp2``.
    """

    baseline: str
    sensed: str
    quantification: float
    offsets: dict[str, float]
    images: tuple[str, ...]


def _local(tag: str) -> str:
    """An element's name without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _subdataset_folder(text: str) -> str:
    """The product folder of a GDAL ``SENTINEL2_L2A:FILE:RES:EPSG`` subdataset name (FILE's folder)."""
    file = text.split(":", 1)[1]
    return str(Path(re.sub(r":[^:/]*:[^:/]*$", "", file)).parent)


def locate(path: str, where: str) -> ProductFiles:
    """The files of the product a scene path names (see the module docstring). Raises ProductError."""
    text = path.rstrip("/") if len(path) > 1 else path
    if text.upper().startswith("SENTINEL2_"):
        raise ProductError(f"{where}: a GDAL subdataset name is not read (its resolution would choose the bands and "
                           f"grid): give the product folder {_subdataset_folder(text)} (or its {L2A_XML})")
    inside = archive_of(text)
    archive = inside if inside is not None else (Path(text) if text.lower().endswith(".zip") else None)
    if archive is None and is_gdal_path(text):
        raise ProductError(f"{where}: a product is read from a local .SAFE folder or zip archive, not through GDAL's "
                           "network paths: download it, or give its STAC item (.json)")
    if archive is None:
        folder = Path(text).parent if Path(text).name.upper().startswith("MTD_MSIL") else Path(text)
        if not folder.is_dir():
            raise ProductError(f"{where}: product folder not found: {folder}")
        return ProductFiles(str(folder))
    if not archive.is_file():
        raise ProductError(f"{where}: file not found: {archive}")
    try:
        with zipfile.ZipFile(archive) as opened:
            names = frozenset(opened.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise ProductError(f"{where}: {archive} is not a readable zip archive: {exc}") from exc
    root = text[text.index(str(archive)) + len(str(archive)):].strip("/") if inside is not None else ""
    if root:  # /vsizip/ARCHIVE/NAME.SAFE or /vsizip/ARCHIVE/NAME.SAFE/MTD_MSIL2A.xml
        return ProductFiles(root.rsplit("/", 1)[0] if root.rsplit("/", 1)[-1].upper().startswith("MTD_MSIL")
                            else root, archive, names)
    tops = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].upper().endswith(".SAFE")})
    if len(tops) != 1:
        raise ProductError(f"{where}: the archive holds {len(tops)} .SAFE folders ({', '.join(tops)}): "
                           "name one as /vsizip/ARCHIVE.zip/NAME.SAFE")
    return ProductFiles(tops[0], archive, names)


def _band_ids(root: ET.Element) -> dict[str, str]:
    """``band_id`` → band (``B02``, ``B8A``): the product's ``Spectral_Information``, else the PSD's order."""
    found = {el.get("bandId"): el.get("physicalBand") for el in root.iter() if _local(el.tag) == "Spectral_Information"}
    named = {str(k): re.fullmatch(r"B(\d+)(A?)", str(v).upper()) for k, v in found.items() if k is not None and v}
    if not named:
        return {str(i): band for i, band in enumerate(PSD_BANDS)}
    return {k: f"B{int(m[1])}A" if m[2] else f"B{int(m[1]):02d}" for k, m in named.items() if m}


def _number(text: str | None, what: str, where: str) -> float:
    try:
        return float(str(text))
    except ValueError:
        raise ProductError(f"{where}: {L2A_XML} {what} {text!r} is not a number") from None


def parse_metadata(data: bytes, where: str) -> ProductMetadata:
    """The fields of an ``MTD_MSIL2A.xml`` (its bytes) that a scene needs. Raises ProductError (module docstring)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ProductError(f"{where}: {L2A_XML} is not readable XML: {exc}") from exc
    kind = _local(root.tag)
    if kind.startswith("Level-1C"):
        raise ProductError(f"{where} is a Level-1C product: only Level-2A (surface reflectance with its SCL cloud "
                           "mask) is read")
    if kind != L2A_ROOT:
        raise ProductError(f"{where}: {L2A_XML} is not Sentinel-2 Level-2A product metadata (its root is {kind})")
    texts: dict[str, list[str]] = {}
    for el in root.iter():
        texts.setdefault(_local(el.tag), []).append((el.text or "").strip())
    for field in ("PROCESSING_BASELINE", "DATATAKE_SENSING_START"):
        if not (texts.get(field) or [""])[0]:
            raise ProductError(f"{where}: {L2A_XML} has no {field}: the scene's "
                               f"{'offset' if field.startswith('PROC') else 'date'} is never guessed")
    ids = _band_ids(root)
    offsets = {ids.get(str(el.get("band_id")), str(el.get("band_id"))): _number(el.text, "BOA_ADD_OFFSET", where)
               for el in root.iter() if _local(el.tag) == "BOA_ADD_OFFSET"}
    quantification = texts.get("BOA_QUANTIFICATION_VALUE")
    images = tuple(t for name, values in texts.items() if name.startswith("IMAGE_FILE") for t in values if t)
    return ProductMetadata(texts["PROCESSING_BASELINE"][0], texts["DATATAKE_SENSING_START"][0],
                           _number(quantification[0], "BOA_QUANTIFICATION_VALUE", where) if quantification
                           else float(QUANTIFICATION_VALUE), offsets, images)


def read_metadata(files: ProductFiles, where: str) -> ProductMetadata:
    """The product's ``MTD_MSIL2A.xml`` read and parsed. Raises ProductError (an L1C product, no metadata…)."""
    if not files.exists(L2A_XML):
        if files.exists(L1C_XML):
            raise ProductError(f"{where} is a Level-1C product ({L1C_XML}): only Level-2A (surface reflectance with "
                               "its SCL cloud mask) is read")
        raise ProductError(f"{where}: no {L2A_XML} in the product folder: not a Sentinel-2 L2A product")
    try:
        return parse_metadata(files.read(L2A_XML), where)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ProductError(f"{where}: its {L2A_XML} cannot be read: {exc}") from exc


def band_files(metadata: ProductMetadata, files: ProductFiles, where: str) -> dict[str, str]:
    """Band (``B02``…, ``SCL``) → its file (relative), the finest listed. Raises ProductError (module docstring)."""
    listed: dict[str, list[tuple[int, str]]] = {}
    for image in metadata.images:
        found = BAND_FILE.search(image)
        if found:
            listed.setdefault(found[1].upper(), []).append((int(found[2]), image + IMAGE_SUFFIX))
    chosen = {}
    for band, options in listed.items():
        finest = [file for res, file in options if res == min(r for r, _ in options)]
        if len(finest) > 1:
            raise ProductError(f"{where}: band {band} is listed {len(finest)} times at one resolution (several "
                               "granules): give one tile per scene")
        if not files.exists(finest[0]):
            raise ProductError(f"{where}: band file {band} listed in {L2A_XML} is missing: {finest[0]} "
                               "(an incomplete download?)")
        chosen[band] = finest[0]
    if "SCL" not in chosen:
        raise ProductError(f"{where}: {L2A_XML} lists no SCL (scene classification) file: the cloud mask is needed")
    return chosen


def as_item(metadata: ProductMetadata, files: ProductFiles, where: str) -> dict[str, Any]:
    """The STAC item (a dict) that describes the product: band assets with common names, ``scl``, its date, baseline."""
    assets: dict[str, Any] = {}
    for band, file in band_files(metadata, files, where).items():
        key = MASK_ASSET if band == "SCL" else band
        assets[key] = {"href": files.href(file), "type": "image/jp2", "roles": ["data"]}
        if band in COMMON_NAMES:
            assets[key]["eo:bands"] = [{"name": band, "common_name": COMMON_NAMES[band]}]
    return {"type": "Feature", "stac_version": "1.0.0", "id": Path(files.root).stem, "assets": assets,
            "properties": {"datetime": metadata.sensed, "platform": "sentinel-2",
                           "s2:processing_baseline": metadata.baseline}}


def product_rules(metadata: ProductMetadata) -> dict[str, Radiometry]:
    """The values rule of each band the product lists a BOA_ADD_OFFSET for, by asset key (``B02``…)."""
    q = metadata.quantification

    def rule(offset: float) -> str:
        return (f"Sentinel-2 product {L2A_XML}: BOA_ADD_OFFSET {offset:g} (baseline {metadata.baseline}), "
                f"(DN {'-' if offset < 0 else '+'} {abs(offset):g}) / {q:g}")

    return {band: Radiometry(1 / q, offset / q, rule(offset)) for band, offset in metadata.offsets.items()}


def read_product(path: str | os.PathLike[str], bands: tuple[str, ...] | None, role: str) -> ItemScene:
    """The Sentinel-2 L2A product at ``path`` as a scene of ``bands`` (names; None: blue, green, red, nir).

    Reads its metadata only, no pixels. ``role`` names it in errors ("BEFORE"). Raises ProductError (module
    docstring), IncompatibleScenesError (a band it lacks).
    """
    where = f"{role} product {os.fspath(path)}"
    files = locate(os.fspath(path), where)
    metadata = read_metadata(files, where)
    item = as_item(metadata, files, where)
    xml = files.href(L2A_XML)
    return item_scene(item, Path(xml), xml, bands, where, product_rules(metadata))


def product_date(path: str | os.PathLike[str], where: str) -> date:
    """The scene date of the product at ``path``: its ``DATATAKE_SENSING_START``'s UTC date. Raises ProductError."""
    metadata = read_metadata(locate(os.fspath(path), where), where)
    return item_date({"properties": {"datetime": metadata.sensed}}, where)


def product_files(path: str | os.PathLike[str]) -> list[str]:
    """The local files a product scene is made of (for resume): its metadata and band files, or its archive."""
    try:
        files = locate(os.fspath(path), "product")
        if files.archive is not None:
            return [str(files.archive.resolve())]
        chosen = band_files(read_metadata(files, "product"), files, "product")
    except ProductError:
        return [os.fspath(path)]  # the run itself reports why
    return [files.href(L2A_XML), *(files.href(f) for f in chosen.values())]
