"""Rebuild the demo data in ``tiles/`` from the OSCD copy in ``../shared/data/oscd``.

    python tiles/make_demo.py [--oscd ../shared/data/oscd] [--seed 7]

Copies one OSCD *validation* city (Hong Kong: the shipped model never trained on it) and makes
a permit layer for it. The permits are MADE UP: they are drawn around a seeded random half of
the city's real labelled changes (so those changes are "permitted" and the rest are not), plus
a few permits where nothing changed, as real permit registers have. They exist to exercise the
cross-check, not to describe Hong Kong.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rs.align import Grid  # noqa: E402
from rs.vectorize import metric_crs, polygons_from_mask  # noqa: E402

CITY = "hongkong"
DEMO = ROOT / "tiles" / CITY
MIN_PERMITTED_CHANGE_M2 = 1000.0


def make_permits(label_path: Path, seed: int) -> gpd.GeoDataFrame:
    """Made-up permits: a buffered rotated rectangle around half of the labelled changes ≥ 1000 m²,
    plus five permits on unchanged ground. CRS: the label's (EPSG:4326)."""
    with rasterio.open(label_path) as ds:
        label = ds.read(1)
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    changes = polygons_from_mask(label == 1, (label == 1).astype(np.float32), grid)
    utm = metric_crs(changes)
    changes = changes.to_crs(utm)
    big = changes[changes.area >= MIN_PERMITTED_CHANGE_M2]
    rng = np.random.default_rng(seed)
    chosen = big.iloc[np.sort(rng.permutation(len(big))[: len(big) // 2])]
    footprints = list(chosen.geometry.minimum_rotated_rectangle().buffer(10.0))
    unchanged = changes.union_all().buffer(50.0)
    bounds = changes.total_bounds
    while len(footprints) < len(chosen) + 5:
        x, y = rng.uniform(bounds[0], bounds[2]), rng.uniform(bounds[1], bounds[3])
        candidate = gpd.GeoSeries.from_xy([x], [y], crs=utm).buffer(40.0, cap_style="square").iloc[0]
        if not candidate.intersects(unchanged):
            footprints.append(candidate)
    n = len(footprints)
    permits = gpd.GeoDataFrame(
        {
            "permit_id": [f"DEMO-{i + 1:04d}" for i in range(n)],
            "issued": ["2016-06-01"] * n,
            "expires": ["2019-06-01"] * n,
            "status": ["approved"] * n,
            "note": ["made-up demo permit, not a real record"] * n,
        },
        geometry=footprints, crs=utm,
    )
    return permits.to_crs(grid.crs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--oscd", type=Path, default=ROOT.parent / "shared" / "data" / "oscd")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    DEMO.mkdir(parents=True, exist_ok=True)
    for name in ("before.tif", "after.tif", "change.tif", "meta.json"):
        shutil.copyfile(args.oscd / CITY / name, DEMO / name)
    permits = make_permits(DEMO / "change.tif", args.seed)
    out = ROOT / "tiles" / f"{CITY}_permits_demo.gpkg"
    out.unlink(missing_ok=True)
    permits.to_file(out, layer="permits", driver="GPKG")
    print(f"wrote {DEMO} and {out} ({len(permits)} made-up permits)")


if __name__ == "__main__":
    main()
