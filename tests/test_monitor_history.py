"""A monitor store's parcel history, ``export --since`` and the timeline plot, on the four seeded dates."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from click.testing import CliRunner, Result
from shapely.geometry import box

from changewatch.cli import cli
from changewatch.rs.config import InferenceConfig, MonitorConfig
from changewatch.rs.crosscheck.rules import SEVERITY
from changewatch.rs.crosscheck.settings import CrosscheckInputs
from changewatch.rs.monitor.history import HISTORY_GPKG, OBSERVATION_COLUMNS, TRACKED_COLUMNS, History, read_history
from changewatch.rs.monitor.parcels import empty_parcel_history
from changewatch.rs.monitor.run import run_monitor
from changewatch.rs.monitor.timeline import drawn_digest, timeline_data, timeline_figure, write_timeline
from tests.data import ORIGIN, UTM48N
from tests.test_cli import readme_bad_inputs
from tests.test_export_gis import rule_labels
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


def export(*args: object) -> Result:
    return CliRunner().invoke(cli, ["export", *(str(a) for a in args)])


@pytest.mark.parametrize(("since", "kept"), [("2024-05-01", ["C"]), ("2024-05-20", ["C"]),
                                              ("2024-03-05", ["A", "B", "C"]), ("2024-05-21", [])])
def test_export_since_keeps_the_changes_first_seen_on_or_after_the_date(store: Path, tmp_path: Path, since: str,
                                                                        kept: list[str]) -> None:
    changes = gpd.read_file(store / HISTORY_GPKG, layer="changes").set_index("change_id")
    ids = {name: str(at(changes, building).name) for name, building in (("A", A), ("B", B), ("C", C))}
    result = export(store, "-o", tmp_path / "out", "--since", since, "--formats", "gpkg,csv", "--no-stac")
    assert result.exit_code == 0, result.output
    gpkg = tmp_path / "out" / "changewatch.gpkg"
    assert {"tracked_changes", "observations", "parcel_history"} <= {n for n, _ in pyogrio.list_layers(gpkg)}
    tracked = gpd.read_file(gpkg, layer="tracked_changes")
    assert sorted(tracked["change_id"]) == sorted(ids[k] for k in kept)
    assert sorted(pd.read_csv(tmp_path / "out" / "tracked_changes.csv")["change_id"]) == sorted(ids[k] for k in kept)
    observations = gpd.read_file(gpkg, layer="observations")
    assert set(observations["change_id"]) == {ids[k] for k in kept}
    parcels = gpd.read_file(gpkg, layer="parcel_history")
    expected = {"A": [("P1", "2024-03-05")], "B": [("P1", "2024-03-05")],
                "C": [("P2", "2024-05-20"), ("P2", "2024-08-01")]}
    assert sorted(zip(parcels["parcel_id"], parcels["date"], strict=True)) == sorted(
        {row for k in kept for row in expected[k]})


def test_export_of_a_store_without_since_writes_everything_with_a_stac_item(store: Path, tmp_path: Path) -> None:
    result = export(store, "-o", tmp_path / "out", "--formats", "gpkg,geojson")
    assert result.exit_code == 0, result.output
    assert len(gpd.read_file(tmp_path / "out" / "tracked_changes.geojson")) == 3
    with sqlite3.connect(tmp_path / "out" / "changewatch.gpkg") as db:  # QGIS styles, in the reasons' colours
        styled = dict(db.execute('SELECT f_table_name, "styleQML" FROM layer_styles').fetchall())
    assert set(styled) == {"tracked_changes", "parcel_history"}
    assert rule_labels(styled["tracked_changes"]) == list(SEVERITY)
    assert rule_labels(styled["parcel_history"]) == [c for c in SEVERITY if c != "PERMITTED"]
    item = json.loads((tmp_path / "out" / "item.json").read_text(encoding="utf-8"))
    assert item["properties"]["datetime"].startswith("2024-08-01")  # the store's latest AFTER date
    assert [link["title"] for link in item["links"]] == ["run folder: history.gpkg"]
    again = export(store, "-o", tmp_path / "out", "--formats", "csv", "--since", "2024-05-01")  # replaces it
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "item.json", "observations.csv", "parcel_history.csv", "tracked_changes.csv"]


BAD_SINCE = "`export --since` a date that is not `YYYY-MM-DD` (`01/05/2024`, `20240501`, `2024-02-30`)"
SINCE_OF_A_RUN = "`export RUN --since DATE` of a `detect` or `crosscheck` run folder"  # README rows


@pytest.mark.parametrize("value", ["01/05/2024", "20240501", "2024-02-30", "2024-W18-3", "yesterday", ""])
def test_a_bad_since_date_is_one_error_line_exit_2_nothing_written(store: Path, tmp_path: Path, value: str) -> None:
    assert readme_bad_inputs()[BAD_SINCE] == "2"
    result = export(store, "-o", tmp_path / "out", "--since", value)
    assert result.exit_code == 2, result.output
    assert result.output == (f"error: --since {value!r} is not a date: give it as YYYY-MM-DD (ISO 8601), "
                             "e.g. 2024-05-01\n")
    assert not (tmp_path / "out").exists()


def test_since_with_a_run_folder_is_refused(store: Path, tmp_path: Path) -> None:
    """A run has a single AFTER date: --since is an error there, not a filter keeping all or nothing."""
    assert readme_bad_inputs()[SINCE_OF_A_RUN] == "2"
    run = store / "pairs" / "2024-03-05_2024-05-20"
    result = export(run, "-o", tmp_path / "out", "--since", "2024-05-01")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --since applies to a monitor store (a folder with history.gpkg); ")
    assert result.output.count("\n") == 1 and not (tmp_path / "out").exists()
    assert export(run, "-o", tmp_path / "out", "--formats", "csv").exit_code == 0  # without it: exported


def test_timeline_data_per_after_date(store: Path) -> None:
    """Tracked area seen by each date by worst reason (judged at the latest date), first seen and changing again."""
    data = timeline_data(read_history(store / HISTORY_GPKG))
    assert list(data.areas.columns) == ["NO_PERMIT", "PERMIT_EXPIRED"]
    assert data.areas.index.tolist() == ["2024-03-05", "2024-05-20", "2024-08-01"]
    assert data.areas["NO_PERMIT"].tolist() == pytest.approx([12800.0, 12800.0, 12800.0], rel=0.05)
    assert data.areas["PERMIT_EXPIRED"].tolist() == pytest.approx([0.0, 6400.0, 14400.0], rel=0.05)
    assert data.counts.values.tolist() == [[2, 0], [1, 0], [0, 1]]  # A, B new; C new; C grows


def test_monitor_writes_a_timeline_png_redrawn_only_when_its_data_change(store: Path) -> None:
    from PIL import Image

    from changewatch.rs.styles import reason_colours

    path = store / "timeline.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.size == (900, 600)
        pixels = {tuple(int(v) for v in rgb) for rgb in np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3),
                                                                     axis=0)}
    for code in ("NO_PERMIT", "PERMIT_EXPIRED"):  # the stacked bars are drawn in the reasons' colours
        colour = reason_colours()[code]
        assert tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5)) in pixels, code
    assert len(pixels) > 50  # text, axes, markers: antialiased
    history = read_history(store / HISTORY_GPKG)
    stamp = path.stat().st_mtime_ns
    assert write_timeline(history, path) is False and path.stat().st_mtime_ns == stamp  # same data: kept
    fewer = replace(history, dates=history.dates.iloc[:2])
    assert write_timeline(fewer, path) is True and drawn_digest(path) == timeline_data(fewer).digest()
    assert write_timeline(history, path) is True  # back as monitor drew it


def test_timeline_figure_of_a_store_for_the_notebook(store: Path) -> None:
    fig = timeline_figure(store)
    top, bottom = fig.axes[:2]
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["2024-03-05", "2024-05-20", "2024-08-01"]
    assert len(top.patches) == 2 * 3  # two reasons stacked at three dates


def test_timeline_of_a_store_with_nothing_tracked_shows_its_dates(tmp_path: Path) -> None:
    changes = gpd.GeoDataFrame({c: [] for c in (*TRACKED_COLUMNS, "permit_ids")}, geometry=[], crs=UTM48N)
    observations = gpd.GeoDataFrame({c: [] for c in OBSERVATION_COLUMNS}, geometry=[], crs=UTM48N)
    history = History(changes, observations, empty_parcel_history(UTM48N),
                      pd.DataFrame({"date": ["2024-01-10", "2024-03-05"], "pair": ["a", "b"]}))
    data = timeline_data(history)
    assert data.areas.empty and data.counts.values.tolist() == [[0, 0], [0, 0]]
    assert write_timeline(history, tmp_path / "timeline.png") is True
    texts = [t.get_text() for t in timeline_figure(history).axes[0].texts]
    assert texts == ["no change tracked yet"]


def test_review_notebook_shows_the_timeline_of_the_store_a_pair_belongs_to(store: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_notebook import cell_outputs, execute

    pair = sorted((store / "pairs").iterdir())[-1]
    notebook = execute(pair, monkeypatch)
    outputs = cell_outputs(notebook, "timeline_figure(store)")
    assert [o.output_type for o in outputs] == ["display_data"] and "image/png" in outputs[0]["data"]
