"""Peak memory of vectorising a probability raster at 1× and 4× the pixels.

    .venv/bin/python bench/vectorize_memory.py [--sizes 4096 8192]

Writes seeded probability rasters (UTM 48N, deflate-tiled float32: 512² blocks of 0.1 with 20
squares of 3–30 px at 0.9 each), then runs ``rs.vectorize.vectorize`` on each in a fresh process
under ``/usr/bin/time -v`` with ``GDAL_CACHEMAX=64`` (so GDAL's own block cache, by default up to 5 % of
RAM, does not hide changewatch's memory). Prints a Markdown table of polygons, wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repository-only helpers: bench/, tests/

from bench.measure import run_measured  # noqa: E402
from tests.data import UTM48N, utm_transform  # noqa: E402


def write_probability(path: Path, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="float32", crs=UTM48N,
                       transform=utm_transform(), nodata=float("nan"), tiled=True, compress="deflate") as dst:
        for row in range(0, size, 512):
            for col in range(0, size, 512):
                block = np.full((512, 512), 0.1, np.float32)
                for _ in range(20):
                    y, x, side = rng.integers(0, 480), rng.integers(0, 480), rng.integers(3, 30)
                    block[y:y + side, x:x + side] = 0.9
                dst.write(block, 1, window=Window(col, row, 512, 512))


def measure(path: Path) -> tuple[int, float, float]:
    """(polygons, seconds including interpreter start-up, peak RSS in MB)."""
    code = ("from changewatch.rs.vectorize import vectorize, VectorizeConfig; "
            f"print(len(vectorize({str(path)!r}, VectorizeConfig(0.5, 200))))")
    start = time.perf_counter()
    line, peak = run_measured(code)
    return int(line), time.perf_counter() - start, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    args = parser.parse_args()
    print("| raster | polygons | wall incl. start-up (s) | peak RSS (MB) |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"prob{size}.tif"
            write_probability(path, size)
            polygons, seconds, peak = measure(path)
            print(f"| {size}² | {polygons:,} | {seconds:.1f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
