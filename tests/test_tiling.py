"""rs.tiling: blend weights sum to one everywhere; reads stay inside the scene."""

from __future__ import annotations

import numpy as np
import pytest

from changewatch.rs.tiling import TileGrid, ramp


@pytest.mark.parametrize("height,width,tile,overlap", [
    (96, 96, 32, 8), (100, 73, 32, 10), (257, 513, 256, 64), (20, 30, 64, 16), (64, 64, 64, 0), (65, 64, 64, 63),
])
def test_blend_weights_of_every_pixel_sum_to_one(height: int, width: int, tile: int, overlap: int) -> None:
    total = np.zeros((height, width))
    grid = TileGrid(height, width, tile, overlap)
    tiles = list(grid)
    assert len(tiles) == len(grid)
    for t in tiles:
        assert t.read.row_off >= 0 and t.read.col_off >= 0
        assert t.read.row_off + t.read.height <= height and t.read.col_off + t.read.width <= width
        w = grid.weights(t)
        assert w.shape == (t.read.height, t.read.width) and (w > 0).all()
        total[t.slices] += w
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


def test_ramp_is_smooth_and_complementary() -> None:
    profile = ramp(96, 32)
    assert profile[0] > 0 and (profile[32:64] == 1).all()
    assert (np.diff(profile[:32]) > 0).all() and (np.diff(profile[64:]) < 0).all()
    np.testing.assert_allclose(profile[64:] + profile[:32], 1.0)  # a neighbour 64 px on rises as this one falls
    assert (ramp(10, 0) == 1).all()


def test_interior_tile_weight_is_one_in_its_middle() -> None:
    grid = TileGrid(224, 224, 96, 32)  # starts 0, 64, 128
    middle = list(grid)[4]
    assert (middle.read.col_off, middle.read.row_off) == (64, 64)
    w = grid.weights(middle)
    np.testing.assert_allclose(w[32:64, 32:64], 1.0)
    assert w[0, 0] < 0.01 and w[0, 48] < 0.05


def test_scene_smaller_than_tile_is_one_tile() -> None:
    tiles = list(TileGrid(20, 30, 256, 64))
    assert len(tiles) == 1 and (tiles[0].read.height, tiles[0].read.width) == (20, 30)


@pytest.mark.parametrize("tile,overlap", [(0, 0), (32, 32), (32, -1)])
def test_rejects_bad_geometry(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        TileGrid(100, 100, tile, overlap)
