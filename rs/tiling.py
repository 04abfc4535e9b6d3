"""Stage 2 — tiling: a grid of overlapping windows over the common grid.

Each tile is read with ``overlap`` pixels of context shared with its neighbours, but writes only
its *core*: the part of the tile nearer to its own centre than to a neighbour's. Cores partition
the scene exactly, so the stitched probability raster is written window by window, with no
whole-scene accumulator, and every pixel is predicted away from a tile border wherever a
neighbour exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rasterio.windows import Window


@dataclass(frozen=True)
class Tile:
    """A window to read (``read``) and the part of it this tile writes (``core``), in scene pixels."""

    read: Window
    core: Window

    @property
    def core_in_tile(self) -> tuple[slice, slice]:
        """(row, col) slices selecting the core inside an array read from ``read``."""
        r0 = int(self.core.row_off - self.read.row_off)
        c0 = int(self.core.col_off - self.read.col_off)
        return slice(r0, r0 + int(self.core.height)), slice(c0, c0 + int(self.core.width))


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride`` pixels, the last one flush with the edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _core_bounds(starts: list[int], length: int, tile: int) -> list[tuple[int, int]]:
    """Core [start, stop) of each tile: split each overlap at its middle."""
    size = min(tile, length)
    cuts = [0] + [(nxt + cur + size) // 2 for cur, nxt in zip(starts, starts[1:])] + [length]
    return list(zip(cuts, cuts[1:]))


@dataclass(frozen=True)
class TileGrid:
    """Overlapping tiles over a ``height`` × ``width`` pixel grid.

    ``tile`` is the side of a read window in pixels, ``overlap`` the pixels shared by two
    neighbouring windows (0 ≤ overlap < tile). Scenes smaller than ``tile`` get one tile.
    """

    height: int
    width: int
    tile: int = 256
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.tile <= 0 or not 0 <= self.overlap < self.tile:
            raise ValueError(f"need tile > 0 and 0 <= overlap < tile, got tile={self.tile}, overlap={self.overlap}")

    def __iter__(self) -> Iterator[Tile]:
        stride = self.tile - self.overlap
        rows = _starts(self.height, self.tile, stride)
        cols = _starts(self.width, self.tile, stride)
        row_cores = _core_bounds(rows, self.height, self.tile)
        col_cores = _core_bounds(cols, self.width, self.tile)
        th, tw = min(self.tile, self.height), min(self.tile, self.width)
        for r, (cr0, cr1) in zip(rows, row_cores):
            for c, (cc0, cc1) in zip(cols, col_cores):
                yield Tile(Window(c, r, tw, th), Window(cc0, cr0, cc1 - cc0, cr1 - cr0))

    def __len__(self) -> int:
        stride = self.tile - self.overlap
        return len(_starts(self.height, self.tile, stride)) * len(_starts(self.width, self.tile, stride))
