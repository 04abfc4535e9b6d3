"""A small reviewed detect run for the report tests, with known flags, parcels in Vietnamese wards and permits with
Vietnamese ids, so each test states the order, counts and text it expects.

Four flags on the generated pair's grid (UTM 48N, 10 m), in the priority order the report must give them:
3 (NO_BUILD_ZONE is the most severe reason), then 4 and 1 (NO_PERMIT, same area; 4 has the higher probability),
then 2 (EXCEEDS_PERMIT, though it is the largest). Flag 3 lies over both parcels; flag 4 over none."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely.geometry import box

from changewatch.rs.io.vector import write_gpkg, write_table
from changewatch.rs.review import load_run, record_decisions
from tests.data import UTM48N, plant_square, textured_scene, tiny_spec, utm_transform, write_raster
from tests.review_data import AT, detect_run, pixel_box

BEN_NGHE = "Phường Bến Nghé"
DA_KAO = "Phường Đa Kao"
PERMIT = "Giấy phép xây dựng số 12/GPXD"
NOTE = "Đã kiểm tra: nhà mới xây"  # "checked: a new house"
ORDER = [3, 4, 1, 2]  # change_ids by priority
FLAGS = {  # change_id: (row, col, side in pixels), reasons, max_prob, permit_ids
    1: ((40, 30, 10), "NO_PERMIT", 0.90, ""),
    2: ((10, 60, 14), "EXCEEDS_PERMIT", 0.80, PERMIT),
    3: ((60, 10, 6), "NO_PERMIT,NO_BUILD_ZONE", 0.70, ""),
    4: ((70, 70, 10), "NO_PERMIT", 0.95, ""),
}
LINKS = [(1, "P-001", 10000.0), (2, "P-002", 19600.0), (3, "P-001", 1800.0), (3, "P-002", 1800.0)]
DECISIONS = {1: ("confirm", NOTE), 2: ("dismiss", "")}
STATUSES = {1: "confirmed", 2: "closed", 3: "open", 4: "open"}


def report_run(pair: tuple[Path, Path], checkpoint: Path, out: Path) -> Path:
    """A detect run of ``pair`` whose layers are replaced by FLAGS, two parcels and LINKS, with DECISIONS saved."""
    run = detect_run(pair, checkpoint, out)
    ids = list(FLAGS)
    geometry = [pixel_box(*FLAGS[i][0]) for i in ids]
    areas = [100.0 * FLAGS[i][0][2] ** 2 for i in ids]
    changes = gpd.GeoDataFrame({"change_id": ids, "area_m2": areas, "max_prob": [FLAGS[i][2] for i in ids],
                                "mean_prob": [FLAGS[i][2] - 0.2 for i in ids],
                                "flagged": True}, geometry=geometry, crs=UTM48N)
    flagged = changes.drop(columns="flagged").assign(
        reasons=[FLAGS[i][1] for i in ids], permit_ids=[FLAGS[i][3] for i in ids],
        valid_permit_ids=[FLAGS[i][3] for i in ids], zone_ids=["", "", "green", ""],
        parcel_ids=["P-001", "P-002", "P-001,P-002", ""])
    left, bottom, right, top = changes.total_bounds
    parcels = gpd.GeoDataFrame({"parcel_id": ["P-001", "P-002"], "ward": [BEN_NGHE, DA_KAO], "n_flags": [2, 2],
                                "flagged_area_m2": [11800.0, 21400.0], "worst_reason": ["NO_BUILD_ZONE"] * 2,
                                "max_prob": [0.9, 0.8]},
                               geometry=[box(left - 200, bottom - 200, (left + right) / 2, top + 200),
                                         box((left + right) / 2, bottom - 200, right - 150, top + 200)], crs=UTM48N)
    links = pd.DataFrame(LINKS, columns=["change_id", "parcel_id", "overlap_m2"])
    write_gpkg(changes, run / "changes.gpkg", "changes")
    write_gpkg(flagged, run / "flagged.gpkg", "flagged_changes")
    write_gpkg(parcels, run / "flagged.gpkg", "flagged_parcels")
    write_table(links, run / "flagged.gpkg", "flagged_change_parcels")
    record_decisions(load_run(run), DECISIONS, reviewer="Nguyễn Văn An", at=AT)
    return run


def make_run(root: Path) -> Path:
    """The reviewed run of tests/report_data.py, on a generated pair with a tiny random checkpoint."""
    import torch

    from changewatch.models.changenet import build_network, save_checkpoint

    before = textured_scene(96, 96, seed=1)
    pair = (write_raster(root / "before.tif", before, UTM48N, utm_transform()),
            write_raster(root / "after.tif", plant_square(before, 40, 30, 10), UTM48N, utm_transform()))
    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_network(tiny_spec()), tiny_spec(), root / "models" / "tiny.json")
    return report_run(pair, checkpoint, root / "run")
