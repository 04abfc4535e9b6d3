"""The configuration of every run: every default is defined here, once.

``DetectConfig`` (one detect run), ``CrosscheckConfig``, ``BatchConfig``, ``EvalOptions`` and
``ExportConfig``, and the parts they share: how a scene pair is prepared for a model
(``PairOptions``), how the network runs (``InferenceConfig``), how change becomes polygons
(``VectorizeConfig``, ``BuildingConfig``). Training and ``synth`` keep theirs beside them
(``rs.training.config``, ``rs.synth.config``). The command line reads the defaults and choices of
its options from these classes, so the library and the CLI agree. Every class is a frozen
dataclass that serialises with ``dataclasses.asdict`` (it goes into the run's ``summary.json``).
Importing this module loads no heavy library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal, get_args

from changewatch.rs.crosscheck.settings import CrosscheckInputs
from changewatch.rs.grid import GridSpec, GsdPolicy

Device = Literal["auto", "cpu", "cuda"]  # auto: a CUDA GPU when torch sees one, else the CPU
DEVICES: tuple[str, ...] = get_args(Device)
ExportFormat = Literal["gpkg", "parquet", "geojson", "csv", "shp", "cog"]
FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
CsvGeometry = Literal["wkt", "centroid"]
# A change object's ``change_type`` (``rs.buildings`` decides it, ``rs.crosscheck.rules`` reads it).
ChangeType = Literal["new_building", "demolished", "enlarged", "other_change"]
CHANGE_TYPES: tuple[ChangeType, ...] = get_args(ChangeType)  # in this order in summary.json
NEW_BUILDING: ChangeType = "new_building"
DEMOLISHED: ChangeType = "demolished"
ENLARGED: ChangeType = "enlarged"
OTHER_CHANGE: ChangeType = "other_change"
CHIP_PAD_PX = 12  # pixels shown around a flag on its before/after chips (rs.review.flag_chip, reports)
OVERVIEW_PX = 1024  # longer side (pixels) of a scene's overview behind a map (rs.review.overview, reports)


@dataclass(frozen=True, kw_only=True)
class PairOptions:
    """How a scene pair is prepared for a model (``rs.prepare``).

    ``bands``: the bands compared, the same for both dates, by 1-based index or band name (None:
    every colour band, matched by name when both files name them, else in file order;
    ``rs.bands``); ``grid``: the common grid (default: BEFORE's pixels where the dates overlap);
    ``gsd``: "auto" compares imagery outside the GSDs the model serves on a grid at the model's
    GSD, "native" never resamples (``rs.grid.grid_for_gsd``; only without a user grid);
    ``coregister``: measure AFTER's residual shift against BEFORE and remove it
    (``rs.coregister``); ``zero_is_valid``: pixels 0 in every band are data, not nodata
    (``rs.validity``).
    """

    bands: tuple[str, ...] | None = None
    grid: GridSpec = field(default_factory=GridSpec)
    gsd: GsdPolicy = "auto"
    coregister: bool = True
    zero_is_valid: bool = False


@dataclass(frozen=True)
class InferenceConfig:
    """How the network runs (``rs.infer``): tiles, batch, device, precision, readers and flips.

    Tile side and ``overlap`` (pixels; neighbouring tiles share it and are blended there), tiles
    per forward pass, device, fp16 autocast on CUDA (ignored on the CPU, where it did not help),
    how many background threads read, warp and normalise the next tiles while the network runs
    (``readers``), and whether to average the four flips of each tile (test-time augmentation:
    4× the network time).
    """

    tile: int = 256
    overlap: int = 64
    batch_size: int = 8
    device: Device = "auto"
    amp: bool = True
    readers: int = 1
    tta: bool = False


@dataclass(frozen=True)
class BuildingConfig:
    """How change regions are split into buildings and typed (``rs.buildings``).

    ``building_threshold``: building probability (0–1) from which a pixel is building at a date;
    ``marker_depth_m``: how far (m) a distance-transform maximum must rise above its saddle to
    mark a building of its own; ``min_core_m2``: smallest group of building pixels (m²) that marks
    a building; ``edge_m``: how far (m) around its building pixels a building object reaches into
    the change region; ``min_share``: share (0–1) of an object's non-standing pixels that must be
    new or gone building for it to be a building change; ``min_wall_m``: shared wall (m) that makes
    new building area ``enlarged``; ``max_split_pixels``: largest window (pixels, the region's
    bounding box plus one pixel around) that is read to split a region — larger regions stay whole
    (memory: about 20 bytes per window pixel), typed from their pixel counts alone (never
    ``enlarged``), and are counted in the run's summary.
    """

    building_threshold: float = 0.5
    marker_depth_m: float = 1.0
    min_core_m2: float = 4.0
    edge_m: float = 1.0
    min_share: float = 0.5
    min_wall_m: float = 2.0
    max_split_pixels: int = 2048 * 2048


@dataclass(frozen=True)
class VectorizeConfig:
    """How a probability raster becomes change objects (``rs.vectorize``).

    Decision threshold on probability (0–1), smallest change object kept (m² of ground: two
    Sentinel-2 pixels), the tolerance outlines are simplified to (metres; 0 keeps the exact pixel
    outlines), and how regions are split into buildings when the raster has building
    probabilities.
    """

    threshold: float = 0.5
    min_area_m2: float = 200.0
    simplify_m: float = 0.0
    buildings: BuildingConfig = field(default_factory=BuildingConfig)


@dataclass(frozen=True, kw_only=True)
class DetectOptions(PairOptions):
    """The settings of a detect run that do not name its inputs (shared by every job of a batch).

    ``model``: a checkpoint (NAME.json), None for the shipped model that fits the scenes' band
    count and GSD (``models.spec.choose_model``); ``threshold``: None for the model's own (chosen
    on its validation data, ``ModelSpec.decision_threshold``); ``min_area_m2``, ``simplify_m``,
    ``buildings``: as in ``VectorizeConfig``, except that ``min_area_m2`` None is the model's own
    (``ModelSpec.smallest_change_m2``: 200 m² for the Sentinel-2 models, 10 m² for the VHR model);
    ``inference``: how the network runs.
    """

    model: str | None = None
    threshold: float | None = None
    min_area_m2: float | None = None
    simplify_m: float = VectorizeConfig.simplify_m
    buildings: BuildingConfig = field(default_factory=BuildingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


AS_OF_GIVEN = "given"  # --as-of, or a batch manifest's as_of
AS_OF_SCENES = "AFTER date in monitor SCENES"  # monitor without --as-of: each pair judged as of its AFTER date


@dataclass(frozen=True)
class DetectConfig(DetectOptions):
    """Everything one detection run depends on (``rs.pipeline.detect``); serialised into ``summary.json``.

    BEFORE and AFTER scenes, the output folder, the reference layers (``layers.rules.as_of`` None
    means the AFTER scene's acquisition date, its TIFF date tag, or today when it has none), cloud
    or invalid masks of either date (``masks``: rasters, non-zero = invalid, never change), and
    the settings of ``DetectOptions``. ``as_of_source``: where ``layers.rules.as_of`` came from when
    it is set, recorded as ``rules.as_of_source`` in ``summary.json`` (``AS_OF_GIVEN``: by the user;
    ``AS_OF_SCENES``: the AFTER scene's date in a monitor's SCENES). Provenance only: it never
    changes a result, so it is not one of a batch job's settings (``rs.batch.resume``).
    """

    before: str
    after: str
    outdir: str
    layers: CrosscheckInputs = field(default_factory=CrosscheckInputs)
    masks: tuple[str, ...] = ()
    as_of_source: str = AS_OF_GIVEN


@dataclass(frozen=True)
class CrosscheckConfig:
    """A cross-check of an existing change layer (any polygons; ``change_id`` carried through)."""

    changes: str
    outdir: str
    layers: CrosscheckInputs = field(default_factory=CrosscheckInputs)


@dataclass(frozen=True)
class BatchConfig(DetectOptions):
    """One batch (``rs.batch``): the manifest, its folder, where jobs run and the detect settings they share.

    The manifest, the batch folder, the layers of jobs whose row names none, whether finished jobs
    are skipped (``resume``), where jobs run (``scheduler``: serial, local or the address of a
    Dask cluster; ``workers``: processes of a local cluster, None: one per CPU core), from how many
    megapixels a scene's tiles are spread over the cluster (``split_mpx``, in tasks of
    ``tiles_per_task`` tiles), and the detect settings every job shares (``DetectOptions``).
    """

    manifest: str
    outdir: str
    layers: CrosscheckInputs = field(default_factory=CrosscheckInputs)
    resume: bool = False
    scheduler: str = "local"
    workers: int | None = None
    split_mpx: float = 64.0
    tiles_per_task: int = 32

    def shared_layers(self) -> dict[str, str | None]:
        """Layers given for every job whose manifest row names none."""
        return {"permits": self.layers.permits, "zoning": self.layers.zoning, "parcels": self.layers.parcels}


@dataclass(frozen=True)
class MonitorConfig(DetectOptions):
    """One monitor run (``rs.monitor``): the dated scenes of one area, its store, its layers, the detect settings.

    ``scenes``: a CSV or YAML of ``date,path`` rows (``rs.monitor.scenes``); ``store``: the folder
    holding every consecutive pair's run folder (``pairs/<date_a>_<date_b>/``) and ``history.gpkg``;
    ``layers``: the reference layers every pair is judged against (``layers.rules.as_of`` None: each
    pair is judged on its AFTER scene's date from SCENES); the detect settings every pair shares
    (``DetectOptions``). A pair whose run folder is complete and up to date is not run again.
    """

    scenes: str
    store: str
    layers: CrosscheckInputs = field(default_factory=CrosscheckInputs)


@dataclass(frozen=True)
class DemoConfig:
    """Where ``demo`` writes: the detect run folder of the bundled pair and the monitor store of its three dates.

    ``store`` None: the folder ``OUTDIR-monitor`` beside ``outdir``.
    """

    outdir: str = "out/demo"
    store: str | None = None

    def store_path(self) -> Path:
        """The monitor store: ``store``, else ``OUTDIR-monitor`` beside ``outdir``."""
        out = Path(self.outdir)
        out = out if out.name else out.resolve()  # "-o ." names the current folder
        return Path(self.store) if self.store else out.with_name(f"{out.name}-monitor")


@dataclass(frozen=True)
class EvalOptions(PairOptions):
    """How to score (``rs.evaluate``), with the pairs prepared as ``detect`` does.

    The decision threshold (None: the model's own), the smallest change object counted (m² of
    ground, true objects and predicted ones alike, as detect's ``min_area_m2``), the pixel size
    assumed for plain images without georeferencing (metres; None: they are compared pixel for
    pixel and object areas assume ``PLAIN_PIXEL_M``), and how the pairs are prepared
    (``PairOptions``), as ``detect`` does.
    """

    threshold: float | None = None
    object_min_m2: float | None = None  # None: the model's own, as detect's min_area_m2
    pixel_size_m: float | None = None


@dataclass(frozen=True)
class ExportConfig:
    """What ``rs.export.export_run`` writes: the formats, the CSV geometry, a STAC Item, a BOM on CSVs, since when.

    ``cog``: the run's probability raster with its QGIS style. The CSV geometry is a WKT column, or
    the centroid's lon/lat. ``csv_bom``: CSVs start with a UTF-8 byte order mark (so that Excel shows
    Vietnamese text; other readers may show it as a stray character). ``since``: a monitor store's
    tracked changes first seen on or after this date only (``rs.monitor.exported``; None: all).
    """

    formats: tuple[ExportFormat, ...] = FORMATS
    csv_geometry: CsvGeometry = "wkt"
    stac: bool = True
    csv_bom: bool = False
    since: date | None = None


@dataclass(frozen=True)
class ReportConfig:
    """What ``rs.report.write_report`` reads and writes: the run folder, the report folder, the figures' sizes.

    ``run_dir``: a detect run folder (its scenes are read for the map and chips); ``outdir``: the
    report folder (``report.html``, ``report.pdf``, ``work_orders.csv``), replaced as a whole;
    ``chip_pad_px``: pixels of the run's grid shown around each flag's bounding box on its chips;
    ``map_px``: the longer side (pixels) the AFTER scene is decimated to behind the overview map.
    """

    run_dir: str
    outdir: str
    chip_pad_px: int = CHIP_PAD_PX
    map_px: int = OVERVIEW_PX
