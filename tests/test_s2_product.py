"""Sentinel-2 L2A products (.SAFE folders, zipped, MTD_MSIL2A.xml) read directly as scenes (rs.io.s2_product)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner, Result
from shapely.geometry import box

from changewatch.cli import cli
from changewatch.rs.batch.resume import dataset_files
from changewatch.rs.errors import IncompatibleScenesError, ProductError
from changewatch.rs.io.intake import read_described
from changewatch.rs.io.raster import open_raster, scene_date
from changewatch.rs.monitor.scenes import read_scenes
from tests.data import ORIGIN
from tests.s2_product_data import write_jp2, write_product, zip_product
from tests.stac_data import assert_bad_scene_row, reflectance
from tests.test_cli import readme_bad_inputs

SIZE = 96
REFL = reflectance(SIZE, SIZE, seed=1)
CLOUD = (20, 15, 5)  # SCL (20 m) row, col, side of a cloud: 10 m rows 40–49, cols 30–39
XML = "MTD_MSIL2A.xml"


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def read_bands(path: Path | str, bands: tuple[str, ...] | None = None) -> np.ndarray:
    with open_raster(path, "BEFORE", bands) as ds:
        return ds.read()


def band_file(safe: Path, band: str, res: int = 10) -> Path:
    return next(safe.glob(f"GRANULE/*/IMG_DATA/R{res}m/*_{band}_{res}m.jp2"))


def edit_xml(safe: Path, change: Callable[[str], str]) -> Path:
    (safe / XML).write_text(change((safe / XML).read_text()))
    return safe


# --- values, files, mask, date ----------------------------------------------------------------------------------


def test_baseline_04_products_take_their_boa_add_offset_and_earlier_products_none(tmp_path: Path) -> None:
    new = write_product(tmp_path / "new", date(2023, 5, 1), REFL)
    old = write_product(tmp_path / "old", date(2021, 5, 1), REFL, baseline="03.01")
    unlisted = write_product(tmp_path / "unlisted", date(2023, 5, 1), REFL, offset_list=False)
    for safe in (new, old, unlisted):
        np.testing.assert_allclose(read_bands(safe), REFL, atol=0.6e-4)  # DN rounding only; the offset is 0.1
    assets = [read_described(p, None, "BEFORE").record()["assets"][2] for p in (new, old, unlisted)]
    assert [a["offset"] for a in assets] == [-0.1, 0.0, -0.1]
    assert assets[0]["values"].startswith("Sentinel-2 product MTD_MSIL2A.xml: BOA_ADD_OFFSET -1000")
    assert assets[1]["values"].startswith("Sentinel-2 baseline 03.01 (< 04.00)")
    assert assets[2]["values"].startswith("Sentinel-2 baseline 04.00 (>= 04.00)")  # no list: the baseline's rule


def test_the_products_own_offset_of_a_band_is_used_not_the_baseline_rule(tmp_path: Path) -> None:
    safe = write_product(tmp_path, date(2023, 5, 1), REFL, offsets={"B4": -500})
    values = read_bands(safe)
    np.testing.assert_allclose(values, REFL, atol=0.6e-4)  # red with -500, the others with -1000
    with rasterio.open(band_file(safe, "B04")) as ds:
        assert abs(float(ds.read(1)[0, 0]) - (REFL[2, 0, 0] * 10_000 + 500)) <= 0.5


def test_the_metadata_file_and_the_zipped_product_are_the_same_scene(tmp_path: Path) -> None:
    safe = write_product(tmp_path, date(2023, 5, 1), REFL)
    archive = zip_product(safe, tmp_path / f"{safe.stem}.zip")
    expected = read_bands(safe)
    for path in (safe / XML, archive, f"/vsizip/{archive}", f"/vsizip/{archive}/{safe.name}",
                 f"/vsizip/{archive}/{safe.name}/{XML}"):
        np.testing.assert_array_equal(read_bands(path), expected)
    record = read_described(archive, None, "BEFORE").record()
    assert record["assets"][0]["href"].startswith(f"/vsizip/{archive}/{safe.name}/GRANULE/")
    assert dataset_files(str(archive), True) == [str(archive)]
    assert dataset_files(str(safe), True) == sorted([str(safe / XML), *(str(band_file(safe, b)) for b in (
        "B02", "B03", "B04", "B08")), str(band_file(safe, "B11", 20)), str(band_file(safe, "SCL", 20))])


def test_an_archive_of_two_products_and_a_remote_product_are_refused(tmp_path: Path) -> None:
    safe = write_product(tmp_path, date(2023, 5, 1), REFL)
    archive = zip_product(safe, tmp_path / "S2B_MSIL2A_two.zip")
    with zipfile.ZipFile(archive, "a") as out:
        out.writestr("S2A_MSIL2A_other.SAFE/MTD_MSIL2A.xml", "")
    with pytest.raises(ProductError, match="the archive holds 2 .SAFE folders"):
        read_described(archive, None, "BEFORE")
    with pytest.raises(ProductError, match="not through GDAL's network paths"):
        read_described(f"/vsicurl/https://example.org/{safe.name}", None, "BEFORE")


def test_bands_are_the_finest_listed_and_picked_by_common_name_or_band(tmp_path: Path) -> None:
    safe = write_product(tmp_path, date(2023, 5, 1), REFL)
    scene = read_described(safe, ("swir16", "B2"), "BEFORE")
    assert [(b.asset, Path(b.href).name[-11:]) for b in scene.bands] == [("B11", "B11_20m.jp2"), ("B02", "B02_10m.jp2")]
    assert scene.grid.transform.a == 10.0 and (scene.grid.width, scene.grid.height) == (SIZE, SIZE)
    assert scene.mask is not None and scene.mask.endswith("_SCL_20m.jp2")
    with pytest.raises(IncompatibleScenesError, match="has no band 'rededge1'"):
        read_described(safe, ("red", "rededge1"), "BEFORE")


def test_scl_classes_are_the_invalid_mask(tmp_path: Path) -> None:
    scl = np.full((SIZE // 2, SIZE // 2), 4, np.uint8)
    for cls in range(12):
        scl[cls, :4] = cls  # row cls: class cls
    mask_xml = read_described(write_product(tmp_path, date(2023, 5, 1), REFL, scl), None, "BEFORE").mask_vrt()
    assert mask_xml is not None
    with rasterio.open(mask_xml) as ds:
        mask = ds.read(1)
    assert [int(mask[2 * c, 0]) for c in range(12)] == [1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0]
    assert mask[:, 8:].sum() == 0


def test_the_scene_date_is_the_datatake_sensing_start(tmp_path: Path) -> None:
    safe = write_product(tmp_path, date(2023, 5, 1), REFL)
    edit_xml(safe, lambda t: t.replace("<DATATAKE_SENSING_START>2023-05-01T03:15:19.024Z",
                                       "<DATATAKE_SENSING_START>2023-05-02T23:59:00.000Z"))
    assert scene_date(safe) == date(2023, 5, 2)  # not the folder name's date, nor PRODUCT_START_TIME's
    assert scene_date(safe / XML) == date(2023, 5, 2)


# --- detect and monitor over products --------------------------------------------------------------------------


def product_pair(tmp_path: Path) -> tuple[Path, Path]:
    """BEFORE (baseline 03.01) and AFTER (05.09) products; AFTER has a bright roof under a cloud and one clear."""
    after = REFL.copy()
    after[:, 40:50, 30:40] = 0.9
    after[:, 60:72, 60:72] = 0.9
    scl = np.full((SIZE // 2, SIZE // 2), 4, np.uint8)
    row, col, side = CLOUD
    scl[row:row + side, col:col + side] = 9
    return (write_product(tmp_path / "d1", date(2021, 5, 1), REFL, baseline="03.01"),
            write_product(tmp_path / "d2", date(2023, 6, 1), after, scl, baseline="05.09"))


def test_detect_on_products_never_calls_cloud_change_and_records_the_intake(tmp_path: Path,
                                                                            tiny_checkpoint: Path) -> None:
    before, after = product_pair(tmp_path)
    out = tmp_path / "out"
    result = run("detect", before, after, "-o", out, "--model", tiny_checkpoint, "--threshold", "0.0001",
                 "--min-area-m2", "0", "--tile", "64", "--overlap", "16", "-q")
    assert result.exit_code == 0, result.output
    with rasterio.open(out / "change_prob.tif") as ds:
        prob = ds.read(1)
    assert np.isnan(prob[40:50, 30:40]).all() and not np.isnan(prob[60:72, 60:72]).any()
    x, y = ORIGIN
    changes = gpd.read_file(out / "changes.gpkg", layer="changes")
    assert len(changes) and not changes.intersection(box(x + 300, y - 500, x + 400, y - 400)).area.gt(1).any()
    summary = json.loads((out / "summary.json").read_text())
    intake = summary["inputs"]["intake"]
    assert intake["after"]["item"] == str(after / XML) and intake["after"]["mask"]["href"] == str(
        band_file(after, "SCL", 20))
    assert [a["offset"] for a in intake["after"]["assets"]] == [-0.1] * 4
    assert [a["offset"] for a in intake["before"]["assets"]] == [0.0] * 4
    assert summary["inputs"]["after_date"] == "2023-06-01" and summary["rules"]["as_of"] == "2023-06-01"
    assert summary["rules"]["as_of_source"] == "AFTER Sentinel-2 product sensing date"
    assert str(after / XML) in summary["inputs"]["files"] and str(band_file(after, "B08")) in summary["inputs"]["files"]


def test_monitor_scenes_rows_of_products_take_their_sensing_dates(tmp_path: Path, tiny_checkpoint: Path) -> None:
    first, second = product_pair(tmp_path)
    third = write_product(tmp_path / "d3", date(2023, 9, 1), REFL)
    scenes = tmp_path / "scenes.csv"
    scenes.write_text(f"date,path\n,d2/{second.name}\n,{first}\n2023-09-02,d3/{third.name}\n")
    assert [(s.date, s.path) for s in read_scenes(scenes)] == [
        (date(2021, 5, 1), str(first)), (date(2023, 6, 1), str(second)), (date(2023, 9, 2), str(third))]
    result = run("monitor", scenes, "-o", tmp_path / "store", "--model", tiny_checkpoint, "-q", "--tile", 64,
                 "--overlap", 16)
    assert result.exit_code == 0, result.output
    assert "[detected] 2021-05-01_2023-06-01\n[detected] 2023-06-01_2023-09-02\n" in result.output
    summary = json.loads((tmp_path / "store" / "pairs" / "2021-05-01_2023-06-01" / "summary.json").read_text())
    assert summary["inputs"]["after"] == str(second) and summary["inputs"]["after_date"] == "2023-06-01"
    assert summary["inputs"]["intake"]["after"]["assets"][0]["href"] == str(band_file(second, "B02"))


def test_batch_over_products_reruns_the_job_whose_band_file_changed(tmp_path: Path, tiny_checkpoint: Path) -> None:
    before, after = product_pair(tmp_path / "area")
    zips = [zip_product(p, tmp_path / "area" / f"{p.stem}.zip") for p in (before, after)]
    (tmp_path / "m.csv").write_text(f"area_id,before,after\nsafe,area/d1/{before.name},area/d2/{after.name}/{XML}\n"
                                    f"zipped,area/{zips[0].name},/vsizip/area/{zips[1].name}/{after.name}\n")
    args = ["batch", tmp_path / "m.csv", "-o", tmp_path / "out", "--model", tiny_checkpoint, "--scheduler", "serial",
            "--tile", "64", "--overlap", "16", "-q"]
    first = run(*args)
    assert first.exit_code == 0, first.output
    for area in ("safe", "zipped"):
        summary = json.loads((tmp_path / "out" / area / "summary.json").read_text())
        assert summary["inputs"]["intake"]["after"]["mask"]["href"].endswith("_SCL_20m.jp2")
        assert summary["inputs"]["after_date"] == "2023-06-01"
    write_jp2(band_file(before, "B03"), np.round(REFL[1] * 9_000).astype(np.uint16), 10.0)  # one band file changes
    second = run(*args, "--resume")
    assert second.exit_code == 0, second.output
    assert "[skipped] zipped" in second.output and "[skipped] safe" not in second.output


# --- the README's Bad inputs rows -------------------------------------------------------------------------------


def _missing_band(tmp_path: Path) -> list[object]:
    before, after = product_pair(tmp_path)
    band_file(before, "B04").unlink()
    return ["detect", before, after]


def _l1c(tmp_path: Path) -> list[object]:
    before, after = product_pair(tmp_path)
    (before / XML).rename(before / "MTD_MSIL1C.xml")
    return ["detect", before, after]


def _broken_xml(tmp_path: Path) -> list[object]:
    before, after = product_pair(tmp_path)
    (before / XML).write_text((before / XML).read_text()[:500])
    return ["detect", before, after]


def _no_sensing_start(tmp_path: Path) -> list[object]:
    before, after = product_pair(tmp_path)
    edit_xml(before, lambda t: t.replace("DATATAKE_SENSING_START", "SENSING_START"))
    return ["detect", before, after]


def _no_metadata(tmp_path: Path) -> list[object]:
    before, after = product_pair(tmp_path)
    (before / XML).unlink()
    return ["detect", before, after]


def _subdataset(tmp_path: Path) -> list[object]:
    before, after = product_pair(tmp_path)
    return ["detect", f"SENTINEL2_L2A:{before / XML}:10m:EPSG_32648", after]


def _band_absent(tmp_path: Path) -> list[object]:
    before, after = product_pair(tmp_path)
    return ["detect", before, after, "--bands", "red,B05"]


BAD_PRODUCTS = {  # the README's Bad inputs row → (the command's arguments, exit code, words of its error line)
    "product whose band file listed in `MTD_MSIL2A.xml` is missing":
        (_missing_band, 3, "band file B04 listed in MTD_MSIL2A.xml is missing"),
    "Sentinel-2 L1C product (`MTD_MSIL1C.xml`)": (_l1c, 3, "is a Level-1C product (MTD_MSIL1C.xml): only Level-2A"),
    "product whose `MTD_MSIL2A.xml` is not XML (truncated)": (_broken_xml, 3, "MTD_MSIL2A.xml is not readable XML"),
    "product whose `MTD_MSIL2A.xml` lacks `DATATAKE_SENSING_START` (or `PROCESSING_BASELINE`)":
        (_no_sensing_start, 3, "has no DATATAKE_SENSING_START: the scene's date is never guessed"),
    "a folder named `.SAFE` without `MTD_MSIL2A.xml`": (_no_metadata, 3, "no MTD_MSIL2A.xml in the product folder"),
    "a GDAL subdataset name (`SENTINEL2_L2A:…/MTD_MSIL2A.xml:10m:EPSG_32648`)":
        (_subdataset, 3, "a GDAL subdataset name is not read"),
    "product without a band asked for (`--bands red,B05` of a product listing no B05)":
        (_band_absent, 4, "has no band 'B05'"),
}


@pytest.mark.parametrize("name", list(BAD_PRODUCTS))
def test_bad_products_get_one_error_line_and_their_exit_code(name: str, tmp_path: Path,
                                                             tiny_checkpoint: Path) -> None:
    make, code, words = BAD_PRODUCTS[name]
    assert_bad_scene_row(name, make(tmp_path), code, words, tmp_path / "out", tiny_checkpoint)


def test_the_subdataset_error_names_the_product_folder_to_give(tmp_path: Path) -> None:
    safe = tmp_path / "S2B_MSIL2A_X.SAFE"
    with pytest.raises(ProductError, match=f"give the product folder {safe} "):
        read_described(f"SENTINEL2_L2A:{safe / XML}:20m:EPSG_32648", None, "AFTER")


def test_the_readme_row_of_accepted_products_is_listed() -> None:
    table = readme_bad_inputs()
    assert table["Sentinel-2 L2A product: its `.SAFE` folder, its `MTD_MSIL2A.xml`, or zipped (`S2…_MSIL2A_….zip`, "
                 "`/vsizip/….zip/S2….SAFE`)"] == "0"  # test_detect_on_products_… and test_the_metadata_file_…
