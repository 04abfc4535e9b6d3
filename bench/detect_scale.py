"""Issue 4's three figures: detect ÷ model-only ceiling, peak memory at 1× and 4× the pixels, and
(with the bench environment) changewatch vs the torchgeo idiom.

    bash bench/raster_engine.sh                       # all three, setting up the bench environment
    .venv/bin/python bench/detect_scale.py [--sizes 4096 8192] [--device cpu] [--repeats 1]

Generates a seeded 4-band scene pair per size: BEFORE in UTM 48N at 10 m, AFTER the same ground
with planted changes, reprojected to EPSG:4326 (so alignment is on the measured path). Then, each in
a fresh process under ``/usr/bin/time -v`` (``GDAL_CACHEMAX=64``), alternating:

- ``detect``: the whole pipeline (statistics, aligned reads, inference, blended COG, vectorise,
  GeoPackages), timed around the ``detect`` call;
- the ceiling: as many forward passes of the shipped model as detect makes (same tile, batch,
  device, folded batch norms, channels-last, inference mode) on in-memory random tensors — no I/O.

Prints throughput (Mpx/s), ratio 1 = ceiling time ÷ detect time (1.0: detect runs at the model's
own speed), peak RSS and the memory ratio of the largest to the smallest scene. With
``--torchgeo-python`` (an interpreter with torchgeo, see ``bench/raster_engine.sh``) it then runs
``bench/torchgeo_idiom.py`` on the first size for ratio 2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repository-only helpers: bench/, tests/

from bench.measure import run_measured  # noqa: E402
from changewatch.rs.align import AlignedPair  # noqa: E402
from changewatch.rs.infer import InferenceConfig, tiling  # noqa: E402
from tests.data import UTM48N, WGS84, plant_square, textured_scene, utm_transform, write_raster  # noqa: E402

DETECT = """
import time, sys
from changewatch.rs.pipeline import DetectConfig, detect
from changewatch.rs.infer import InferenceConfig
config = DetectConfig(sys.argv[1], sys.argv[2], sys.argv[3], inference=InferenceConfig(device=sys.argv[4]))
start = time.perf_counter()
detect(config, progress=False)
print(time.perf_counter() - start)
"""
CEILING = """
import time, sys
import numpy as np, torch
from changewatch.models.changenet import DEFAULT_MODEL
from changewatch.rs.infer import ChangeModel, InferenceConfig
tiles, device = int(sys.argv[1]), sys.argv[2]
config = InferenceConfig(device=device)
model = ChangeModel.load(DEFAULT_MODEL, device)
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
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--torchgeo-python", default=None, help="interpreter of the bench environment (ratio 2)")
    args = parser.parse_args()
    config = InferenceConfig(device=args.device)
    print(f"device {args.device}, tile {config.tile}, overlap {config.overlap}, batch {config.batch_size}\n")
    print("| scene | tiles | detect (s) | detect Mpx/s | ceiling (s) | ceiling Mpx/s | ratio 1: ceiling ÷ detect "
          "| detect peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = {}
        for size in args.sizes:
            before, after = pairs[size] = make_pair(Path(tmp), size)
            with AlignedPair(before, after) as pair:
                tiles, mpx = len(tiling(pair.grid, config)), pair.grid.width * pair.grid.height / 1e6
            for _ in range(args.repeats):
                seconds, peak = timed(DETECT, str(before), str(after), str(Path(tmp) / f"out{size}"), args.device)
                ceiling, _ = timed(CEILING, str(tiles), args.device)
                peaks[size] = max(peaks.get(size, 0.0), peak)
                print(f"| {size}² | {tiles} | {seconds:.1f} | {mpx / seconds:.2f} | {ceiling:.1f} "
                      f"| {mpx / ceiling:.2f} | **{ceiling / seconds:.2f}** | {peak:.0f} |", flush=True)
        small, large = min(peaks), max(peaks)
        if large != small:
            print(f"\nmemory: peak RSS at {large}² ÷ at {small}² ({(large / small) ** 2:.0f}× the pixels) = "
                  f"**{peaks[large] / peaks[small]:.2f}**")
        if args.torchgeo_python:
            print("\n### ratio 2: changewatch vs the torchgeo idiom\n", flush=True)
            before, after = pairs[args.sizes[0]]
            subprocess.run([args.torchgeo_python, str(ROOT / "bench" / "torchgeo_idiom.py"), str(before), str(after)],
                           check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
