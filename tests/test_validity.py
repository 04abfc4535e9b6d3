"""rs.validity through rs.align: pixels a file leaves invalid without saying so (NaN, 0 fill, alpha
bands) are never compared, and what was decided is recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from changewatch.models.spec import choose_model
from changewatch.rs.align import AlignedPair
from changewatch.rs.config import PairOptions
from changewatch.rs.normalize import scene_stats
from changewatch.rs.prepare import prepare_pair
from changewatch.rs.validity import sample_windows
from tests.data import ORIGIN, UTM48N, textured_scene, utm_transform, write_raster

WHOLE = Window(0, 0, 96, 96)


def float_pair(tmp_path: Path, size: int = 96, nodata: float | None = None) -> tuple[Path, Path, np.ndarray]:
    """Float reflectance (0–1) with a NaN 'cloud' in each date, no nodata tag unless ``nodata``; and
    the validity expected on both (False in either cloud)."""
    scene = textured_scene(size, size, seed=1).astype(np.float32) / 10000
    before, after = scene.copy(), scene.copy()
    before[:, 0:20, size - 20:] = np.nan
    after[:, size - 16:, 0:12] = np.nan
    expected = np.ones((size, size), bool)
    expected[0:20, size - 20:] = expected[size - 16:, 0:12] = False
    return (write_raster(tmp_path / "before.tif", before, UTM48N, utm_transform(), nodata),
            write_raster(tmp_path / "after.tif", after, UTM48N, utm_transform(), nodata), expected)


def test_nan_without_a_nodata_tag_is_invalid_and_statistics_stay_finite(tmp_path: Path) -> None:
    before, after, expected = float_pair(tmp_path)
    with AlignedPair(before, after) as pair:
        w = pair.read(WHOLE)
        stats = scene_stats(pair)
        record = pair.provenance()["validity"]
    np.testing.assert_array_equal(w.valid, expected)
    assert all(np.isfinite(s.p2).all() and np.isfinite(s.p98).all() for s in stats)
    assert record["before"]["declared_nodata"] is None and record["before"]["nan_is_invalid"]
    assert record["before"]["sample"] == {"pixels": 96 * 96, "nan": 20 * 20, "all_bands_zero": 0}
    assert record["after"]["sample"]["nan"] == 16 * 12


def test_nan_declared_as_nodata_gives_the_same_validity(tmp_path: Path) -> None:
    before, after, expected = float_pair(tmp_path, nodata=float("nan"))
    with AlignedPair(before, after) as pair:
        np.testing.assert_array_equal(pair.read(WHOLE).valid, expected)
        assert pair.provenance()["validity"]["after"]["declared_nodata"] == "nan"


def test_nan_under_a_files_own_mask_is_still_invalid(tmp_path: Path) -> None:
    before, after, expected = float_pair(tmp_path)
    import rasterio

    with rasterio.open(after, "r+") as ds:  # the file's mask marks a strip, not the NaN cloud
        mask = np.full((96, 96), 255, np.uint8)
        mask[:, :4] = 0
        ds.write_mask(mask)
    expected[:, :4] = False
    with AlignedPair(before, after) as pair:
        assert pair.validity[1].internal_mask and not pair.validity[1].zero_fill
        np.testing.assert_array_equal(pair.read(WHOLE).valid, expected)


def test_co_registration_measures_around_nan(tmp_path: Path) -> None:
    before, after, _ = float_pair(tmp_path, size=300)  # clouds cover < 1 % of each 256 px window
    found = prepare_pair(before, after, PairOptions()).coregistration
    assert found is not None and found.windows > 0 and not found.applied  # phase correlation raised on NaN before


def zero_wedge(size: int = 96) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size]
    return rows > size * 0.45 + cols * 0.9  # the bottom-left triangle, as at a Sentinel-2 swath edge


def test_zero_fill_without_a_nodata_tag_is_invalid(tmp_path: Path) -> None:
    scene = textured_scene(96, 96, seed=2)
    after = scene.copy()
    after[:, zero_wedge()] = 0
    after[3, 5, 5] = 0  # one band 0 is a dark pixel, not fill
    write_raster(tmp_path / "before.tif", scene, UTM48N, utm_transform())
    write_raster(tmp_path / "after.tif", after, UTM48N, utm_transform())
    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif") as pair:
        np.testing.assert_array_equal(pair.read(WHOLE).valid, ~zero_wedge())
        assert pair.provenance()["validity"]["after"]["zero_fill"] is True
    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif", zero_is_valid=True) as pair:
        assert pair.read(WHOLE).valid.all()
        assert pair.provenance()["validity"]["after"]["zero_rule"].endswith("(--zero-is-valid)")


def test_a_declared_nodata_is_honoured_instead_of_the_zero_rule(tmp_path: Path) -> None:
    scene = textured_scene(96, 96, seed=2)
    after = scene.copy()
    after[:, :10, :] = 0  # data: the file says its nodata is 65535
    after[:, -10:, :] = 65535
    write_raster(tmp_path / "before.tif", scene, UTM48N, utm_transform())
    write_raster(tmp_path / "after.tif", after, UTM48N, utm_transform(), nodata=65535)
    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif") as pair:
        valid = pair.read(WHOLE).valid
        assert pair.validity[1].zero_fill is False and pair.validity[0].zero_fill is True
    assert valid[:10].all() and not valid[-10:].any() and valid[10:-10].all()


def test_warped_zero_fill_never_blends_into_valid_pixels(tmp_path: Path) -> None:
    before = textured_scene(96, 96, seed=3)
    after = np.full((4, 96, 96), 1000, np.uint16)
    after[:, zero_wedge()] = 0
    write_raster(tmp_path / "before.tif", before, UTM48N, utm_transform())
    half = utm_transform(origin=(ORIGIN[0] + 5.0, ORIGIN[1] - 5.0))  # half a pixel off: AFTER is warped
    write_raster(tmp_path / "after.tif", after, UTM48N, half)
    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif") as pair:
        w = pair.read(Window(0, 0, pair.grid.width, pair.grid.height))
    assert (w.after[:, w.valid] == 1000).all()  # bilinear values blended with the 0 fill are all invalid
    assert 0.75 < w.valid.mean() < (~zero_wedge()).mean()  # the wedge and a rim of at most 2 pixels


def rgba(tmp_path: Path, name: str, seed: int, frame: int, origin: tuple[float, float] = ORIGIN) -> Path:
    """An 8-bit RGB + alpha GeoTIFF as GIS and tile tools export: alpha 0 (and RGB 0) in a frame."""
    rgb = (textured_scene(96, 96, bands=3, seed=seed) // 16).astype(np.uint8)
    alpha = np.full((96, 96), 255, np.uint8)
    alpha[:frame] = alpha[-frame:] = alpha[:, :frame] = alpha[:, -frame:] = 0
    rgb[:, alpha == 0] = 0
    return write_raster(tmp_path / name, np.concatenate([rgb, alpha[None]]), UTM48N, utm_transform(origin=origin),
                        photometric="RGB", alpha="YES")


@pytest.mark.parametrize("origin", [ORIGIN, (ORIGIN[0] + 5.0, ORIGIN[1] - 5.0)])  # on BEFORE's grid, or warped
def test_an_alpha_band_is_a_mask_and_the_model_is_chosen_from_the_colour_bands(tmp_path: Path,
                                                                                origin: tuple[float, float]) -> None:
    before = rgba(tmp_path, "before.tif", 1, frame=8)
    after = rgba(tmp_path, "after.tif", 2, frame=16, origin=origin)
    with AlignedPair(before, after) as pair:
        w = pair.read(Window(0, 0, 96, 96))
        record = pair.provenance()
        assert pair.band_count == 3
        assert choose_model(None, pair.band_count, pair.grid.pixel_size_m()).path.stem == "changewatch-rgb"
    assert not w.valid[:16].any() and not w.valid[-16:].any() and not w.valid[:, -16:].any()  # AFTER's frame
    assert w.valid[18:-18, 18:-18].all()
    assert record["validity"]["after"]["alpha_band_as_mask"] == 4 and record["validity"]["after"]["zero_fill"] is False
    assert [b["index"] for b in record["bands_compared"]["after"]] == [1, 2, 3]
    assert [b["name"] for b in record["bands_compared"]["after"]] == ["red", "green", "blue"]


def test_sample_windows_are_bounded_and_do_not_overlap() -> None:
    assert sample_windows(96, 96) == [Window(0, 0, 96, 96)]
    windows = sample_windows(5000, 300)
    assert len(windows) == 6 * 2 and {(w.width, w.height) for w in windows} == {(128, 128)}
    rows = sorted({w.row_off for w in windows})
    assert all(b - a >= 128 for a, b in zip(rows, rows[1:], strict=False))
