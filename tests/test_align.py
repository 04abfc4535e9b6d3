"""rs.align: the common grid (overlap, user CRS/resolution), validity, and clear errors for bad pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.transform
from affine import Affine
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from changewatch.rs.align import AlignedPair, overlap_fraction
from changewatch.rs.errors import IncompatibleScenesError, InputFileError
from changewatch.rs.grid import GridSpec
from tests.data import ORIGIN, UTM48N, WGS84, textured_scene, utm_transform, write_raster


def ramp(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A known linear field of ground coordinates (metres, UTM 48N): bilinear resampling reproduces it."""
    return 1000.0 + 0.5 * (x - ORIGIN[0]) + 0.25 * (ORIGIN[1] - y)


def test_same_grid_reads_identical_pixels(pair: tuple[Path, Path]) -> None:
    before, _ = pair
    with AlignedPair(before, before) as p:
        w = p.read(Window(0, 0, 96, 96))
    assert w.before.dtype == np.float32 and w.before.shape == (4, 96, 96)
    np.testing.assert_array_equal(w.before, w.after)
    assert w.valid.all()


def test_after_in_other_crs_and_pixel_size_lands_on_before_grid(tmp_path: Path) -> None:
    # BEFORE: UTM 48N, 10 m pixels, 60×60. AFTER: EPSG:4326, ~7 m pixels, larger extent.
    # Both hold the same ground ramp, so after alignment AFTER must equal BEFORE.
    rows, cols = np.mgrid[0:60, 0:60] + 0.5
    x, y = rasterio.transform.xy(utm_transform(), rows - 0.5, cols - 0.5)
    x, y = np.reshape(x, rows.shape), np.reshape(y, rows.shape)
    write_raster(tmp_path / "before.tif", ramp(x, y).astype(np.float32)[None], UTM48N, utm_transform())
    lon0, lat0 = warp_transform(UTM48N, WGS84, [ORIGIN[0] - 100], [ORIGIN[1] + 100])
    deg = 7.0 / 111_000.0
    t4326 = Affine(deg, 0.0, lon0[0], 0.0, -deg, lat0[0])
    r2, c2 = np.mgrid[0:120, 0:120] + 0.5
    lon, lat = rasterio.transform.xy(t4326, r2 - 0.5, c2 - 0.5)
    lon, lat = np.ravel(lon), np.ravel(lat)
    ux, uy = warp_transform(WGS84, UTM48N, lon, lat)
    after = ramp(np.array(ux), np.array(uy)).reshape(120, 120).astype(np.float32)
    write_raster(tmp_path / "after.tif", after[None], WGS84, t4326)

    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif") as p:
        assert p.grid.crs == UTM48N and (p.grid.height, p.grid.width) == (60, 60)
        w = p.read(Window(0, 0, 60, 60))
    assert w.valid.all()
    # 1.5 units ≈ the ramp's change over 2 m: alignment is accurate to well under a pixel.
    np.testing.assert_allclose(w.after[0], w.before[0], atol=1.5)


def test_common_grid_is_the_overlap_on_befores_pixels(tmp_path: Path) -> None:
    scene = textured_scene(40, 40, seed=3)
    write_raster(tmp_path / "before.tif", scene, UTM48N, utm_transform())
    shifted = utm_transform(origin=(ORIGIN[0] + 200.0, ORIGIN[1]))  # 20 pixels east
    write_raster(tmp_path / "after.tif", scene, UTM48N, shifted)
    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif") as p:
        assert (p.grid.height, p.grid.width, p.grid.transform) == (40, 20, shifted)
        w = p.read(Window(0, 0, 20, 40))
    assert w.valid.all()
    np.testing.assert_array_equal(w.before, scene[:, :, 20:].astype(np.float32))
    np.testing.assert_array_equal(w.after, scene[:, :, :20].astype(np.float32))


def test_pixels_inside_the_overlap_box_but_outside_after_are_invalid(tmp_path: Path) -> None:
    scene = textured_scene(60, 60, seed=3)
    write_raster(tmp_path / "before.tif", scene, UTM48N, utm_transform())
    rotated_box = np.zeros((1, 60, 60), np.uint16)  # AFTER covers a diamond: its corners hold nodata
    r, c = np.mgrid[0:60, 0:60]
    inside = np.abs(r - 29.5) + np.abs(c - 29.5) < 30
    rotated_box[0][inside] = 1000
    write_raster(tmp_path / "after.tif", np.repeat(rotated_box, 4, axis=0), UTM48N, utm_transform(), nodata=0)
    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif") as p:
        w = p.read(Window(0, 0, p.grid.width, p.grid.height))
    np.testing.assert_array_equal(w.valid, inside)


def test_user_grid_crs_and_resolution(tmp_path: Path) -> None:
    scene = textured_scene(60, 60, seed=5)
    write_raster(tmp_path / "before.tif", scene, UTM48N, utm_transform())
    write_raster(tmp_path / "after.tif", scene, UTM48N, utm_transform())
    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif", grid=GridSpec(resolution=20.0)) as p:
        assert p.grid.crs == UTM48N and (p.grid.width, p.grid.height) == (30, 30)
        assert p.grid.transform.a == 20.0 and p.grid.transform.c % 20.0 == 0.0
        w = p.read(Window(0, 0, 30, 30))
        assert w.valid.all()
        np.testing.assert_allclose(w.after, w.before)  # both dates warped the same way
    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif", grid=GridSpec("EPSG:4326")) as p:
        assert p.grid.crs == WGS84 and 0 < p.grid.transform.a < 1e-3  # ~10 m carried over, in degrees
        left, bottom, right, top = p.grid.bounds
        lon, lat = warp_transform(UTM48N, WGS84, [ORIGIN[0] + 300], [ORIGIN[1] - 300])
        assert left < lon[0] < right and bottom < lat[0] < top


def test_bad_user_grid_is_a_clear_error(pair: tuple[Path, Path]) -> None:
    with pytest.raises(IncompatibleScenesError, match="unknown grid CRS"):
        AlignedPair(*pair, grid=GridSpec("EPSG:999999"))
    with pytest.raises(IncompatibleScenesError, match="positive"):
        GridSpec(resolution=0.0)


def test_nodata_on_either_date_is_invalid(tmp_path: Path) -> None:
    scene = textured_scene(32, 32, seed=4)
    holed = scene.copy()
    holed[:, 5:10, 5:10] = 0
    write_raster(tmp_path / "before.tif", scene, UTM48N, utm_transform(), nodata=0)
    write_raster(tmp_path / "after.tif", holed, UTM48N, utm_transform(), nodata=0)
    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif") as p:
        w = p.read(Window(0, 0, 32, 32))
    assert not w.valid[5:10, 5:10].any()
    assert w.valid.sum() == 32 * 32 - 25


def test_missing_file(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    with pytest.raises(InputFileError, match="AFTER file not found"):
        AlignedPair(pair[0], tmp_path / "nope.tif")


def test_not_a_raster(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_text("this is not a GeoTIFF")
    with pytest.raises(InputFileError, match="not a readable raster"):
        AlignedPair(bad, pair[1])


def test_no_overlap(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    far = write_raster(tmp_path / "far.tif", textured_scene(96, 96), UTM48N,
                       utm_transform(origin=(ORIGIN[0] + 50_000, ORIGIN[1])))
    with pytest.raises(IncompatibleScenesError, match="do not overlap"):
        AlignedPair(pair[0], far)


def test_band_count_mismatch(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    three = write_raster(tmp_path / "three.tif", textured_scene(96, 96, bands=3), UTM48N, utm_transform())
    with pytest.raises(IncompatibleScenesError, match="4 bands but AFTER has 3"):
        AlignedPair(pair[0], three)


def test_no_crs(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    bare = write_raster(tmp_path / "bare.tif", textured_scene(96, 96), None, utm_transform())
    with pytest.raises(IncompatibleScenesError, match="no CRS"):
        AlignedPair(bare, pair[1])


def test_overlap_fraction_across_crs(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    import rasterio

    with rasterio.open(pair[0]) as a, rasterio.open(pair[1]) as b:
        assert overlap_fraction(a, b) == pytest.approx(1.0)


def named(path: Path, data: np.ndarray, names: list[str]) -> Path:
    write_raster(path, data, UTM48N, utm_transform())
    with rasterio.open(path, "r+") as ds:
        ds.descriptions = tuple(names)
    return path


def test_bands_by_name_and_index_across_different_band_sets(tmp_path: Path) -> None:
    # BEFORE: a 6-band stack; AFTER: 4 bands in another order. Compare B02, B03, B04, B08 of both.
    six = textured_scene(32, 32, bands=6, seed=7)
    before = named(tmp_path / "b.tif", six, ["B01", "B02", "B03", "B04", "B08", "B11"])
    after = named(tmp_path / "a.tif", six[[4, 3, 2, 1]], ["B08", "B04", "B03", "B02"])
    with AlignedPair(before, after, ("B02", "b03", "B04", "B08")) as p:
        assert p.band_count == 4
        w = p.read(Window(0, 0, 32, 32))
    np.testing.assert_array_equal(w.before, w.after)
    np.testing.assert_array_equal(w.before, six[[1, 2, 3, 4]].astype(np.float32))
    with AlignedPair(before, before, ("5", "2")) as p:
        np.testing.assert_array_equal(p.read(Window(0, 0, 32, 32)).before, six[[4, 1]].astype(np.float32))


def test_missing_band_is_a_clear_error(tmp_path: Path) -> None:
    four = named(tmp_path / "a.tif", textured_scene(32, 32, seed=8), ["B02", "B03", "B04", "B08"])
    with pytest.raises(IncompatibleScenesError, match="BEFORE has no band 'B11'"):
        AlignedPair(four, four, ("B02", "B11"))
    with pytest.raises(IncompatibleScenesError, match="has no band '9'"):
        AlignedPair(four, four, ("9",))


def test_cloud_masks_in_another_crs_make_pixels_invalid(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    # a cloud over rows 10-29, cols 50-69 of BEFORE's grid, given as a 5 m mask raster in EPSG:4326
    cloud = np.zeros((96, 96), np.uint8)
    cloud[10:30, 50:70] = 1
    utm_mask = write_raster(tmp_path / "cloud_utm.tif", cloud[None], UTM48N, utm_transform())
    with rasterio.open(utm_mask) as src:
        from rasterio.warp import calculate_default_transform, reproject

        transform, width, height = calculate_default_transform(src.crs, WGS84, src.width, src.height, *src.bounds,
                                                               resolution=5.0 / 111_000)
        warped = np.zeros((1, height, width), np.uint8)
        reproject(rasterio.band(src, 1), warped[0], dst_transform=transform, dst_crs=WGS84)
    mask = write_raster(tmp_path / "cloud.tif", warped, WGS84, transform)
    with AlignedPair(*pair, masks=(str(mask),)) as p:
        w = p.read(Window(0, 0, 96, 96))
    assert not w.valid[12:28, 52:68].any()            # inside the cloud (away from its resampled edge)
    assert w.valid[:8].all() and w.valid[:, :45].all()  # clear sky
    assert 0.03 < (~w.valid).mean() < 0.06            # about the cloud's 400 of 9216 pixels


def test_warped_nodata_hole_is_invalid_with_a_one_pixel_margin(tmp_path: Path) -> None:
    scene = textured_scene(80, 80, seed=7)
    write_raster(tmp_path / "before.tif", scene, UTM48N, utm_transform())
    holed = scene.copy()
    holed[:, 30:40, 30:40] = 0
    shifted = utm_transform(origin=(ORIGIN[0] + 5.0, ORIGIN[1] - 5.0))  # half a pixel off: AFTER is warped
    write_raster(tmp_path / "after.tif", holed, UTM48N, shifted, nodata=0)
    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif") as p:
        w = p.read(Window(0, 0, p.grid.width, p.grid.height))
        assert p._after._coverage is not None  # the fast path: data warped ignoring nodata
    r, c = np.mgrid[0:w.valid.shape[0], 0:w.valid.shape[1]]
    # the hole covers grid columns/rows 30.5–40.5: it and a pixel around it are invalid
    assert not w.valid[30:41, 30:41].any() and w.valid.sum() <= 80 * 80 - 12 * 12
    far = (np.abs(r - 35) > 8) | (np.abs(c - 35) > 8)
    inside = (r >= 1) & (c >= 1) & (r < w.valid.shape[0] - 1) & (c < w.valid.shape[1] - 1)
    assert w.valid[far & inside].all()
    # where valid, no value is contaminated by the zeros of the hole
    assert w.after[:, w.valid].min() > 1000
