"""Buildings in change regions: one change object per building, and what kind of change each is.

Semantic change models (outputs ``change``, ``building_before``, ``building_after``; see
``models.changenet``) write, beside the change probability, the probability that a building stands
on each pixel at each date (``rs.io.raster.write_probability``). ``rs.vectorize`` hands every change
region — a 4-connected group of change pixels, in a window just around it — to ``split_region``,
then decides each object's ``change_type`` with ``change_types``. All sizes are in metres of
ground; ``pixel_m`` is the side of one pixel.

**Splitting** (``split_region``). A pixel is *building* when either date's building probability
is ≥ ``building_threshold``.

1. *Markers*: the regional maxima of the distance transform of the region's building pixels that
   rise at least ``marker_depth_m`` above the saddle to any higher maximum (h-maxima,
   ``skimage.morphology.h_maxima``). Where the model sees a gap between two roofs (a line of low
   building probability, as segmenters draw between houses) the two are separate groups, each with
   its own maximum; two roofs joined by a neck narrower than their centres keep two maxima too;
   the ridge of one long roof is a single plateau, hence one marker (peaks taken a minimum
   distance apart would cut a long roof into pieces). A group of building pixels with no such
   maximum gets one at its highest point; groups under ``min_core_m2`` get none (speckle).
2. *Watershed* (``skimage.segmentation.watershed``, 4-connectivity) of the signed distance to the
   building pixels, from the markers, over the region's pixels that lie within ``edge_m`` of a
   building pixel: touching buildings part where their roofs meet, and each building keeps the
   changed fringe just around it.
3. The region's other pixels — change with no building near — form objects of their own, one per
   4-connected part. Every object is 4-connected, as regions are.

**Change type** (``change_types``). Each pixel of an object is *new* (building in AFTER, not in
BEFORE), *gone* (BEFORE, not AFTER), *standing* (both dates) or neither. Standing pixels are set
aside (a building that stood on both dates, onto which the change map bled); of the others:

- ``other_change`` when fewer than ``min_share`` are new or gone (change with no building on
  either date — earthworks, paving — or an object that is all standing building, e.g. a re-roofed
  house);
- else ``demolished`` when gone pixels outnumber new ones;
- else ``enlarged`` when the new building shares a wall of at least ``min_wall_m`` with a building
  standing on both dates (new pixels with a standing 4-neighbour, inside the object or just
  outside it, times ``pixel_m``);
- else ``new_building``.

Limits: two roofs that touch along a whole side with no dip in building probability between them
are one object; a new building built against an existing one is ``enlarged``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from changewatch.rs.config import DEMOLISHED, ENLARGED, NEW_BUILDING, OTHER_CHANGE, BuildingConfig

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
EIGHT_CONNECTED = ndimage.generate_binary_structure(2, 2)
# Pixel classes counted per object (columns of a (n, 3) array): building in AFTER only, in BEFORE
# only, on both dates.
NEW, GONE, STANDING = 0, 1, 2


def label_int32(mask: npt.NDArray[np.bool_], structure: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.int32], int]:
    """Connected regions of ``mask`` as int32 ids 1…n (0 outside), and n.

    ``scipy.ndimage.label`` with ``structure``, into a preallocated int32 array.
    """
    ids = np.empty(mask.shape, np.int32)
    return ids, ndimage.label(mask, structure=structure, output=ids)


def pixel_classes(b_before: np.ndarray, b_after: np.ndarray, threshold: float
                  ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Boolean arrays (new, gone, standing) of building probabilities at each date (NaN: no building)."""
    with np.errstate(invalid="ignore"):
        before, after = b_before >= threshold, b_after >= threshold  # NaN compares False
    return after & ~before, before & ~after, before & after


def split_region(region: np.ndarray, b_before: np.ndarray, b_after: np.ndarray, pixel_m: float,
                 config: BuildingConfig) -> np.ndarray:
    """Object ids splitting one change region into buildings and the change around none (module docstring).

    Returns int32 ids: 0 outside ``region``, 1…n inside; each object 4-connected.

    ``region``: boolean (rows, cols), the region's pixels in a window around it; ``b_before``,
    ``b_after``: the building probabilities (0–1, NaN invalid) on the same window; ``pixel_m``:
    pixel side in metres. Memory: a few arrays of the window's size.
    """
    # scikit-image only where regions are split, so that modules reading change types stay light
    from skimage.measure import label as label_regions
    from skimage.segmentation import watershed

    with np.errstate(invalid="ignore"):
        building = region & ((b_before >= config.building_threshold) | (b_after >= config.building_threshold))
    # distance to the nearest non-building pixel, counting the window's surroundings as none
    inside = ndimage.distance_transform_edt(np.pad(building, 1), sampling=pixel_m)[1:-1, 1:-1]
    outside = ndimage.distance_transform_edt(~building, sampling=pixel_m) if building.any() else None
    markers = _markers(building, inside, pixel_m, config)
    objects = np.zeros(region.shape, np.int32)
    if markers.any() and outside is not None:
        near = region & (outside <= config.edge_m)
        objects = watershed(outside - inside, markers, mask=near, connectivity=1).astype(np.int32)
    rest, _ = label_int32(region & (objects == 0), FOUR_CONNECTED)
    objects = np.where(rest > 0, rest + objects.max(initial=0), objects)
    # a watershed basin may touch itself only at a corner: give each 4-connected part its own id
    split: npt.NDArray[np.int32] = label_regions(objects, background=0, connectivity=1).astype(np.int32)
    return split


def _markers(building: np.ndarray, inside: np.ndarray, pixel_m: float, config: BuildingConfig) -> np.ndarray:
    """Labelled markers: h-maxima of the distance transform, and one per marker-less building group.

    One marker per marker-less group of building pixels (at its highest point); none in groups
    under ``min_core_m2``.
    """
    from skimage.morphology import h_maxima  # scikit-image: as in split_region

    groups, n = ndimage.label(building, structure=FOUR_CONNECTED)
    if n == 0:
        return np.zeros(building.shape, np.int32)
    index = np.arange(1, n + 1)
    big = np.zeros(n + 1, bool)
    big[1:] = ndimage.sum_labels(building, groups, index) * pixel_m ** 2 >= config.min_core_m2
    peaks = h_maxima(inside, config.marker_depth_m).astype(bool) & building
    has_peak = np.zeros(n + 1, bool)
    has_peak[1:] = ndimage.maximum(peaks, groups, index).astype(bool)
    top = np.zeros(n + 1)
    top[1:] = ndimage.maximum(inside, groups, index)
    peaks |= ~has_peak[groups] & (inside == top[groups]) & building
    peaks &= big[groups]
    markers, _ = label_int32(peaks, EIGHT_CONNECTED)
    return markers


def object_counts(objects: np.ndarray, b_before: np.ndarray, b_after: np.ndarray, pixel_m: float,
                  threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per object id 1…n of ``objects``: class pixel counts and the wall its new pixels share.

    Pixel counts (n, 3) of the classes NEW, GONE, STANDING, and the wall (m) its new pixels share
    with standing building (4-neighbours, anywhere in the window).
    """
    new, gone, standing = pixel_classes(b_before, b_after, threshold)
    n = int(objects.max(initial=0))
    counts = np.stack([np.bincount(objects[c], minlength=n + 1)[1:] for c in (new, gone, standing)], axis=1)
    touching = new & ndimage.binary_dilation(standing, structure=FOUR_CONNECTED)
    wall = np.bincount(objects[touching], minlength=n + 1)[1:] * pixel_m
    return counts.astype(float), wall.astype(float)


def change_types(pixels: np.ndarray, counts: np.ndarray, wall_m: np.ndarray, config: BuildingConfig) -> np.ndarray:
    """The change type of each object (object array of CHANGE_TYPES), by the rule of the module docstring.

    Decided from its pixel count, its (n, 3) class counts (NEW, GONE, STANDING) and the wall (m)
    its new pixels share with standing building.
    """
    new, gone, standing = counts[:, NEW], counts[:, GONE], counts[:, STANDING]
    rest = pixels - standing
    building = (rest > 0) & (new + gone >= config.min_share * rest)
    kind = np.where(gone > new, DEMOLISHED, np.where(wall_m >= config.min_wall_m, ENLARGED, NEW_BUILDING))
    return np.where(building, kind, OTHER_CHANGE).astype(object)
