"""One detection run: align → tiling → infer → vectorize → crosscheck → export.

``detect`` checks every input before it writes anything, writes all outputs into a staging
folder that replaces OUTDIR as a whole when the run has succeeded (``rs.runfolder.StagedOutput``:
OUTDIR is at every instant the complete earlier run or the complete new one; a failed run
leaves it as it was), and returns a DetectResult. Review decisions a planner saved in the earlier
run's ``flagged.gpkg`` are carried to the new flags (``rs.decisions.match_decisions``). Outputs in OUTDIR:

- ``change_prob.tif`` — float32 COG of change probability on the common grid (``rs.grid.GridSpec``:
  by default BEFORE's pixels where the two dates overlap; nodata NaN), and ``change_prob.qml`` beside
  it, its QGIS style (``rs.styles``);
- ``changes.gpkg`` — layer ``changes``: every change polygon (scene CRS) with ``change_id``,
  ``area_m2``, ``mean_prob``, ``max_prob``, ``change_type`` (models with building outputs: one
  polygon per building, see ``rs.buildings``; else NULL), ``permit_ids``, ``reasons``, ``flagged``;
- ``flagged.gpkg`` — layer ``flagged_changes``: the changes with a reason code other than
  PERMITTED (with ``parcel_ids`` when parcels are given), and layer ``flagged_parcels``: one row
  per parcel with flags (parcel geometry, ``n_flags``, ``flagged_area_m2``, ``worst_reason``, ``max_prob``);
  layers ``review`` and ``review_unmatched`` when decisions were carried over;
- ``summary.json`` — counts (by reason code and by change type), areas, inputs, model,
  thresholds, how changes were split into buildings, timings and this run's config.

Both GeoPackages carry each layer's QGIS style in their ``layer_styles`` table (``rs.styles``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
from rasterio._err import CPLE_BaseError

from changewatch.rs.align import AlignedPair
from changewatch.rs.config import CHANGE_TYPES, DetectConfig, InferenceConfig, VectorizeConfig
from changewatch.rs.crosscheck.judge import Judgement, judge
from changewatch.rs.crosscheck.layers import Layers
from changewatch.rs.crosscheck.run import rules_record
from changewatch.rs.crosscheck.settings import RuleConfig
from changewatch.rs.decisions import CarriedReview, carry, previous_decisions
from changewatch.rs.errors import InputFileError
from changewatch.rs.infer import ChangeModel, ModelCache, predict_pair, tiling
from changewatch.rs.io.gdalpaths import scene_name
from changewatch.rs.io.intake import is_described
from changewatch.rs.io.raster import scene_date, write_probability
from changewatch.rs.io.stac_scene import is_stac_path
from changewatch.rs.prepare import PreparedPair, prepare_for_model
from changewatch.rs.runfolder import (
    CHANGE_PROB,
    CHANGE_PROB_STYLE,
    DETECT_FILES,
    FLAGGED_GPKG,
    SUMMARY,
    StagedOutput,
    write_run_layers,
    write_summary,
)
from changewatch.rs.runinputs import scene_files
from changewatch.rs.styles import write_raster_style
from changewatch.rs.summary import (
    BuildingsRecord,
    ModelRecord,
    RunSummary,
    SceneInputs,
    Thresholds,
    file_records,
    platform_record,
)
from changewatch.rs.tiling import Tile
from changewatch.rs.vectorize import Vectorized, vectorize_changes


@dataclass(frozen=True)
class DetectResult:
    """What a run produced: output paths, counts, areas (m²) and the summary written."""

    outdir: Path
    files: dict[str, Path]
    n_changes: int
    n_flagged: int
    flagged_area_m2: float
    summary: RunSummary


Predictor = Callable[[AlignedPair, ChangeModel, InferenceConfig, bool], Iterator[tuple[Tile, np.ndarray]]]


def detect(config: DetectConfig, progress: bool = True, models: ModelCache | None = None,
           predict: Predictor = predict_pair) -> DetectResult:
    """Run the whole pipeline for one scene pair into ``config.outdir`` (replaced as a whole).

    See the module docstring. Raises a ChangewatchError subclass on bad input, OutputError when the
    outputs cannot be written (OUTDIR is then as it was).

    ``models``: where loaded models are kept for reuse (batch runs keep one per worker); by
    default a fresh one on ``config.inference.device``. ``predict``: how the tiles are run — in
    this process by default; ``rs.batch.cluster`` passes one that spreads them over Dask workers.
    """
    t0 = time.perf_counter()
    models = models or ModelCache(config.inference.device, config.inference.amp)
    prepared = prepare_for_model(config.before, config.after, config, config.model, masks=config.masks,
                                 spec_of=models.spec, georeferenced=True)
    assert prepared.choice is not None  # prepare_for_model always chooses
    with prepared.open() as pair:
        layers = config.layers.read(extent=(pair.grid.bounds, pair.grid.crs))
        rules, as_of_source = _rules(config)
        with StagedOutput(config.outdir, inputs=_inputs(config)) as out:  # every input is checked: now outputs
            previous = previous_decisions(out.final(FLAGGED_GPKG))  # unreadable: refused before the long part
            model = models.get(prepared.choice.path)  # the network (torch) only once all else is checked
            timings = {"load_s": time.perf_counter() - t0}
            vectorized, judgement, carried = _stages(config, model, pair, layers, rules, previous, out,
                                                     lambda: predict(pair, model, config.inference, progress), timings)
            timings["total_s"] = time.perf_counter() - t0
            summary = _summary(config, model, prepared, pair, vectorized, judgement, layers, rules, as_of_source,
                               timings, carried)
            with out.writing(SUMMARY):
                write_summary(summary, out.path(SUMMARY))
    files = {name: out.final(name) for name in DETECT_FILES}
    return DetectResult(out.outdir, files, len(judgement.changes), len(judgement.flagged),
                        float(judgement.flagged["area_m2"].sum()), summary)


def _stages(config: DetectConfig, model: ChangeModel, pair: AlignedPair, layers: Layers, rules: RuleConfig,
            previous: gpd.GeoDataFrame | None, out: StagedOutput,
            predicted: Callable[[], Iterator[tuple[Tile, np.ndarray]]],
            timings: dict[str, float]) -> tuple[Vectorized, Judgement, CarriedReview | None]:
    """Infer, vectorize, cross-check and write the layers into the staging folder, timing each stage.

    Infer: the tiles ``predicted`` yields, blended into change_prob.tif. Each stage's time goes
    into ``timings``.
    """
    t = time.perf_counter()
    with out.writing(CHANGE_PROB):
        write_probability(pair.grid, tiling(pair.grid, config.inference), _reading(predicted()),
                          out.path(CHANGE_PROB), model.spec.outputs)
    with out.writing(CHANGE_PROB_STYLE):
        write_raster_style(out.path(CHANGE_PROB_STYLE))
    timings["infer_s"] = time.perf_counter() - t
    t = time.perf_counter()
    threshold = model.spec.decision_threshold(config.threshold)
    smallest = model.spec.smallest_change_m2(config.min_area_m2)
    vectorized = vectorize_changes(out.path(CHANGE_PROB), VectorizeConfig(threshold, smallest, config.simplify_m,
                                                                         config.buildings))
    timings["vectorize_s"] = time.perf_counter() - t
    t = time.perf_counter()
    judgement = judge(vectorized.changes, layers, rules, config.layers.parcel_columns)
    timings["crosscheck_s"] = time.perf_counter() - t
    carried = carry(previous, judgement.flagged, out.final(FLAGGED_GPKG))
    write_run_layers(judgement, carried, out)
    return vectorized, judgement, carried


def _inputs(config: DetectConfig) -> list[str]:
    """Every file a detect run reads (none may lie inside the folder it replaces)."""
    layers = config.layers
    return [p for p in (config.before, config.after, *config.masks, layers.permits, layers.zoning, layers.parcels,
                        config.model) if p]


def _reading(chunks: Iterator[tuple[Tile, np.ndarray]]) -> Iterator[tuple[Tile, np.ndarray]]:
    """``chunks``, with a read failure of the scenes reported as InputFileError.

    So that it is not taken for a failure to write the probability raster they are blended into.
    """
    try:
        yield from chunks
    except (OSError, CPLE_BaseError) as exc:
        raise InputFileError(f"the scenes could not be read: {' '.join(str(exc).split())}") from exc


def _rules(config: DetectConfig) -> tuple[RuleConfig, str]:
    """The rules with the date they are judged on, and where that date came from.

    Given (its source: ``config.as_of_source``), else the AFTER scene's date (its date tag, its STAC item's
    datetime or its Sentinel-2 product's sensing date), else today.
    """
    given = config.layers.rules
    if given.as_of is not None:
        return given, config.as_of_source
    acquired = scene_date(config.after)
    if acquired is not None:
        source = "AFTER scene date tag"
        if is_stac_path(config.after):
            source = "AFTER STAC item datetime"
        elif is_described(config.after):
            source = "AFTER Sentinel-2 product sensing date"
        return replace(given, as_of=acquired), source
    return replace(given, as_of=date.today()), "today (AFTER has no date tag)"


def change_type_counts(vectorized: Vectorized) -> dict[str, int] | None:
    """Changes per change type (every type listed), or None when the raster had no building probabilities.

    None: the model cannot tell.
    """
    if not vectorized.buildings:
        return None
    found = vectorized.changes["change_type"].value_counts()
    return {kind: int(found.get(kind, 0)) for kind in CHANGE_TYPES}


def _summary(config: DetectConfig, model: ChangeModel, prepared: PreparedPair, pair: AlignedPair,
             vectorized: Vectorized, judgement: Judgement, layers: Layers, rules: RuleConfig, as_of_source: str,
             timings: dict[str, float], carried: CarriedReview | None) -> RunSummary:
    choice, coreg, spec = prepared.choice, prepared.coregistration, model.spec
    assert choice is not None and pair.grid.crs is not None  # detect: a chosen model, georeferenced scenes
    read: list[str | Path] = [*scene_files(config.before, config.after, pair.intake, config.masks), *layers.files(),
                              choice.path.with_suffix(".json"), choice.path.with_suffix(".safetensors")]
    dates = [scene_date(p) for p in (config.before, config.after)]
    inputs = SceneInputs(
        **{**asdict(layers.provenance()), "files": file_records(read)}, before=scene_name(config.before),
        after=scene_name(config.after), before_date=dates[0].isoformat() if dates[0] else None,
        after_date=dates[1].isoformat() if dates[1] else None, crs=pair.grid.crs.to_string(), width=pair.grid.width,
        height=pair.grid.height, pixel_size_m=pair.grid.pixel_size_m(), grid=pair.grid_spec,
        bands_per_date=pair.band_count, bands=list(config.bands) if config.bands else "all",
        masks=[str(Path(m).resolve()) for m in config.masks], coregistration=coreg.to_dict() if coreg else None,
        **pair.provenance())
    return RunSummary(
        counts=judgement.counts(change_type_counts(vectorized)), areas_m2=judgement.areas(), inputs=inputs,
        rules=rules_record(rules, as_of_source), warnings=layers.warnings(), config=asdict(config),
        model=ModelRecord(str(choice.path.resolve()), spec.name, choice.reason, spec.gsd_m, list(spec.serves_gsd_m),
                          pair.grid.pixel_size_m(), spec.encoder, list(spec.bands), str(model.device)),
        thresholds=Thresholds(spec.decision_threshold(config.threshold), spec.smallest_change_m2(config.min_area_m2),
                              config.simplify_m),
        buildings=BuildingsRecord(vectorized.buildings, vectorized.unsplit, list(vectorized.notes)),
        timings_s={k: round(v, 3) for k, v in timings.items()}, platform=platform_record(),
        review=carried.record() if carried else None)
