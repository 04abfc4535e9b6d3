"""Batch throughput on a Dask LocalCluster with 1 vs 2 workers (one thread each), side by side.

    .venv/bin/python bench/batch_workers.py [--jobs 8] [--size 768] [--repeats 2]

Generates ``--jobs`` synthetic 4-band scene pairs (``--size``² pixels, UTM 48N, seeded) and runs
the same manifest with the shipped model, alternating 1-worker and 2-worker runs ``--repeats``
times so both see the same machine noise. Prints wall times and the speed-up ratio as Markdown.
Cluster start-up is included: it is part of what a user waits for.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repository-only helpers: bench/, tests/

from changewatch.rs.batch.run import run_batch  # noqa: E402
from changewatch.rs.config import BatchConfig  # noqa: E402
from tests.data import ORIGIN, UTM48N, plant_square, textured_scene, utm_transform, write_raster  # noqa: E402


def make_jobs(folder: Path, jobs: int, size: int) -> Path:
    lines = ["area_id,before,after"]
    for i in range(jobs):
        before = textured_scene(size, size, seed=100 + i)
        after = plant_square(plant_square(before, size // 4, size // 3, 20), size // 2, size // 2, 35)
        t = utm_transform(origin=(ORIGIN[0] + 20_000 * i, ORIGIN[1]))
        write_raster(folder / f"b{i}.tif", before, UTM48N, t)
        write_raster(folder / f"a{i}.tif", after, UTM48N, t)
        lines.append(f"area{i},b{i}.tif,a{i}.tif")
    manifest = folder / "jobs.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def timed_run(manifest: Path, outdir: Path, workers: int) -> float:
    start = time.perf_counter()
    result = run_batch(BatchConfig(manifest=str(manifest), outdir=str(outdir), scheduler="local", workers=workers))
    assert not result.failed, result.failed
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_jobs(folder, args.jobs, args.size)
        times: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.repeats):
            for workers in (1, 2):
                times[workers].append(timed_run(manifest, folder / f"out-{workers}-{r}", workers))
    one, two = statistics.median(times[1]), statistics.median(times[2])
    mpx = args.jobs * args.size**2 / 1e6
    print(f"{args.jobs} jobs of {args.size}² px ({mpx:.1f} Mpx), shipped model, CPU, "
          f"{args.repeats} alternating repeats\n")
    print("| workers | wall time, median (s) | all runs (s) | Mpx/s |\n|---|---|---|---|")
    for w, med in ((1, one), (2, two)):
        print(f"| {w} | {med:.1f} | {', '.join(f'{t:.1f}' for t in times[w])} | {mpx / med:.2f} |")
    print(f"\nspeed-up 2 vs 1 workers: **{one / two:.2f}×**")


if __name__ == "__main__":
    main()
