"""Seeded generators of tiny georeferenced test data with known answers (as torchgeo's tests/data).

Every function writes real files with rasterio/pyogrio, so tests exercise the same I/O as users.
"""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.transform
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from shapely.geometry import Polygon, box

from changewatch.models.changenet import ModelSpec

UTM48N = CRS.from_epsg(32648)  # Ho Chi Minh City's UTM zone
WGS84 = CRS.from_epsg(4326)
ORIGIN = (680_000.0, 1_200_000.0)  # UTM 48N easting/northing, near Ho Chi Minh City


def write_raster(path: Path, data: np.ndarray, crs: CRS | None, transform: Affine, nodata: float | None = None,
                 descriptions: tuple[str, ...] | None = None, **profile: object) -> Path:
    """Write a (bands, rows, cols) array as a GeoTIFF; ``descriptions``: band names; ``profile``:
    more creation options (``photometric="RGB"``, ``alpha="UNASSOCIATED"``…)."""
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, **profile) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = descriptions
    return path


def write_vrt(path: Path, sources: list[tuple[Path, int, int]], size: int) -> Path:
    """A ``size``² virtual mosaic on the grid of the first source (its CRS and pixel size) holding
    each source at its (col, row) and nothing else; sources share CRS, pixel size, dtype and bands."""
    with rasterio.open(sources[0][0]) as ds:
        t, count, dtype, crs = ds.transform, ds.count, ds.dtypes[0], ds.crs
    origin = t * (-sources[0][1], -sources[0][2])
    vrt_type = {"uint8": "Byte", "uint16": "UInt16", "float32": "Float32"}[dtype]

    def source(src: Path, col: int, row: int, band: int) -> str:
        with rasterio.open(src) as ds:
            w, h = ds.width, ds.height
        return (f'<SimpleSource><SourceFilename>{src}</SourceFilename><SourceBand>{band}</SourceBand>'
                f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                f'<DstRect xOff="{col}" yOff="{row}" xSize="{w}" ySize="{h}"/></SimpleSource>')

    bands = "".join(f'<VRTRasterBand dataType="{vrt_type}" band="{b}">'
                    + "".join(source(src, col, row, b) for src, col, row in sources) + "</VRTRasterBand>"
                    for b in range(1, count + 1))
    path.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{crs.to_wkt()}</SRS>'
                    f'<GeoTransform>{origin[0]}, {t.a}, 0, {origin[1]}, 0, {t.e}</GeoTransform>{bands}</VRTDataset>')
    return path


def write_probabilities(path: Path, change: np.ndarray, building_before: np.ndarray | None = None,
                        building_after: np.ndarray | None = None, pixel_m: float = 0.5) -> Path:
    """A probability raster as ``rs.io.raster.write_probability`` lays it out (UTM 48N, ``pixel_m``
    pixels, nodata NaN): band 1 change, then the building probabilities given, each with its band
    description (a semantic change model's outputs)."""
    from changewatch.rs.io.raster import BAND_DESCRIPTIONS

    named = [("change", change), ("building_before", building_before), ("building_after", building_after)]
    bands = [(name, band) for name, band in named if band is not None]
    data = np.stack([band for _, band in bands]).astype(np.float32)
    write_raster(path, data, UTM48N, utm_transform(pixel_m), nodata=np.nan)
    with rasterio.open(path, "r+") as ds:
        for i, (name, _) in enumerate(bands, start=1):
            ds.set_band_description(i, BAND_DESCRIPTIONS[name])
    return path


def utm_transform(pixel_m: float = 10.0, origin: tuple[float, float] = ORIGIN) -> Affine:
    """North-up UTM 48N transform with square pixels of ``pixel_m`` metres."""
    return Affine(pixel_m, 0.0, origin[0], 0.0, -pixel_m, origin[1])


def textured_scene(rows: int, cols: int, bands: int = 4, seed: int = 0) -> np.ndarray:
    """A smooth, seeded uint16 'landscape' (sum of low-frequency waves) in reflectance-like units."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float64)
    out = np.empty((bands, rows, cols), np.float64)
    for b in range(bands):
        f = rng.uniform(0.01, 0.05, size=(3, 2))
        ph = rng.uniform(0, 2 * np.pi, size=3)
        out[b] = 1500 + 300 * b + sum(250 * np.sin(f[k, 0] * r + f[k, 1] * c + ph[k]) for k in range(3))
    return out.astype(np.uint16)


def plant_square(scene: np.ndarray, row: int, col: int, size: int, value: int = 6000) -> np.ndarray:
    """Copy of ``scene`` with a bright square (a new roof) at (row, col) of side ``size`` pixels."""
    out = scene.copy()
    out[:, row:row + size, col:col + size] = value
    return out


def make_site(root: Path, name: str, seed: int, size: int = 64, squares: tuple[tuple[int, int, int], ...] = ()) -> Path:
    """An OSCD-style site folder: before/after on one UTM grid; change.tif = planted squares."""
    site = root / name
    site.mkdir(parents=True)
    before = textured_scene(size, size, seed=seed)
    after = before.copy()
    label = np.zeros((size, size), np.uint8)
    for row, col, side in squares:
        after = plant_square(after, row, col, side)
        label[row:row + side, col:col + side] = 1
    t = utm_transform()
    write_raster(site / "before.tif", before, UTM48N, t)
    write_raster(site / "after.tif", after, UTM48N, t)
    write_raster(site / "change.tif", label, UTM48N, t)
    return site


def write_png(path: Path, data: np.ndarray) -> Path:
    """Write a (bands, rows, cols) uint8 array as a plain PNG (no CRS, no georeferencing)."""
    data = data if data.ndim == 3 else data[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                           dtype="uint8") as dst:
            dst.write(data)
    return path


def make_levir(root: Path, squares: dict[str, tuple[tuple[int, int, int], ...]], size: int = 64,
               change_value: int = 255, buildings: bool = False) -> Path:
    """A LEVIR-CD style folder: A/, B/, label/ of same-named plain RGB PNGs (8-bit); labels are 0 and
    ``change_value`` (255 as LEVIR-CD, or 1) over the planted squares of each image. ``buildings``:
    also building_before/ (a standing 6×6 "house" at rows/cols 2–7) and building_after/ (it and the
    planted squares)."""
    folders = ("A", "B", "label", "building_before", "building_after") if buildings else ("A", "B", "label")
    for sub in folders:
        (root / sub).mkdir(parents=True, exist_ok=True)
    for seed, (name, planted) in enumerate(squares.items(), start=1):
        before = (textured_scene(size, size, bands=3, seed=seed) // 16).astype(np.uint8)
        house = np.zeros((size, size), np.uint8)
        if buildings:
            before = plant_square(before, 2, 2, 6, value=200)
            house[2:8, 2:8] = change_value
        after = before.copy()
        label = np.zeros((size, size), np.uint8)
        for row, col, side in planted:
            after = plant_square(after, row, col, side, value=250)
            label[row:row + side, col:col + side] = change_value
        write_png(root / "A" / f"{name}.png", before)
        write_png(root / "B" / f"{name}.png", after)
        write_png(root / "label" / f"{name}.png", label)
        if buildings:
            write_png(root / "building_before" / f"{name}.png", house)
            write_png(root / "building_after" / f"{name}.png", np.maximum(house, label))
    return root


def make_vector_site(root: Path, name: str, seed: int, squares: tuple[tuple[int, int, int], ...], size: int = 64,
                     layer_crs: CRS = WGS84) -> Path:
    """A site with before/after GeoTIFFs (UTM 48N) and its changed squares as polygons in
    ``changes.gpkg`` (in ``layer_crs``, so they are reprojected when rasterised)."""
    import geopandas as gpd
    from shapely.geometry import box

    site = make_site(root, name, seed, size, squares)
    (site / "change.tif").unlink()
    t = utm_transform()
    polygons = [box(*rasterio.transform.array_bounds(side, side, t * Affine.translation(col, row))) for row, col, side
                in squares]
    gpd.GeoDataFrame({"kind": ["new building"] * len(polygons)}, geometry=polygons, crs=UTM48N).to_crs(
        layer_crs).to_file(site / "changes.gpkg")
    return site


class BrightnessChangeNet(torch.nn.Module):
    """A pointwise 'change model' with a known answer: logit = gain × (mean after − mean before) − bias.

    It looks at no neighbours, so tiled inference must reproduce a whole-image run exactly.
    """

    def __init__(self, bands: int, gain: float = 4.0, bias: float = 2.0) -> None:
        super().__init__()
        self.bands, self.gain, self.bias = bands, gain, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = x[:, : self.bands], x[:, self.bands:]
        return (self.gain * (after.mean(1, keepdim=True) - before.mean(1, keepdim=True)) - self.bias)


def pointwise_spec(bands: int = 4) -> ModelSpec:
    """A spec for BrightnessChangeNet (no padding needed: encoder_depth 0)."""
    return ModelSpec(name="brightness-test", encoder_depth=0, bands=tuple(f"b{i}" for i in range(bands)))


class BuildingBrightnessNet(torch.nn.Module):
    """A pointwise semantic change model with a known answer: a pixel is building at a date where that
    date's normalised mean band is bright (logit gain × (mean − level)), and change where the two
    dates' means differ by more than ``level`` − 0.5 (a roof appeared or went). Without
    ``building_outputs`` it predicts the change channel only."""

    def __init__(self, bands: int, gain: float = 4.0, level: float = 1.5, building_outputs: bool = True) -> None:
        super().__init__()
        self.bands, self.gain, self.level, self.building_outputs = bands, gain, level, building_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = x[:, : self.bands].mean(1, keepdim=True), x[:, self.bands:].mean(1, keepdim=True)
        change = self.gain * ((after - before).abs() - (self.level - 0.5))
        if not self.building_outputs:  # the change channel alone, as a change-only model
            return change
        return torch.cat([change, self.gain * (before - self.level), self.gain * (after - self.level)], dim=1)


def building_spec(bands: int = 4, gsd_m: float = 0.5) -> ModelSpec:
    """A spec for BuildingBrightnessNet: a VHR model (``gsd_m``) with building outputs."""
    return ModelSpec(name="buildings-test", encoder_depth=0, bands=tuple(f"b{i}" for i in range(bands)), gsd_m=gsd_m,
                     outputs=("change", "building_before", "building_after"))


def constant_checkpoint(path: Path, logits: tuple[float, ...], bands: int = 4) -> Path:
    """A small U-Net checkpoint whose every pixel gets ``logits`` (one per output: change, building
    BEFORE, building AFTER): its head's weights are zero, its biases the logits."""
    from changewatch.models.changenet import OUTPUTS, build_network, save_checkpoint

    spec = tiny_spec(bands)
    spec.outputs = OUTPUTS[:len(logits)]
    network = build_network(spec)
    head = network.segmentation_head[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor(logits))
    return save_checkpoint(network, spec, path)


def tiny_spec(bands: int = 4) -> ModelSpec:
    """A small real smp U-Net spec, quick to build and train in tests."""
    return ModelSpec(name="tiny-test", encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8),
                     bands=tuple(f"b{i}" for i in range(bands)))


# --- the cross-check's rule case: changes, permits and zones with a known reason code each ------------
# Changes: 20 m squares at x = 0, 100, 200, ... (UTM 48N). Permits (in EPSG:4326) and zones as below.
AS_OF = date(2018, 3, 23)
X, Y = ORIGIN


def square(i: int, size: float = 20.0, dx: float = 0.0) -> Polygon:
    return box(X + i * 100 + dx, Y, X + i * 100 + dx + size, Y + size)


def rule_case() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    ch = gpd.GeoDataFrame({"change_id": range(1, 10)}, geometry=[square(i) for i in range(9)], crs=UTM48N)
    rows = [  # (permit, change it covers, footprint, issued, expires)
        ("valid", 0, square(0, 22, -1), "2017-01-01", "2019-01-01"),           # change 1: PERMITTED
        ("expired", 1, square(1, 22, -1), "2015-01-01", "2018-03-22"),          # change 2: PERMIT_EXPIRED
        ("future", 2, square(2, 22, -1), "2018-03-24", "2020-01-01"),           # change 3: PERMIT_NOT_YET_VALID
        ("future-b", 3, square(3, 22, -1), "2019-01-01", None),                 # change 4: expired + future
        ("expired-b", 3, square(3, 22, -1), "2010-01-01", "2011-01-01"),        #   → PERMIT_EXPIRED
        ("small", 4, square(4, 10), "2017-01-01", None),                         # change 5: 300 m² outside → EXCEEDS
        ("almost", 5, square(5, 19.5), "2017-01-01", None),                      # change 6: 19.75 m² outside → ok
        ("edge-day", 6, square(6, 22, -1), "2018-03-23", "2018-03-23"),         # change 7: valid on its only day
        ("in-zone", 7, square(7, 22, -1), "2017-01-01", None),                   # change 8: NO_BUILD_ZONE only
    ]  # change 9: no permit, and in the no-build zone → NO_BUILD_ZONE,NO_PERMIT
    permits = gpd.GeoDataFrame({"permit_id": [r[0] for r in rows], "issued": [r[3] for r in rows],
                                "expires": [r[4] for r in rows]}, geometry=[r[2] for r in rows], crs=UTM48N)
    zoning = gpd.GeoDataFrame({"zone_id": ["open", "green"], "zone_class": ["mixed", "green belt"],
                               "construction_allowed": ["yes", "no"]},
                              geometry=[box(X - 50, Y - 50, X + 650, Y + 50), box(X + 690, Y - 50, X + 900, Y + 50)],
                              crs=UTM48N)
    return ch, permits.to_crs(WGS84), zoning.to_crs(WGS84)


# --- a batch manifest ---------------------------------------------------------------------------------

def make_manifest(tmp_path: Path, n_good: int = 2, broken: bool = True, size: int = 96) -> Path:
    """n_good real pairs (96×96 UTM, one planted square each) and, optionally, a job whose AFTER is missing."""
    lines = ["area_id,before,after"]
    for i in range(n_good):
        before = textured_scene(size, size, seed=10 + i)
        after = plant_square(before, 20 + 5 * i, 30, 12)
        t = utm_transform(origin=(ORIGIN[0] + 5000 * i, ORIGIN[1]))
        write_raster(tmp_path / f"b{i}.tif", before, UTM48N, t)
        write_raster(tmp_path / f"a{i}.tif", after, UTM48N, t)
        lines.append(f"ward{i},b{i}.tif,a{i}.tif")
    if broken:
        lines.append("broken,b0.tif,missing.tif")
    (tmp_path / "jobs.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "jobs.csv"
