"""Cross-check at city scale: generated change polygons against permits and parcels.

    .venv/bin/python bench/crosscheck_scale.py [--changes 100000 1000000] [--permits 1000000]
                                               [--parcels 500000] [--repeats 1]

Generates seeded square-ish polygons over a 40 × 40 km city (UTM 48N): changes of 10–60 m, permits
of 15–50 m (a quarter of them near a change, the rest anywhere, dates spread so that every rule
fires), parcels in a regular lattice (500 000 parcels: 56 m squares). Times ``rs.crosscheck.judge.judge`` end to
end: the permit and zoning rules alone, then with parcel attribution; with the threaded STRtree join
and, for layers up to ``--dask-up-to`` changes, with the dask-geopandas partitioned join, side by side.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repository-only helpers: bench/, tests/

from changewatch.rs.crosscheck.judge import judge  # noqa: E402
from changewatch.rs.crosscheck.layers import Layer, Layers  # noqa: E402
from changewatch.rs.crosscheck.settings import ParcelColumns, RuleConfig  # noqa: E402

CRS = "EPSG:32648"
X0, Y0, SIDE = 660_000.0, 1_180_000.0, 40_000.0


def boxes(rng: np.random.Generator, n: int, lo: float, hi: float, centres: np.ndarray | None = None) -> np.ndarray:
    xy = centres if centres is not None else rng.uniform(0, SIDE, size=(n, 2)) + (X0, Y0)
    w, h = rng.uniform(lo, hi, size=(2, n))
    return shapely.box(xy[:, 0] - w / 2, xy[:, 1] - h / 2, xy[:, 0] + w / 2, xy[:, 1] + h / 2)


def make_layers(n_changes: int, n_permits: int, n_parcels: int, seed: int = 0) -> tuple[gpd.GeoDataFrame, Layers]:
    rng = np.random.default_rng(seed)
    change_xy = rng.uniform(0, SIDE, size=(n_changes, 2)) + (X0, Y0)
    changes = gpd.GeoDataFrame({"change_id": np.arange(1, n_changes + 1), "area_m2": 0.0,
                                "max_prob": rng.uniform(0.5, 1, n_changes).astype(np.float32)},
                               geometry=boxes(rng, n_changes, 10, 60, change_xy), crs=CRS)
    changes["area_m2"] = changes.area
    near = min(n_permits // 4, n_changes)
    centres = np.vstack([change_xy[rng.choice(n_changes, near, replace=False)] + rng.normal(0, 8, (near, 2)),
                         rng.uniform(0, SIDE, size=(n_permits - near, 2)) + (X0, Y0)])
    issued = np.datetime64("2015-01-01") + rng.integers(0, 3650, n_permits).astype("timedelta64[D]")
    permits = gpd.GeoDataFrame({"permit_id": np.char.add("P", np.arange(n_permits).astype(str)),
                                "issued": issued, "expires": issued + np.timedelta64(1095, "D")},
                               geometry=boxes(rng, n_permits, 15, 50, centres), crs=CRS)
    side = int(np.sqrt(n_parcels))
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    px, py = X0 + gx.ravel() * (SIDE / side), Y0 + gy.ravel() * (SIDE / side)
    parcels = gpd.GeoDataFrame({"parcel_id": np.char.add("Q", np.arange(px.size).astype(str)),
                                "ward": (gx.ravel() * 4 // side + 4 * (gy.ravel() * 4 // side)).astype(str)},
                               geometry=shapely.box(px, py, px + SIDE / side, py + SIDE / side), crs=CRS)
    zoning = gpd.GeoDataFrame({"zone_id": ["green"], "construction_allowed": [False]},
                              geometry=[shapely.box(X0, Y0, X0 + 4000, Y0 + 4000)], crs=CRS)
    return changes, Layers(Layer(permits, 0, "generated"), Layer(zoning, 0, "generated"),
                           Layer(parcels, 0, "generated"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--permits", type=int, default=1_000_000)
    parser.add_argument("--parcels", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dask-up-to", type=int, default=100_000)
    args = parser.parse_args()
    print(f"permits {args.permits:,} (+ 1 zone), parcels {args.parcels:,}, as of 2020-01-01\n")
    print("| changes | work | join | seconds (each repeat) | flagged | parcels with flags |\n|---|---|---|---|---|---|")
    for n in args.changes:
        changes, full = make_layers(n, args.permits, args.parcels)
        joins = [("STRtree, threaded", 10**12)] + ([("dask-geopandas", 0)] if n <= args.dask_up_to else [])
        for work, layers in (("permit + zoning rules", Layers(full.permits, full.zoning, None)),
                             ("rules + parcel attribution", full)):
            for label, dask_min in joins:
                rules = RuleConfig(as_of=date(2020, 1, 1), dask_min_features=dask_min)
                seconds = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    judgement = judge(changes, layers, rules, ParcelColumns())
                    seconds.append(time.perf_counter() - start)
                parcels = f"{len(judgement.parcels):,}" if judgement.parcels is not None else "–"
                print(f"| {n:,} | {work} | {label} | {', '.join(f'{s:.1f}' for s in seconds)} | "
                      f"{len(judgement.flagged):,} | {parcels} |", flush=True)


if __name__ == "__main__":
    main()
