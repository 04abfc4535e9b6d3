"""Synthetic change pairs in the LEVIR-CD layout, from single-date imagery with building footprints.

For every area and pair: a GSD is drawn (``SynthConfig.gsd_m``), a chip is cut from one of the
area's sources at that GSD, buildings are removed from BEFORE (*appear*), from AFTER
(*disappear*), pasted into AFTER (*paste*) or several of these at once (*mix*) — or nothing
changes (*none*: nuisance-only pairs with empty labels) — then each date independently gets its
own nuisance (``rs.synth.nuisance``). Labels are the changed footprints, 255, on BEFORE's frame
(a misregistered date is shifted against them, as in real pairs).

Every pair draws from its own generator, seeded by (seed, area index, pair index), so one seed
gives byte-identical files. One whole area (``val_area``) makes the ``val/`` split; its buildings
are never pasted into training pairs, nor the other way round.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import shapely
from affine import Affine
from PIL import Image
from rasterio.transform import array_bounds
from tqdm.auto import tqdm

import changewatch
from changewatch.rs.datasets import BUILDING_FOLDERS
from changewatch.rs.errors import InputFileError
from changewatch.rs.runfolder import StagedOutput
from changewatch.rs.synth.config import ATTRIBUTION, KINDS, SynthConfig
from changewatch.rs.synth.edit import Donor, cut_donors, ground_of, grow_px, paste_buildings, remove_buildings
from changewatch.rs.synth.nuisance import DateContext, apply_nuisance
from changewatch.rs.synth.shadow import Sun, dilate
from changewatch.rs.synth.sources import Chip, Source, cut_chip, load_sources

PAD = 8  # pixels of margin around each chip (misregistration, filters), cropped before writing
CHIP_TRIES = 40  # chip positions tried per pair to find buildings to change
EDGE_PX = 3  # valid pixels this close to the imagery's edge are written black too (misregistration)
OPS = ("appear", "disappear", "paste")
EDIT_TRIES = 3  # chips tried for a pair meant to change before it is kept as nuisance-only


@dataclass
class PairRecord:
    """What one pair is: written into synth.json."""

    name: str
    split: str
    source: str
    kind: str
    gsd_m: float
    changed: dict[str, int]
    label_px: int
    nuisance_before: list[str] = field(default_factory=list)
    nuisance_after: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SynthResult:
    """A finished run: the output folder, its synth.json, and every pair's record."""

    out: Path
    manifest: Path
    pairs: list[PairRecord]
    skipped: list[str]  # areas whose imagery is too small for one chip at the GSD range's low end


def _choose_ops(config: SynthConfig, rng: np.random.Generator) -> tuple[str, ...]:
    if rng.random() < config.nuisance_only:
        return ()
    weights = np.asarray(config.kind_weights, float)
    kind = KINDS[int(rng.choice(len(KINDS), p=weights / weights.sum()))]
    if kind != "mix":
        return (kind,)
    k = int(rng.integers(2, 4))
    return tuple(sorted(rng.choice(OPS, size=k, replace=False).tolist(), key=OPS.index))


def _fits(source: Source, side: int, max_nodata: float) -> bool:
    """Whether a ``side``-pixel window of ``source`` can be on imagery for 1 − ``max_nodata`` of it."""
    h, w = source.valid.shape
    return bool(min(h, side) * min(w, side) >= (1 - max_nodata) * side * side)


def _eligible(chip: Chip, config: SynthConfig) -> np.ndarray:
    """Footprint ids wholly inside the written part of the chip, on valid imagery, large enough."""
    size = chip.image.shape[0]
    inner = shapely.box(*array_bounds(size - 2 * (PAD + 2), size - 2 * (PAD + 2),
                                      chip.transform * Affine.translation(PAD + 2, PAD + 2)))
    ids = np.unique(chip.instances[chip.instances > 0])
    if len(ids) == 0:
        return ids
    polygons = chip.source.footprints[ids.astype(int) - 1]
    keep: npt.NDArray[np.bool_] = shapely.within(polygons, inner) & (shapely.area(polygons) >= config.min_building_m2)
    keep &= np.array([chip.valid[chip.instances == i].all() for i in ids])
    keep &= np.array([(chip.instances == i).sum() < 0.15 * size * size for i in ids])
    return ids[keep]


def _side(config: SynthConfig, gsd_m: float, base_m: float) -> int:
    """Pixels of a source at ``base_m`` that make one chip (with its margin) at ``gsd_m``."""
    size = config.chip + 2 * PAD
    return max(size, int(round(size * gsd_m / base_m)))


def usable(sources: list[Source], config: SynthConfig) -> list[Source]:
    """The sources large enough for a chip at the low end of the GSD range."""
    return [s for s in sources if _fits(s, _side(config, config.gsd_m[0], s.gsd_m), config.max_nodata)]


def _draw_chip(sources: list[Source], config: SynthConfig, needs: int,
               rng: np.random.Generator) -> tuple[Chip, np.ndarray]:
    """A chip at a drawn GSD with at least ``needs`` buildings to change, and its eligible ids.

    The chip is one found within CHIP_TRIES positions (else the one with most). The GSD is lowered
    (×0.95 at a time, not below the range's low end) while no source is large enough for a chip
    wholly on imagery; at the low end, chips up to ``max_nodata`` off the imagery are taken.
    ``sources`` must be ``usable``.
    """
    gsd = config.draw_gsd(float(rng.random()))
    size = config.chip + 2 * PAD
    while True:
        fits = [s for s in sources if _fits(s, _side(config, gsd, s.gsd_m), 0.0)]
        if fits or gsd <= config.gsd_m[0]:
            break
        gsd = max(config.gsd_m[0], gsd * 0.95)
    fits = fits or [s for s in sources if _fits(s, _side(config, gsd, s.gsd_m), config.max_nodata)]
    weights = np.array([s.valid_m2 for s in fits])
    best: tuple[Chip, np.ndarray] | None = None
    for _ in range(CHIP_TRIES):
        source = fits[int(rng.choice(len(fits), p=weights / weights.sum()))]
        side = _side(config, gsd, source.gsd_m)
        h, w = source.valid.shape
        row = int(rng.integers(min(0, h - side), max(0, h - side) + 1))
        col = int(rng.integers(min(0, w - side), max(0, w - side) + 1))
        chip = cut_chip(source, row, col, side, size)
        if chip.valid[PAD:-PAD, PAD:-PAD].mean() < 1 - config.max_nodata:
            continue
        ids = _eligible(chip, config)
        if best is None or len(ids) > len(best[1]):
            best = (chip, ids)
        if len(ids) >= needs:
            break
    if best is None:
        raise InputFileError(f"no chip of {config.chip} pixels at {gsd:g} m in area {sources[0].area} is "
                             f"{100 * (1 - config.max_nodata):.0f} % on imagery")
    return best


def _pair_sun(chip: Chip, rng: np.random.Generator) -> Sun:
    """The chip's source sun, or, when it was not measured, a random one.

    Random: shadow length h / tan(elevation) for a building of 3-6 m under a sun 45-75° high.
    """
    if chip.source.sun.measured:
        return chip.source.sun
    height, elevation = rng.uniform(3, 6), np.radians(rng.uniform(45, 75))
    return Sun(float(rng.uniform(0, 360)), float(height / np.tan(elevation)), False)


def _pick_donors(donors: list[Donor], chip: Chip, config: SynthConfig, rng: np.random.Generator) -> list[Donor]:
    others = [d for d in donors if d.source != chip.source.name] or donors
    limit = config.chip / 3 * chip.gsd_m
    fitting = [d for d in others if max(d.mask.shape) * d.gsd_m < limit]
    if not fitting:
        return []
    n = int(rng.integers(1, config.max_changed + 1))
    return [fitting[int(i)] for i in rng.choice(len(fitting), size=min(n, len(fitting)), replace=False)]


@dataclass(frozen=True)
class SynthPair:
    """One pair as written, with what it was made from.

    ``before``, ``after`` (chip, chip, 3) uint8 RGB, ``label`` (chip, chip) uint8, 255 = change,
    and the buildings standing at each date, ``building_before`` and ``building_after`` (chip,
    chip) uint8, 255 = building (footprints, before misregistration); with what it was made from:
    the chip's footprint ids ``instances`` (chip, chip) uint16 on the same pixels, the ids
    ``removed`` (appear and disappear) and the mask of the footprints ``pasted``.
    """

    before: np.ndarray
    after: np.ndarray
    label: np.ndarray
    building_before: np.ndarray
    building_after: np.ndarray
    instances: np.ndarray
    removed: np.ndarray
    pasted: np.ndarray
    record: PairRecord


@dataclass
class _Edited:
    """A chip after the labelled edits (padded, before nuisance)."""

    before: np.ndarray
    after: np.ndarray
    label: np.ndarray
    pasted: np.ndarray
    present: dict[str, np.ndarray]
    changed: dict[str, int]
    removed: list[np.ndarray]


def _edit(chip: Chip, eligible: np.ndarray, ops: tuple[str, ...], donors: list[Donor], sun: Sun,
          config: SynthConfig, rng: np.random.Generator) -> _Edited:
    """Apply ``ops`` to a chip: appear removes buildings from BEFORE, disappear from AFTER, paste adds donors to AFTER.

    Appear and disappear each remove 1 to ``max_changed`` of ``eligible``, never the same one twice.
    """
    shape = chip.valid.shape
    e = _Edited(chip.image, chip.image.copy(), np.zeros(shape, bool), np.zeros(shape, bool),
                {"before": chip.instances > 0, "after": chip.instances > 0}, dict.fromkeys(OPS, 0), [])
    eligible = rng.permutation(eligible)
    if any(op in ops for op in ("appear", "disappear")):
        context = chip.around(3)
        size = chip.image.shape[0]
        ground = ground_of(context.image, context.instances, context.valid, chip.gsd_m, (size, size))
    for op, date in (("appear", "before"), ("disappear", "after")):
        if op not in ops or len(eligible) == 0:
            continue
        n = int(rng.integers(1, config.max_changed + 1))
        chosen, eligible = eligible[:n], eligible[n:]
        edited, removed = remove_buildings(e.before if date == "before" else e.after, chip.instances, chip.valid,
                                           chosen, sun, chip.gsd_m, rng, ground)
        e.before, e.after = (edited, e.after) if date == "before" else (e.before, edited)
        footprints = np.isin(chip.instances, removed)
        e.label |= footprints
        e.present[date] &= ~footprints
        e.changed[op] = len(removed)
        e.removed.append(removed)
    if "paste" in ops:
        occupied = dilate(chip.instances > 0, grow_px(chip.gsd_m)) | ~chip.valid
        e.after, e.pasted, e.changed["paste"] = paste_buildings(
            e.after, occupied, _pick_donors(donors, chip, config, rng), sun, chip.gsd_m, rng, PAD + 2)
        e.label |= e.pasted
        e.present["after"] |= e.pasted
    return e


def make_pair(sources: list[Source], donors: list[Donor], config: SynthConfig, rng: np.random.Generator,
              name: str, split: str) -> SynthPair:
    """One synthetic pair from ``sources`` (all of one area, ``usable``), pasting ``donors``.

    A pair meant to change whose edits all failed (no building to remove, no room to paste) is
    tried again on another chip, up to EDIT_TRIES times, then kept as a nuisance-only pair.
    """
    ops = _choose_ops(config, rng)
    for _ in range(EDIT_TRIES):
        chip, eligible = _draw_chip(sources, config, sum(op in ops for op in ("appear", "disappear")), rng)
        sun = _pair_sun(chip, rng)
        plan = (*ops, "paste") if ops and len(eligible) == 0 and "paste" not in ops else ops
        edited = _edit(chip, eligible, plan, donors, sun, config, rng)
        if not ops or any(edited.changed.values()):
            break
    kinds = [op for op in OPS if edited.changed[op]]
    kind = "none" if not kinds else kinds[0] if len(kinds) == 1 else "mix"
    images, applied = {}, {}
    for date, image in (("before", edited.before), ("after", edited.after)):
        ctx = DateContext(edited.present[date], sun, chip.gsd_m)
        images[date], applied[date] = apply_nuisance(image, ctx, config.nuisance, rng)
    keep = ~dilate(~chip.valid, EDGE_PX)
    crop = (slice(PAD, -PAD), slice(PAD, -PAD))
    out = [np.where(keep[..., None], images[d], 0)[crop] for d in ("before", "after")]
    label = (edited.label & keep)[crop]
    record = PairRecord(name, split, chip.source.name, kind, round(chip.gsd_m, 4),
                        {op: n for op, n in edited.changed.items() if n}, int(label.sum()), applied["before"],
                        applied["after"])
    removed = np.sort(np.concatenate(edited.removed)) if edited.removed else np.zeros(0, np.uint16)
    standing = [((edited.present[d] & keep)[crop]).astype(np.uint8) * 255 for d in ("before", "after")]
    return SynthPair(out[0], out[1], label.astype(np.uint8) * 255, standing[0], standing[1],
                     np.where(keep, chip.instances, 0)[crop], removed, (edited.pasted & keep)[crop], record)


def _write_image(array: np.ndarray, path: Path, quality: int | None = None) -> None:
    """PNG (lossless), or JPEG at ``quality`` (the path's suffix is set accordingly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if quality is None:
        Image.fromarray(array).save(path.with_suffix(".png"), format="PNG", compress_level=9)
    else:
        Image.fromarray(array).save(path.with_suffix(".jpg"), format="JPEG", quality=quality)


def _source_record(source: Source, split: str) -> dict[str, object]:
    folders = sorted({str(Path(f).parent) for f in source.files})
    return {"name": source.name, "area": source.area, "split": split, "folders": folders,
            "files": len(source.files), "crs": source.crs.to_string(), "gsd_m": source.gsd_m,
            "pixels": list(source.valid.shape), "valid_m2": round(source.valid_m2), "buildings": len(source.footprints),
            "sun": asdict(source.sun)}


def _manifest(config: SynthConfig, sources: list[Source], records: list[PairRecord], areas: list[str],
              skipped: list[str]) -> dict[str, object]:
    counts: dict[str, dict[str, int]] = {}
    for split in ("train", "val"):
        mine = [r for r in records if r.split == split]
        kinds = Counter(r.kind for r in mine)
        counts[split] = {"pairs": len(mine), **{k: kinds.get(k, 0) for k in (*KINDS, "none")},
                         "changed_buildings": sum(sum(r.changed.values()) for r in mine)}
    gsds = [r.gsd_m for r in records]
    return {
        "generator": f"changewatch {changewatch.__version__} changewatch.rs.synth",
        "attribution": ATTRIBUTION,
        "licences": {"imagery": "CC BY 4.0 (OpenAerialMap contributors)",
                     "building_footprints": "ODbL 1.0 (OpenStreetMap contributors)"},
        "layout": "LEVIR-CD: {train,val}/{A,B,label}/<name>.png (A, B .jpg with image_quality); A before, B after, "
                  "label 0 / 255 change; "
                  "building_before/, building_after/: 0 / 255 the buildings standing at each date",
        "seed": config.seed,
        "val_area": config.val_area,
        "areas": {"train": [a for a in areas if a != config.val_area], "val": [config.val_area],
                  "skipped_too_small": skipped},
        "gsd_m": {"requested": list(config.gsd_m), "min": min(gsds), "median": float(np.median(gsds)),
                  "max": max(gsds)},
        "counts": counts,
        "config": asdict(config),
        "sources": [_source_record(s, "val" if s.area == config.val_area else "train") for s in sources],
        "pairs": [asdict(r) for r in records],
    }


def generate(config: SynthConfig, progress: bool = True) -> SynthResult:
    """Write ``config.pairs_per_area`` pairs for every area under ``config.source`` into ``config.out``.

    Areas too small for one chip are left out (listed in the result and synth.json). ``config.out``
    gets ``train/`` and, for ``config.val_area``, ``val/``, each with ``A/``, ``B/``, ``label/``,
    ``building_before/``, ``building_after/``, and ``synth.json``; all staged beside ``out`` and
    moved in only on success.

    Raises InputFileError for a missing or unreadable source folder or file, a ``val_area``
    that is not among the areas found or is too small, or fewer than two usable areas.
    """
    sources = load_sources(config.source, config.gsd_m[0])
    found = sorted({s.area for s in sources})
    if config.val_area not in found:
        raise InputFileError(f"val area {config.val_area!r} not found under {config.source}: "
                             f"areas are {', '.join(found)}")
    fit = usable(sources, config)
    areas = sorted({s.area for s in fit})
    skipped = [a for a in found if a not in areas]
    if config.val_area in skipped or len(areas) < 2:
        raise InputFileError(f"the imagery of {', '.join(skipped)} is too small for {config.chip}-pixel chips at "
                             f"{config.gsd_m[0]:g} m: choose a smaller chip, a finer GSD or another val area")
    donors = {split: [d for s in sources if (s.area == config.val_area) == (split == "val")
                      for d in cut_donors(s.image, s.instances, s.valid, s.gsd_m, s.name, config.min_building_m2)]
              for split in ("train", "val")}
    records: list[PairRecord] = []
    with StagedOutput(config.out) as out, tqdm(total=len(areas) * config.pairs_per_area, unit="pair",
                                               disable=not progress, desc="synth") as bar:
        for a, area in enumerate(areas):
            split = "val" if area == config.val_area else "train"
            mine = [s for s in fit if s.area == area]
            for i in range(config.pairs_per_area):
                rng = np.random.default_rng([config.seed, a, i])
                name = f"{area}-{i:04d}"
                pair = make_pair(mine, donors[split], config, rng, name, split)
                for folder, array in (("A", pair.before), ("B", pair.after), ("label", pair.label),
                                      (BUILDING_FOLDERS[0], pair.building_before),
                                      (BUILDING_FOLDERS[1], pair.building_after)):
                    quality = config.image_quality if folder in ("A", "B") else None  # labels stay lossless
                    _write_image(array, out.path(split) / folder / name, quality)
                records.append(pair.record)
                bar.update()
        manifest = _manifest(config, sources, records, areas, skipped)
        out.path("synth.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return SynthResult(Path(config.out), Path(config.out) / "synth.json", records, skipped)
