"""A cross-check run: judge an existing change layer and write its run folder.

``run_crosscheck`` reads the changes and the reference layers, judges them (``rs.crosscheck.judge``)
and writes ``changes.gpkg``, ``flagged.gpkg`` and ``crosscheck_summary.json`` (``rs.runfolder``),
carrying review decisions of the earlier run over (``rs.decisions.carry``, as
``rs.pipeline.detect`` does). Light: no model and no raster work, so ``changewatch crosscheck``
imports neither torch nor scikit-image.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import date
from pathlib import Path

from rasterio.crs import CRS

from changewatch.rs.config import CrosscheckConfig
from changewatch.rs.crosscheck.judge import Judgement, judge
from changewatch.rs.crosscheck.layers import read_layer
from changewatch.rs.crosscheck.settings import RuleConfig
from changewatch.rs.decisions import carry, previous_decisions
from changewatch.rs.errors import InputFileError
from changewatch.rs.grid import metric_crs
from changewatch.rs.runfolder import (
    CROSSCHECK_SUMMARY,
    FLAGGED_GPKG,
    SUMMARY,
    StagedOutput,
    read_summary,
    write_run_layers,
    write_summary,
)
from changewatch.rs.summary import ChangeLayerInputs, RulesRecord, RunSummary, file_records


def run_crosscheck(config: CrosscheckConfig) -> tuple[Judgement, RunSummary]:
    """Judge a change layer against the given layers, into ``config.outdir`` (staged, like ``detect``).

    Writes changes.gpkg, flagged.gpkg and crosscheck_summary.json.

    The as-of date is ``config.layers.rules.as_of``, else the one recorded in a ``summary.json`` beside
    the change layer (a detect run's), else today. Changes without ``change_id`` are numbered 1…n.
    """
    changes = read_layer(config.changes, "changes", ids="change_id", source=config.layers.sources.changes)
    numbered = "change_id" not in changes.data
    data = changes.data.assign(change_id=range(1, len(changes.data) + 1)) if numbered else changes.data
    if "area_m2" not in data:
        data = data.assign(area_m2=data.to_crs(metric_crs(data)).area if len(data) else [])
    # the layers are read where the changes are: their counts say what lies inside the changes' extent
    left, bottom, right, top = data.total_bounds
    layers = config.layers.read(((left, bottom, right, top), CRS.from_user_input(data.crs)) if len(data) else None)
    as_of, source = _crosscheck_as_of(config)
    rules = replace(config.layers.rules, as_of=as_of)
    judgement = judge(data, layers, rules, config.layers.parcel_columns)
    files = file_records([changes.path, *layers.files()])
    inputs = ChangeLayerInputs(**{**asdict(layers.provenance()), "files": files},
                               changes=str(Path(changes.path).resolve()),
                               changes_repaired_geometries=changes.repaired, change_ids_assigned=numbered)
    given = config.layers
    with StagedOutput(config.outdir, inputs=[p for p in (config.changes, given.permits, given.zoning, given.parcels)
                                             if p]) as out:
        carried = carry(previous_decisions(out.final(FLAGGED_GPKG)), judgement.flagged, out.final(FLAGGED_GPKG))
        write_run_layers(judgement, carried, out)
        summary = RunSummary(counts=judgement.counts(), areas_m2=judgement.areas(), inputs=inputs,
                             rules=rules_record(rules, source), warnings=layers.warnings(), config=asdict(config),
                             review=carried.record() if carried else None)
        with out.writing(CROSSCHECK_SUMMARY):
            write_summary(summary, out.path(CROSSCHECK_SUMMARY))
    return judgement, summary


def _crosscheck_as_of(config: CrosscheckConfig) -> tuple[date, str]:
    if config.layers.rules.as_of is not None:
        return config.layers.rules.as_of, "given"
    beside = Path(config.changes).parent / SUMMARY
    try:
        return date.fromisoformat(read_summary(beside).rules.as_of or ""), f"{beside}"
    except (InputFileError, ValueError):
        return date.today(), "today (no --as-of and no detect summary.json beside the changes)"


def rules_record(rules: RuleConfig, as_of_source: str) -> RulesRecord:
    """What a summary records about the rules (``rules.as_of`` set)."""
    return RulesRecord(rules.as_of.isoformat() if rules.as_of else None, as_of_source, rules.exceed_min_m2,
                       rules.exceed_min_fraction, rules.demolition_needs_permit)
