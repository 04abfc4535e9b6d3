"""rs.georef through rs.align: bottom-up, rotated, GCP-only and sparse virtual rasters land on a
north-up common grid over the right ground, or get one line that names the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.rpc import RPC
from rasterio.windows import Window

from changewatch.rs.align import AlignedPair
from changewatch.rs.errors import IncompatibleScenesError
from changewatch.rs.georef import data_window, native_grid
from tests.data import ORIGIN, UTM48N, textured_scene, utm_transform, write_raster, write_vrt


def bottom_up(transform: Affine, height: int) -> Affine:
    """The geotransform of the same grid stored bottom-up (row 0 in the south, positive y size)."""
    return Affine(transform.a, 0.0, transform.c, 0.0, -transform.e, transform.f + transform.e * height)


def test_native_grid_of_a_bottom_up_raster_is_its_grid_flipped(tmp_path: Path) -> None:
    t = utm_transform()
    path = write_raster(tmp_path / "up.tif", textured_scene(30, 40), UTM48N, bottom_up(t, 30))
    with rasterio.open(path) as ds:
        assert native_grid(ds).transform == t and (native_grid(ds).width, native_grid(ds).height) == (40, 30)


def test_a_bottom_up_pair_reads_as_the_north_up_one(tmp_path: Path) -> None:
    before, after = textured_scene(60, 60, seed=1), textured_scene(60, 60, seed=2)
    t = utm_transform()
    north = [write_raster(tmp_path / f"{n}.tif", d, UTM48N, t) for n, d in (("b", before), ("a", after))]
    south = [write_raster(tmp_path / f"{n}_up.tif", d[:, ::-1].copy(), UTM48N, bottom_up(t, 60))
             for n, d in (("b", before), ("a", after))]
    with AlignedPair(*north) as ref, AlignedPair(*south) as up:
        assert up.grid == ref.grid  # was refused: "do not overlap"
        got, want = up.read(Window(0, 0, 60, 60)), ref.read(Window(0, 0, 60, 60))
    np.testing.assert_array_equal(got.before, want.before)
    np.testing.assert_array_equal(got.after, want.after)
    assert got.valid.all()


def test_a_rotated_before_gives_a_north_up_grid_of_its_pixel_size(tmp_path: Path) -> None:
    t = utm_transform()
    centre = t * (30, 30)
    rotated = Affine.translation(*centre) * Affine.rotation(3.0) * Affine.translation(-centre[0], -centre[1]) * t
    before = write_raster(tmp_path / "rot.tif", textured_scene(60, 60, seed=1), UTM48N, rotated)
    after = write_raster(tmp_path / "after.tif", textured_scene(60, 60, seed=2), UTM48N, t)
    with AlignedPair(before, after) as pair:
        grid = pair.grid
        w = pair.read(Window(0, 0, grid.width, grid.height))
    assert (grid.transform.a, grid.transform.b, grid.transform.d, grid.transform.e) == pytest.approx((10, 0, 0, -10))
    assert grid.pixel_size_m() == pytest.approx(10.0)
    assert 0.8 < w.valid.mean() < 1.0  # the rotated corners of BEFORE hold no data


def gcp_only(tmp_path: Path, name: str, data: np.ndarray, transform: Affine, crs: object = UTM48N) -> Path:
    """``data`` located by nine ground control points of ``transform`` instead of a geotransform."""
    h, w = data.shape[1:]
    gcps = [GroundControlPoint(row=r, col=c, x=(transform * (c, r))[0], y=(transform * (c, r))[1])
            for r in (0, h / 2, h) for c in (0, w / 2, w)]
    path = tmp_path / name
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=data.shape[0], dtype=data.dtype) as ds:
        ds.write(data)
        ds.gcps = (gcps, crs)
    return path


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_a_raster_located_by_gcps_is_warped_through_them(tmp_path: Path) -> None:
    before, after = textured_scene(60, 60, seed=1), textured_scene(60, 60, seed=2)
    t = utm_transform()
    ref = [write_raster(tmp_path / f"{n}.tif", d, UTM48N, t) for n, d in (("b", before), ("a", after))]
    gcp_after = gcp_only(tmp_path, "a_gcp.tif", after, t)
    with AlignedPair(ref[0], ref[1]) as want, AlignedPair(ref[0], gcp_after) as got:  # was: "no CRS"
        assert got.grid == want.grid
        np.testing.assert_allclose(got.read(Window(0, 0, 60, 60)).after, want.read(Window(0, 0, 60, 60)).after)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_rasters_that_cannot_be_located_name_the_fix(tmp_path: Path) -> None:
    scene = textured_scene(30, 30)
    ok = write_raster(tmp_path / "ok.tif", scene, UTM48N, utm_transform())
    with rasterio.open(tmp_path / "rpc.tif", "w", driver="GTiff", width=30, height=30, count=4, dtype="uint16") as ds:
        ds.write(scene)
        ds.rpcs = RPC(height_off=0, height_scale=1, lat_off=10.8, lat_scale=0.1, line_den_coeff=[1] + [0] * 19,
                      line_num_coeff=[0, 0, 1] + [0] * 17, line_off=15, line_scale=15, long_off=106.7,
                      long_scale=0.1, samp_den_coeff=[1] + [0] * 19, samp_num_coeff=[0, 1] + [0] * 18,
                      samp_off=15, samp_scale=15)
    with pytest.raises(IncompatibleScenesError, match="AFTER scene is located only by RPCs.*gdalwarp -rpc"):
        AlignedPair(ok, tmp_path / "rpc.tif")
    with pytest.raises(IncompatibleScenesError, match="AFTER scene has no CRS"):
        AlignedPair(ok, write_raster(tmp_path / "nocrs.tif", scene, None, utm_transform()))


def test_a_huge_sparse_mosaic_is_worked_on_where_its_sources_are(tmp_path: Path) -> None:
    before = write_raster(tmp_path / "b.tif", textured_scene(40, 50, seed=1), UTM48N, utm_transform())
    shifted = utm_transform(origin=(ORIGIN[0] + 100.0, ORIGIN[1]))  # 10 pixels east: they share 40 columns
    after = write_raster(tmp_path / "a.tif", textured_scene(40, 50, seed=2), UTM48N, shifted)
    vrts = [write_vrt(tmp_path / f"{n}.vrt", [(src, 150_000, 120_000)], 200_000)
            for n, src in (("b", before), ("a", after))]
    with rasterio.open(vrts[1]) as ds:
        assert data_window(ds) == Window(150_000, 120_000, 50, 40)
    with AlignedPair(*vrts) as pair:  # 200 000² pixels each: a traceback or an hour before
        assert (pair.grid.width, pair.grid.height) == (40, 40)
        assert pair.grid.transform == shifted
        assert pair.read(Window(0, 0, 40, 40)).valid.all()
