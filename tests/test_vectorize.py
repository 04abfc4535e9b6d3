"""rs.vectorize: polygons with known areas, specks removed, holes kept, any CRS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from changewatch.rs.grid import Grid, pixel_area_m2
from changewatch.rs.vectorize import VectorizeConfig, vectorize
from tests.data import UTM48N, WGS84, utm_transform, write_raster


def probability_raster(tmp_path: Path, crs=UTM48N, transform: Affine | None = None) -> Path:
    """60×60 raster: a 10×10 block (p=0.9) with a 2×2 hole, a 1-pixel speck, a 5×5 block (p=0.7), NaN strip."""
    prob = np.full((60, 60), 0.1, np.float32)
    prob[5:15, 5:15] = 0.9
    prob[9:11, 9:11] = 0.2            # hole of 4 px = 400 m²
    prob[30, 30] = 0.95               # speck: 100 m²
    prob[40:45, 20:25] = 0.7          # 25 px = 2 500 m²
    prob[:, 55:] = np.nan             # nodata
    return write_raster(tmp_path / "prob.tif", prob[None], crs, transform or utm_transform(), nodata=np.nan)


def test_polygons_areas_and_probabilities(tmp_path: Path) -> None:
    gdf = vectorize(probability_raster(tmp_path), VectorizeConfig(threshold=0.5, min_area_m2=200.0))
    assert gdf.crs == UTM48N
    assert list(gdf["change_id"]) == [1, 2]
    assert list(gdf.columns) == ["change_id", "area_m2", "mean_prob", "max_prob", "change_type", "geometry"]
    assert gdf["change_type"].isna().all()  # a change-only (Sentinel-2) model cannot tell what changed
    np.testing.assert_allclose(gdf["area_m2"], [9600.0, 2500.0], rtol=1e-3)  # UTM in UTM: exact
    np.testing.assert_allclose(gdf["mean_prob"], [0.9, 0.7], atol=1e-6)
    assert len(gdf.geometry.iloc[0].interiors) == 1  # hole kept (400 m² ≥ the sieve size)


def test_min_area_drops_small_changes(tmp_path: Path) -> None:
    gdf = vectorize(probability_raster(tmp_path), VectorizeConfig(threshold=0.5, min_area_m2=3000.0))
    assert list(gdf["area_m2"].round()) == [10000.0]  # the 400 m² hole is now a speck too: filled
    tiny = vectorize(probability_raster(tmp_path), VectorizeConfig(threshold=0.5, min_area_m2=0.0))
    assert len(tiny) == 3  # the speck is back


def test_threshold(tmp_path: Path) -> None:
    gdf = vectorize(probability_raster(tmp_path), VectorizeConfig(threshold=0.8, min_area_m2=200.0))
    assert len(gdf) == 1 and gdf["max_prob"].iloc[0] == pytest.approx(0.9)


def test_geographic_crs_areas_in_square_metres(tmp_path: Path) -> None:
    deg = 10.0 / 111_320.0  # ≈10 m at the equator in latitude; less in longitude at 10.8° N
    t = Affine(deg, 0.0, 106.7, 0.0, -deg, 10.8)
    path = probability_raster(tmp_path, WGS84, t)
    grid = Grid(WGS84, t, 60, 60)
    px = pixel_area_m2(grid)
    assert 95.0 < px < 101.0
    gdf = vectorize(path, VectorizeConfig(threshold=0.5, min_area_m2=200.0))
    assert gdf.crs == WGS84
    np.testing.assert_allclose(gdf["area_m2"], [96 * px, 25 * px], rtol=5e-3)


def test_nan_is_never_change(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "p.tif", np.full((1, 10, 10), np.nan, np.float32), UTM48N, utm_transform(),
                        nodata=np.nan)
    assert vectorize(path, VectorizeConfig(threshold=0.0001, min_area_m2=0.0)).empty


@pytest.mark.parametrize("block", [1, 3, 7, 16])
def test_blocks_give_the_same_polygons_as_one_read(tmp_path: Path, block: int) -> None:
    # a U open at the top (its arms meet only below several block edges), a ring with a hole, diagonal
    # neighbours (4-connectivity: two regions), and the blocks of probability_raster
    path = probability_raster(tmp_path)
    with rasterio.open(path, "r+") as ds:
        prob = ds.read(1)
        prob[20:34, 40:43] = 0.8
        prob[20:34, 49:52] = 0.8
        prob[31:34, 40:52] = 0.8          # the U's bottom
        prob[50:53, 2:4] = 0.9
        prob[53:56, 4:6] = 0.9            # touches the block above only at a corner
        ds.write(prob, 1)
    whole = vectorize(path, VectorizeConfig(threshold=0.5, min_area_m2=0.0), block=1024)
    strips = vectorize(path, VectorizeConfig(threshold=0.5, min_area_m2=0.0), block=block)
    assert len(strips) == len(whole) == 6
    np.testing.assert_allclose(strips["area_m2"], whole["area_m2"])
    np.testing.assert_allclose(strips["mean_prob"], whole["mean_prob"], rtol=1e-6)
    np.testing.assert_allclose(strips["max_prob"], whole["max_prob"])
    assert all(a.equals(b) for a, b in zip(strips.geometry, whole.geometry, strict=True))
    u = whole[np.isclose(whole["area_m2"], (14 * 3 * 2 + 3 * 6) * 100)]
    assert len(u) == 1 and u.geometry.iloc[0].geom_type == "Polygon"


def test_no_change_gives_empty_layer(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "p.tif", np.zeros((1, 20, 20), np.float32), UTM48N, utm_transform(), nodata=np.nan)
    gdf = vectorize(path, VectorizeConfig())
    assert gdf.empty and gdf.crs == UTM48N and "area_m2" in gdf.columns


def test_simplify_in_metres(tmp_path: Path) -> None:
    # a staircase diagonal band: many vertices exactly, few once simplified to 15 m (1.5 px)
    prob = np.zeros((40, 40), np.float32)
    for r in range(40):
        prob[r, max(0, r - 6):r + 6] = 0.9
    path = write_raster(tmp_path / "p.tif", prob[None], UTM48N, utm_transform(), nodata=np.nan)
    exact = vectorize(path, VectorizeConfig(0.5, 0.0))
    simple = vectorize(path, VectorizeConfig(0.5, 0.0, simplify_m=15.0))
    assert len(exact) == len(simple) == 1 and simple.geometry.is_valid.all()
    count = lambda g: len(g.geometry.iloc[0].exterior.coords)  # noqa: E731
    assert count(simple) < count(exact) / 4
    # straight edges through the stair corners: about half a pixel more on each side of a 12-pixel band
    assert simple["area_m2"].iloc[0] == pytest.approx(exact["area_m2"].iloc[0], rel=0.1)


def test_vectorize_and_crosscheck_import_without_torch() -> None:
    # bench/vectorize_memory.py measures the vectorizer alone; torch would add hundreds of MB
    import subprocess
    import sys

    code = "import sys, changewatch.rs.vectorize, changewatch.rs.crosscheck.judge; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


def test_plain_raster_areas_from_the_given_pixel_size(tmp_path: Path) -> None:
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    from changewatch.rs.errors import InputFileError

    prob = np.zeros((1, 30, 30), np.float32)
    prob[0, 2:12, 2:8] = 0.9            # 60 px
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        path = write_raster(tmp_path / "plain.tif", prob, None, Affine.identity())
    gdf = vectorize(path, VectorizeConfig(0.5, 10.0), pixel_size_m=0.5)
    assert gdf.crs is None and list(gdf["area_m2"]) == [15.0]  # 60 px of 0.25 m²
    assert vectorize(path, VectorizeConfig(0.5, 16.0), pixel_size_m=0.5).empty
    with pytest.raises(InputFileError, match="has no CRS: its pixel size in metres is needed"):
        vectorize(path, VectorizeConfig(0.5, 10.0))
