"""A monitor store's parcel history, ``export --since`` and the timeline plot, on the four seeded dates."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import box

from changewatch.rs.config import InferenceConfig, MonitorConfig
from changewatch.rs.crosscheck.settings import CrosscheckInputs
from changewatch.rs.monitor.history import HISTORY_GPKG
from changewatch.rs.monitor.run import run_monitor
from tests.data import ORIGIN, UTM48N
from tests.test_monitor import A, B, C, at, model, write_scenes


def cells(row0: int, col0: int, row1: int, col1: int) -> box:
    """The box over pixel rows row0–row1, columns col0–col1 (exclusive) of the scenes' grid."""
    x0, y0 = ORIGIN
    return box(x0 + col0 * 10, y0 - row1 * 10, x0 + col1 * 10, y0 - row0 * 10)


def layers(root: Path) -> CrosscheckInputs:
    """Parcels P1 (ward W1, over A and B), P2 (W2, over C as grown), P3 (W2, nothing on it); one permit over C.

    The permit (issued 2023, expired 2024-04-30) makes C, first seen 2024-05-20, and its extension
    at 2024-08-01 PERMIT_EXPIRED; A and B have none (NO_PERMIT).
    """
    permits = gpd.GeoDataFrame({"permit_id": ["P-C-old"], "issued": ["2023-01-01"], "expires": ["2024-04-30"]},
                               geometry=[cells(98, 38, 110, 50)], crs=UTM48N)
    parcels = gpd.GeoDataFrame({"parcel_id": ["P1", "P2", "P3"], "ward": ["W1", "W2", "W2"]},
                               geometry=[cells(10, 10, 40, 130), cells(95, 35, 120, 60), cells(140, 140, 155, 155)],
                               crs=UTM48N)
    permits.to_file(root / "permits.gpkg")
    parcels.to_file(root / "parcels.gpkg")
    return CrosscheckInputs(permits=str(root / "permits.gpkg"), parcels=str(root / "parcels.gpkg"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store monitored over the first four seeded dates (tests/test_monitor.py), with parcels and a permit."""
    root = tmp_path_factory.mktemp("monitor")
    scenes = write_scenes(root, 4)
    config = MonitorConfig(scenes=str(scenes), store=str(root / "store"), threshold=0.5, min_area_m2=0.0,
                           inference=InferenceConfig(64, 16, 4), layers=layers(root))
    run_monitor(config, models=model())
    return root / "store"


def test_parcel_history_has_a_row_per_parcel_and_date_flagged(store: Path) -> None:
    changes = gpd.read_file(store / HISTORY_GPKG, layer="changes").set_index("change_id")
    ids = {name: str(at(changes, building).name) for name, building in (("A", A), ("B", B), ("C", C))}
    rows = gpd.read_file(store / HISTORY_GPKG, layer="parcel_history")
    assert rows.crs == UTM48N
    assert rows[["parcel_id", "ward", "date", "n_flags", "worst_reason", "change_ids"]].values.tolist() == [
        ["P1", "W1", "2024-03-05", 2, "NO_PERMIT", ",".join(sorted((ids["A"], ids["B"])))],
        ["P2", "W2", "2024-05-20", 1, "PERMIT_EXPIRED", ids["C"]],
        ["P2", "W2", "2024-08-01", 1, "PERMIT_EXPIRED", ids["C"]],  # C's extension: the same tracked change
    ]
    # 10 m pixels: A and B 8×8 each, C 8×8, its extension 12×12 − 8×8
    assert rows["flagged_area_m2"].tolist() == pytest.approx([2 * 6400.0, 6400.0, 8000.0], rel=0.05)
    assert rows["pair"].tolist() == ["2024-01-10_2024-03-05", "2024-03-05_2024-05-20", "2024-05-20_2024-08-01"]
    assert rows.geometry.iloc[0].equals(cells(10, 10, 40, 130))
    dates = pyogrio.read_dataframe(store / HISTORY_GPKG, layer="dates", read_geometry=False)
    assert dates["date"].tolist() == ["2024-03-05", "2024-05-20", "2024-08-01"]


def test_a_store_without_parcels_has_an_empty_parcel_history(tmp_path: Path) -> None:
    scenes = write_scenes(tmp_path, 2)
    run_monitor(MonitorConfig(scenes=str(scenes), store=str(tmp_path / "store"), threshold=0.5, min_area_m2=0.0,
                              inference=InferenceConfig(64, 16, 4)), models=model())
    rows = gpd.read_file(tmp_path / "store" / HISTORY_GPKG, layer="parcel_history")
    assert rows.empty and {"parcel_id", "ward", "date", "flagged_area_m2", "worst_reason", "change_ids"} <= set(rows)
    assert isinstance(rows, pd.DataFrame)
