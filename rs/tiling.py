"""Stage 2 — tiling: a grid of overlapping windows over the common grid, and their blend weights.

Neighbouring tiles share ``overlap`` pixels. Predictions near a tile's border see less context and
are worse, so where tiles overlap their predictions are blended with a smooth weight window: inside
a tile the weight is 1, and across each overlap it falls as cos² while the neighbour's rises as
sin², so the weights of any pixel sum to one and the stitched raster has no seams. Weights are
separable (a row profile × a column profile), so their sum over the whole grid is known in closed
form and each tile's contribution can be normalised on its own: adding the normalised, weighted
tiles in any order gives the blended raster, with no whole-scene weight accumulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from rasterio.windows import Window


@dataclass(frozen=True)
class Tile:
    """A window of the common grid (pixels) that one forward pass of the network sees."""

    read: Window

    @property
    def slices(self) -> tuple[slice, slice]:
        """(row, col) slices of this tile in a whole-grid array."""
        return cast("tuple[slice, slice]", self.read.toslices())


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride`` pixels, the last one flush with the edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def ramp(size: int, overlap: int) -> np.ndarray:
    """1-D blend profile of one tile side (float64, length ``size``): sin² rise, 1 in the middle, cos² fall.

    Rises as sin² over the first ``overlap`` pixels, 1 in the middle, falls as cos² over the last
    ``overlap`` pixels. Never 0, so a pixel covered by a single tile's margin (at the scene edge)
    keeps that tile's prediction.
    """
    profile = np.ones(size)
    n = min(overlap, size // 2)
    if n > 0:
        rise = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
        profile[:n] = rise
        profile[size - n:] = rise[::-1]
    return profile


@dataclass(frozen=True)
class TileGrid:
    """Overlapping tiles over a ``height`` × ``width`` pixel grid.

    ``tile`` is the side of a read window in pixels, ``overlap`` the pixels shared by two
    neighbouring windows (0 ≤ overlap < tile; else ValueError). Scenes smaller than ``tile`` get
    one tile. Iteration is row-major; ``len`` is the number of tiles.
    """

    height: int
    width: int
    tile: int
    overlap: int
    _row_starts: list[int] = field(init=False, repr=False, compare=False)
    _col_starts: list[int] = field(init=False, repr=False, compare=False)
    _row_cover: np.ndarray = field(init=False, repr=False, compare=False)
    _col_cover: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tile <= 0 or not 0 <= self.overlap < self.tile:
            raise ValueError(f"need tile > 0 and 0 <= overlap < tile, got tile={self.tile}, overlap={self.overlap}")
        stride = self.tile - self.overlap
        object.__setattr__(self, "_row_starts", _starts(self.height, self.tile, stride))
        object.__setattr__(self, "_col_starts", _starts(self.width, self.tile, stride))
        object.__setattr__(self, "_row_cover", self._coverage(self.height, self._row_starts))
        object.__setattr__(self, "_col_cover", self._coverage(self.width, self._col_starts))

    def __iter__(self) -> Iterator[Tile]:
        th, tw = min(self.tile, self.height), min(self.tile, self.width)
        for r in self._row_starts:
            for c in self._col_starts:
                yield Tile(Window(c, r, tw, th))

    def __len__(self) -> int:
        return len(self._row_starts) * len(self._col_starts)

    def _coverage(self, length: int, starts: list[int]) -> np.ndarray:
        """Sum of the 1-D profiles of every tile along one axis (length ``length``, all > 0)."""
        size = min(self.tile, length)
        total = np.zeros(length)
        profile = ramp(size, self.overlap)
        for s in starts:
            total[s:s + size] += profile
        return total

    def weights(self, tile: Tile) -> np.ndarray:
        """float32 (rows, cols) weights of ``tile``, normalised to sum to 1 over the tiles covering a pixel.

        Σ weights × prediction over the tiles is the blended raster.
        """
        rows, cols = tile.slices
        r_profile = ramp(rows.stop - rows.start, self.overlap) / self._row_cover[rows]
        c_profile = ramp(cols.stop - cols.start, self.overlap) / self._col_cover[cols]
        return np.outer(r_profile, c_profile).astype(np.float32)
