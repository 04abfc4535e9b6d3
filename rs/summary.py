"""What a run records about itself: ``RunSummary``, written by ``detect`` and ``crosscheck``, read back by others.

Written as ``summary.json`` by ``detect`` and as ``crosscheck_summary.json`` by ``crosscheck``,
and read back by ``batch``, ``review`` and ``export``.

One typed record for both kinds of run (the sections only a detect run has are None for a
cross-check and left out of its file). ``to_dict`` gives the JSON form, ``from_dict`` reads it back,
also from files written by earlier versions (a cross-check's areas were under ``counts``).
Recorded details that nothing reads back (validity rules, band pairing, radiometry, layer counts)
stay plain JSON mappings. Light: no heavy library.
"""

from __future__ import annotations

import os
import platform as host
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import changewatch
from changewatch.rs.grid import GridSpec
from changewatch.rs.io.files import sha256

SHA256_MULTIHASH = "1220"  # multihash prefix of a SHA-256 digest: function 0x12, 32 bytes (STAC file extension)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Counts:
    """Changes, flagged changes, permitted ones, flags per reason code, parcels with flags, changes per type.

    Parcels with flags are None without parcels; for models with building outputs, changes per
    change type (None when the model cannot tell; a cross-check leaves it None).
    """

    changes: int
    flagged: int
    permitted: int
    by_reason: dict[str, int]
    flagged_parcels: int | None
    by_change_type: dict[str, int] | None = None


@dataclass(frozen=True)
class Areas:
    """Area of all changes and of the flagged ones, m² (None when the change layer has no ``area_m2``)."""

    changes: float | None
    flagged: float | None


@dataclass(frozen=True)
class FileRecord:
    """A file a run read: its size (bytes) and SHA-256 as a multihash (hex: ``1220`` then the digest).

    As the STAC File Info extension writes them (``file:size``, ``file:checksum``).
    """

    size: int
    checksum: str

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileRecord:
        """The record of the file at ``path`` (reads it whole, one 1 MiB block at a time)."""
        return cls(Path(path).stat().st_size, SHA256_MULTIHASH + sha256(Path(path)))


def file_records(paths: Iterable[str | os.PathLike[str]]) -> dict[str, FileRecord]:
    """Return the ``FileRecord`` of each path that is a file, keyed by its absolute path.

    Folders (e.g. a FileGDB) are left out; a Shapefile is recorded by its ``.shp``.
    """
    return {str(Path(p).resolve()): FileRecord.of(p) for p in dict.fromkeys(paths) if Path(p).is_file()}


@dataclass(frozen=True)
class LayerInputs:
    """The reference layers read, geometries repaired in each, per layer its feature counts, and input files.

    Layers as ``path`` or ``path:layer``, None when not given; counts as
    ``rs.crosscheck.layers.Layer.counts``; ``files``: the size and checksum of every input file of
    the run, by absolute path (empty in the files of earlier versions).
    """

    permits: str | None = None
    permits_repaired_geometries: int = 0
    zoning: str | None = None
    zoning_repaired_geometries: int = 0
    parcels: str | None = None
    parcels_repaired_geometries: int = 0
    layer_counts: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class SceneInputs(LayerInputs):
    """What a detect run read: scenes and their dates, common grid, bands, masks, co-registration, decisions.

    The scenes (absolute paths) and their acquisition dates (ISO, from their date tags,
    ``rs.io.raster.scene_date``; None when a scene has none), the common grid (CRS, size, pixel
    size in metres, where it lies), the bands compared, the masks, the co-registration and what was
    decided about each date (validity, band pairing, radiometry, STAC intake: ``AlignedPair.provenance``).
    """

    before: str = ""
    after: str = ""
    before_date: str | None = None
    after_date: str | None = None
    crs: str | None = None
    width: int = 0
    height: int = 0
    pixel_size_m: float | None = None
    grid: GridSpec = field(default_factory=GridSpec)
    bands_per_date: int = 0
    bands: list[str] | str = "all"
    masks: list[str] = field(default_factory=list)
    coregistration: dict[str, Any] | None = None
    validity: dict[str, Any] = field(default_factory=dict)
    bands_compared: dict[str, Any] = field(default_factory=dict)
    radiometry: dict[str, Any] = field(default_factory=dict)
    intake: dict[str, Any] = field(default_factory=dict)  # per date given as a STAC item: assets read, values, mask


@dataclass(frozen=True)
class ChangeLayerInputs(LayerInputs):
    """What a cross-check read: the change layer (absolute path), geometries repaired in it, and numbering.

    Whether its changes were numbered here (they had no ``change_id``).
    """

    changes: str = ""
    changes_repaired_geometries: int = 0
    change_ids_assigned: bool = False


@dataclass(frozen=True)
class ModelRecord:
    """The checkpoint a detect run used, why, and what it serves."""

    path: str
    name: str
    chosen_because: str
    gsd_m: float
    serves_gsd_m: list[float]
    compared_at_gsd_m: float | None
    encoder: str
    bands: list[str]
    device: str


@dataclass(frozen=True)
class Thresholds:
    """The decisions of a detect run: change probability (0–1), smallest change kept (m²), simplification (m).

    Simplification: the tolerance outlines were simplified to.
    """

    probability: float
    min_area_m2: float
    simplify_m: float


@dataclass(frozen=True)
class BuildingsRecord:
    """How changes were split into buildings (``rs.vectorize.Vectorized``)."""

    split_per_building: bool
    unsplit_regions: int
    notes: list[str]


@dataclass(frozen=True)
class RulesRecord:
    """The date the rules were judged on, where it came from, and the rule settings.

    The date is ISO (None only in files of older versions); the rule settings are
    ``rs.crosscheck.settings.RuleConfig``.
    """

    as_of: str | None
    as_of_source: str
    exceed_min_m2: float
    exceed_min_fraction: float
    demolition_needs_permit: bool


@dataclass(frozen=True)
class ReviewRecord:
    """Review decisions carried over from the earlier run of the folder (``rs.decisions.CarriedReview``)."""

    carried_from: str
    carried: int
    unmatched: int
    min_iou: float


@dataclass(frozen=True)
class RunSummary:
    """A run's record, of a detect run or a cross-check.

    ``inputs`` is ``SceneInputs`` for a detect run, ``ChangeLayerInputs`` for a cross-check;
    ``model``, ``thresholds``, ``buildings``, ``timings_s`` and ``platform`` are a detect run's
    only (None for a cross-check); ``review`` is None when no decisions were carried over;
    ``config`` is the run's configuration as ``dataclasses.asdict`` gives it.
    """

    counts: Counts
    areas_m2: Areas
    inputs: SceneInputs | ChangeLayerInputs
    rules: RulesRecord
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    model: ModelRecord | None = None
    thresholds: Thresholds | None = None
    buildings: BuildingsRecord | None = None
    timings_s: dict[str, float] | None = None
    platform: dict[str, str] | None = None
    review: ReviewRecord | None = None
    changewatch_version: str = changewatch.__version__
    created_utc: str = field(default_factory=_now)

    @property
    def is_detect(self) -> bool:
        """True for a detect run's summary (it read scenes), False for a cross-check's."""
        return isinstance(self.inputs, SceneInputs)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the layout of ``summary.json``).

        A cross-check's leaves out the sections it does not have.
        """
        data = asdict(self)
        order = ("changewatch_version", "created_utc", "counts", "areas_m2", "inputs", "model", "thresholds",
                 "buildings", "rules", "timings_s", "warnings", "config", "platform", "review")
        detect_only = ("model", "thresholds", "buildings", "timings_s", "platform")
        return {key: data[key] for key in order if self.is_detect or key not in detect_only}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        """A summary read back from its JSON form (also one written by an earlier version).

        Raises KeyError or TypeError when a section it needs is missing or malformed.
        """
        counts = dict(data["counts"])
        areas = data.get("areas_m2") or {"changes": counts.get("changes_area_m2"),
                                         "flagged": counts.get("flagged_area_m2")}
        counts = {k: v for k, v in counts.items() if k in _names(Counts)}
        inputs = dict(data["inputs"])
        kind = SceneInputs if "before" in inputs else ChangeLayerInputs
        inputs = {k: v for k, v in inputs.items() if k in _names(kind)}
        if "grid" in inputs:
            inputs["grid"] = GridSpec(**inputs["grid"])
        inputs["files"] = {path: FileRecord(**record) for path, record in (inputs.get("files") or {}).items()}
        return cls(counts=Counts(**counts), areas_m2=Areas(**areas), inputs=kind(**inputs),
                   rules=RulesRecord(**data["rules"]), warnings=list(data.get("warnings") or []),
                   config=data.get("config") or {}, model=_optional(ModelRecord, data.get("model")),
                   thresholds=_optional(Thresholds, data.get("thresholds")),
                   buildings=_optional(BuildingsRecord, data.get("buildings")), timings_s=data.get("timings_s"),
                   platform=data.get("platform"), review=_optional(ReviewRecord, data.get("review")),
                   changewatch_version=data.get("changewatch_version", ""), created_utc=data.get("created_utc", ""))


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _optional(cls: type, data: dict[str, Any] | None) -> Any:
    return cls(**data) if data else None


def platform_record() -> dict[str, str]:
    """The Python version and machine a run ran on (``RunSummary.platform``)."""
    return {"python": host.python_version(), "machine": host.machine()}
