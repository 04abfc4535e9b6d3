"""Stage 1b — co-register: measure and remove AFTER's residual shift against BEFORE.

Georeferencing aligns two dates only as well as each was orthorectified: Sentinel-2 pairs are
commonly off by up to a pixel (four of the ten OSCD training cities by about one, see
bench/RESULTS.md), and very-high-resolution images from different passes or sensors by metres.
A change network then sees every edge as change. ``correction`` measures the shift by
cross-correlation (scikit-image's upsampled DFT) of Hann-tapered windows spread over the common
grid — phase normalisation and untapered edges both biased sub-pixel estimates toward whole
pixels (bench/RESULTS.md) — and keeps it only when the windows agree; ``rs.prepare`` then opens
the pair with AFTER translated by it. Only a translation is corrected: rotation, scale and
terrain-dependent distortions need orthorectification upstream. Cloud masks are not moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from changewatch.rs.align import AlignedPair, Shift
from changewatch.rs.grid import Grid


@dataclass(frozen=True)
class CoregConfig:
    """How to measure the shift: windows on a grid over the common grid, and when their median is applied.

    Windows of ``window`` pixels on a ``grid_side`` × ``grid_side`` layout over the common grid; a
    window counts when ≥ ``min_valid`` of its pixels are valid on both dates and its shift is
    within ``max_shift_px``. The median of ≥ ``min_windows`` such shifts is applied when the
    windows agree within ``max_spread_px`` (median absolute deviation) and it is at least
    ``min_shift_px`` long (pixels of the common grid).
    """

    window: int = 256
    grid_side: int = 4
    min_valid: float = 0.9
    max_shift_px: float = 3.0
    min_windows: int = 3
    max_spread_px: float = 0.5
    min_shift_px: float = 0.25
    upsample: int = 20  # sub-pixel precision: 1/upsample pixel


@dataclass(frozen=True)
class Coregistration:
    """What was measured: AFTER's correction (pixels of the common grid), how many windows agreed, whether applied.

    The correction is rows down, cols right; moving AFTER by it aligns it with BEFORE.
    """

    rows: float
    cols: float
    windows: int
    applied: bool

    def shift(self, grid: Grid) -> Shift | None:
        """The translation of AFTER that applies this correction on ``grid``; None when not applied."""
        return Shift.from_pixels(self.rows, self.cols, grid) if self.applied else None

    def to_dict(self) -> dict[str, object]:
        """JSON form for summaries."""
        return {"shift_px": [round(self.rows, 3), round(self.cols, 3)], "windows": self.windows,
                "applied": self.applied}


def _grey(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The mean of the bands, standardised on valid pixels, tapered by a Hann window.

    Invalid pixels are set to 0 (the mean).
    """
    from skimage.filters import window as taper  # scikit-image only once a shift is measured (measure_shift)

    grey = data.mean(axis=0)
    v = grey[valid]
    standardised = np.where(valid, (grey - v.mean()) / (v.std() + 1e-6), 0.0)
    tapered: npt.NDArray[np.floating[Any]] = standardised * taper("hann", grey.shape)
    return tapered


def measure_shift(pair: AlignedPair, config: CoregConfig = CoregConfig()) -> Coregistration:  # noqa: B008 (frozen)
    """AFTER's correction on ``pair``'s grid, estimated window by window (memory: one window).

    Returns a Coregistration with ``applied`` False (and the median shift, or zeros when too few
    windows could be measured) when the windows disagree, too few are usable or the shift is
    below ``min_shift_px``.
    """
    # scikit-image here, not at import: preparing a pair without co-registration, and every error
    # raised before it, do not load it
    from skimage.registration import phase_cross_correlation

    windows = pair.sample_windows(whole_up_to=0, grid_side=config.grid_side, sample_size=config.window)
    shifts = []
    for window in dict.fromkeys(windows):  # small grids repeat windows
        w = pair.read(window)
        if w.valid.mean() < config.min_valid:
            continue
        shift, _, _ = phase_cross_correlation(_grey(w.before, w.valid), _grey(w.after, w.valid),
                                              upsample_factor=config.upsample, normalization=None)
        if np.hypot(*shift) <= config.max_shift_px:
            shifts.append(shift)
    if len(shifts) < config.min_windows:
        return Coregistration(0.0, 0.0, len(shifts), False)
    stack = np.array(shifts)
    rows, cols = np.median(stack, axis=0)
    spread = np.median(np.hypot(*(stack - (rows, cols)).T))
    agree = spread <= config.max_spread_px and np.hypot(rows, cols) >= config.min_shift_px
    return Coregistration(float(rows), float(cols), len(shifts), bool(agree))


def correction(pair: AlignedPair, config: CoregConfig = CoregConfig()) -> Coregistration:  # noqa: B008 (frozen)
    """AFTER's correction on ``pair``'s grid (``measure_shift``).

    For plain images (no CRS) and pairs already shifted none is measured (``windows`` 0, not
    applied). A file that cannot be decoded raises InputFileError. ``Coregistration.shift`` gives
    the translation to open the pair with (``rs.prepare`` does).
    """
    if pair.plain or pair.after_shift is not None:
        return Coregistration(0.0, 0.0, 0, False)
    return measure_shift(pair, config)
