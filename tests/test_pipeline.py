"""rs.pipeline.detect end to end with a known-answer model: no false change from alignment, and
changes cut by tile edges come out whole."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject
from shapely.geometry import Point, box

from changewatch.rs.config import DetectConfig, InferenceConfig
from changewatch.rs.crosscheck.settings import CrosscheckInputs
from changewatch.rs.infer import ChangeModel, ModelCache
from changewatch.rs.pipeline import detect
from changewatch.rs.summary import BuildingsRecord, RunSummary
from changewatch.rs.tiling import TileGrid
from tests.data import (
    ORIGIN,
    UTM48N,
    WGS84,
    BrightnessChangeNet,
    BuildingBrightnessNet,
    building_spec,
    plant_square,
    pointwise_spec,
    textured_scene,
    utm_transform,
    write_raster,
)


def sensitive_model() -> ChangeModel:
    """Calls change where the mean normalised band difference exceeds 0.1 (a tenth of the 2–98 % range)."""
    return ChangeModel(BrightnessChangeNet(4, gain=20.0, bias=2.0), pointwise_spec(), torch.device("cpu"))


def test_reprojected_copy_without_change_gives_no_polygon(tmp_path: Path) -> None:
    before = textured_scene(200, 200, seed=11)
    write_raster(tmp_path / "before.tif", before, UTM48N, utm_transform())
    with rasterio.open(tmp_path / "before.tif") as src:  # AFTER: the same ground in EPSG:4326 at ~7 m
        transform, width, height = calculate_default_transform(src.crs, WGS84, src.width, src.height, *src.bounds,
                                                               resolution=7.0 / 111_000)
        after = np.zeros((4, height, width), np.uint16)
        reproject(rasterio.band(src, [1, 2, 3, 4]), after, dst_transform=transform, dst_crs=WGS84,
                  resampling=Resampling.bilinear, dst_nodata=0)
    write_raster(tmp_path / "after.tif", after, WGS84, transform, nodata=0)
    result = detect(DetectConfig(str(tmp_path / "before.tif"), str(tmp_path / "after.tif"), str(tmp_path / "out"),
                                 min_area_m2=0.0, threshold=0.5, inference=InferenceConfig(64, 16, 4)),
                    progress=False, models=ModelCache(fixed=sensitive_model()))
    assert result.n_changes == 0
    with rasterio.open(tmp_path / "out" / "change_prob.tif") as ds:
        prob = ds.read(1)
    assert np.nanmax(prob) < 0.5 and np.isfinite(prob).mean() > 0.95


def test_changes_cut_by_tile_edges_come_out_whole(tmp_path: Path) -> None:
    tile, overlap = 32, 8
    edges = sorted({int(t.read.col_off) for t in TileGrid(160, 160, tile, overlap)} - {0})
    before = textured_scene(160, 160, seed=12)
    after = before
    squares = [(edges[0] - 6, edges[0] - 6, 12), (edges[1] - 3, edges[2] - 9, 15), (100, edges[1] - 2, 10)]
    for row, col, side in squares:  # each straddles a tile edge in rows, columns or both
        after = plant_square(after, row, col, side)
    write_raster(tmp_path / "before.tif", before, UTM48N, utm_transform())
    write_raster(tmp_path / "after.tif", after, UTM48N, utm_transform())
    detect(DetectConfig(str(tmp_path / "before.tif"), str(tmp_path / "after.tif"), str(tmp_path / "out"),
                        min_area_m2=0.0, threshold=0.5, inference=InferenceConfig(tile, overlap, 3)),
           progress=False, models=ModelCache(fixed=sensitive_model()))
    changes = gpd.read_file(tmp_path / "out" / "changes.gpkg", layer="changes")
    assert len(changes) == len(squares)
    expected = sorted(side * side * 100.0 for _, _, side in squares)
    np.testing.assert_allclose(sorted(changes["area_m2"]), expected, rtol=0.02)


def test_outputs_match_the_scene_grid(tmp_path: Path) -> None:
    t = Affine(10.0, 0.0, 680_000.0, 0.0, -10.0, 1_200_000.0)
    before = textured_scene(40, 50, seed=13)
    write_raster(tmp_path / "b.tif", before, UTM48N, t)
    write_raster(tmp_path / "a.tif", plant_square(before, 5, 5, 6), UTM48N, t)
    detect(DetectConfig(str(tmp_path / "b.tif"), str(tmp_path / "a.tif"), str(tmp_path / "o"), threshold=0.5),
           progress=False, models=ModelCache(fixed=sensitive_model()))
    with rasterio.open(tmp_path / "o" / "change_prob.tif") as ds:
        assert (ds.crs, ds.transform, ds.shape) == (UTM48N, t, (40, 50))


def test_masked_change_is_never_reported(tmp_path: Path) -> None:
    before = textured_scene(64, 64, seed=14)
    write_raster(tmp_path / "b.tif", before, UTM48N, utm_transform())
    write_raster(tmp_path / "a.tif", plant_square(plant_square(before, 5, 5, 8), 40, 40, 10), UTM48N, utm_transform())
    cloud = np.zeros((1, 64, 64), np.uint8)
    cloud[0, 35:55, 35:55] = 255  # a cloud over the second square in the AFTER image
    write_raster(tmp_path / "cloud.tif", cloud, UTM48N, utm_transform())

    def run(masks: tuple[str, ...], out: str) -> int:
        return detect(DetectConfig(str(tmp_path / "b.tif"), str(tmp_path / "a.tif"), str(tmp_path / out),
                                   masks=masks, threshold=0.5, min_area_m2=0.0),
                      progress=False, models=ModelCache(fixed=sensitive_model())).n_changes

    assert run((), "clear") == 2
    assert run((str(tmp_path / "cloud.tif"),), "cloudy") == 1
    with rasterio.open(tmp_path / "cloudy" / "change_prob.tif") as ds:
        assert np.isnan(ds.read(1)[35:55, 35:55]).all()


def test_vhr_input_is_compared_at_the_models_gsd_unless_native(tmp_path: Path) -> None:
    before = textured_scene(300, 300, seed=15)
    write_raster(tmp_path / "b.tif", before, UTM48N, utm_transform(pixel_m=2.0))
    write_raster(tmp_path / "a.tif", plant_square(before, 100, 150, 25), UTM48N, utm_transform(pixel_m=2.0))
    for gsd, pixel in (("auto", 10.0), ("native", 2.0)):  # the test model says it was trained at 10 m
        result = detect(DetectConfig(str(tmp_path / "b.tif"), str(tmp_path / "a.tif"), str(tmp_path / gsd),
                                     gsd=gsd, threshold=0.5, min_area_m2=0.0),
                        progress=False, models=ModelCache(fixed=sensitive_model()))
        with rasterio.open(tmp_path / gsd / "change_prob.tif") as ds:
            assert ds.res == (pixel, pixel) and ds.crs == UTM48N
        assert result.n_changes == 1 and result.summary.to_dict()["inputs"]["pixel_size_m"] == pytest.approx(pixel)
        changes = gpd.read_file(tmp_path / gsd / "changes.gpkg", layer="changes")
        # the 50 m square either way; at 10 m its outline may grow by the one pixel the resampling blurs
        assert 0.8 * 50 * 50 <= changes["area_m2"].iloc[0] <= 70 * 70
        centre = changes.geometry.iloc[0].centroid
        assert centre.distance(Point(ORIGIN[0] + 2 * (150 + 12.5), ORIGIN[1] - 2 * (100 + 12.5))) < 5.0


def building_model() -> ChangeModel:
    return ChangeModel(BuildingBrightnessNet(4), building_spec(), torch.device("cpu"))


def building_scenes(tmp_path: Path) -> tuple[Path, Path]:
    """200 × 200 pixels at 0.5 m: a house standing on both dates (rows 20–35, cols 20–35) gets an
    8 × 4 m extension (cols 36–43); a house at rows 120–135, cols 120–135 is demolished; a new house
    rises at rows 60–75, cols 140–155. Roofs cover under 2 % of each date, so they normalise bright."""
    before = textured_scene(200, 200, seed=16)
    before = plant_square(plant_square(before, 20, 20, 16), 120, 120, 16)
    after = plant_square(plant_square(textured_scene(200, 200, seed=16), 20, 20, 16), 60, 140, 16)
    after[:, 20:36, 36:44] = 6000
    t = utm_transform(pixel_m=0.5)
    return write_raster(tmp_path / "b.tif", before, UTM48N, t), write_raster(tmp_path / "a.tif", after, UTM48N, t)


def test_building_model_writes_one_typed_object_per_building(tmp_path: Path) -> None:
    before, after = building_scenes(tmp_path)
    x, y = ORIGIN
    permit = gpd.GeoDataFrame({"permit_id": ["P-new"], "issued": ["2020-01-01"], "expires": [None]},
                              geometry=[box(x + 0.5 * 139, y - 0.5 * 77, x + 0.5 * 157, y - 0.5 * 59)], crs=UTM48N)
    permit.to_file(tmp_path / "permits.gpkg")
    result = detect(DetectConfig(str(before), str(after), str(tmp_path / "out"), min_area_m2=10.0,
                                 layers=CrosscheckInputs(permits=str(tmp_path / "permits.gpkg")),
                                 inference=InferenceConfig(64, 16, 4)),
                    progress=False, models=ModelCache(fixed=building_model()))
    changes = gpd.read_file(tmp_path / "out" / "changes.gpkg", layer="changes")
    assert list(changes["change_type"]) == ["enlarged", "new_building", "demolished"]
    np.testing.assert_allclose(changes["area_m2"], [32.0, 64.0, 64.0], rtol=0.15)
    assert list(changes["reasons"]) == ["NO_PERMIT", "PERMITTED", "DEMOLISHED"]
    flagged = gpd.read_file(tmp_path / "out" / "flagged.gpkg", layer="flagged_changes")
    assert list(flagged["change_type"]) == ["enlarged", "demolished"]
    counts = result.summary.counts
    assert counts.by_change_type == {"new_building": 1, "demolished": 1, "enlarged": 1, "other_change": 0}
    assert counts.by_reason == {"NO_PERMIT": 1, "DEMOLISHED": 1}
    assert result.summary.buildings == BuildingsRecord(split_per_building=True, unsplit_regions=0, notes=[])
    assert result.summary.rules.demolition_needs_permit is False
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["buildings"] == {"split_per_building": True, "unsplit_regions": 0, "notes": []}
    back = RunSummary.from_dict(written)  # what is written reads back the same (the config as JSON has it)
    assert replace(back, config={}) == replace(result.summary, config={}) and back.config["min_area_m2"] == 10.0


def test_change_only_model_leaves_change_type_empty(tmp_path: Path) -> None:
    before = textured_scene(64, 64, seed=14)
    write_raster(tmp_path / "b.tif", before, UTM48N, utm_transform())
    write_raster(tmp_path / "a.tif", plant_square(before, 5, 5, 8), UTM48N, utm_transform())
    result = detect(DetectConfig(str(tmp_path / "b.tif"), str(tmp_path / "a.tif"), str(tmp_path / "o"),
                                 threshold=0.5, min_area_m2=0.0),
                    progress=False, models=ModelCache(fixed=sensitive_model()))
    changes = gpd.read_file(tmp_path / "o" / "changes.gpkg", layer="changes")
    assert len(changes) == 1 and "change_type" in changes and changes["change_type"].isna().all()
    assert result.summary.counts.by_change_type is None
    assert result.summary.buildings is not None and not result.summary.buildings.split_per_building


def test_an_undeclared_zero_wedge_is_never_change_and_the_rule_is_recorded(tmp_path: Path) -> None:
    # BEFORE has a 0-filled Sentinel-2 swath edge and no nodata tag: read as data, the wedge would be
    # the brightest "change" of the scene; read by the zero rule, it is nodata.
    before = textured_scene(96, 96, seed=16)
    rows, cols = np.mgrid[0:96, 0:96]
    wedge = rows > 40 + cols * 0.9
    write_raster(tmp_path / "a.tif", plant_square(before, 10, 50, 10), UTM48N, utm_transform())
    before[:, wedge] = 0
    write_raster(tmp_path / "b.tif", before, UTM48N, utm_transform())

    def run(out: str, zero_is_valid: bool) -> dict[str, Any]:
        config = DetectConfig(str(tmp_path / "b.tif"), str(tmp_path / "a.tif"), str(tmp_path / out), threshold=0.5,
                              min_area_m2=0.0, zero_is_valid=zero_is_valid)
        return detect(config, progress=False, models=ModelCache(fixed=sensitive_model())).summary.to_dict()

    summary = run("rule", False)
    assert summary["counts"]["changes"] == 1  # the planted roof only
    with rasterio.open(tmp_path / "rule" / "change_prob.tif") as ds:
        assert np.isnan(ds.read(1)[wedge]).all()
    validity = summary["inputs"]["validity"]
    assert validity["before"]["zero_fill"] and validity["before"]["sample"]["all_bands_zero"] == wedge.sum()
    assert validity["after"]["sample"]["all_bands_zero"] == 0
    assert summary["inputs"]["bands_compared"]["rule"].startswith("file order")
    assert run("told", True)["counts"]["changes"] == 2  # --zero-is-valid: the user says 0 is data


def test_an_after_stored_in_another_band_order_gives_the_same_answer(tmp_path: Path) -> None:
    before = textured_scene(64, 64, seed=17)
    after = plant_square(before, 20, 20, 8)
    bands = ("B02", "B03", "B04", "B08")
    write_raster(tmp_path / "b.tif", before, UTM48N, utm_transform(), descriptions=bands)
    write_raster(tmp_path / "a.tif", after, UTM48N, utm_transform(), descriptions=bands)
    write_raster(tmp_path / "r.tif", after[::-1], UTM48N, utm_transform(), descriptions=bands[::-1])
    for after_file in ("a.tif", "r.tif"):
        detect(DetectConfig(str(tmp_path / "b.tif"), str(tmp_path / after_file), str(tmp_path / after_file[0]),
                            threshold=0.5, min_area_m2=0.0), progress=False, models=ModelCache(fixed=sensitive_model()))
    with rasterio.open(tmp_path / "a" / "change_prob.tif") as a, rasterio.open(tmp_path / "r" / "change_prob.tif") as r:
        np.testing.assert_array_equal(a.read(1), r.read(1))


def test_a_sentinel2_baseline_0400_offset_on_one_date_changes_nothing(tmp_path: Path) -> None:
    # Processing baseline 04.00 (from January 2022) stores reflectance × 10 000 + 1000 (BOA_ADD_OFFSET
    # -1000); a 2021 date against a 2023 date is 1000 DN brighter in every band. Each date is
    # normalised on its own statistics, so the offset is not change.
    before = textured_scene(64, 64, seed=18)
    after = plant_square(before, 20, 20, 8)
    write_raster(tmp_path / "b.tif", before, UTM48N, utm_transform(), nodata=0)
    write_raster(tmp_path / "a.tif", after, UTM48N, utm_transform(), nodata=0)
    write_raster(tmp_path / "a2022.tif", after + 1000, UTM48N, utm_transform(), nodata=0)
    with rasterio.open(tmp_path / "a2022.tif", "r+") as ds:
        ds.update_tags(PROCESSING_BASELINE="04.00", BOA_ADD_OFFSET="-1000")
    for after_file in ("a.tif", "a2022.tif"):
        result = detect(DetectConfig(str(tmp_path / "b.tif"), str(tmp_path / after_file),
                                     str(tmp_path / after_file[:-4]), threshold=0.5, min_area_m2=0.0),
                        progress=False, models=ModelCache(fixed=sensitive_model()))
    tags = result.summary.to_dict()["inputs"]["radiometry"]["after"]["tags"]
    assert tags == {"PROCESSING_BASELINE": "04.00", "BOA_ADD_OFFSET": "-1000"}
    with (rasterio.open(tmp_path / "a" / "change_prob.tif") as a,
          rasterio.open(tmp_path / "a2022" / "change_prob.tif") as o):
        np.testing.assert_allclose(a.read(1), o.read(1), atol=1e-3)
