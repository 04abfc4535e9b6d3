"""The commands of one run folder: ``detect``, ``demo``, ``crosscheck`` and ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from changewatch.rs.commands.options import (
    choices,
    crosscheck_inputs,
    detect_options,
    detect_settings,
    device_opt,
    layer_options,
    quiet_opt,
    renamed,
    reports_errors,
    warn,
)
from changewatch.rs.config import CsvGeometry, DemoConfig, DetectConfig, Device, ExportConfig
from changewatch.rs.summary import ReviewRecord

EXPORT_DEFAULTS = ExportConfig()
DEMO_DEFAULTS = DemoConfig()


def run_detect(config: DetectConfig, quiet: bool) -> None:
    """Run ``config`` (``rs.pipeline.detect``) and print what it wrote and found."""
    from changewatch.rs.pipeline import detect as run

    result = run(config, progress=not quiet)
    warn(result.summary.warnings)
    for name, path in result.files.items():
        click.echo(f"{name:17s} {path}")
    by_type = result.summary.counts.by_change_type  # None: the model has no building outputs
    types = f" ({', '.join(f'{n} {kind}' for kind, n in by_type.items())})" if by_type is not None else ""
    click.echo(f"{result.n_changes} change polygons{types}, {result.n_flagged} flagged "
               f"({result.flagged_area_m2:,.0f} m²) — reasons: {result.summary.counts.by_reason or 'none'}")
    report_review(result.summary.review)


def report_review(review: ReviewRecord | None) -> None:
    """One line when review decisions of the earlier run were carried over."""
    if review:
        click.echo(f"review decisions kept: {review.carried} on the new flags (layer review), "
                   f"{review.unmatched} matching no new flag (layer review_unmatched)")


@click.command()
@click.argument("before", type=click.Path())  # a file, or a Sentinel-2 .SAFE folder
@click.argument("after", type=click.Path())
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Folder for change_prob.tif, changes.gpkg, flagged.gpkg, summary.json, replaced as a whole "
                   "when the run succeeds (left as it was when it fails); it may hold only changewatch's outputs. "
                   "Review decisions in its flagged.gpkg are carried to the new flags.")
@click.option("--mask", "masks", multiple=True, type=click.Path(dir_okay=False),
              help="Cloud/invalid mask of either date (a raster, any CRS; band 1 non-zero = invalid): masked pixels "
                   "are never called change. Repeat for several masks.")
@click.option("--workers", "old_readers", type=click.IntRange(1, 64), default=None, hidden=True,
              help="Deprecated spelling of --readers.")
@layer_options
@detect_options
@reports_errors
def detect(before: str, after: str, outdir: str, masks: tuple[str, ...], old_readers: int | None,
           permits: str | None, zoning: str | None, parcels: str | None, as_of: Any, columns_file: str | None,
           quiet: bool, **options: Any) -> None:
    """Detect change between BEFORE and AFTER and flag changes no permit covers.

    BEFORE and AFTER are GeoTIFFs, GDAL paths (/vsizip/…) or STAC Item JSONs (Sentinel-2 L2A:
    offset and SCL cloud mask applied; see the README) of one area with the same bands (matched by name when both
    files name them, else in file order; the default model wants blue, green, red, NIR, or red,
    green, blue for 3-band imagery; --bands picks them). They may differ in CRS,
    pixel size and extent: both are compared on a common grid covering where they overlap,
    BEFORE's own pixels by default (AFTER resampled onto them) or --crs/--resolution; the
    outputs are on that grid.
    """
    options["readers"] = renamed("--workers", "--readers", old_readers, options["readers"],
                                 "reader threads; batch --workers counts Dask processes")
    layers = crosscheck_inputs(permits, zoning, parcels, as_of, columns_file)
    run_detect(DetectConfig(before, after, outdir, layers=layers, masks=masks, **detect_settings(options)), quiet)


@click.command()
@click.option("-o", "--outdir", type=click.Path(file_okay=False), default=DEMO_DEFAULTS.outdir, show_default=True,
              help="Folder for the demo's detect outputs.")
@click.option("--store", type=click.Path(file_okay=False), default=DEMO_DEFAULTS.store,
              help="Store of the demo's monitor (three dates). Default: OUTDIR-monitor beside OUTDIR.")
@device_opt
@quiet_opt
@reports_errors
def demo(outdir: str, store: str | None, device: Device, quiet: bool) -> None:
    """Run detect on the bundled real Sentinel-2 pair of Hong Kong (2016 → 2018) with made-up permits and zoning.

    \b
    Then monitor the area over three dates (tiles/hongkong/scenes.csv: BEFORE, AFTER, and AFTER
    again tagged 2018-09-23, so nothing is new at the last date) into --store.
    The imagery is modified Copernicus Sentinel data from the OSCD dataset (see
    tiles/ATTRIBUTION.md); the permit and zoning layers are invented to exercise the cross-check.
    """
    from changewatch.rs.commands.monitor import report_monitor
    from changewatch.rs.config import InferenceConfig, MonitorConfig
    from changewatch.rs.monitor.run import run_monitor
    from changewatch.tiles import demo_data

    data = demo_data()
    layers = crosscheck_inputs(str(data.permits), str(data.zoning), str(data.parcels), None, None)
    inference = InferenceConfig(device=device)
    run_detect(DetectConfig(str(data.before), str(data.after), outdir, layers=layers, inference=inference), quiet)
    click.echo(f"demo done: open {Path(outdir) / 'flagged.gpkg'} in QGIS or GeoPandas")
    monitored = DemoConfig(outdir, store).store_path()
    report_monitor(run_monitor(MonitorConfig(str(data.scenes), str(monitored), layers=layers, inference=inference)))


@click.command()
@click.argument("changes", type=click.Path(dir_okay=False))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Folder for changes.gpkg, flagged.gpkg (flagged_changes, flagged_parcels) and "
                   "crosscheck_summary.json, replaced as a whole when the run succeeds; review decisions in its "
                   "flagged.gpkg are carried over.")
@layer_options
@reports_errors
def crosscheck(changes: str, outdir: str, permits: str | None, zoning: str | None, parcels: str | None,
               as_of: Any, columns_file: str | None) -> None:
    """Judge the change polygons in CHANGES (e.g. a run's changes.gpkg) against permits, zoning and parcels.

    Every change gets a reasons column: NO_PERMIT, PERMIT_NOT_YET_VALID, PERMIT_EXPIRED,
    EXCEEDS_PERMIT, STARTED_BEFORE_PERMIT (layers with a first_seen column), NO_BUILD_ZONE,
    DEMOLISHED (several possible, comma-separated), or PERMITTED.
    """
    from changewatch.rs.config import CrosscheckConfig
    from changewatch.rs.crosscheck.run import run_crosscheck

    layers = crosscheck_inputs(permits, zoning, parcels, as_of, columns_file)
    _, summary = run_crosscheck(CrosscheckConfig(changes, outdir, layers))
    warn(summary.warnings)
    counts = summary.counts
    click.echo(f"{counts.changes} changes, {counts.flagged} flagged as of {summary.rules.as_of} — "
               f"reasons: {counts.by_reason or 'none'}"
               + (f"; {counts.flagged_parcels} parcels with flags" if counts.flagged_parcels is not None else ""))
    report_review(summary.review)
    click.echo(f"outputs in {outdir}")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Folder for the exports, replaced as a whole when the export succeeds (not RUN_DIR or a folder "
                   "holding it).")
@click.option("--formats", default=",".join(EXPORT_DEFAULTS.formats), show_default=True,
              help="Comma-separated: gpkg (one GeoPackage 1.2, all layers, QGIS styles inside), parquet (GeoParquet "
                   "1.1), geojson (RFC 7946: EPSG:4326, 7 decimals), csv (EPSG:4326), shp (Shapefiles, for legacy "
                   "desks; booleans as 1/0), cog (the run's change_prob.tif with its QGIS style; detect runs only).")
@click.option("--csv-geometry", type=choices(CsvGeometry), default=EXPORT_DEFAULTS.csv_geometry,
              show_default=True, help="CSV geometry as a WKT column, or as the centroid's lon/lat columns.")
@click.option("--csv-bom/--no-csv-bom", default=EXPORT_DEFAULTS.csv_bom, show_default=True,
              help="Start the CSVs with a UTF-8 byte order mark, so that Excel shows Vietnamese text.")
@click.option("--stac/--no-stac", default=EXPORT_DEFAULTS.stac, show_default=True,
              help="Also write item.json: a STAC Item recording inputs, model, thresholds, version and checksums.")
@click.option("--since", default=EXPORT_DEFAULTS.since,
              help="Monitor stores only: the tracked changes first seen on or after this date (YYYY-MM-DD), their "
                   "observations and their parcels' whole history. Default: all.")
@reports_errors
def export(run_dir: str, outdir: str, formats: str, csv_geometry: CsvGeometry, csv_bom: bool, stac: bool,
           since: str | None) -> None:
    """Export a detect or crosscheck run folder, or a monitor store, in GIS formats.

    \b
    A run folder's layers: changes, flagged_changes, flagged_parcels and the table
    flagged_change_parcels. A monitor store's (a folder with history.gpkg): tracked_changes,
    observations and parcel_history, with --since only what is new since a date.
    """
    from changewatch.rs.config import FORMATS
    from changewatch.rs.export import export_run
    from changewatch.rs.monitor.exported import parse_since

    given = [f.strip().lower() for f in formats.split(",") if f.strip()]
    unknown = set(given) - set(FORMATS)
    if unknown:
        raise click.BadParameter(f"unknown format(s) {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}",
                                 param_hint="--formats")
    if not given:
        raise click.BadParameter(f"no format given; choose from {', '.join(FORMATS)}", param_hint="--formats")
    chosen = tuple(f for f in FORMATS if f in given)  # what is written does not depend on the order given
    config = ExportConfig(chosen, csv_geometry, stac, csv_bom, parse_since(since) if since is not None else None)
    for path in export_run(run_dir, outdir, config):
        click.echo(str(path))
