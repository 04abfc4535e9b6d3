"""rs.tiling: cores partition the grid exactly; reads stay inside the scene."""

from __future__ import annotations

import numpy as np
import pytest

from rs.tiling import TileGrid


@pytest.mark.parametrize("height,width,tile,overlap", [
    (96, 96, 32, 8), (100, 73, 32, 10), (257, 513, 256, 64), (20, 30, 64, 16), (64, 64, 64, 0), (65, 64, 64, 63),
])
def test_cores_cover_every_pixel_once(height: int, width: int, tile: int, overlap: int) -> None:
    count = np.zeros((height, width), int)
    grid = TileGrid(height, width, tile, overlap)
    tiles = list(grid)
    assert len(tiles) == len(grid)
    for t in tiles:
        assert t.read.row_off >= 0 and t.read.col_off >= 0
        assert t.read.row_off + t.read.height <= height and t.read.col_off + t.read.width <= width
        rows, cols = t.core_in_tile
        assert 0 <= rows.start < rows.stop <= t.read.height and 0 <= cols.start < cols.stop <= t.read.width
        count[int(t.core.row_off):int(t.core.row_off + t.core.height),
              int(t.core.col_off):int(t.core.col_off + t.core.width)] += 1
    assert (count == 1).all()


def test_interior_cores_keep_half_the_overlap_as_margin() -> None:
    tiles = list(TileGrid(224, 224, 96, 32))  # starts 0, 64, 128
    middle = tiles[4]
    assert (middle.read.col_off, middle.read.row_off) == (64, 64)
    rows, cols = middle.core_in_tile
    assert (rows.start, rows.stop, cols.start, cols.stop) == (16, 80, 16, 80)


def test_scene_smaller_than_tile_is_one_tile() -> None:
    tiles = list(TileGrid(20, 30, 256, 64))
    assert len(tiles) == 1 and (tiles[0].read.height, tiles[0].read.width) == (20, 30)


@pytest.mark.parametrize("tile,overlap", [(0, 0), (32, 32), (32, -1)])
def test_rejects_bad_geometry(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        TileGrid(100, 100, tile, overlap)
