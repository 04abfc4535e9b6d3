"""Per-scene, per-band radiometric normalisation shared by training and inference.

Each date is standardised on its own statistics: ``(x - median) / (p98 - p2)``, clipped to
[-3, 3]. Normalising each date separately removes most of the global radiometric difference
between acquisitions (sun angle, atmosphere, sensor gain), and because the statistics come
from the scene itself the same model accepts Sentinel-2 reflectance × 10 000 or 8-bit RGB
without retuning. Statistics are taken over pixels valid on *both* dates, so the two dates are
described by the same ground.

A file cut from a larger scene (a ``labels`` site) records the statistics of the scene it was cut
from in its tag ``STATS_TAG``; a pair whose two files both carry it is normalised with those
(``recorded_stats``), so the model sees the cut-out exactly as the run that scored it did.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.errors
from rasterio.windows import Window

from changewatch.rs.align import AlignedPair
from changewatch.rs.errors import IncompatibleScenesError

CLIP = 3.0
STATS_TAG = "CHANGEWATCH_BAND_STATS"  # JSON {"p2": [...], "p50": [...], "p98": [...]}, one value per band of the file
METHOD = "per-scene per-band (x - p50) / (p98 - p2), clipped to [-3, 3], on pixels valid on both dates"


@dataclass(frozen=True)
class BandStats:
    """Per-band 2nd, 50th and 98th percentiles of one date, in the file's units."""

    p2: np.ndarray
    p50: np.ndarray
    p98: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-friendly form for provenance records."""
        return {"p2": self.p2.tolist(), "p50": self.p50.tolist(), "p98": self.p98.tolist()}

    @classmethod
    def from_dict(cls, record: dict[str, list[float]]) -> BandStats:
        """The statistics ``to_dict`` wrote. Raises KeyError or ValueError when a percentile is missing or ragged."""
        p2, p50, p98 = (np.asarray(record[k], np.float32) for k in ("p2", "p50", "p98"))
        if not p2.ndim == 1 or not p2.shape == p50.shape == p98.shape:
            raise ValueError("band statistics of unequal lengths")
        return cls(p2, p50, p98)

    def select(self, bands: list[int]) -> BandStats:
        """The statistics of ``bands`` (1-based band indexes of the file they were recorded for)."""
        index = [b - 1 for b in bands]
        return BandStats(self.p2[index], self.p50[index], self.p98[index])


def band_stats(pixels: np.ndarray) -> BandStats:
    """Percentiles of a (bands, n) array of valid pixels. Raises ValueError when n == 0."""
    if pixels.shape[1] == 0:
        raise ValueError("no valid pixels to compute band statistics from")
    p2, p50, p98 = np.percentile(pixels, [2.0, 50.0, 98.0], axis=1)
    return BandStats(p2.astype(np.float32), p50.astype(np.float32), p98.astype(np.float32))


def normalise(image: np.ndarray, stats: BandStats) -> np.ndarray:
    """Standardise a (bands, rows, cols) image with its date's statistics → float32 in [-3, 3]."""
    scale = np.maximum(stats.p98 - stats.p2, 1e-6)[:, None, None]
    out: npt.NDArray[np.float32] = (image.astype(np.float32) - stats.p50[:, None, None]) / scale
    return np.clip(out, -CLIP, CLIP, out=out)


def pair_stats_from_arrays(
    before: np.ndarray, after: np.ndarray, valid: np.ndarray
) -> tuple[BandStats, BandStats]:
    """Statistics of both dates over the pixels valid on both (arrays as in PairWindow)."""
    return band_stats(before[:, valid]), band_stats(after[:, valid])


MIN_SAMPLE_PX = 4096  # fewer valid pixels in the sample: the scene is scanned whole
MAX_SCAN_PX = 2_097_152  # at most this many pixels kept per date from a whole-scene scan


def _valid_pixels(pair: AlignedPair, windows: list[Window], stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(bands, n) pixels of both dates valid on both, from ``windows``.

    Every ``stride``-th valid pixel of each window (memory: one window plus what is kept).
    """
    before_px, after_px = [np.empty((pair.band_count, 0), np.float32)], [np.empty((pair.band_count, 0), np.float32)]
    for window in windows:
        w = pair.read(window)
        keep = np.flatnonzero(w.valid)[::stride]
        before_px.append(w.before.reshape(w.before.shape[0], -1)[:, keep])
        after_px.append(w.after.reshape(w.after.shape[0], -1)[:, keep])
    return np.concatenate(before_px, axis=1), np.concatenate(after_px, axis=1)


def _tagged(path: str, bands: list[int]) -> BandStats | None:
    """The statistics recorded in ``path``'s ``STATS_TAG`` for ``bands``; None when absent or unreadable."""
    try:
        with rasterio.open(path) as ds:
            text, count = ds.tags().get(STATS_TAG), ds.count
    except rasterio.errors.RasterioIOError:  # not a file GDAL opens by that name (the pair opened it otherwise)
        return None
    if text is None:
        return None
    try:
        stats = BandStats.from_dict(json.loads(text))
    except (KeyError, ValueError, TypeError):
        return None
    return stats.select(bands) if len(stats.p2) == count and max(bands) <= count else None


def recorded_stats(pair: AlignedPair) -> tuple[BandStats, BandStats] | None:
    """The statistics both files of the pair record (``STATS_TAG``), for the bands compared; else None.

    Written by ``labels`` into each site's ``before.tif`` and ``after.tif``: the statistics the run
    normalised its whole scenes with. Only used when both dates carry them, so a pair is never
    normalised half on recorded and half on measured statistics.
    """
    choice = pair.band_choice
    before = _tagged(str(pair.before_path), list(choice.before))
    after = _tagged(str(pair.after_path), list(choice.after))
    return (before, after) if before is not None and after is not None else None


def scene_stats(pair: AlignedPair) -> tuple[BandStats, BandStats]:
    """Statistics of both dates of an aligned pair, from a bounded sample of windows.

    When both files record the statistics of the scenes they were cut from (``recorded_stats``),
    those are returned instead.

    Memory: at most about 2 Mpx per date (see ``AlignedPair.sample_windows``). When the sample
    holds fewer than ``MIN_SAMPLE_PX`` valid pixels (a small valid block in a large, mostly empty
    mosaic), the whole grid is read block by block and every k-th valid pixel kept (at most
    ``MAX_SCAN_PX``). Raises IncompatibleScenesError when no pixel is valid on both dates.
    """
    recorded = recorded_stats(pair)
    if recorded is not None:
        return recorded
    windows = pair.sample_windows()
    before, after = _valid_pixels(pair, windows)
    if before.shape[1] < MIN_SAMPLE_PX and windows != [Window(0, 0, pair.grid.width, pair.grid.height)]:
        stride = max(1, math.ceil(pair.grid.width * pair.grid.height / MAX_SCAN_PX))
        before, after = _valid_pixels(pair, pair.scan_windows(), stride)
    if before.shape[1] == 0:
        raise IncompatibleScenesError(
            f"BEFORE ({pair.before_path.name}) and AFTER ({pair.after_path.name}) have no valid pixels in common "
            "(their footprints meet, but nodata or missing coverage leaves nothing to compare)")
    return band_stats(before), band_stats(after)
