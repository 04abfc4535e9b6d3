"""Unlabelled change: what differs between two dates of the same unchanged ground.

``apply_nuisance`` applies a random subset of the effects below to one date, in the order they
happen: the ground itself (season, bare soil ↔ paving, shadows), the atmosphere (haze), then the
sensor and the product (misregistration, blur, resampling, colour, greyscale, noise, JPEG). Each
effect's probability and range are in ``NuisanceConfig``. Images are (H, W, 3) float32 RGB in
0-255 on a north-up grid of ``gsd_m`` metres; ``buildings`` (H, W) bool are the footprints present
at that date.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from changewatch.rs.synth.config import NuisanceConfig
from changewatch.rs.synth.shadow import Sun, dilate, luminance, shadow_of


@dataclass(frozen=True)
class DateContext:
    """What the effects may look at: the date's buildings, the sun of its source, the GSD."""

    buildings: npt.NDArray[np.bool_]
    sun: Sun
    gsd_m: float


def smooth_field(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in [0, 1] of ``shape`` (bicubic up-sampling of ``cells``² uniform values)."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC), 0, 1)


def season(img: np.ndarray, ctx: DateContext, cfg: NuisanceConfig, rng: np.random.Generator) -> np.ndarray:
    """Vegetation in another season: hue shifted and saturation scaled where pixels are green.

    Green: hue 60-170°, saturation > 0.12; weighted smoothly by how green they are.
    """
    hsv = cv2.cvtColor(np.clip(img / 255, 0, 1), cv2.COLOR_RGB2HSV)
    hue, sat = hsv[..., 0], hsv[..., 1]
    weight = np.clip((sat - 0.12) / 0.15, 0, 1) * np.clip(1 - np.abs(hue - 115) / 55, 0, 1) * ~ctx.buildings
    hsv[..., 0] = (hue + weight * float(rng.uniform(*cfg.season_hue_deg))) % 360
    hsv[..., 1] = np.clip(sat * (1 + weight * (float(rng.uniform(*cfg.season_saturation)) - 1)), 0, 1)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255


def ground_patches(img: np.ndarray, ctx: DateContext, cfg: NuisanceConfig, rng: np.random.Generator) -> np.ndarray:
    """Bare soil ↔ paving: irregular patches of open ground recoloured, keeping some of their texture.

    Patches 4-15 m across, away from buildings, recoloured brown (soil) or grey (paving, asphalt).
    """
    h, w = img.shape[:2]
    out = img.copy()
    free = ~dilate(ctx.buildings, max(1, round(0.5 / ctx.gsd_m)))
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(cfg.ground_patches[0], cfg.ground_patches[1] + 1))):
        radius = float(rng.uniform(4, 15)) / 2 / ctx.gsd_m
        r, c = rng.uniform(0, h), rng.uniform(0, w)
        ratio = float(rng.uniform(0.5, 1.0))
        dist = np.hypot((rows - r) / radius, (cols - c) / (radius * ratio))
        blob = (dist + 0.8 * (smooth_field((h, w), 8, rng) - 0.5) < 1) & free
        if not blob.any():
            continue
        soft = cv2.GaussianBlur(blob.astype(np.float32), (0, 0), max(0.7, 0.3 / ctx.gsd_m))[..., None]
        if rng.random() < 0.5:  # soil
            colour = np.array([rng.uniform(130, 185), rng.uniform(100, 140), rng.uniform(65, 100)], np.float32)
        else:  # paving: concrete to asphalt
            colour = np.full(3, rng.uniform(70, 190), np.float32) + rng.normal(0, 4, 3).astype(np.float32)
        y = luminance(img)[..., None]
        texture = colour * np.sqrt(y / max(float(y[blob].mean()), 1.0))
        out = out * (1 - soft * 0.9) + texture * soft * 0.9
    return out


def shadows(img: np.ndarray, ctx: DateContext, cfg: NuisanceConfig, rng: np.random.Generator) -> np.ndarray:
    """Another time of day: the image's own building shadows lifted, and new ones cast.

    Shadows are lifted towards open-ground brightness; new ones are cast at another azimuth
    (60-180° away) and length (0.5-2×).
    """
    if not ctx.buildings.any():
        return img
    y = luminance(img)
    own = shadow_of(ctx.buildings, ctx.sun.azimuth_deg, max(1.0, 1.3 * ctx.sun.length_m / ctx.gsd_m))
    ground = ~ctx.buildings & ~own
    level = float(np.median(y[ground])) if ground.any() else float(np.median(y))
    dark = own & (y < 0.8 * level)
    lift = 1 + 0.7 * (np.clip(level / np.maximum(y, 1), 1, 2.5) - 1) * dark
    out = img * cv2.GaussianBlur(lift.astype(np.float32), (0, 0), 0.7)[..., None]
    azimuth = ctx.sun.azimuth_deg + float(rng.choice([-1, 1])) * float(rng.uniform(60, 180))
    length = ctx.sun.length_m * float(rng.uniform(0.5, 2.0)) / ctx.gsd_m
    cast = shadow_of(ctx.buildings, azimuth, length)
    soft = cv2.GaussianBlur(cast.astype(np.float32), (0, 0), max(0.5, 0.25 / ctx.gsd_m))[..., None]
    shaded: npt.NDArray[np.float32] = out * (1 - soft * (1 - float(rng.uniform(0.45, 0.75))))
    return shaded


def haze(img: np.ndarray, ctx: DateContext, cfg: NuisanceConfig, rng: np.random.Generator) -> np.ndarray:
    """Haze: I·(1 − t) + A·t with a bluish-grey airlight A and a smoothly varying transmission loss t.

    The atmospheric scattering model (Koschmieder 1924).
    """
    t = float(rng.uniform(*cfg.haze_strength)) * (0.6 + 0.4 * smooth_field(img.shape[:2], 3, rng))[..., None]
    airlight = np.array([200, 205, 215], np.float32) + rng.uniform(-15, 25)
    return img * (1 - t) + airlight * t


def misregister(img: np.ndarray, ctx: DateContext, cfg: NuisanceConfig, rng: np.random.Generator) -> np.ndarray:
    """A sub-pixel translation of up to ± ``misregister_px`` along each axis (bicubic, edges mirrored)."""
    dx, dy = (float(v) for v in rng.uniform(-cfg.misregister_px, cfg.misregister_px, 2))
    matrix = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    return cv2.warpAffine(img, matrix, (img.shape[1], img.shape[0]), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT_101)


def blur(img: np.ndarray, ctx: DateContext, cfg: NuisanceConfig, rng: np.random.Generator) -> np.ndarray:
    """A softer optic or motion: Gaussian blur of σ in ``blur_sigma_px``."""
    return cv2.GaussianBlur(img, (0, 0), float(rng.uniform(*cfg.blur_sigma_px)))


def resample(img: np.ndarray, ctx: DateContext, cfg: NuisanceConfig, rng: np.random.Generator) -> np.ndarray:
    """A coarser sensor: down-sampled by a factor in ``resample_factor`` (area average), then back up.

    Back up by bilinear or bicubic interpolation.
    """
    h, w = img.shape[:2]
    f = float(rng.uniform(*cfg.resample_factor))
    small = cv2.resize(img, (max(8, round(w / f)), max(8, round(h / f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR)


def colour(img: np.ndarray, ctx: DateContext, cfg: NuisanceConfig, rng: np.random.Generator) -> np.ndarray:
    """Another sensor and illumination: colour mixing, gains and gamma; or a greyscale photograph.

    A 3×3 colour-mixing matrix (rows summing to one, so greys stay grey), a gain and a smaller one
    per band, then a gamma; or, with probability ``greyscale``, a greyscale photograph (luma in all
    three bands) with its own gain and gamma.
    """
    if rng.random() < cfg.greyscale:
        img = np.repeat(luminance(np.clip(img, 0, 255))[..., None], 3, axis=2)
        gain = np.full(3, rng.uniform(*cfg.gain), np.float32)
    else:
        mix = np.eye(3, dtype=np.float32) + rng.normal(0, cfg.colour_mix, (3, 3)).astype(np.float32) * (1 - np.eye(3))
        mix /= mix.sum(axis=1, keepdims=True)
        img = img @ mix.T
        gain = (rng.uniform(*cfg.gain) * rng.uniform(*cfg.band_gain, 3)).astype(np.float32)
    gamma = float(rng.uniform(*cfg.gamma))
    return 255 * (np.clip(img * gain, 0, 255) / 255) ** gamma


def noise(img: np.ndarray, ctx: DateContext, cfg: NuisanceConfig, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise: Gaussian, sd in ``noise_sd`` digital numbers, independent per band."""
    return img + rng.normal(0, float(rng.uniform(*cfg.noise_sd)), img.shape).astype(np.float32)


def jpeg(img: np.ndarray, ctx: DateContext, cfg: NuisanceConfig, rng: np.random.Generator) -> np.ndarray:
    """JPEG compression artefacts at a quality in ``jpeg_quality``."""
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    ok, data = cv2.imencode(".jpg", np.clip(np.rint(img), 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    assert ok and decoded is not None, "OpenCV failed to round-trip a JPEG it encoded"
    return decoded.astype(np.float32)


Effect = Callable[[np.ndarray, DateContext, NuisanceConfig, np.random.Generator], np.ndarray]
EFFECTS: tuple[tuple[str, Effect], ...] = (
    ("season", season), ("ground", ground_patches), ("shadows", shadows), ("haze", haze),
    ("misregister", misregister), ("blur", blur), ("resample", resample), ("colour", colour), ("noise", noise),
    ("jpeg", jpeg),
)


def apply_nuisance(image: np.ndarray, ctx: DateContext, cfg: NuisanceConfig,
                   rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """``image`` (H, W, 3) uint8 with a random subset of the effects applied, and their names in order.

    Each effect has its probability in ``cfg``; the result is uint8.
    """
    img = image.astype(np.float32)
    applied = []
    for name, effect in EFFECTS:
        if rng.random() < getattr(cfg, name):
            img = np.clip(effect(img, ctx, cfg, rng), 0, 255).astype(np.float32)
            applied.append(name)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), applied
