"""End-to-end ``detect`` against the model-only ceiling, and its peak memory at 1× and 4× the pixels.

    .venv/bin/python bench/detect_scale.py [--sizes 2048 4096] [--device cpu]

Generates a seeded 4-band scene pair per size: BEFORE in UTM 48N at 10 m, AFTER the same ground
with planted changes, reprojected to EPSG:4326 (so alignment is on the measured path). Then, each in
a fresh process under ``/usr/bin/time -v`` (``GDAL_CACHEMAX=64``):

- ``detect``: the whole pipeline (statistics, aligned reads, inference, COG, vectorise, GeoPackages);
- the ceiling: the same number of forward passes of the shipped model (same tile, batch, device,
  channels-last, inference mode) on in-memory random tensors — no I/O at all.

Prints throughput (Mpx/s), the ratio detect ÷ ceiling, and peak RSS.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import run_measured  # noqa: E402
from tests.data import UTM48N, WGS84, plant_square, textured_scene, utm_transform, write_raster  # noqa: E402

DETECT = """
import time, sys
from rs.pipeline import DetectConfig, detect
from rs.infer import InferenceConfig
start = time.perf_counter()
detect(DetectConfig(sys.argv[1], sys.argv[2], sys.argv[3], inference=InferenceConfig(device=sys.argv[4])), progress=False)
print(time.perf_counter() - start)
"""
CEILING = """
import time, sys
import numpy as np, torch
from models.changenet import DEFAULT_MODEL
from rs.infer import ChangeModel, InferenceConfig
from rs.tiling import TileGrid
size, device = int(sys.argv[1]), sys.argv[2]
config = InferenceConfig(device=device)
model = ChangeModel.load(DEFAULT_MODEL, device)
tiles = len(TileGrid(size, size, config.tile, config.overlap))
x = np.random.default_rng(0).normal(0, 1, (config.batch_size, 8, config.tile, config.tile)).astype(np.float32)
model.predict(x[:1])  # warm-up, as detect's first batch is not timed apart either
start = time.perf_counter()
for done in range(0, tiles, config.batch_size):
    model.predict(x[: min(config.batch_size, tiles - done)])
print(time.perf_counter() - start)
"""


def make_pair(folder: Path, size: int) -> tuple[Path, Path]:
    before = textured_scene(size, size, seed=size)
    after = before
    rng = np.random.default_rng(size)
    for _ in range(size // 64):
        after = plant_square(after, int(rng.integers(0, size - 40)), int(rng.integers(0, size - 40)),
                             int(rng.integers(6, 40)))
    b = write_raster(folder / f"before{size}.tif", before, UTM48N, utm_transform())
    utm_after = write_raster(folder / f"after{size}_utm.tif", after, UTM48N, utm_transform())
    with rasterio.open(utm_after) as src:
        transform, width, height = calculate_default_transform(src.crs, WGS84, src.width, src.height, *src.bounds)
        warped = np.zeros((4, height, width), np.uint16)
        reproject(rasterio.band(src, [1, 2, 3, 4]), warped, dst_transform=transform, dst_crs=WGS84,
                  resampling=Resampling.bilinear, dst_nodata=0)
    a = write_raster(folder / f"after{size}.tif", warped, WGS84, transform, nodata=0)
    return b, a


def timed(code: str, *args: str) -> tuple[float, float]:
    """(seconds the code printed, peak RSS in MB)."""
    line, peak = run_measured(code, *args)
    return float(line), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"device {args.device}, tile 256, overlap 64, batch 8\n")
    print("| scene | detect (s) | detect Mpx/s | ceiling (s) | ceiling Mpx/s | detect ÷ ceiling | detect peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            before, after = make_pair(Path(tmp), size)
            seconds, peak = timed(DETECT, str(before), str(after), str(Path(tmp) / f"out{size}"), args.device)
            ceiling, _ = timed(CEILING, str(size), args.device)
            mpx = size * size / 1e6
            print(f"| {size}² | {seconds:.1f} | {mpx / seconds:.2f} | {ceiling:.1f} | {mpx / ceiling:.2f} | "
                  f"{ceiling / seconds:.2f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
