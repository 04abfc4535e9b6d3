"""What the commands share: the error mapping, the options several commands take, and their conversion.

The options several commands take are defined once, as rasterio's ``rio/options.py`` does, and
converted here into the library's configurations.

Every option's default and choices come from the configuration dataclass it fills (``defaults``,
``choices``): ``rs.config``, ``rs.training.config``, ``rs.synth.config`` define each default once,
so the library and the command line agree.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import MISSING, fields
from functools import wraps
from typing import Any, TypeVar, get_args

import click

from changewatch.rs.config import DetectConfig, Device, InferenceConfig
from changewatch.rs.crosscheck.settings import CrosscheckInputs, RuleConfig
from changewatch.rs.grid import GridSpec, GsdPolicy

F = TypeVar("F", bound=Callable[..., Any])


def defaults(config: type) -> dict[str, Any]:
    """The defaults of a configuration dataclass's fields, by field name.

    A ``default_factory`` is called; fields without a default are left out.
    """
    out: dict[str, Any] = {}
    for f in fields(config):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def choices(literal: Any, *extra: str) -> click.Choice[str]:
    """The values of a ``Literal`` type (and ``extra`` ones) as a click choice."""
    return click.Choice([*extra, *get_args(literal)])


DETECT = defaults(DetectConfig)
INFER = defaults(InferenceConfig)
RULES = defaults(RuleConfig)


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


def apply(*options: Callable[[F], F]) -> Callable[[F], F]:
    """Several options as one decorator, in the order given (as they appear in ``--help``)."""

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


# --- options shared by several commands ---------------------------------------------------------

model_opt = click.option(
    "--model", type=click.Path(dir_okay=False), default=DETECT["model"],
    help="Model checkpoint (NAME.json beside NAME.safetensors). Default: the shipped model for the input's "
         "band count and GSD: models/changewatch-rgbn (blue, green, red, NIR) or models/changewatch-rgb (red, "
         "green, blue) at 5-30 m, models/changewatch-vhr-rgb (red, green, blue) at 0.25-2.5 m.")
device_opt = click.option(
    "--device", type=choices(Device), default=INFER["device"], show_default=True,
    help="Where the network runs; auto picks a CUDA GPU when torch sees one.")
tile_opt = click.option("--tile", type=click.IntRange(32, 4096), default=INFER["tile"], show_default=True,
                        help="Side of the square tiles fed to the network, in pixels.")
overlap_opt = click.option("--overlap", type=click.IntRange(0, 2048), default=INFER["overlap"], show_default=True,
                           help="Pixels shared by neighbouring tiles, where their predictions are blended with a "
                                "smooth (cos²) weight so that tile edges leave no seams.")
batch_size_opt = click.option("--batch-size", type=click.IntRange(1, 1024), default=INFER["batch_size"],
                              show_default=True, help="Tiles per forward pass.")
readers_opt = click.option(
    "--readers", type=click.IntRange(1, 64), default=INFER["readers"], show_default=True,
    help="Background threads that read, warp and normalise the next tiles while the network runs "
         "(raise it on a GPU machine with spare CPU cores).")
threshold_opt = click.option(
    "--threshold", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=DETECT["threshold"],
    help="Change probability above which a pixel is change. Default: the model's own, chosen on "
         "its validation cities.")
quiet_opt = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
tta_opt = click.option("--tta", is_flag=True, default=INFER["tta"],
                       help="Test-time augmentation: average the predictions of the four flips of every tile "
                            "(4× the network time).")
amp_opt = click.option("--amp/--no-amp", default=INFER["amp"], show_default=True,
                       help="fp16 autocast on CUDA GPUs (no effect on the CPU).")
min_area_opt = click.option("--min-area-m2", type=click.FloatRange(0.0), default=DETECT["min_area_m2"],
                            help="Smallest change kept, in m² of ground. Default: the model's, two pixels at its GSD "
                                 "and at least 10 m² (200 m² for the Sentinel-2 models, 10 m² for the VHR model).")
bands_opt = click.option(
    "--bands", default=None,
    help="Comma-separated bands to compare, the same for both dates, in the model's order: 1-based indexes "
         "(3,2,1,7) or band names from the files' descriptions (B02,B03,B04,B08). Default: every band.")
crs_opt = click.option(
    "--crs", "grid_crs", default=DETECT["grid"].crs,
    help="CRS of the common grid the dates are compared and the outputs written on (EPSG:32648, WKT, PROJ). "
         "Default: BEFORE's own pixel grid, cropped to where the two dates overlap.")
resolution_opt = click.option(
    "--resolution", type=click.FloatRange(0.0, min_open=True), default=DETECT["grid"].resolution,
    help="Pixel size of the common grid in its CRS's units (metres for UTM, degrees for EPSG:4326); pixel edges "
         "fall on multiples of it. Default: BEFORE's (carried over to --crs).")
gsd_opt = click.option(
    "--gsd", type=choices(GsdPolicy), default=DETECT["gsd"], show_default=True,
    help="auto: imagery outside the GSDs the model serves (e.g. 0.5 m under the 10 m shipped models) is "
         "compared on a grid at the model's GSD, in metres; native: always at the imagery's own pixels. "
         "Ignored with --crs/--resolution where the command has them.")
coreg_opt = click.option(
    "--coregister/--no-coregister", default=DETECT["coregister"], show_default=True,
    help="Measure AFTER's residual shift against BEFORE by cross-correlation and remove it when windows across "
         "the scene agree (a translation; up to 3 pixels). detect records it in summary.json.")
zero_valid_opt = click.option(
    "--zero-is-valid", is_flag=True, default=DETECT["zero_is_valid"],
    help="Pixels 0 in every band are data. By default they are nodata when a file declares no nodata, mask or "
         "alpha band (Sentinel-2 and most exports fill with 0); NaN is always nodata. detect records it in "
         "summary.json.")
simplify_opt = click.option("--simplify-m", type=click.FloatRange(0.0), default=DETECT["simplify_m"],
                            show_default=True,
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
    help="Date (YYYY-MM-DD) permits are judged on. Default: the AFTER scene's acquisition date (detect: its "
         "TIFF date tag; crosscheck: the one in the summary.json beside CHANGES), else today.")
columns_opt = click.option(
    "--columns", "columns_file", type=click.Path(dir_okay=False), default=None,
    help="YAML or TOML mapping our column names to your layers' (sections permits, zoning, parcels; in each "
         "also layer, crs, and for a CSV wkt or x/y; in permits date_format or dayfirst) and the EXCEEDS_PERMIT "
         f"tolerances exceed_min_m2 (default {RULES['exceed_min_m2']:g}) and exceed_min_fraction (default "
         f"{RULES['exceed_min_fraction']:g}), and demolition_needs_permit (default "
         f"{str(RULES['demolition_needs_permit']).lower()}: demolished buildings are DEMOLISHED, not NO_PERMIT).")

layer_options = apply(permits_opt, zoning_opt, parcels_opt, as_of_opt, columns_opt)
"""The cross-check options shared by detect, crosscheck and batch (``crosscheck_inputs``)."""

detect_options = apply(model_opt, bands_opt, crs_opt, resolution_opt, gsd_opt, coreg_opt, zero_valid_opt, device_opt,
                       amp_opt, tta_opt, threshold_opt, min_area_opt, simplify_opt, tile_opt, overlap_opt,
                       batch_size_opt, readers_opt, quiet_opt)
"""The model, pair, decision and tiling options shared by detect and batch (``detect_settings``)."""


# --- from options to configurations -------------------------------------------------------------

def split_list(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as a tuple of its non-empty items; None when there are none."""
    items = tuple(item.strip() for item in (value or "").split(",") if item.strip())
    return items or None


def crosscheck_inputs(permits: str | None, zoning: str | None, parcels: str | None, as_of: Any,
                      columns_file: str | None) -> CrosscheckInputs:
    """The reference layers from the layer options, --as-of and --columns (``rs.crosscheck.settings.load_settings``)."""
    from dataclasses import replace

    from changewatch.rs.crosscheck.settings import load_settings

    settings = load_settings(columns_file)
    return CrosscheckInputs(permits, zoning, parcels, replace(settings.rules, as_of=as_of.date() if as_of else None),
                            settings.parcel_columns, settings.sources)


def detect_settings(options: dict[str, Any]) -> dict[str, Any]:
    """``DetectOptions`` keyword arguments from the values of ``detect_options``.

    They are consumed from ``options``; ``quiet`` is left there. Raises click.BadParameter when
    --overlap is not smaller than --tile.
    """
    tile, overlap = options.pop("tile"), options.pop("overlap")
    if overlap >= tile:
        raise click.BadParameter(f"--overlap ({overlap}) must be smaller than --tile ({tile})")
    inference = InferenceConfig(tile=tile, overlap=overlap, batch_size=options.pop("batch_size"),
                                device=options.pop("device"), amp=options.pop("amp"), readers=options.pop("readers"),
                                tta=options.pop("tta"))
    return {"model": options.pop("model"), "bands": split_list(options.pop("bands")),
            "grid": GridSpec(options.pop("grid_crs"), options.pop("resolution")), "gsd": options.pop("gsd"),
            "coregister": options.pop("coregister"), "zero_is_valid": options.pop("zero_is_valid"),
            "threshold": options.pop("threshold"), "min_area_m2": options.pop("min_area_m2"),
            "simplify_m": options.pop("simplify_m"), "inference": inference}


def warn(lines: list[str] | tuple[str, ...]) -> None:
    """A run's warnings (``summary.json`` ``warnings``), one ``warning:`` line each on stderr."""
    for line in lines:
        click.echo(f"warning: {line}", err=True)


def renamed(old: str, new: str, old_value: Any, value: Any, why: str) -> Any:
    """The value of option ``new``, or of its deprecated spelling ``old`` when that was given.

    The deprecated spelling prints a ``warning:`` line saying so.
    """
    if old_value is None:
        return value
    click.echo(f"warning: {old} is deprecated, use {new} ({why})", err=True)
    return old_value
