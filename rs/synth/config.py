"""The configuration of one synthetic change-pair run: every default is defined here, once."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ATTRIBUTION = ("imagery © OpenAerialMap contributors, CC BY 4.0; "
               "building footprints © OpenStreetMap contributors, ODbL 1.0")
KINDS = ("appear", "disappear", "paste", "mix")


@dataclass(frozen=True)
class NuisanceConfig:
    """Probabilities (per date, each drawn independently) and ranges of the unlabelled changes.

    Ranges are (low, high) and drawn uniformly unless said otherwise.
    """

    season: float = 0.5  # hue/saturation of green (vegetation) pixels
    season_hue_deg: tuple[float, float] = (-25.0, 12.0)  # negative: towards yellow/brown (dry season)
    season_saturation: tuple[float, float] = (0.5, 1.3)
    colour: float = 0.9  # gain, per-band gain, gamma and a colour-mixing matrix (illumination, sensor)
    gain: tuple[float, float] = (0.8, 1.2)  # all bands
    band_gain: tuple[float, float] = (0.93, 1.07)  # each band on top
    gamma: tuple[float, float] = (0.75, 1.35)
    colour_mix: float = 0.04  # sd of the off-diagonal terms of the 3×3 colour matrix
    greyscale: float = 0.1  # share of coloured dates turned into an old panchromatic aerial photograph
    haze: float = 0.25
    haze_strength: tuple[float, float] = (0.05, 0.3)
    shadows: float = 0.3  # existing shadows lifted and cast again at another azimuth and length
    misregister: float = 0.7  # a sub-pixel translation of the date
    misregister_px: float = 2.0  # up to ± this many pixels along each axis
    blur: float = 0.2
    blur_sigma_px: tuple[float, float] = (0.4, 1.3)
    resample: float = 0.25  # down- then up-sampling (a coarser sensor or a resampled product)
    resample_factor: tuple[float, float] = (1.3, 2.5)
    jpeg: float = 0.35
    jpeg_quality: tuple[int, int] = (35, 85)
    ground: float = 0.35  # bare soil <-> paving: irregular non-building patches recoloured
    ground_patches: tuple[int, int] = (1, 4)
    noise: float = 0.6  # sensor noise
    noise_sd: tuple[float, float] = (1.0, 4.0)  # in digital numbers (0-255)


@dataclass(frozen=True)
class SynthConfig:
    """One run of ``rs.synth.generate``: the VHR data, where the pairs go, and how they are made.

    Where the single-date VHR data is, where the LEVIR-CD-style pairs go, and how they are made.
    Paths are strings so the config serialises into synth.json.

    ``gsd_m`` is (low, high) in metres: equal values give every chip that ground sampling distance;
    a range draws each chip's GSD log-uniformly within it. ``pairs_per_area`` pairs are made for
    every source area, the ``val_area`` (one whole area, kept out of training) included.

    Raises ValueError for a GSD range not 0 < low ≤ high, a chip side under 32 pixels, fewer than
    one pair per area, a nuisance-only share outside [0, 1], ``max_nodata`` outside [0, 1) or a
    JPEG quality outside 1-100.
    """

    source: str
    out: str
    gsd_m: tuple[float, float] = (0.5, 0.5)
    chip: int = 256  # side of each output image, pixels
    pairs_per_area: int = 30  # about 240 kB a pair as PNG at 256²: 30 × 4 usable areas ≈ 29 MB
    seed: int = 0
    val_area: str = "kampala"
    nuisance_only: float = 0.2  # share of pairs with nuisance only (empty labels)
    kind_weights: tuple[float, float, float, float] = (0.3, 0.2, 0.25, 0.25)  # appear, disappear, paste, mix
    max_changed: int = 5  # buildings changed per change kind in one pair: 1 to this many
    max_nodata: float = 0.15  # largest share of a chip outside the imagery (written black in both dates)
    min_building_m2: float = 8.0  # smaller footprints are never changed or pasted
    image_quality: int | None = None  # None: A/ and B/ as lossless PNG; 1-100: JPEG of that quality (≈ 5× smaller)
    nuisance: NuisanceConfig = field(default_factory=NuisanceConfig)

    def __post_init__(self) -> None:
        lo, hi = self.gsd_m
        if not 0 < lo <= hi:
            raise ValueError(f"GSD range must satisfy 0 < low <= high, got {lo}, {hi}")
        if self.chip < 32:
            raise ValueError(f"chip side must be at least 32 pixels, got {self.chip}")
        if self.pairs_per_area < 1:
            raise ValueError("pairs per area must be at least 1")
        if not 0 <= self.nuisance_only <= 1:
            raise ValueError("nuisance-only share must lie in [0, 1]")
        if not 0 <= self.max_nodata < 1:
            raise ValueError("max_nodata must lie in [0, 1)")
        if self.image_quality is not None and not 1 <= self.image_quality <= 100:
            raise ValueError(f"JPEG quality must lie in 1-100, got {self.image_quality}")

    def draw_gsd(self, u: float) -> float:
        """The GSD (m) for a uniform draw ``u`` in [0, 1): log-uniform in ``gsd_m``."""
        lo, hi = self.gsd_m
        return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))


def parse_gsd(text: str) -> tuple[float, float]:
    """``"0.5"`` → (0.5, 0.5); ``"0.3,1.0"`` → (0.3, 1.0). A ValueError names what is wrong."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise ValueError(f"GSD must be one number or two comma-separated numbers (m), got {text!r}") from exc
    if len(values) == 1:
        values = (values[0], values[0])
    if len(values) != 2 or not 0 < values[0] <= values[1]:
        raise ValueError(f"GSD must be one positive number or low,high with 0 < low <= high, got {text!r}")
    return values[0], values[1]
