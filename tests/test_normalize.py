"""rs.normalize: per-date percentile standardisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from changewatch.rs.align import AlignedPair
from changewatch.rs.normalize import CLIP, band_stats, normalise, scene_stats
from tests.data import UTM48N, textured_scene, utm_transform, write_raster


def test_band_stats_are_percentiles() -> None:
    pixels = np.tile(np.arange(101, dtype=np.float32), (2, 1))  # 0..100
    pixels[1] *= 10
    s = band_stats(pixels)
    np.testing.assert_allclose(s.p2, [2, 20])
    np.testing.assert_allclose(s.p50, [50, 500])
    np.testing.assert_allclose(s.p98, [98, 980])


def test_normalise_centres_scales_and_clips() -> None:
    s = band_stats(np.arange(101, dtype=np.float32)[None])
    img = np.array([[[50.0, 98.0, 1e6]]], np.float32)
    out = normalise(img, s)
    np.testing.assert_allclose(out[0, 0, :2], [0.0, 48 / 96], atol=1e-6)
    assert out[0, 0, 2] == CLIP


def test_gain_change_between_dates_is_normalised_away() -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(500, 3000, size=(3, 20, 20)).astype(np.float32)
    brighter = img * 1.7 + 200
    a = normalise(img, band_stats(img.reshape(3, -1)))
    b = normalise(brighter, band_stats(brighter.reshape(3, -1)))
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_no_valid_pixels() -> None:
    with pytest.raises(ValueError):
        band_stats(np.zeros((4, 0), np.float32))


def test_large_scenes_are_sampled_evenly(pair: tuple[Path, Path]) -> None:
    with AlignedPair(*pair) as p:
        assert p.sample_windows() == [Window(0, 0, 96, 96)]  # small scenes: all of it
        windows = p.sample_windows(whole_up_to=1000, grid_side=3, sample_size=16)
    assert len(windows) == 9 and {(w.width, w.height) for w in windows} == {(16, 16)}
    assert {w.col_off for w in windows} == {0, 40, 80} and {w.row_off for w in windows} == {0, 40, 80}


def test_a_small_valid_block_the_sample_misses_is_found_by_a_whole_scan(tmp_path: Path) -> None:
    # 2000² pixels of 0 fill (nodata by the zero rule) around one 40² block that lies between the
    # 6×6 sample windows: the statistics come from that block, not "no valid pixels in common".
    block = textured_scene(40, 40, bands=1, seed=4)
    data = np.zeros((1, 2000, 2000), np.uint16)
    data[:, 200:240, 200:240] = block
    for name in ("before.tif", "after.tif"):
        write_raster(tmp_path / name, data, UTM48N, utm_transform(), compress="deflate", tiled=True)
    with AlignedPair(tmp_path / "before.tif", tmp_path / "after.tif") as pair:
        assert not any(pair.read(w).valid.any() for w in pair.sample_windows())
        before, after = scene_stats(pair)
    np.testing.assert_allclose(before.p50, np.percentile(block, 50), rtol=0.01)
    np.testing.assert_allclose(after.p98, np.percentile(block, 98), rtol=0.01)
