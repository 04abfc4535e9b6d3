"""Labelled change data in the layouts users have, read on each pair's common grid.

Three layouts, recognised from the folder given (``find_pairs``):

- **sites** — ``DIR/<site>/before.tif, after.tif, change.tif`` (the OSCD layout of
  ``shared/data/oscd``): georeferenced rasters, labels 1 = change, 0 = no change, 255 = not labelled;
- **LEVIR-CD** — ``DIR/A/<name>, DIR/B/<name>, DIR/label/<name>`` with the same file names, PNG,
  JPEG or GeoTIFF; labels 0/255 (255 = change) or 0/1, detected from the files (``label_encodings``);
  labels that are lossy (JPEG: its noise turns 0/255 into 0…255) or in colour (3-channel PNG,
  white = change) are binarised at 128 when their values are not exactly 0/255. Plain images
  without georeferencing are compared pixel for pixel (the three must have the same size);
- **vector labels** — ``DIR/<site>/before.tif, after.tif`` and one vector layer of polygons,
  ``changes.gpkg``/``.geojson``/``.shp`` (any CRS), rasterised on the fly onto the common grid (a
  pixel belongs to a polygon when its centre is inside). Without a ``change_label`` column every
  polygon is change and everything else no change. With one (``LABEL_COLUMN``; what ``cli.py
  labels`` writes from reviewed runs) only the polygons are labelled: ``change`` polygons are
  change, ``no_change`` polygons no change, every other pixel — and any pixel inside polygons of
  both kinds — not labelled; another value, or none, is an InputFileError.

A LabelledPair's labels come out as uint8 windows with 1 = change, 0 = no change, 255 = not
labelled, whatever the layout, so training and evaluation read every layout the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
import rasterio.features
import shapely
from rasterio.windows import Window

from changewatch.rs.align import AlignedPair, PairSource
from changewatch.rs.config import PairOptions
from changewatch.rs.errors import InputFileError
from changewatch.rs.io.raster import GridReader, open_raster
from changewatch.rs.validity import colour_bands

LABEL_NODATA = 255
BUILDING_OUTPUTS = ("building_before", "building_after")
BUILDING_FOLDERS = BUILDING_OUTPUTS  # LEVIR layout: optional building masks of each date, named as the outputs
BINARISED = ">=128"  # label encoding of lossy or colour labels: a value (max over channels) >= 128 is change
LOSSY_DRIVERS = ("JPEG", "JP2OpenJPEG", "WEBP")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
VECTOR_LABELS = ("changes.gpkg", "changes.geojson", "changes.shp")
LABEL_COLUMN = "change_label"  # vector labels: polygons of both kinds, the rest unlabelled
LABEL_VALUES = ("change", "no_change")
SITE_IMAGES = ("before.tif", "after.tif")


@dataclass(frozen=True)
class LabelledPair:
    """One labelled scene pair: its name, the two dates and its labels (a raster or a vector layer).

    ``encoding`` says how a raster label marks change: ``"0/1"`` (1 = change, 255 = not labelled),
    ``"0/255"`` (255 = change) or ``BINARISED`` (≥ 128 = change); vector labels have ``"vector"``.
    A multi-channel label is read as the maximum of its channels (alpha excluded).
    """

    name: str
    before: Path
    after: Path
    label: Path
    encoding: str
    buildings: tuple[Path, Path] | None = None  # building masks of BEFORE and AFTER (same encoding), if known

    def source(self, options: PairOptions = PairOptions(), pixel_size_m: float | None = None) -> PairSource:
        """What opens the pair aligned as ``options`` say (bands, grid, validity rule).

        ``rs.prepare`` prepares it for a model. ``pixel_size_m``: the GSD of plain images (no
        georeferencing), which are then placed on a local metric grid (``rs.georef.placed``) so GSD
        rules apply; None compares them pixel for pixel.
        """
        return PairSource.of(self.before, self.after, options, pixel_size_m=pixel_size_m)

    def open(self, pixel_size_m: float | None = None) -> AlignedPair:
        """The pair aligned on BEFORE's pixels where the dates overlap, every band compared (see ``source``)."""
        return self.source(pixel_size_m=pixel_size_m).open()

    def labels(self, pair: AlignedPair) -> LabelReader:
        """A reader of this pair's labels on ``pair``'s grid."""
        if self.encoding == "vector":
            return VectorLabels(self.label, pair)
        return RasterLabels(pair.reader_for(self.label, "label"), self.encoding)

    def output_labels(self, pair: AlignedPair, outputs: tuple[str, ...]) -> list[LabelReader]:
        """Readers of the labels of each model output (change, building_before, building_after) on ``pair``'s grid.

        Building outputs of a pair without building masks are unlabelled.
        """
        readers = []
        for output in outputs:
            if output == "change":
                readers.append(self.labels(pair))
                continue
            if self.buildings is None:  # e.g. a city's change labels: only the change output learns from them
                readers.append(Unlabelled())
                continue
            path = self.buildings[BUILDING_OUTPUTS.index(output)]
            readers.append(RasterLabels(pair.reader_for(path, "label"), self.encoding))
        return readers


class LabelReader:
    """Labels of one pair, a window of its common grid at a time (uint8: 1 change, 0 no, 255 unlabelled)."""

    def read(self, window: Window) -> np.ndarray:
        """Labels (rows, cols) uint8 of ``window`` of the common grid: 1 change, 0 no, 255 unlabelled."""
        raise NotImplementedError


class Unlabelled(LabelReader):
    """No labels at all: every pixel 255."""

    def read(self, window: Window) -> np.ndarray:
        """255 (unlabelled) for every pixel of ``window``: (rows, cols) uint8."""
        return np.full((int(window.height), int(window.width)), LABEL_NODATA, np.uint8)


class RasterLabels(LabelReader):
    """A label raster, read as the maximum of its channels.

    Read nearest-neighbour onto the grid; outside it, under its nodata or where its alpha is 0: not
    labelled. The constructor takes its ``GridReader`` and its encoding (see ``label_encodings``).
    """

    def __init__(self, reader: GridReader, encoding: str) -> None:
        self.reader, self.encoding = reader, encoding
        self.bands = colour_bands(reader.ds)

    def read(self, window: Window) -> np.ndarray:
        """Labels (rows, cols) uint8 of ``window`` decoded by the file's encoding; 255 where not labelled."""
        data, valid = self.reader.read(self.bands, window)
        values = data.max(axis=0)
        labels: npt.NDArray[np.uint8]
        if self.encoding == BINARISED:
            labels = (values >= 128).astype(np.uint8)
        elif self.encoding == "0/255":
            labels = np.where(values == 255, 1, np.where(values == 0, 0, LABEL_NODATA)).astype(np.uint8)
        else:
            labels = np.where((values == 0) | (values == 1), values, LABEL_NODATA).astype(np.uint8)
        labels[~valid] = LABEL_NODATA
        return labels


class VectorLabels(LabelReader):
    """Labelled polygons rasterised per window (a pixel is inside when its centre is).

    ``geoms``: the change polygons (the true objects of ``rs.evaluate``); ``no_change``: the
    polygons labelled no change (only in a layer with a ``LABEL_COLUMN``, which ``explicit`` says:
    then pixels outside every polygon are not labelled, see the module docstring).
    """

    def __init__(self, path: Path, pair: AlignedPair) -> None:
        """Read the polygons of ``path`` that lie on ``pair``'s grid (InputFileError: see the module docstring)."""
        if pair.grid.crs is None:
            raise InputFileError(f"vector labels {path} need georeferenced scenes")
        try:
            layer = gpd.read_file(path, bbox=_bbox_in(pair, path))
        except Exception as exc:  # pyogrio raises several types for unreadable files
            raise InputFileError(f"label layer is not a readable vector file: {path} ({exc})") from exc
        if layer.crs is None:
            raise InputFileError(f"label layer has no CRS: {path}")
        self.explicit = LABEL_COLUMN in layer.columns
        change = _is_change(layer, path) if self.explicit else np.ones(len(layer), bool)
        geoms = shapely.make_valid(layer.to_crs(pair.grid.crs).geometry.values)
        present = ~shapely.is_empty(geoms)
        self.geoms = geoms[present & change]
        self.no_change = geoms[present & ~change]
        self.tree, self.no_change_tree = shapely.STRtree(self.geoms), shapely.STRtree(self.no_change)
        self.grid = pair.grid

    def read(self, window: Window) -> np.ndarray:
        """The labels of ``window`` (uint8, rows × cols: 1 change, 0 no change, 255 not labelled)."""
        inside = self._burn(self.geoms, self.tree, window)
        if not self.explicit:
            return inside.astype(np.uint8)
        outside = self._burn(self.no_change, self.no_change_tree, window)
        labels = np.full(inside.shape, LABEL_NODATA, np.uint8)
        labels[outside] = 0
        labels[inside] = 1
        labels[inside & outside] = LABEL_NODATA  # the labels disagree
        return labels

    def _burn(self, geoms: np.ndarray, tree: shapely.STRtree, window: Window) -> np.ndarray:
        """Whether each pixel of ``window`` lies in one of ``geoms`` (bool, rows × cols)."""
        shape = (int(window.height), int(window.width))
        box = shapely.box(*rasterio.windows.bounds(window, self.grid.transform))
        hits = geoms[tree.query(box, predicate="intersects")]
        if len(hits) == 0:
            return np.zeros(shape, bool)
        burnt = rasterio.features.rasterize(hits, out_shape=shape, transform=self.grid.window_transform(window),
                                            fill=0, default_value=1, dtype="uint8")
        return cast(npt.NDArray[np.uint8], burnt).astype(bool)


def _is_change(layer: gpd.GeoDataFrame, path: Path) -> np.ndarray:
    """Per feature, whether its LABEL_COLUMN says change (True) or no change (False).

    Raises InputFileError for any other value, or none, naming them.
    """
    values = layer[LABEL_COLUMN]
    bad = values[~values.isin(LABEL_VALUES)]
    if len(bad):
        shown = ", ".join(repr(None if pd.isna(v) else v) for v in dict.fromkeys(bad.tolist()))
        raise InputFileError(f"label layer {path}: column {LABEL_COLUMN} holds {shown} in {len(bad)} feature(s): "
                             f"each must be {' or '.join(LABEL_VALUES)}")
    return np.asarray(values == LABEL_VALUES[0])


def _bbox_in(pair: AlignedPair, path: Path) -> tuple[float, float, float, float] | None:
    """The grid's bounds in the layer's CRS, to read only features inside (None: read all)."""
    try:
        from pyogrio import read_info

        crs = read_info(path).get("crs")
    except Exception:
        return None
    if not crs:
        return None
    from rasterio.warp import transform_bounds

    return cast("tuple[float, float, float, float]",
                transform_bounds(pair.grid.crs, crs, *pair.grid.bounds, densify_pts=21))


def _label_values(path: Path) -> tuple[set[int], bool]:
    """The values a label raster holds, and whether it is lossy (JPEG and the like) or multi-channel.

    Values are the maximum over its channels, alpha excluded; read block by block.
    """
    seen: set[int] = set()
    with open_raster(path, "label") as ds:
        bands = colour_bands(ds)
        for _, window in ds.block_windows(1):
            seen.update(np.unique(ds.read(bands, window=window).max(axis=0)).tolist())
        return seen, ds.driver in LOSSY_DRIVERS or len(bands) > 1


def detect_encoding(labels: list[Path]) -> str:
    """The label encoding of the label rasters: ``"0/1"`` or ``"0/255"``.

    ``"0/1"`` when any label raster holds the value 1 (255, if present, means not labelled),
    ``"0/255"`` when they hold only 0 and 255 (255 = change, as LEVIR-CD). Other values: an
    InputFileError. Reads the files block by block.
    """
    seen: set[int] = set()
    for path in labels:
        seen |= _label_values(path)[0]
        if 1 in seen:
            break
    return _exact_encoding(seen)


def _exact_encoding(seen: set[int]) -> str:
    if 1 in seen and seen <= {0, 1, 255}:
        return "0/1"
    if seen <= {0, 255}:
        return "0/255"
    raise InputFileError(f"labels hold values {sorted(seen)[:8]}: expected 0/1 (255 = unlabelled) or 0/255")


def label_encodings(labels: list[Path]) -> list[str]:
    """The encoding of each label raster (see LabelledPair).

    Lossy or multi-channel labels whose values are not exactly 0 and 255 (JPEG noise, anti-aliased
    colour edges) are ``BINARISED`` at 128; the others are read exactly, with one encoding for the
    folder (``detect_encoding``: an all-zero label alone cannot tell 0/1 from 0/255).
    """
    found = [_label_values(path) for path in labels]
    binarised = [approximate and not values <= {0, 255} for values, approximate in found]
    exact: set[int] = set().union(*(values for (values, _), b in zip(found, binarised, strict=True) if not b))
    encoding = _exact_encoding(exact) if not all(binarised) else BINARISED
    return [BINARISED if b else encoding for b in binarised]


def _site_pairs(root: Path) -> list[LabelledPair]:
    pairs = []
    for site in sorted(p for p in root.iterdir() if p.is_dir()):
        if not all((site / f).exists() for f in SITE_IMAGES):
            continue
        if (site / "change.tif").exists():
            pairs.append(LabelledPair(site.name, site / "before.tif", site / "after.tif", site / "change.tif", "0/1"))
        elif vector := next((site / v for v in VECTOR_LABELS if (site / v).exists()), None):
            pairs.append(LabelledPair(site.name, site / "before.tif", site / "after.tif", vector, "vector"))
    return pairs


def _levir_pairs(root: Path) -> list[LabelledPair]:
    images = {p.stem: p for p in sorted((root / "A").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs = []
    for stem, before in images.items():
        after = next(((root / "B" / f"{stem}{s}") for s in (before.suffix, *IMAGE_SUFFIXES)
                      if (root / "B" / f"{stem}{s}").exists()), None)
        label = next(((root / "label" / f"{stem}{s}") for s in (before.suffix, *IMAGE_SUFFIXES)
                      if (root / "label" / f"{stem}{s}").exists()), None)
        if after is None or label is None:
            raise InputFileError(f"{before.name} in {root / 'A'} has no counterpart in B/ and label/")
        pairs.append(LabelledPair(stem, before, after, label, "", _building_masks(root, label.name)))
    if not pairs:
        raise InputFileError(f"no images in {root / 'A'}")
    encodings = label_encodings([p.label for p in pairs])
    return [replace(p, encoding=e) for p, e in zip(pairs, encodings, strict=True)]


def _building_masks(root: Path, name: str) -> tuple[Path, Path] | None:
    """BUILDING_FOLDERS/<name> when both exist (a semantic change data set, e.g. ``cli.py synth``)."""
    paths = tuple(root / folder / name for folder in BUILDING_FOLDERS)
    return (paths[0], paths[1]) if all(p.exists() for p in paths) else None


def find_pairs(data_dir: str | os.PathLike[str], names: list[str] | None = None, *,
               hint: str = "") -> list[LabelledPair]:
    """Every labelled pair under ``data_dir`` in whichever layout it uses, sorted by name.

    With ``names``, exactly those pairs, in that order; a missing one is an InputFileError, whose
    message ends with ``hint`` when one is given (where the names came from, how to give others).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise InputFileError(f"data folder not found: {root}")
    if all((root / d).is_dir() for d in ("A", "B", "label")):
        pairs = _levir_pairs(root)
    else:
        pairs = _site_pairs(root)
    if not pairs:
        raise InputFileError(
            f"no labelled pairs under {root}: expected <site>/before.tif, after.tif and change.tif or "
            f"changes.gpkg/.geojson/.shp, or A/, B/, label/ folders of images")
    if not names:
        return pairs
    by_name = {p.name: p for p in pairs}
    missing = [n for n in names if n not in by_name]
    if missing:
        why = f": {hint}" if hint else ""
        raise InputFileError(f"no labelled pair named {', '.join(missing)} under {root}{why}")
    return [by_name[n] for n in names]


def read_whole(pair: AlignedPair, labels: LabelReader) -> np.ndarray:
    """All labels of a pair's grid (small scenes: training, object counts)."""
    return labels.read(Window(0, 0, pair.grid.width, pair.grid.height))
