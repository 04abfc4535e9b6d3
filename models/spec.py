"""What a checkpoint is and which shipped model fits a scene: light, no torch.

``ModelSpec`` is a checkpoint's metadata (``NAME.json`` beside ``NAME.safetensors``): the network,
the bands it takes, the ground sampling distances it serves, its outputs, decision threshold,
training record and licence. ``choose_model`` picks the shipped model for a scene by its band
count and its GSD, and says why. Reading a spec never imports torch, so commands that fail on
bad input, or never run a network, stay fast (``models.changenet`` builds the networks).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin, get_type_hints

from changewatch.rs.errors import IncompatibleScenesError, ModelError

if TYPE_CHECKING:
    from changewatch.rs.bands import BandChoice
    from changewatch.rs.grid import Grid

MODELS_DIR = Path(str(files(__name__.rpartition(".")[0])))  # the installed changewatch.models folder
DEFAULT_MODEL = MODELS_DIR / "changewatch-rgbn.json"
# The shipped models, each described by its JSON (bands, GSDs served): choose_model picks among them.
SHIPPED = ("changewatch-rgbn", "changewatch-rgb", "changewatch-vhr-rgb")
VHR_MAX_GSD_M = 2.5  # imagery this fine or finer is very-high-resolution: buildings are many pixels
MIN_OBJECT_M2 = 10.0  # the smallest change object worth a flag on any imagery: a small house or shed
MAX_GRID_PX = 4_000_000_000  # pixels of one run's common grid (16 GB of raw float32 probabilities)

# What an output channel may predict: change between the dates, and (semantic change models, trained where
# each date's buildings are known) building presence in BEFORE and in AFTER, which vectorize uses to split
# change into buildings and to tell new buildings from demolitions.
OUTPUTS = ("change", "building_before", "building_after")
SEMANTIC_OUTPUTS = OUTPUTS
# How the two dates meet in the network (``models.changenet``): stacked as one image, or one shared encoder
# per date with its features differenced or concatenated.
Fusion = Literal["early", "siamese-diff", "siamese-concat"]
FUSIONS: tuple[str, ...] = get_args(Fusion)


@dataclass
class ModelSpec:
    """Everything needed to rebuild a change network and feed it correctly (serialised as JSON)."""

    name: str = "changewatch-rgbn"
    architecture: str = "unet"
    fusion: Fusion = "early"
    encoder: str = "mobilenet_v2"
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] = (128, 64, 48, 32, 16)
    bands: tuple[str, ...] = ("blue", "green", "red", "nir")
    gsd_m: float = 10.0
    gsd_range_m: tuple[float, float] | None = None  # input GSDs served at their own pixels (None: gsd_m/2 to 3×gsd_m)
    outputs: tuple[str, ...] = ("change",)  # what each output channel predicts (OUTPUTS), change first
    normalisation: str = ""
    threshold: float = 0.5
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    licence: str = ""

    @property
    def serves_gsd_m(self) -> tuple[float, float]:
        """(finest, coarsest) input GSD in metres the model compares at the imagery's own pixels.

        Imagery outside is resampled to ``gsd_m`` (``rs.grid.grid_for_gsd``).
        """
        return self.gsd_range_m or (self.gsd_m / 2, self.gsd_m * 3)

    def decision_threshold(self, given: float | None = None) -> float:
        """The probability from which a pixel is change: ``given``, or, when it is None, the model's own.

        The model's own threshold was chosen on its validation data.
        """
        return self.threshold if given is None else given

    def smallest_change_m2(self, given: float | None = None) -> float:
        """The smallest change object kept, in m² of ground: ``given``, or, when it is None, the model's own.

        The model's own: two pixels at its GSD and never under MIN_OBJECT_M2 (200 m² for the 10 m
        Sentinel-2 models, 10 m² for a 0.5 m model).
        """
        return max(2 * self.gsd_m ** 2, MIN_OBJECT_M2) if given is None else given

    @property
    def min_side_px(self) -> int:
        """Smallest scene side, in pixels of the grid the model sees, it is trusted on.

        The crop side it was trained on (less context than it ever learnt from gives other answers:
        a 30×24 px clip of an OSCD city scores F1 0, 128 px clips as the whole city), else its size
        multiple.
        """
        config = self.training.get("config") if isinstance(self.training, dict) else None
        crop = config.get("crop") if isinstance(config, dict) else None
        return int(crop) if isinstance(crop, int) and crop > 0 else 2 ** self.encoder_depth

    def check_bands(self, band_count: int, compared: BandChoice | None = None,
                    given: tuple[str, ...] | None = None) -> None:
        """Raise ModelError unless the input's bands per date are the model's: as many and, where known, the same.

        ``compared``: the bands compared (``rs.bands.BandChoice``), checked per date where their names say what
        they are (``rs.bands.common_name``: ``B08`` and ``nir`` are nir; ``band 1`` says nothing): each such
        band must be the model's band at its place (when the model's band name says what it is too), and no
        band may come twice. Bands whose names say nothing go to the model in the order compared. ``given``:
        the ``--bands`` the user typed, named in the message.
        """
        if band_count != len(self.bands):
            raise ModelError(
                f"model {self.name} expects {len(self.bands)} bands per date "
                f"({', '.join(self.bands)}) but the scenes have {band_count}"
            )
        if compared is not None:
            for role, names in (("BEFORE", compared.before_names), ("AFTER", compared.after_names)):
                self._check_band_names(names, role, given)

    def _check_band_names(self, names: tuple[str | None, ...], role: str, given: tuple[str, ...] | None) -> None:
        """Raise ModelError when ``names`` (one date's bands compared, ``role``) show other bands than the model's."""
        from changewatch.rs.bands import common_name

        found = [common_name(n) for n in names]
        wanted = [common_name(b) for b in self.bands]
        known = [f for f in found if f is not None]
        misplaced = any(f is not None and w is not None and f != w for f, w in zip(found, wanted, strict=True))
        if not misplaced and len(set(known)) == len(known):
            return
        what = (f"--bands {','.join(given)}" if given else f"{role}'s bands {','.join(n or '?' for n in names)}")
        where = f" in {role}" if given and role == "AFTER" else ""
        twice = sorted({f for f in known if known.count(f) > 1})
        if twice:
            fix = f"{' and '.join(twice)} given twice: give each of the model's bands once, in that order"
        elif sorted(known) == sorted(w for w in wanted if w is not None) and len(known) == len(wanted):
            fix = "give them in that order" if given else "pick them in that order with --bands"
        else:
            fix = "give those bands, in that order, or a model trained on yours with --model"
        raise ModelError(f"{what} are {','.join(f or '?' for f in found)}{where}; the model {self.name} takes "
                         f"{','.join(self.bands)}: {fix}")

    def check_grid(self, grid: Grid) -> None:
        """Check that the model can take ``grid`` (the grid the model will see).

        Raises IncompatibleScenesError when ``grid`` has a side shorter than ``min_side_px`` or more
        than ``MAX_GRID_PX`` pixels.
        """
        side = self.min_side_px
        if min(grid.width, grid.height) < side:
            raise IncompatibleScenesError(
                f"the scenes overlap on {grid.width}×{grid.height} pixels of the grid the model sees, too small for "
                f"model {self.name}: it needs at least {side}×{side} (the context it was trained on); give "
                "scenes reaching further around the area of interest")
        if grid.width * grid.height > MAX_GRID_PX:
            raise IncompatibleScenesError(
                f"the common grid is {grid.width}×{grid.height} pixels ({grid.width * grid.height / 1e9:.1f} Gpx), "
                f"more than the {MAX_GRID_PX / 1e9:.0f} Gpx one run takes: crop the scenes to the area of interest "
                "or split it into the jobs of a batch manifest")

    @property
    def in_channels(self) -> int:
        """Input channels of the network: the bands of both dates."""
        return 2 * len(self.bands)

    @classmethod
    def from_dict(cls, data: object) -> ModelSpec:
        """Build from a parsed JSON object.

        Raises ModelError for anything else, for unknown keys (so typos surface), for a value of the
        wrong type (``bands`` a list of names, ``threshold`` a number…), and for a threshold outside
        (0, 1) or a GSD that is not positive.
        """
        if not isinstance(data, dict):
            raise ModelError(f"model metadata must be a JSON object, not {type(data).__name__}")
        hints = get_type_hints(cls)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ModelError(f"unknown keys in model metadata: {sorted(map(str, unknown))}")
        wrong = sorted(key for key, value in data.items() if not _is_a(value, hints[key]))
        if wrong:
            raise ModelError(f"model metadata has values of the wrong type for {', '.join(wrong)}")
        # JSON lists: tuple fields
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        spec = cls(**values)
        if not 0.0 < spec.threshold < 1.0 or not spec.gsd_m > 0:
            raise ModelError(f"model metadata: threshold must be in (0, 1) and gsd_m positive "
                             f"(got {spec.threshold}, {spec.gsd_m})")
        return spec


def _is_a(value: object, hint: Any) -> bool:
    """Whether a JSON value fits a ModelSpec field's type (a tuple field is a JSON list)."""
    origin = get_origin(hint)
    if origin in (Union, UnionType):  # an optional field: None or its type
        return any(_is_a(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is Literal:  # a name from a fixed list: its type is checked here, the name where it is used
        return all(isinstance(value, type(arg)) for arg in get_args(hint))
    if origin is tuple:
        return isinstance(value, list) and all(_is_a(v, get_args(hint)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


def load_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """Read a checkpoint's metadata from ``NAME.json`` (``NAME.safetensors`` is accepted too).

    Raises ModelError when it is missing, not UTF-8 JSON, or not a valid ``ModelSpec``.
    """
    json_path = Path(path).with_suffix(".json")
    if not json_path.exists():
        raise ModelError(f"model metadata not found: {json_path}")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model metadata is not a readable JSON file: {json_path} ({exc})") from exc
    try:
        return ModelSpec.from_dict(data)
    except ModelError as exc:
        raise ModelError(f"{json_path}: {exc}") from exc


def is_shipped(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (NAME.json or NAME.safetensors) names a checkpoint shipped with the package."""
    target = Path(path).resolve().with_suffix(".json")
    return target.parent == MODELS_DIR.resolve() and target.exists()


@dataclass(frozen=True)
class ModelChoice:
    """The checkpoint a run uses and why (recorded in ``summary.json``)."""

    path: Path
    reason: str


def shipped_models() -> list[tuple[Path, ModelSpec]]:
    """The shipped checkpoints present in the package, with their specs."""
    paths = [MODELS_DIR / f"{name}.json" for name in SHIPPED]
    return [(p, load_spec(p)) for p in paths if p.exists()]


def _distance(gsd_m: float, served: tuple[float, float]) -> float:
    """How far ``gsd_m`` lies outside ``served``, as a ratio in log scale (0 inside)."""
    lo, hi = served
    return max(0.0, math.log(lo / gsd_m), math.log(gsd_m / hi))


def choose_model(path: str | os.PathLike[str] | None, band_count: int, gsd_m: float | None = None) -> ModelChoice:
    """``path`` when given; else the shipped model for ``band_count`` bands per date that best serves ``gsd_m``.

    The shipped model is the one whose served GSD range (``ModelSpec.serves_gsd_m``) holds
    ``gsd_m`` (metres: the scene's pixel size), or lies nearest to it in log scale. Without a GSD
    (plain images of unknown pixel size) the coarsest-GSD model of that band count.

    Raises ModelError when no shipped model takes ``band_count`` bands, naming the ones that
    exist (and, for very-high-resolution imagery, how to pick red, green, blue with --bands).
    """
    if path:
        return ModelChoice(Path(path), "given with --model")
    shipped = shipped_models()
    fitting = [(p, s) for p, s in shipped if len(s.bands) == band_count]
    if not fitting:
        offered = "; ".join(f"{p.stem}: {', '.join(s.bands)} at {s.serves_gsd_m[0]:g}–{s.serves_gsd_m[1]:g} m"
                            for p, s in shipped)
        hint = (" (very-high-resolution imagery: pick red, green, blue, e.g. --bands 3,2,1 or by band name)"
                if gsd_m is not None and gsd_m <= VHR_MAX_GSD_M else "")
        raise ModelError(f"no shipped model takes {band_count} bands per date ({offered}){hint}; pick bands "
                         "with --bands or give a model with --model")
    if gsd_m is None:
        p, s = max(fitting, key=lambda ps: ps[1].gsd_m)
        return ModelChoice(p, f"{band_count} bands per date, GSD unknown (plain images): {p.stem}")
    p, s = min(fitting, key=lambda ps: (_distance(gsd_m, ps[1].serves_gsd_m), abs(math.log(gsd_m / ps[1].gsd_m))))
    lo, hi = s.serves_gsd_m
    where = "within" if lo <= gsd_m <= hi else "nearest to"
    return ModelChoice(p, f"{band_count} bands per date at {gsd_m:.3g} m GSD, {where} the {lo:g}–{hi:g} m "
                          f"{p.stem} serves")
