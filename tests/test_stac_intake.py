"""Imagery intake: STAC Items over local COGs (band choice, hrefs, mixed 10/20 m, Sentinel-2 L2A), GDAL paths."""

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
from changewatch.rs.batch.manifest import read_manifest
from changewatch.rs.errors import IncompatibleScenesError, ManifestError, StacItemError
from changewatch.rs.io.raster import open_raster, scene_date
from changewatch.rs.io.stac_scene import read_item
from changewatch.rs.monitor.scenes import read_scenes
from tests.data import ORIGIN
from tests.stac_data import assert_bad_scene_row, dn, reflectance, write_cog, write_s2_item
from tests.test_cli import readme_bad_inputs

SIZE = 96
REFL = reflectance(SIZE, SIZE, seed=1)
CLOUD = (20, 15, 5)  # SCL (20 m) row, col, side of a cloud: 10 m rows 40–49, cols 30–39


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def item_json(path: Path) -> dict:
    return json.loads(path.read_text())


def edit_item(path: Path, change: Callable[[dict], None]) -> Path:
    data = item_json(path)
    change(data)
    path.write_text(json.dumps(data))
    return path


def read_bands(path: Path, bands: tuple[str, ...] | None = None) -> tuple[np.ndarray, tuple[str | None, ...]]:
    with open_raster(path, "BEFORE", bands) as ds:
        return ds.read(), ds.descriptions


# --- band choice, hrefs, grid ---------------------------------------------------------------------------------


def test_bands_are_chosen_by_common_name_in_model_order(tmp_path: Path) -> None:
    item = write_s2_item(tmp_path, date(2023, 5, 1), REFL)
    scene = read_item(item, None, "BEFORE")
    assert [(b.name, b.asset) for b in scene.bands] == [("blue", "B02"), ("green", "B03"), ("red", "B04"),
                                                        ("nir", "B08")]
    picked = read_item(item, ("nir", "B4", "green"), "BEFORE")  # common name, asset key (B4 = B04), in this order
    assert [b.asset for b in picked.bands] == ["B08", "B04", "B03"]
    assert read_bands(item, ("nir", "B4", "green"))[1] == ("nir", "B4", "green")  # named as asked: rs.bands pairs them


def test_a_cog_asset_is_chosen_over_a_jp2_of_the_same_band_and_two_cogs_are_ambiguous(tmp_path: Path) -> None:
    item = write_s2_item(tmp_path, date(2023, 5, 1), REFL)
    edit_item(item, lambda d: d["assets"].update(
        {"red-jp2": {**d["assets"]["B04"], "href": "./B04.jp2", "type": "image/jp2"}}))
    assert read_item(item, None, "BEFORE").bands[2].asset == "B04"
    edit_item(item, lambda d: d["assets"].update({"red-copy": d["assets"]["B04"]}))
    with pytest.raises(IncompatibleScenesError, match="band 'red' could be asset B04 or red-copy"):
        read_item(item, None, "BEFORE")


def test_relative_hrefs_resolve_against_the_item_file_not_the_working_folder(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    item = write_s2_item(tmp_path / "cogs", date(2023, 5, 1), REFL)
    moved = tmp_path / "items" / "one.json"
    moved.parent.mkdir()
    data = item_json(item)
    for asset in data["assets"].values():
        asset["href"] = "../cogs/" + asset["href"].removeprefix("./")
    moved.write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path / "cogs")  # not where the hrefs are relative to
    scene = read_item(Path("../items/one.json"), None, "BEFORE")
    assert scene.bands[0].href == str(tmp_path / "cogs" / "B02.tif")
    assert scene.mask == str(tmp_path / "cogs" / "SCL.tif")


def test_mixed_10_and_20_m_assets_are_read_on_the_10_m_grid_without_inventing_values(tmp_path: Path) -> None:
    item = write_s2_item(tmp_path, date(2023, 5, 1), REFL, nir_m=20.0)
    with open_raster(item, "BEFORE") as ds:
        assert (ds.res, ds.width, ds.height) == ((10.0, 10.0), SIZE, SIZE)
        assert (ds.transform.c, ds.transform.f) == ORIGIN
        nir = ds.read(4)
    coarse = (dn(REFL[3])[::2, ::2].astype(np.float64) - 1000) / 10_000  # the 20 m pixels as written
    np.testing.assert_allclose(nir, np.kron(coarse, np.ones((2, 2))), atol=1e-6)  # each repeated 2×2


def test_l2a_reflectance_takes_the_baseline_04_offset_and_earlier_baselines_none(tmp_path: Path) -> None:
    new = write_s2_item(tmp_path / "new", date(2023, 5, 1), REFL, nir_m=10.0)
    old = write_s2_item(tmp_path / "old", date(2021, 5, 1), REFL, nir_m=10.0, baseline_offset=0,
                        properties={"s2:processing_baseline": "03.01"})
    harmonised = write_s2_item(tmp_path / "harm", date(2023, 5, 1), REFL, nir_m=10.0, baseline_offset=0,
                               properties={"earthsearch:boa_offset_applied": True})
    for item in (new, old, harmonised):
        values, _ = read_bands(item)
        np.testing.assert_allclose(values, REFL, atol=0.6e-4)  # DN rounding only; without the offset: 0.1 off
    assert read_item(new, None, "BEFORE").record()["assets"][0]["offset"] == -0.1
    assert read_item(old, None, "BEFORE").record()["assets"][0]["offset"] == 0.0


def test_other_items_take_their_raster_bands_scale_offset_and_their_files_nodata(tmp_path: Path) -> None:
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 500 + 1
    data[0, 0] = 7
    write_cog(tmp_path / "red.tif", data, 2.0, nodata=7)
    write_cog(tmp_path / "nir.tif", data, 2.0, nodata=None)
    item = {"type": "Feature", "stac_version": "1.1.0", "id": "uav", "geometry": None,
            "properties": {"datetime": "2024-02-01T10:00:00Z", "platform": "drone"}, "links": [],
            "assets": {"r": {"href": "red.tif", "type": "image/tiff", "bands": [{"name": "red", "scale": 0.5,
                                                                                 "offset": 3}]},
                       "n": {"href": "nir.tif", "type": "image/tiff", "eo:bands": [{"common_name": "nir"}]}}}
    (tmp_path / "uav.json").write_text(json.dumps(item))
    values, _ = read_bands(tmp_path / "uav.json", ("red", "nir"))
    assert np.isnan(values[0, 0, 0]) and values[0, 0, 1] == data[0, 1] * 0.5 + 3  # the file's nodata; scaled
    assert values[1, 0, 0] == 7 and (values[1] == data).all()  # no nodata, no scale: as stored


def test_dn_0_is_nodata_and_the_scl_mask_marks_exactly_the_invalid_classes(tmp_path: Path) -> None:
    scl = np.full((SIZE // 2, SIZE // 2), 4, np.uint8)
    for i, cls in enumerate(range(12)):
        scl[i, :4] = cls  # row i: class i
    item = write_s2_item(tmp_path, date(2023, 5, 1), REFL, scl)
    scene = read_item(item, None, "BEFORE")
    mask_xml = scene.mask_vrt()
    assert mask_xml is not None
    with rasterio.open(mask_xml) as ds:
        mask = ds.read(1)
    assert [int(mask[2 * c, 0]) for c in range(12)] == [1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0]
    assert mask[:, 8:].sum() == 0
    blue = dn(REFL[0])
    blue[0, 0] = 0  # Sentinel-2 NO_DATA
    write_cog(item.parent / "B02.tif", blue, 10.0)
    values = read_bands(item)[0]
    assert np.isnan(values[0, 0, 0]) and not np.isnan(values[0, 0, 1])


# --- detect over items: clouds never change, the record --------------------------------------------------------


def l2a_pair(tmp_path: Path) -> tuple[Path, Path]:
    """BEFORE and AFTER L2A items; AFTER has a bright roof under a cloud (SCL 9) and one in the clear."""
    after = REFL.copy()
    after[:, 40:50, 30:40] = 0.9
    after[:, 60:72, 60:72] = 0.9
    scl = np.full((SIZE // 2, SIZE // 2), 4, np.uint8)
    row, col, side = CLOUD
    scl[row:row + side, col:col + side] = 9
    return (write_s2_item(tmp_path / "d1", date(2023, 5, 1), REFL),
            write_s2_item(tmp_path / "d2", date(2023, 6, 1), after, scl))


def test_detect_on_l2a_items_never_calls_cloud_change_and_records_the_intake(tmp_path: Path,
                                                                             tiny_checkpoint: Path) -> None:
    before, after = l2a_pair(tmp_path)
    out = tmp_path / "out"
    result = run("detect", before, after, "-o", out, "--model", tiny_checkpoint, "--threshold", "0.0001",
                 "--min-area-m2", "0", "--tile", "64", "--overlap", "16", "-q")
    assert result.exit_code == 0, result.output
    with rasterio.open(out / "change_prob.tif") as ds:
        prob = ds.read(1)
    assert np.isnan(prob[40:50, 30:40]).all()  # the cloud: invalid
    assert not np.isnan(prob[60:72, 60:72]).any()
    x, y = ORIGIN
    cloud = box(x + 300, y - 500, x + 400, y - 400)
    changes = gpd.read_file(out / "changes.gpkg", layer="changes")
    assert len(changes) and not changes.intersection(cloud).area.gt(1).any()  # changes elsewhere, none in the cloud
    summary = json.loads((out / "summary.json").read_text())
    intake = summary["inputs"]["intake"]["after"]
    assert intake["mask"]["href"] == str(after.parent / "SCL.tif") and intake["mask"]["invalid_classes"] == [
        0, 1, 3, 8, 9, 10]
    assert [(a["band"], a["offset"], a["scale"]) for a in intake["assets"]] == [
        (band, -0.1, 0.0001) for band in ("blue", "green", "red", "nir")]
    assert intake["assets"][3]["resampled"] == "nearest, 20 to 10 CRS units"
    assert summary["inputs"]["after_date"] == "2023-06-01" and summary["rules"]["as_of"] == "2023-06-01"
    assert summary["rules"]["as_of_source"] == "AFTER STAC item datetime"
    assert str(after.parent / "B08.tif") in summary["inputs"]["files"]  # asset files are checksummed


def test_scene_date_of_an_item_is_its_utc_date(tmp_path: Path) -> None:
    item = write_s2_item(tmp_path, date(2023, 5, 1), REFL, properties={"datetime": "2023-05-01T23:30:00-02:00"})
    assert scene_date(item) == date(2023, 5, 2)


# --- GDAL paths -------------------------------------------------------------------------------------------------


def test_vsizip_scenes_are_detected_and_recorded_as_given(tmp_path: Path, pair: tuple[Path, Path],
                                                           tiny_checkpoint: Path) -> None:
    with zipfile.ZipFile(tmp_path / "scenes.zip", "w") as archive:
        for scene in pair:
            archive.write(scene, f"in/{scene.name}")
    before, after = (f"/vsizip/{tmp_path / 'scenes.zip'}/in/{p.name}" for p in pair)
    out = tmp_path / "out"
    result = run("detect", before, after, "-o", out, "--model", tiny_checkpoint, "--tile", "64", "--overlap", "16",
                 "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["inputs"]["before"] == before


def test_batch_over_items_and_a_zipped_scene_reruns_a_job_whose_asset_changed(tmp_path: Path, pair: tuple[Path, Path],
                                                                               tiny_checkpoint: Path) -> None:
    before, after = l2a_pair(tmp_path / "area")
    with zipfile.ZipFile(tmp_path / "scenes.zip", "w") as archive:
        for scene in pair:
            archive.write(scene, scene.name)
    (tmp_path / "m.csv").write_text("area_id,before,after\nitems,area/d1/item.json,area/d2/item.json\n"
                                    "zipped,/vsizip/scenes.zip/before.tif,/vsizip/scenes.zip/after.tif\n")
    args = ["batch", tmp_path / "m.csv", "-o", tmp_path / "out", "--model", tiny_checkpoint, "--scheduler", "serial",
            "--tile", "64", "--overlap", "16", "-q"]
    first = run(*args)
    assert first.exit_code == 0, first.output
    summary = json.loads((tmp_path / "out" / "items" / "summary.json").read_text())
    assert summary["inputs"]["intake"]["after"]["mask"]["href"] == str(after.parent / "SCL.tif")
    write_cog(before.parent / "B03.tif", dn(REFL[1] * 0.9), 10.0)  # an asset of BEFORE changes
    second = run(*args, "--resume")
    assert second.exit_code == 0, second.output
    assert "[skipped] zipped" in second.output and "[skipped] items" not in second.output


def test_a_manifest_resolves_a_relative_archive_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("area_id,before,after\na,/vsizip/s.zip/b.tif,/vsicurl/https://h.org/a.tif\n")
    job = read_manifest(tmp_path / "m.csv")[0]
    assert (job.before, job.after) == (f"/vsizip/{tmp_path}/s.zip/b.tif", "/vsicurl/https://h.org/a.tif")


def test_resume_fingerprints_an_items_assets_and_an_archive_not_the_gdal_path(tmp_path: Path) -> None:
    from changewatch.rs.batch.resume import dataset_files

    item = write_s2_item(tmp_path, date(2023, 5, 1), REFL)
    assert dataset_files(str(item), True) == sorted(str(tmp_path / n) for n in (
        "B02.tif", "B03.tif", "B04.tif", "B08.tif", "SCL.tif", "item.json"))
    assert dataset_files(f"/vsizip/{tmp_path}/s.zip/in/b.tif", True) == [f"{tmp_path}/s.zip"]


# --- monitor SCENES as a STAC ItemCollection or catalog ---------------------------------------------------------


def collection(tmp_path: Path, dates: list[str], name: str = "scenes.json") -> Path:
    """An ItemCollection file in ``tmp_path`` of one L2A item per date (assets in per-date folders)."""
    features = []
    for n, when in enumerate(dates):
        item = item_json(write_s2_item(tmp_path / f"d{n}", date.fromisoformat(when[:10]), REFL))
        item["id"] = f"item-{n}"
        item["properties"]["datetime"] = when
        for asset in item["assets"].values():
            asset["href"] = f"./d{n}/" + asset["href"].removeprefix("./")
        features.append(item)
    path = tmp_path / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_an_item_collection_is_one_scene_per_item_in_date_order(tmp_path: Path) -> None:
    path = collection(tmp_path, ["2024-03-05T10:00:00Z", "2024-01-10T10:00:00Z"])
    scenes = read_scenes(path)
    assert [(s.date, s.path) for s in scenes] == [(date(2024, 1, 10), f"{path}#item-1"),
                                                  (date(2024, 3, 5), f"{path}#item-0")]
    assert read_item(scenes[0].path, None, "BEFORE").bands[0].href == str(tmp_path / "d1" / "B02.tif")


def test_a_catalog_is_walked_for_its_items(tmp_path: Path) -> None:
    import pystac

    catalog = pystac.Catalog("area", "test area")
    for n, when in enumerate(("2024-01-10", "2024-03-05")):
        item = pystac.Item.from_dict(item_json(write_s2_item(tmp_path / f"d{n}", date.fromisoformat(when), REFL)))
        item.id = f"item-{n}"
        catalog.add_item(item)
    catalog.normalize_and_save(str(tmp_path / "cat"), pystac.CatalogType.SELF_CONTAINED)
    for n in range(2):  # the saved items' assets: absolute hrefs to where they were written
        edit_item(tmp_path / "cat" / f"item-{n}" / f"item-{n}.json", lambda d, n=n: [
            a.update(href=str(tmp_path / f"d{n}" / Path(a["href"]).name)) for a in d["assets"].values()])
    scenes = read_scenes(tmp_path / "cat" / "catalog.json")
    assert [s.date for s in scenes] == [date(2024, 1, 10), date(2024, 3, 5)]
    assert scenes[1].path == str(tmp_path / "cat" / "item-1" / "item-1.json")


def test_a_broken_catalog_or_a_single_item_as_scenes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "catalog.json").write_text(json.dumps({
        "type": "Catalog", "stac_version": "1.0.0", "id": "c", "description": "d",
        "links": [{"rel": "item", "href": "./gone/gone.json"}]}))
    with pytest.raises(StacItemError, match="catalog .* cannot be read"):
        read_scenes(tmp_path / "catalog.json")
    item = write_s2_item(tmp_path / "one", date(2023, 5, 1), REFL)
    with pytest.raises(StacItemError, match="is not a STAC ItemCollection or catalog"):
        read_scenes(item)


def test_an_item_without_datetime_takes_its_one_day_range_and_a_longer_range_is_refused(tmp_path: Path) -> None:
    path = collection(tmp_path, ["2024-01-10T10:00:00Z", "2024-03-05T10:00:00Z"])
    data = item_json(path)
    data["features"][1]["properties"].update(datetime=None, start_datetime="2024-03-05T10:00:00Z",
                                             end_datetime="2024-03-05T10:00:10Z")
    path.write_text(json.dumps(data))
    assert read_scenes(path)[1].date == date(2024, 3, 5)
    data["features"][1]["properties"]["end_datetime"] = "2024-03-09T00:00:00Z"
    path.write_text(json.dumps(data))
    with pytest.raises(StacItemError, match="spans 2024-03-05 to 2024-03-09, not one acquisition day"):
        read_scenes(path)


def test_two_items_of_one_date_are_refused(tmp_path: Path) -> None:
    path = collection(tmp_path, ["2024-01-10T10:00:00Z", "2024-01-10T11:00:00Z"])
    with pytest.raises(ManifestError, match="item 'item-1': date 2024-01-10 is listed twice"):
        read_scenes(path)


def test_monitor_over_an_item_collection(tmp_path: Path, tiny_checkpoint: Path) -> None:
    path = collection(tmp_path, ["2024-01-10T10:00:00Z", "2024-03-05T10:00:00Z", "2024-05-20T10:00:00Z"])
    result = run("monitor", path, "-o", tmp_path / "store", "--model", tiny_checkpoint, "-q", "--tile", 64,
                 "--overlap", 16)
    assert result.exit_code == 0, result.output
    assert "[detected] 2024-01-10_2024-03-05\n[detected] 2024-03-05_2024-05-20\n" in result.output
    summary = json.loads((tmp_path / "store" / "pairs" / "2024-03-05_2024-05-20" / "summary.json").read_text())
    assert summary["inputs"]["after"] == f"{path}#item-2"
    assert summary["inputs"]["intake"]["after"]["assets"][0]["href"] == str(tmp_path / "d2" / "B02.tif")


# --- the README's Bad inputs rows -------------------------------------------------------------------------------


def _missing_asset(tmp_path: Path) -> list[object]:
    before, after = l2a_pair(tmp_path)
    (before.parent / "B04.tif").unlink()
    return ["detect", before, after]


def _no_nir(tmp_path: Path) -> list[object]:
    before, after = l2a_pair(tmp_path)
    edit_item(before, lambda d: d["assets"].pop("B08"))
    return ["detect", before, after]


def _no_swir(tmp_path: Path) -> list[object]:
    return ["detect", *l2a_pair(tmp_path), "--bands", "blue,green,red,swir16"]


def _no_baseline(tmp_path: Path) -> list[object]:
    before, after = l2a_pair(tmp_path)
    edit_item(after, lambda d: d["properties"].pop("s2:processing_baseline"))
    return ["detect", before, after]


def _bad_json(tmp_path: Path) -> list[object]:
    before, after = l2a_pair(tmp_path)
    after.write_text('{"type": "Feature", ')
    return ["detect", before, after]


def _collection_to_detect(tmp_path: Path) -> list[object]:
    path = collection(tmp_path, ["2024-01-10T10:00:00Z", "2024-03-05T10:00:00Z"])
    return ["detect", path, f"{path}#item-1"]


def _missing_archive(tmp_path: Path) -> list[object]:
    before, after = l2a_pair(tmp_path)
    return ["detect", f"/vsizip/{tmp_path / 'gone.zip'}/b.tif", after]


def _duplicate_dates(tmp_path: Path) -> list[object]:
    return ["monitor", collection(tmp_path, ["2024-01-10T10:00:00Z", "2024-01-10T11:00:00Z"])]


def _long_range(tmp_path: Path) -> list[object]:
    path = collection(tmp_path, ["2024-01-10T10:00:00Z", "2024-03-05T10:00:00Z"])
    data = item_json(path)
    data["features"][0]["properties"].update(datetime=None, start_datetime="2024-01-01T00:00:00Z",
                                             end_datetime="2024-01-31T00:00:00Z")
    path.write_text(json.dumps(data))
    return ["monitor", path]


BAD_STAC = {  # the README's Bad inputs row → (the command's arguments, exit code, words of its error line)
    "STAC item whose band asset file is missing": (_missing_asset, 3, "asset 'B04' file not found"),
    "STAC item without an asset for a band the model needs (no `nir`)": (_no_nir, 4, "has no band 'nir'"),
    "`--bands …,swir16` of a STAC item without that band": (_no_swir, 4, "has no band 'swir16' (it offers assets "
                                                            "B02, B03, B04, B08; band names blue, green, red, nir)"),
    "Sentinel-2 item without `s2:processing_baseline` (nor `earthsearch:boa_offset_applied: true`)":
        (_no_baseline, 3, "cannot decide the Sentinel-2 radiometric offset"),
    "scene `.json` that is not valid JSON": (_bad_json, 3, "is not readable JSON"),
    "an ItemCollection given to `detect` as a scene": (_collection_to_detect, 3, "is an ItemCollection or catalog"),
    "`/vsizip/` scene whose archive is missing": (_missing_archive, 3, "BEFORE file not found"),
    "STAC SCENES with two items of the same date": (_duplicate_dates, 3, "is listed twice"),
    "STAC item with `datetime` null and a range over several days": (_long_range, 3, "not one acquisition day"),
}


@pytest.mark.parametrize("name", list(BAD_STAC))
def test_bad_stac_inputs_get_one_error_line_and_their_exit_code(name: str, tmp_path: Path,
                                                                  tiny_checkpoint: Path) -> None:
    make, code, words = BAD_STAC[name]
    assert_bad_scene_row(name, make(tmp_path), code, words, tmp_path / "out", tiny_checkpoint)


def test_the_readme_rows_of_accepted_stac_inputs_are_listed() -> None:
    table = readme_bad_inputs()
    assert table["Sentinel-2 L2A STAC item with an SCL asset"] == "0"  # test_detect_on_l2a_items_…
    assert table["STAC item with 10 m and 20 m band assets"] == "0"  # test_mixed_10_and_20_m_assets_…
