"""Building shadows on a north-up grid: where they fall in a source image, and how to cast new ones.

A flat-roofed building of height h on flat ground casts the shadow of its footprint swept along the
anti-solar direction for a length L = h / tan(sun elevation) (plain projection geometry; used for
shadow-based height estimation since Irvin & McKeown, "Methods for exploiting the relationship
between buildings and their shadows in aerial imagery", IEEE SMC 1989). ``sweep`` computes that
sweep (a Minkowski sum of the footprint mask with a segment) in pixels. As the sources carry no sun
position, ``estimate_sun`` measures the direction and typical length of the shadows next to the
labelled footprints, so that synthetic shadows agree with the real ones in the same image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

AZIMUTH_STEP_DEG = 15
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma weights


@dataclass(frozen=True)
class Sun:
    """Where shadows fall in an image: their azimuth and typical length, and whether they were measured.

    ``azimuth_deg`` clockwise from grid north (up), the direction *away* from the sun;
    ``length_m`` the typical shadow length beyond a footprint's edge (metres). ``measured`` is
    False when the image showed no clear shadows (overcast, or too few buildings): the values are
    then a default to be replaced by a random draw.
    """

    azimuth_deg: float
    length_m: float
    measured: bool


DEFAULT_SUN = Sun(azimuth_deg=315.0, length_m=2.5, measured=False)


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 luma of an (H, W, 3) RGB image (BT.601 weights), 0-255."""
    return image.astype(np.float32) @ LUMA


def disk(radius_px: int) -> np.ndarray:
    """A filled disk of ``radius_px`` pixels as a uint8 structuring element (side 2r + 1)."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))


def dilate(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """``mask`` (bool) grown by a disk of ``radius_px`` pixels (no change for radius 0)."""
    if radius_px <= 0:
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), disk(radius_px)).astype(bool)


def sweep(mask: np.ndarray, azimuth_deg: float, length_px: float) -> np.ndarray:
    """``mask`` (H, W bool) swept ``length_px`` pixels towards ``azimuth_deg`` (clockwise from up).

    Every pixel p with p − t·u in the mask for some 0 ≤ t ≤ length (u the unit vector of the
    azimuth). The footprint itself is included.
    """
    n = int(math.ceil(length_px))
    if n <= 0:
        return mask.copy()
    kernel = np.zeros((2 * n + 1, 2 * n + 1), np.uint8)
    a = math.radians(azimuth_deg)
    end = (int(round(n - length_px * math.sin(a))), int(round(n + length_px * math.cos(a))))  # (x, y) = (col, row)
    cv2.line(kernel, (n, n), end, 1, 1)
    return cv2.dilate(mask.astype(np.uint8), kernel, anchor=(n, n), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).astype(bool)


def shadow_of(mask: npt.NDArray[np.bool_], azimuth_deg: float, length_px: float) -> npt.NDArray[np.bool_]:
    """The ground a footprint ``mask`` shades: its sweep minus the footprint itself."""
    return sweep(mask, azimuth_deg, length_px) & ~mask


def _dark_share(dark: np.ndarray, region: np.ndarray) -> float:
    return float(dark[region].mean()) if region.sum() >= 20 else 0.0


def estimate_sun(image: np.ndarray, instances: np.ndarray, valid: np.ndarray, gsd_m: float,
                 max_length_m: float = 10.0) -> Sun:
    """The direction and typical length of building shadows in ``image`` next to the footprints ``instances``.

    ``image``: (H, W, 3 uint8 RGB on a north-up grid of ``gsd_m`` metres); ``instances``: (H, W;
    > 0 = building).

    For every azimuth (15° steps) the share f(az) of *dark* pixels (luma below 60 % of the median
    of open ground) in a 1.5 m band swept beyond the footprints is measured; the shadow azimuth is
    the direction of the resultant Σ f(az)·e^{i·az} (a circular mean), and shadows count as
    measured when its length R = |Σ f·e^{i·az}| / Σ f is at least 0.1 and the darkest band holds at
    least 10 % dark pixels (overcast or nadir-lit images have none). The length is where the dark
    share of successive 0.5 m bands beyond the first 1.5 m along that azimuth has fallen halfway
    from the first 1.5 m's back to open ground's (so at least 1.5 m).
    """
    buildings = instances > 0
    if buildings.sum() < 200 or valid.sum() < 10_000:
        return DEFAULT_SUN
    y = luminance(image)
    near = dilate(buildings, max(1, round(0.3 / gsd_m)))  # footprints are often ~0.3 m off the roofs
    open_ground = valid & ~near
    dark = y < 0.6 * float(np.median(y[open_ground]))
    background = float(dark[open_ground].mean())
    azimuths = np.arange(0, 360, AZIMUTH_STEP_DEG)
    share = np.array([_dark_share(dark, shadow_of(buildings, float(az), max(1.0, 1.5 / gsd_m)) & open_ground)
                      for az in azimuths])
    resultant = complex((share * np.exp(1j * np.radians(azimuths))).sum())
    if share.sum() == 0 or abs(resultant) / share.sum() < 0.1 or share.max() < 0.1:
        return DEFAULT_SUN
    azimuth = float(np.degrees(np.angle(resultant)) % 360)
    reach = max(1.0, 1.5 / gsd_m)
    peak = _dark_share(dark, shadow_of(buildings, azimuth, reach) & open_ground)
    step = max(1.0, 0.5 / gsd_m)
    length_px, previous = reach, sweep(buildings, azimuth, reach)
    while length_px + step <= max_length_m / gsd_m:
        current = sweep(buildings, azimuth, length_px + step)
        if _dark_share(dark, current & ~previous & open_ground) < (peak + background) / 2:
            break
        length_px, previous = length_px + step, current
    return Sun(round(azimuth, 1), round(length_px * gsd_m, 2), True)
