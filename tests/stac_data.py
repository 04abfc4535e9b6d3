"""Small STAC items over local COGs, written by the tests: Sentinel-2 L2A-like, mixed 10 m / 20 m assets.

``write_s2_item`` writes one date: four band COGs (blue, green, red at 10 m; nir at 20 m unless ``nir_m``
says otherwise) holding ``DN = reflectance * 10000 + 1000`` (baseline 04.00's offset), an SCL COG at 20 m, and
the item JSON with relative hrefs, ``eo:bands`` common names and ``s2:processing_baseline``.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil

from tests.data import ORIGIN, UTM48N, utm_transform

S2_BANDS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}


def write_cog(path: Path, data: np.ndarray, pixel_m: float, nodata: float | None = 0) -> Path:
    """A single-band (rows, cols) COG at ``path`` on the UTM 48N test grid with ``pixel_m`` pixels."""
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=UTM48N, transform=utm_transform(pixel_m), nodata=nodata) as dst:
        dst.write(data, 1)
    rasterio.shutil.copy(tmp, path, driver="COG")
    tmp.unlink()
    return path


def reflectance(rows: int, cols: int, seed: int) -> np.ndarray:
    """(4, rows, cols) smooth seeded reflectance 0.05–0.45 (blue, green, red, nir)."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float64)
    out = np.empty((4, rows, cols))
    for b in range(4):
        fy, fx = rng.uniform(0.05, 0.2, 2)
        out[b] = 0.25 + 0.2 * np.sin(r * fy + b) * np.cos(c * fx - b)
    return out


def dn(refl: np.ndarray, baseline_offset: int = 1000) -> np.ndarray:
    """Sentinel-2 DN of reflectance (uint16), with the +1000 of baseline 04.00 unless ``baseline_offset`` is 0."""
    return np.round(refl * 10_000 + baseline_offset).astype(np.uint16)


def write_s2_item(folder: Path, when: date, refl: np.ndarray, scl: np.ndarray | None = None,
                  properties: dict[str, Any] | None = None, nir_m: float = 20.0, name: str = "item.json",
                  baseline_offset: int = 1000) -> Path:
    """One L2A-like item in ``folder`` (see the module docstring); ``refl`` (4, rows, cols) at 10 m.

    ``scl``: (rows/2, cols/2) classes at 20 m (default: all 4 = vegetation); ``properties`` replace the defaults
    (``s2:processing_baseline`` 04.00).
    """
    folder.mkdir(parents=True, exist_ok=True)
    assets: dict[str, Any] = {}
    for i, (common, band) in enumerate(S2_BANDS.items()):
        data = dn(refl[i], baseline_offset)
        pixel = nir_m if common == "nir" else 10.0
        step = round(pixel / 10)
        data = data[::step, ::step]
        write_cog(folder / f"{band}.tif", data, pixel)
        assets[band] = {"href": f"./{band}.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                        "roles": ["data"], "eo:bands": [{"name": band, "common_name": common}],
                        "raster:bands": [{"nodata": 0, "scale": 0.0001, "offset": -0.1}]}
    rows, cols = refl.shape[1:]
    classes = scl if scl is not None else np.full((rows // 2, cols // 2), 4, np.uint8)
    write_cog(folder / "SCL.tif", classes.astype(np.uint8), 20.0, nodata=0)
    assets["scl"] = {"href": "./SCL.tif", "type": "image/tiff; application=geotiff", "roles": ["data"]}
    x, y = ORIGIN
    item = {"type": "Feature", "stac_version": "1.0.0", "id": f"S2A_TEST_{when:%Y%m%d}",
            "geometry": None, "bbox": None,
            "properties": {"datetime": f"{when.isoformat()}T03:15:00Z", "platform": "sentinel-2a",
                           "s2:processing_baseline": "04.00", **(properties or {})},
            "assets": assets, "links": [], "x-origin": [x, y]}
    item["properties"] = {k: v for k, v in item["properties"].items() if v is not None}
    path = folder / name
    path.write_text(json.dumps(item, indent=1))
    return path


def assert_bad_scene_row(name: str, args: list[Any], code: int, words: str, out: Path, checkpoint: Path) -> None:
    """``detect ARGS -o OUT`` of the README's Bad inputs row ``name``: its exit code, one ``error:`` line holding
    ``words``, nothing written."""
    from click.testing import CliRunner

    from changewatch.cli import cli
    from tests.test_cli import readme_bad_inputs

    assert readme_bad_inputs().get(name) == str(code), name
    result = CliRunner().invoke(cli, [str(a) for a in [*args, "-o", out, "--model", checkpoint, "--tile", "64",
                                                       "--overlap", "16", "-q"]])
    assert result.exit_code == code, result.output
    assert result.output.startswith("error:") and result.output.count("\n") == 1 and words in result.output
    assert not out.exists()
