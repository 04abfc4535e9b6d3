"""Rebuild the demo data in ``tiles/`` from the OSCD copy in ``../shared/data/oscd``.

    python tiles/make_demo.py [--oscd ../shared/data/oscd] [--seed 7]

Copies one OSCD *validation* city (Hong Kong: the shipped model never trained on it), writes the
acquisition dates into the GeoTIFFs, and makes permit, zoning and parcel layers for it. The
layers are MADE UP: permits are drawn around a seeded random half of the city's real labelled
changes (so those changes are "permitted" and the rest are not), plus a few permits where
nothing changed, as real permit registers have; some have expired or are not yet valid on the
AFTER date. Zoning is a 3 × 3 grid with two green-belt zones; parcels a 14 × 14 grid in four
wards. They exist to exercise the cross-check, not to describe Hong Kong.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repository-only helpers: bench/, tests/

from changewatch.rs.grid import Grid, metric_crs  # noqa: E402
from changewatch.rs.vectorize import polygons_from_mask  # noqa: E402

CITY = "hongkong"
DEMO = ROOT / "tiles" / CITY
MIN_PERMITTED_CHANGE_M2 = 1000.0


def make_permits(label_path: Path, seed: int) -> gpd.GeoDataFrame:
    """Made-up permits around half of the labelled changes ≥ 1000 m², plus five on unchanged ground.

    Each around a change is a buffered rotated rectangle. CRS: the label's (EPSG:4326).
    """
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
    # Most permits are valid on the AFTER date (2018-03-23); every sixth has expired before it and
    # every seventh is issued after it, so the demo shows those reason codes too.
    issued = ["2018-06-01" if i % 7 == 3 else "2016-06-01" for i in range(n)]
    expires = ["2017-12-31" if i % 6 == 2 else "2019-06-01" for i in range(n)]
    permits = gpd.GeoDataFrame(
        {
            "permit_id": [f"DEMO-{i + 1:04d}" for i in range(n)],
            "issued": issued,
            "expires": expires,
            "status": ["approved"] * n,
            "note": ["made-up demo permit, not a real record"] * n,
        },
        geometry=footprints, crs=utm,
    )
    assert grid.crs is not None, "the demo scenes are georeferenced"
    return permits.to_crs(grid.crs)


def make_zoning(label_path: Path) -> gpd.GeoDataFrame:
    """Made-up zoning: the scene cut into a 3 × 3 grid of zones.

    The centre-left and bottom-right zones are green belt where new construction is not allowed.
    """
    with rasterio.open(label_path) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    xs, ys = np.linspace(left, right, 4), np.linspace(top, bottom, 4)
    cells, ids, classes = [], [], []
    for r in range(3):
        for c in range(3):
            cells.append(shapely.box(xs[c], ys[r + 1], xs[c + 1], ys[r]))
            ids.append(f"Z{r}{c}")
            classes.append("green belt" if (r, c) in ((1, 0), (2, 2)) else "urban mixed use")
    return gpd.GeoDataFrame({"zone_id": ids, "zone_class": classes,
                             "construction_allowed": [k != "green belt" for k in classes],
                             "note": ["made-up demo zoning, not a real plan"] * 9}, geometry=cells, crs=crs)


def make_parcels(label_path: Path, n: int = 14) -> gpd.GeoDataFrame:
    """Made-up cadastre: the scene cut into n × n rectangular parcels in four wards (quadrants)."""
    with rasterio.open(label_path) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    xs, ys = np.linspace(left, right, n + 1), np.linspace(top, bottom, n + 1)
    rows = [(f"HK-{r:02d}-{c:02d}", f"Ward {1 + (r >= n // 2) * 2 + (c >= n // 2)}",
             shapely.box(xs[c], ys[r + 1], xs[c + 1], ys[r])) for r in range(n) for c in range(n)]
    return gpd.GeoDataFrame({"parcel_id": [r[0] for r in rows], "ward": [r[1] for r in rows],
                             "note": ["made-up demo parcel, not a real cadastre"] * len(rows)},
                            geometry=[r[2] for r in rows], crs=crs)


def tag_dates(meta_path: Path) -> None:
    """Write each date's acquisition date into its GeoTIFF (TIFFTAG_DATETIME), from OSCD's meta.json."""
    meta = json.loads(meta_path.read_text())
    for name, key in (("before.tif", "before_date"), ("after.tif", "after_date")):
        d = meta[key]
        with rasterio.open(DEMO / name, "r+") as ds:
            ds.update_tags(TIFFTAG_DATETIME=f"{d[:4]}:{d[4:6]}:{d[6:]}00:00:00")


def main() -> None:
    """Rebuild the demo data as the module docstring says (``--oscd``: the OSCD copy; ``--seed``: the layers' seed)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--oscd", type=Path, default=ROOT.parent / "shared" / "data" / "oscd")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    DEMO.mkdir(parents=True, exist_ok=True)
    for name in ("before.tif", "after.tif", "change.tif", "meta.json"):
        shutil.copyfile(args.oscd / CITY / name, DEMO / name)
    tag_dates(DEMO / "meta.json")
    permits = make_permits(DEMO / "change.tif", args.seed)
    out = ROOT / "tiles" / f"{CITY}_permits_demo.gpkg"
    out.unlink(missing_ok=True)
    permits.to_file(out, layer="permits", driver="GPKG")
    zoning = make_zoning(DEMO / "change.tif")
    zones = ROOT / "tiles" / f"{CITY}_zoning_demo.gpkg"
    zones.unlink(missing_ok=True)
    zoning.to_file(zones, layer="zoning", driver="GPKG")
    parcels = make_parcels(DEMO / "change.tif")
    lots = ROOT / "tiles" / f"{CITY}_parcels_demo.gpkg"
    lots.unlink(missing_ok=True)
    parcels.to_file(lots, layer="parcels", driver="GPKG")
    print(f"wrote {DEMO}, {out} ({len(permits)} made-up permits), {zones} ({len(zoning)} made-up zones) "
          f"and {lots} ({len(parcels)} made-up parcels)")


if __name__ == "__main__":
    main()
