"""The labelled changes: buildings removed (filled with the area's own ground) and buildings pasted.

Every function works on one chip: ``image`` (H, W, 3) uint8 RGB on a north-up grid of ``gsd_m``
metres, ``instances`` (H, W) uint16 footprint ids (0: none), ``valid`` (H, W) bool. The label of
an edit is exactly the footprint pixels removed or pasted, never the grown region around them that
was repainted (walls, eaves, shadow), so a label covers what a change detector should report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from changewatch.rs.synth.shadow import Sun, dilate, luminance, shadow_of

GROW_M = 0.8  # removal reaches this far beyond a footprint (walls, eaves, footprints a little off the roof)
FILL_TRIES = 64  # candidate ground patches (among all that fit) scored per removed building
MAX_FILL_OFFSET = 25.0  # largest mean |colour difference| (0-255) between a patch and the ground around the hole
MAX_FILL_OUTLIERS = 0.08  # largest share of a patch's pixels unlike any colour around the hole
PALETTE_BIN = 32  # width of the RGB bins that colours are compared in
MAX_FILL_M2 = 800.0  # largest region repainted in one piece
SHADOW_FACTOR = (0.45, 0.7)  # brightness left in a cast shadow (open sky still lights it)
FAINT_SHADOW_FACTOR = (0.78, 0.92)  # the same where the source shows no clear shadows (overcast)
PASTE_SHADOW_M = (0.8, 4.0)  # pasted shadows' length, clipped to 1-2 storey houses' (the donors' usual height)
MAX_REACH_M = 8.0  # removal takes dark pixels at most this far along the shadow
ROOF_REACH_M = 1.5  # and roof-coloured pixels at most this far beyond the footprint
ROOF_COLOUR_DISTANCE = 30.0  # RGB distance from the roof's median colour that still counts as roof


@dataclass(frozen=True)
class Donor:
    """A building cut from a source to be pasted elsewhere: its patch, footprint mask, GSD and mean.

    ``patch`` (h, w, 3) uint8 and its footprint ``mask`` (h, w) bool at ``gsd_m`` metres; ``mean``
    the per-band mean of its source.
    """

    patch: np.ndarray
    mask: np.ndarray
    gsd_m: float
    source: str
    mean: np.ndarray


def grow_px(gsd_m: float) -> int:
    """Pixels a removal reaches beyond the footprint: GROW_M at ``gsd_m``, at least one."""
    return max(1, int(round(GROW_M / gsd_m)))


def roof_overhang(image: np.ndarray, instances: np.ndarray, building: int, gsd_m: float) -> np.ndarray:
    """Pixels next to footprint ``building`` (up to ROOF_REACH_M) that look like its roof; (H, W) bool.

    Within ROOF_COLOUR_DISTANCE of the footprint's median colour and connected to it: eaves, and
    roofs a little off or larger than their footprint. The footprint is included.
    """
    footprint = instances == building
    roof = np.median(image[footprint].reshape(-1, 3).astype(np.float32), axis=0)
    alike = np.linalg.norm(image.astype(np.float32) - roof, axis=-1) < ROOF_COLOUR_DISTANCE
    alike &= dilate(footprint, max(1, round(ROOF_REACH_M / gsd_m))) & (instances == 0)
    return ndimage.binary_propagation(footprint, mask=footprint | alike)


def removal_region(image: np.ndarray, instances: np.ndarray, ids: np.ndarray, sun: Sun, gsd_m: float) -> np.ndarray:
    """Pixels to repaint to remove buildings ``ids``; (H, W) bool.

    Their footprints and roof overhangs (``roof_overhang``) with the dark pixels of their shadows
    (swept along the sun's azimuth, or all round when it was not measured), grown by ``grow_px``,
    holes filled, other buildings excluded.
    """
    footprints = np.isin(instances, ids)
    for building in ids:
        footprints |= roof_overhang(image, instances, int(building), gsd_m)
    reach = max(1.0, min(1.3 * sun.length_m, MAX_REACH_M) / gsd_m)
    if sun.measured:
        zone = shadow_of(footprints, sun.azimuth_deg, reach)
    else:
        zone = dilate(footprints, round(reach)) & ~footprints
    y = luminance(image)
    ground = (instances == 0) & ~zone
    level = float(np.median(y[ground])) if ground.any() else float(np.median(y))
    shade = zone & (y < 0.8 * level)
    region = ndimage.binary_fill_holes(dilate(footprints | shade, grow_px(gsd_m)))
    return region & ~((instances > 0) & ~np.isin(instances, ids))


def _ring(mask: npt.NDArray[np.bool_], width: int) -> npt.NDArray[np.bool_]:
    return dilate(mask, width) & ~mask


def _membrane(difference: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """A smooth field (H, W, 3) that takes ``difference`` where ``weight`` is 1 and fills in between.

    Filled by normalised convolution with a Gaussian of ``sigma`` pixels (Knutsson & Westin,
    "Normalized and differential convolution", CVPR 1993): a cheap stand-in for the harmonic
    membrane of Poisson image editing (Pérez et al., SIGGRAPH 2003) that only listens to the pixels
    given.
    """
    w = cv2.GaussianBlur(weight.astype(np.float32), (0, 0), sigma)
    num = cv2.GaussianBlur(difference * weight[..., None], (0, 0), sigma)
    field: npt.NDArray[np.float32] = num / np.maximum(w, 1e-6)[..., None]
    return field


def _placements(ground: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Every (row, col) at which the top-left corner of mask ``shape`` puts all of it on ``ground``: (N, 2) int.

    ``shape`` is (h, w) bool, ``ground`` (H, W) bool; the mask's box must lie inside the image (an
    erosion of ``ground`` by the shape).
    """
    h, w = shape.shape
    fits = cv2.erode(ground.astype(np.uint8), shape.astype(np.uint8), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT,
                     borderValue=0)
    return np.argwhere(fits[:ground.shape[0] - h + 1, :ground.shape[1] - w + 1] > 0)


@dataclass(frozen=True)
class Ground:
    """Where removal fills are copied from: an image around the chip, its free pixels and the chip's offset.

    ``image`` (H', W', 3) uint8 at the chip's GSD around it, ``free`` (H', W') bool its
    building-free valid pixels, ``offset`` (row, col) of the chip's first pixel in it.
    """

    image: np.ndarray
    free: np.ndarray
    offset: tuple[int, int] = (0, 0)


def ground_of(image: np.ndarray, instances: np.ndarray, valid: np.ndarray, gsd_m: float,
              offset: tuple[int, int] = (0, 0)) -> Ground:
    """``image`` as a Ground: free where valid and more than ``grow_px`` from any footprint."""
    return Ground(image, valid & ~dilate(instances > 0, grow_px(gsd_m)), offset)


def _palette(pixels: np.ndarray) -> np.ndarray:
    """The colours (N, 3) present, as an occupancy grid of PALETTE_BIN-wide RGB bins.

    Shape (256 // PALETTE_BIN,) * 3, bool.
    """
    n = 256 // PALETTE_BIN
    grid = np.zeros((n, n, n), bool)
    grid[tuple((pixels // PALETTE_BIN).astype(int).T)] = True
    return grid


def _fill_component(image: np.ndarray, component: np.ndarray, ground: Ground, free: np.ndarray,
                    boundary: np.ndarray, rng: np.random.Generator, max_px: int) -> bool:
    """Repaint ``component`` (bool) of ``image`` in place with a patch of ``ground`` lying wholly on ``free`` pixels.

    The patch is chosen among up to FILL_TRIES placements by how well its surroundings match the
    component's (mean absolute difference on a 3-pixel ring of ``boundary`` pixels) and how well
    its inside matches the ring's colours: its mean within MAX_FILL_OFFSET, at most
    MAX_FILL_OUTLIERS of its pixels of colours absent from the ring (``_palette``; so an unlabelled
    roof, counted as free ground, is not copied in), and a penalty when busier than the ring. The
    patch's colours are then corrected towards the ring by a smooth membrane (``_membrane``) and
    its edge feathered over 2 pixels. Only ``boundary`` pixels (open ground) steer it, so a
    neighbouring roof does not bleed into the fill. False when no patch qualifies or the component
    exceeds ``max_px`` pixels (one patch copied over a block of buildings would bring their
    unlabelled neighbours).
    """
    h, w = component.shape
    rows, cols = np.nonzero(component)
    r0, r1, c0, c1 = rows.min() - 4, rows.max() + 5, cols.min() - 4, cols.max() + 5
    if r0 < 0 or c0 < 0 or r1 > h or c1 > w or len(rows) > max_px:
        return False
    ring = _ring(component, 3)
    steer = ring & boundary
    if steer.sum() < 0.25 * ring.sum():
        steer = ring
    rr, rc = np.nonzero(steer)
    target = image[rr, rc].astype(np.float32)
    spread, level = target.std(axis=0), target.mean(axis=0)
    palette = _palette(target)
    best, best_score = None, math.inf
    corners = _placements(free, component[r0:r1, c0:c1])
    for y, x in corners[rng.permutation(len(corners))[:FILL_TRIES]]:
        dr, dc = y - r0, x - c0
        inside = ground.image[rows + dr, cols + dc].astype(np.float32)
        off = float(np.abs(inside.mean(axis=0) - level).mean())
        outliers = float((~palette[tuple((inside // PALETTE_BIN).astype(int).T)]).mean())
        if off > MAX_FILL_OFFSET or outliers > MAX_FILL_OUTLIERS:
            continue
        donor_ring = ground.image[rr + dr, rc + dc].astype(np.float32)
        score = (float(np.abs(donor_ring - target).mean()) + off
                 + max(0.0, float(inside.std(axis=0).mean()) - 1.5 * float(spread.mean())))
        if score < best_score:
            best, best_score = (int(y), int(x)), score
    if best is None:
        return False
    y, x = best
    box = (slice(r0, r1), slice(c0, c1))
    patch = ground.image[y:y + r1 - r0, x:x + c1 - c0].astype(np.float32)
    here = image[box].astype(np.float32)
    sigma = max(2.0, math.sqrt(len(rows)) / 3)
    patch += _membrane(here - patch, steer[box], sigma)
    inside = component[box].astype(np.uint8)
    alpha = np.clip(cv2.distanceTransform(inside, cv2.DIST_L2, 3) / 2.0, 0, 1)[..., None]
    image[box] = np.clip(np.rint(alpha * patch + (1 - alpha) * here), 0, 255).astype(np.uint8)
    return True


def remove_buildings(image: np.ndarray, instances: np.ndarray, valid: np.ndarray, ids: np.ndarray, sun: Sun,
                     gsd_m: float, rng: np.random.Generator,
                     ground: Ground | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``image`` with buildings ``ids`` (and their shadows) replaced by ground, and the ids removed.

    Replaced by building-free texture of ``ground`` (default: the chip itself; better, a larger
    window around it at the same GSD) blended in (``_fill_component``). Returns the ids actually
    removed (a building whose region touches the chip's edge, exceeds MAX_FILL_M2 or finds no
    fitting patch is kept).
    """
    out = image.copy()
    region = removal_region(image, instances, ids, sun, gsd_m)
    ground = ground or ground_of(image, instances, valid, gsd_m)
    free = ground.free.copy()
    r, c = ground.offset
    free[r:r + region.shape[0], c:c + region.shape[1]] &= ~dilate(region, 2)
    boundary = valid & (instances == 0)
    max_px = int(MAX_FILL_M2 / gsd_m ** 2)
    labels, n = ndimage.label(region)
    removed: list[int] = []
    for k in range(1, n + 1):
        component = labels == k
        inside = np.intersect1d(np.unique(instances[component]), ids)
        if len(inside) and _fill_component(out, component, ground, free, boundary, rng, max_px):
            removed.extend(int(i) for i in inside)
    return out, np.array(sorted(removed), dtype=np.uint16)


def cut_donors(image: np.ndarray, instances: np.ndarray, valid: np.ndarray, gsd_m: float, source: str,
               min_m2: float) -> list[Donor]:
    """Every building of a source that lies wholly on valid imagery and covers at least ``min_m2``.

    Cut with a 2-pixel margin (ids in ``instances`` order).
    """
    mean = image[valid].reshape(-1, 3).mean(axis=0) if valid.any() else np.full(3, 128.0)
    donors = []
    for i, window in enumerate(ndimage.find_objects(instances), start=1):
        if window is None:  # a missing id (scipy-stubs type the list without None)
            continue  # type: ignore[unreachable]
        rows, cols = window
        r0, r1 = rows.start - 2, rows.stop + 2
        c0, c1 = cols.start - 2, cols.stop + 2
        if r0 < 0 or c0 < 0 or r1 > instances.shape[0] or c1 > instances.shape[1]:
            continue
        mask = instances[r0:r1, c0:c1] == i
        if mask.sum() * gsd_m ** 2 < min_m2 or not valid[r0:r1, c0:c1].all():
            continue
        donors.append(Donor(image[r0:r1, c0:c1].copy(), mask, gsd_m, source, mean))
    return donors


def _scaled(donor: Donor, gsd_m: float) -> tuple[np.ndarray, np.ndarray]:
    """The donor at ``gsd_m``: (patch float32 (h, w, 3), alpha (h, w) in [0, 1]).

    Alpha is the footprint's area share of each pixel; area-averaged when shrinking.
    """
    f = donor.gsd_m / gsd_m
    if abs(f - 1) < 1e-6:
        return donor.patch.astype(np.float32), donor.mask.astype(np.float32)
    size = (max(1, round(donor.patch.shape[1] * f)), max(1, round(donor.patch.shape[0] * f)))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return (cv2.resize(donor.patch.astype(np.float32), size, interpolation=interp),
            cv2.resize(donor.mask.astype(np.float32), size, interpolation=interp))


def _place(occupied: np.ndarray, shape: np.ndarray, rng: np.random.Generator, margin: int,
           tries: int = 60) -> tuple[int, int] | None:
    """A random top-left (row, col) where mask ``shape`` (h, w) fits; None when none of ``tries`` draws fits.

    Fits: touches no ``occupied`` pixel and stays ``margin`` pixels inside the chip.
    """
    h, w = occupied.shape
    sh, sw = shape.shape
    if sh + 2 * margin >= h or sw + 2 * margin >= w:
        return None
    for _ in range(tries):
        r, c = int(rng.integers(margin, h - margin - sh)), int(rng.integers(margin, w - margin - sw))
        if not occupied[r:r + sh, c:c + sw][shape].any():
            return r, c
    return None


def paste_buildings(image: np.ndarray, occupied: np.ndarray, donors: list[Donor], sun: Sun, gsd_m: float,
                    rng: np.random.Generator, margin: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A copy of ``image`` (H, W, 3 uint8) with each donor building pasted onto free ground with its own shadow.

    Free ground: where ``occupied`` is False, with 1 m to spare, ``margin`` pixels inside the edge.
    The shadow is the footprint swept along ``sun.azimuth_deg`` for ``sun.length_m`` clipped to
    PASTE_SHADOW_M (± 30 %; L = h / tan(sun elevation), ``rs.synth.shadow``), ground darkened with
    a soft edge and a bluish cast (shadows are lit by the sky), faintly when the sun was not
    measured. Donor colours get a gain towards the chip's mean (0.85-1.15). Returns the image, the
    mask (H, W bool) of the footprints pasted (area share ≥ 0.5) and how many were pasted.
    ``occupied`` is updated in place. Donors that fit nowhere are skipped.
    """
    out = image.astype(np.float32)
    pasted = np.zeros(occupied.shape, bool)
    count = 0
    level = out.reshape(-1, 3).mean(axis=0)
    spare = max(1, round(1.0 / gsd_m))
    for donor in donors:
        patch, alpha = _scaled(donor, gsd_m)
        footprint = alpha >= 0.5
        if footprint.sum() < 4:
            continue
        length = float(np.clip(sun.length_m, *PASTE_SHADOW_M)) * float(rng.uniform(0.7, 1.3)) / gsd_m
        pad = int(math.ceil(length)) + spare + 1
        canvas = np.pad(footprint, pad)
        shade = shadow_of(canvas, sun.azimuth_deg, length)
        spot = _place(occupied, dilate(canvas | shade, spare), rng, margin)
        if spot is None:
            continue
        r, c = spot
        ch, cw = canvas.shape
        soft = cv2.GaussianBlur(shade.astype(np.float32), (0, 0), max(0.5, 0.25 / gsd_m))
        factor = float(rng.uniform(*(SHADOW_FACTOR if sun.measured else FAINT_SHADOW_FACTOR)))
        tint = np.array([0.96, 1.0, 1.08], np.float32) * factor
        view = out[r:r + ch, c:c + cw]
        view *= 1 - soft[..., None] * (1 - tint)
        gain = np.clip(level / np.maximum(donor.mean, 1), 0.85, 1.15).astype(np.float32)
        a = np.pad(np.clip(alpha * 1.15, 0, 1), pad)[..., None]
        view[:] = a * np.pad(patch * gain, ((pad, pad), (pad, pad), (0, 0))) + (1 - a) * view
        pasted[r:r + ch, c:c + cw] |= canvas
        occupied[r:r + ch, c:c + cw] |= dilate(canvas | shade, spare)
        count += 1
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), pasted, count
