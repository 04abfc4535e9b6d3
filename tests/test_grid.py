"""rs.grid: the GSD policy and the metre helpers (one UTM zone rule for grids and layers)."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import pytest
from affine import Affine
from shapely.geometry import box

from changewatch.rs.align import AlignedPair
from changewatch.rs.grid import Grid, GridSpec, grid_for_gsd, metric_crs, pixel_area_m2, utm_crs
from tests.data import UTM48N, WGS84, textured_scene, utm_transform, write_raster


def test_grid_for_gsd(tmp_path: Path) -> None:
    scene = textured_scene(50, 50, seed=6)
    write_raster(tmp_path / "vhr.tif", scene, UTM48N, utm_transform(pixel_m=2.0))
    with AlignedPair(tmp_path / "vhr.tif", tmp_path / "vhr.tif") as p:
        assert p.grid.pixel_size_m() == pytest.approx(2.0)
        assert grid_for_gsd(p.grid, 10.0, "auto") == GridSpec("EPSG:32648", 10.0)  # 5× finer than the model: resampled
        assert grid_for_gsd(p.grid, 10.0, "native") is None
        assert grid_for_gsd(p.grid, 3.0, "auto") is None  # within 2× of the model's GSD: as is
        assert grid_for_gsd(p.grid, 0.5, "auto", serves=(0.25, 2.5)) is None  # a VHR model serving 0.25-2.5 m: as is
        # coarser: to its GSD
        assert grid_for_gsd(p.grid, 0.5, "auto", serves=(0.25, 1.0)) == GridSpec("EPSG:32648", 0.5)
    t4326 = Affine(0.0001, 0.0, 106.7, 0.0, -0.0001, 10.8)  # ~11 m pixels near Ho Chi Minh City
    write_raster(tmp_path / "geo.tif", scene, WGS84, t4326)
    with AlignedPair(tmp_path / "geo.tif", tmp_path / "geo.tif") as p:
        assert p.grid.pixel_size_m() == pytest.approx(11.0, rel=0.02)
        assert grid_for_gsd(p.grid, 40.0, "auto") == GridSpec("EPSG:32648", 40.0)  # its UTM zone
    with pytest.raises(ValueError, match="unknown GSD policy"):
        grid_for_gsd(p.grid, 10.0, "sometimes")


@pytest.mark.parametrize("lon,lat", [(106.7, 10.8), (114.17, 22.3), (-122.0, 37.3), (2.35, 48.85), (151.2, -33.9)])
def test_one_utm_zone_rule_for_grids_points_and_layers(lon: float, lat: float) -> None:
    zone = utm_crs(lon, lat)
    expected = (32600 if lat >= 0 else 32700) + int((lon + 180) // 6) % 60 + 1
    assert zone.to_epsg() == expected
    grid = Grid(WGS84, Affine(0.0001, 0.0, lon - 0.005, 0.0, -0.0001, lat + 0.005), 100, 100)
    assert grid.metric_crs() == zone
    layer = gpd.GeoDataFrame(geometry=[box(lon - 0.001, lat - 0.001, lon + 0.001, lat + 0.001)], crs=WGS84)
    assert metric_crs(layer).to_epsg() == expected
    assert pixel_area_m2(grid) == pytest.approx(11.1 * 11.1 * math.cos(math.radians(lat)), rel=0.02)  # 0.0001° pixels
