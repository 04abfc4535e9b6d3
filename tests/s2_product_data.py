"""Small Sentinel-2 L2A products (.SAFE folders) written by the tests, modelled on ESA's product format.

``write_product`` writes ``S2B_MSIL2A_<date>T031519_N<baseline>_R118_T48PXS_<date>T050000.SAFE`` with an
``MTD_MSIL2A.xml`` holding the fields of the PSD 14 User Product Level-2A metadata that a scene needs (level,
PROCESSING_BASELINE, DATATAKE_SENSING_START, BOA_QUANTIFICATION_VALUE, BOA_ADD_OFFSET per band_id,
Spectral_Information band names, the granule's IMAGE_FILE list) and its band files as real JPEG 2000
(lossless) under ``GRANULE/L2A_T48PXS_…/IMG_DATA/R10m|R20m/T48PXS_<date>T031519_<band>_<res>m.jp2``: B02, B03, B04,
B08 at 10 m; B02, B11 and SCL at 20 m. DN = reflectance * 10000 - BOA_ADD_OFFSET, 0 = no data.
"""

from __future__ import annotations

import zipfile
from datetime import date
from pathlib import Path

import numpy as np
import rasterio

from tests.data import UTM48N, utm_transform

TILE = "T48PXS"
BANDS_10M = ("B02", "B03", "B04", "B08")  # blue, green, red, nir
BANDS_20M = ("B02", "B11", "SCL")
PSD_ORDER = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
NS = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd"


def write_jp2(path: Path, data: np.ndarray, pixel_m: float) -> Path:
    """A lossless single-band JPEG 2000 at ``path`` on the UTM 48N test grid with ``pixel_m`` pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="JP2OpenJPEG", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=UTM48N, transform=utm_transform(pixel_m), QUALITY=100,
                       REVERSIBLE="YES") as dst:
        dst.write(data, 1)
    return path


def metadata_xml(name: str, sensed: str, baseline: str, images: list[str], offsets: dict[str, int] | None,
                 root: str = "Level-2A_User_Product", image_tag: str = "IMAGE_FILE") -> str:
    """An MTD_MSIL2A.xml (see the module docstring); ``offsets``: BOA_ADD_OFFSET by band (``B2``), None: no list."""
    files = "\n".join(f"            <{image_tag}>{i}</{image_tag}>" for i in images)
    offset_list = "" if offsets is None else "<BOA_ADD_OFFSET_VALUES_LIST>" + "".join(
        f'<BOA_ADD_OFFSET band_id="{i}">{offsets.get(b, -1000)}</BOA_ADD_OFFSET>' for i, b in enumerate(PSD_ORDER)
    ) + "</BOA_ADD_OFFSET_VALUES_LIST>"
    spectral = "".join(f'<Spectral_Information bandId="{i}" physicalBand="{b}"><RESOLUTION>10</RESOLUTION>'
                       "</Spectral_Information>" for i, b in enumerate(PSD_ORDER))
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{root} xmlns:n1="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{sensed}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{sensed}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{name}</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <Datatake datatakeIdentifier="GS2B_TEST">
        <SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{sensed}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>118</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
      <Product_Organisation>
        <Granule_List>
          <Granule datastripIdentifier="DS_TEST" granuleIdentifier="L2A_TEST" imageFormat="JPEG2000">
{files}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>
      {offset_list}
      <Spectral_Information_List>{spectral}</Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:{root}>
"""


def write_product(parent: Path, when: date, refl: np.ndarray, scl: np.ndarray | None = None,
                  baseline: str = "04.00", offsets: dict[str, int] | None = None, offset_list: bool = True) -> Path:
    """One L2A product in ``parent`` (see the module docstring); returns its ``.SAFE`` folder.

    ``refl``: (4, rows, cols) blue, green, red, nir reflectance at 10 m; ``scl``: (rows/2, cols/2) classes at 20 m
    (default all 4 = vegetation). ``offsets``: BOA_ADD_OFFSET by band (``B4``) where not -1000; ``offset_list``
    False (or a baseline before 04.00): no BOA_ADD_OFFSET list, and DNs without the baseline's +1000 before 04.00.
    """
    stamp = f"{when:%Y%m%d}T031519"
    name = f"S2B_MSIL2A_{stamp}_N{baseline.replace('.', '')}_R118_{TILE}_{when:%Y%m%d}T050000.SAFE"
    safe = parent / name
    granule = f"GRANULE/L2A_{TILE}_A032513_{stamp}"
    listed = offset_list and baseline >= "04.00"
    default = -1000 if baseline >= "04.00" else 0
    rows, cols = refl.shape[1:]
    images = []
    for res, bands in ((10, BANDS_10M), (20, BANDS_20M)):
        for band in bands:
            rel = f"{granule}/IMG_DATA/R{res}m/{TILE}_{stamp}_{band}_{res}m"
            images.append(rel)
            if band == "SCL":
                data = scl if scl is not None else np.full((rows // 2, cols // 2), 4, np.uint8)
            else:
                refl_band = refl[BANDS_10M.index(band)] if band in BANDS_10M else refl[3] * 0.8
                offset = (offsets or {}).get(f"B{int(band[1:])}", default) if listed else default
                data = np.round(refl_band * 10_000 - offset).astype(np.uint16)[::res // 10, ::res // 10]
            write_jp2(safe / f"{rel}.jp2", data.astype(np.uint8 if band == "SCL" else np.uint16), float(res))
    sensed = f"{when.isoformat()}T03:15:19.024Z"
    xml = metadata_xml(name, sensed, baseline, images, (offsets or {}) if listed else None)
    (safe / "MTD_MSIL2A.xml").write_text(xml, encoding="utf-8")
    return safe


def zip_product(safe: Path, archive: Path) -> Path:
    """The product folder ``safe`` zipped into ``archive`` as ESA ships it (the ``.SAFE`` folder at its top)."""
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(safe.rglob("*")):
            if file.is_file():
                out.write(file, f"{safe.name}/{file.relative_to(safe).as_posix()}")
    return archive
