"""monitor: consecutive pairs of dated scenes detected into a store, changes tracked across dates."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import torch
from click.testing import CliRunner, Result
from shapely.geometry import Point, Polygon, box

from changewatch.cli import cli
from changewatch.rs.config import InferenceConfig, MonitorConfig
from changewatch.rs.crosscheck.rules import crosscheck
from changewatch.rs.crosscheck.settings import CrosscheckInputs, RuleConfig
from changewatch.rs.errors import ManifestError
from changewatch.rs.infer import ChangeModel, ModelCache
from changewatch.rs.monitor.history import HISTORY_GPKG
from changewatch.rs.monitor.run import PAIRS, check_store, run_monitor
from changewatch.rs.monitor.scenes import read_scenes
from tests.data import (
    ORIGIN,
    UTM48N,
    BrightnessChangeNet,
    plant_square,
    pointwise_spec,
    textured_scene,
    utm_transform,
    write_raster,
)
from tests.test_cli import readme_bad_inputs
from tests.test_imports import run_fresh

DATES = ("2024-01-10", "2024-03-05", "2024-05-20", "2024-08-01", "2024-10-15")
# Buildings (row, col, side in 10 m pixels) standing from each date on. Bright pixels stay under 2 % of the
# scene at every date, so that each date's 2–98 % normalisation (rs.normalize) is that of the ground alone.
SIZE = 160
A, B, C = (20, 20, 8), (20, 110, 8), (100, 40, 8)
C_GROWN = (100, 40, 12)  # C grows at date 4: 64 → 144 pixels
D = (110, 120, 8)  # new at date 5


def scenes_by_date() -> list[list[tuple[int, int, int]]]:
    """The buildings standing at each of the five dates."""
    return [[], [A, B], [A, B, C], [A, B, C_GROWN], [A, B, C_GROWN, D]]


def model() -> ModelCache:
    """A model calling change where bands got brighter or darker (as tests/test_pipeline.py's)."""
    return ModelCache(fixed=ChangeModel(BrightnessChangeNet(4, gain=20.0, bias=2.0), pointwise_spec(),
                                        torch.device("cpu")))


def write_scenes(root: Path, n: int) -> Path:
    """``root/scenes.csv`` listing the first ``n`` dates (returned); their GeoTIFFs are written once."""
    base = textured_scene(SIZE, SIZE, seed=21)
    lines = ["date,path"]
    for when, buildings in list(zip(DATES, scenes_by_date(), strict=True))[:n]:
        if not (root / f"{when}.tif").exists():  # a scene already listed stays as it was
            scene = base
            for row, col, side in buildings:
                scene = plant_square(scene, row, col, side)
            write_raster(root / f"{when}.tif", scene, UTM48N, utm_transform())
        lines.append(f"{when},{when}.tif")
    (root / "scenes.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "scenes.csv"


def at(changes: gpd.GeoDataFrame, building: tuple[int, int, int]) -> pd.Series:
    """The one tracked change covering the centre of ``building`` (row, col, side in pixels of utm_transform)."""
    row, col, side = building
    x0, y0 = ORIGIN
    found = changes[changes.contains(Point(x0 + (col + side / 2) * 10, y0 - (row + side / 2) * 10))]
    assert len(found) == 1
    return found.iloc[0]


def permits(root: Path) -> Path:
    """P-A over building A, issued before it was built; P-C over C (as grown), issued after C was first seen."""
    def around(row: int, col: int, side: int) -> Polygon:
        x0, y0 = ORIGIN
        return box(x0 + (col - 2) * 10, y0 - (row + side + 2) * 10, x0 + (col + side + 2) * 10, y0 - (row - 2) * 10)

    if (root / "permits.gpkg").exists():  # written once: a changed layer makes every pair stale
        return root / "permits.gpkg"
    gdf = gpd.GeoDataFrame({"permit_id": ["P-A", "P-C"], "issued": ["2024-01-01", "2024-06-01"],
                            "expires": ["2030-12-31", "2030-12-31"]},
                           geometry=[around(*A), around(*C_GROWN)], crs=UTM48N)
    gdf.to_file(root / "permits.gpkg")
    return root / "permits.gpkg"


def config(scenes: Path, store: Path) -> MonitorConfig:
    return MonitorConfig(scenes=str(scenes), store=str(store), threshold=0.5, min_area_m2=0.0,
                         inference=InferenceConfig(64, 16, 4),
                         layers=CrosscheckInputs(permits=str(permits(scenes.parent))))


def test_changes_are_tracked_with_first_seen_status_and_only_new_pairs_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = run_monitor(config(write_scenes(tmp_path, 4), store), models=model())
    assert result.detected == ["2024-01-10_2024-03-05", "2024-03-05_2024-05-20", "2024-05-20_2024-08-01"]
    changes = gpd.read_file(store / HISTORY_GPKG, layer="changes").set_index("change_id")
    assert len(changes) == 3
    a, b, c = at(changes, A), at(changes, B), at(changes, C)
    assert (a["first_seen"], b["first_seen"], c["first_seen"]) == ("2024-03-05", "2024-03-05", "2024-05-20")
    assert (a["status"], b["status"], c["status"]) == ("stable", "stable", "growing")
    assert c["last_seen"] == "2024-08-01" and a["last_seen"] == "2024-03-05"
    assert c["area_m2"] == pytest.approx(144 * 100.0, rel=0.02)
    assert c["previous_area_m2"] == pytest.approx(64 * 100.0, rel=0.02)
    # Judged as of the latest date with first_seen: C's permit is valid now but was issued after C was first seen.
    assert (a["reasons"], b["reasons"], c["reasons"]) == ("PERMITTED", "NO_PERMIT", "STARTED_BEFORE_PERMIT")
    observations = gpd.read_file(store / HISTORY_GPKG, layer="observations")
    assert sorted(observations["date"]) == ["2024-03-05", "2024-03-05", "2024-05-20", "2024-08-01"]
    assert changes.crs == UTM48N

    mtimes = {p.name: p.stat().st_mtime_ns for p in (store / PAIRS).iterdir()}
    again = run_monitor(config(write_scenes(tmp_path, 5), store), models=model())
    assert again.detected == ["2024-08-01_2024-10-15"]
    assert {p.name: p.stat().st_mtime_ns for p in (store / PAIRS).iterdir() if p.name in mtimes} == mtimes
    later = gpd.read_file(store / HISTORY_GPKG, layer="changes").set_index("change_id")
    assert later.loc[changes.index, "first_seen"].tolist() == changes["first_seen"].tolist()  # ids stay
    assert sorted(later["status"]) == ["new", "stable", "stable", "stable"]
    assert (later["first_seen"] == "2024-10-15").sum() == 1

    # A run killed before the middle pair's completion record was written: only that pair is run again, and
    # the history rebuilt is the same.
    (store / PAIRS / "2024-03-05_2024-05-20" / "_done.json").unlink()
    resumed = run_monitor(config(store.parent / "scenes.csv", store), models=model())
    assert resumed.detected == ["2024-03-05_2024-05-20"]
    assert resumed.pairs[2].reason == "" and resumed.pairs[1].reason == "not done"
    pd.testing.assert_frame_equal(gpd.read_file(store / HISTORY_GPKG, layer="changes").set_index("change_id"), later)


@pytest.mark.parametrize(("name", "rows", "words"), [
    ("scenes.csv", "date,path\n2024-01-10,a.tif\n05/03/2024,b.tif\n", "line 3: date '05/03/2024' is not a YYYY-MM-DD"),
    ("scenes.csv", "date,path\n2016-02-30,a.tif\n2024-01-10,b.tif\n", "line 2: date '2016-02-30' is not a YYYY-MM-DD"),
    ("scenes.csv", "date,path\n2024-01-10,a.tif\n2024-W18-3,b.tif\n", "line 3: date '2024-W18-3' is not a YYYY-MM-DD"),
    ("scenes.csv", "date,path\n2024-01-10,a.tif\n\n2024-01-10,b.tif\n", "line 4: date 2024-01-10 is listed twice"),
    ("scenes.csv", "date,path\n2024-01-10,a.tif\n", "at least two dates"),
    ("scenes.csv", "when,file\n2024-01-10,a.tif\n2024-02-10,b.tif\n", "line 1: unknown column(s) file, when"),
    ("scenes.csv", "date,path,cloud\n2024-01-10,a.tif,1\n2024-02-10,b.tif,2\n", "line 1: unknown column(s) cloud"),
    ("scenes.yaml", "- {date: 2024-01-10, path: a.tif}\n- {date: 10/03/2024, path: b.tif}\n",
     "entry 2: date '10/03/2024' is not a YYYY-MM-DD"),
    ("scenes.yaml", "- {date: 2024-01-10, path: a.tif}\n- {date: 2024-02-10, file: b.tif}\n",
     "entry 2: unknown column(s) file"),
])
def test_bad_scenes_lists_are_refused_naming_the_line_or_entry(tmp_path: Path, name: str, rows: str,
                                                               words: str) -> None:
    """CSV rows are named by the file's line number (header: line 1), YAML ones by their entry (from 1)."""
    (tmp_path / name).write_text(rows, encoding="utf-8")
    with pytest.raises(ManifestError, match=words.replace("(", r"\(").replace(")", r"\)")):
        read_scenes(tmp_path / name)


def test_scenes_are_sorted_by_date_and_yaml_dates_read(tmp_path: Path) -> None:
    (tmp_path / "scenes.yaml").write_text("- {date: 2024-05-01, path: b.tif}\n- {date: 2024-01-01, path: a.tif}\n",
                                          encoding="utf-8")
    scenes = read_scenes(tmp_path / "scenes.yaml")
    assert [s.date for s in scenes] == [date(2024, 1, 1), date(2024, 5, 1)]
    assert scenes[0].path == str(tmp_path / "a.tif")
    assert np.all([Path(s.path).is_absolute() for s in scenes])


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_monitor_command_detects_new_pairs_only_and_skips_without_torch(tmp_path: Path,
                                                                         tiny_checkpoint: Path) -> None:
    write_scenes(tmp_path, 3)
    args = ["monitor", tmp_path / "scenes.csv", "-o", tmp_path / "store", "--model", tiny_checkpoint, "-q",
            "--tile", 64, "--overlap", 16]
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert "[detected] 2024-01-10_2024-03-05\n[detected] 2024-03-05_2024-05-20\n" in first.output
    assert {"changes", "observations"} <= {name for name, _ in pyogrio.list_layers(tmp_path / "store" / HISTORY_GPKG)}
    second = run(*args)
    assert second.exit_code == 0 and "[skipped] 2024-03-05_2024-05-20" in second.output
    (tmp_path / "bad.csv").write_text("date,path\n2024-01-10,a.tif\n", encoding="utf-8")
    bad = ["monitor", tmp_path / "bad.csv", "-o", tmp_path / "other", "--model", tiny_checkpoint]
    assert run_fresh(args, bad) == ([0, 3], [])  # nothing to detect, a bad SCENES: no torch


BAD_SCENES = {  # the README's Bad inputs row (first cell) → (SCENES text, words of the error line)
    "a SCENES row whose date is not `YYYY-MM-DD` (`10/03/2024`)":
        ("date,path\n2024-01-10,a.tif\n10/03/2024,b.tif\n", "line 3: date '10/03/2024' is not a YYYY-MM-DD date"),
    "a SCENES date listed twice":
        ("date,path\n2024-01-10,a.tif\n2024-01-10,b.tif\n", "line 3: date 2024-01-10 is listed twice"),
    "SCENES listing fewer than two scenes":
        ("date,path\n2024-01-10,a.tif\n", "lists 1 scene(s): monitoring needs at least two dates"),
}


@pytest.mark.parametrize("row", list(BAD_SCENES))
def test_bad_scenes_one_line_exit_3_nothing_written(tmp_path: Path, row: str) -> None:
    """The README's Bad inputs rows for SCENES: one error line, exit code 3, no store."""
    assert readme_bad_inputs()[row] == "3"
    text, words = BAD_SCENES[row]
    (tmp_path / "scenes.csv").write_text(text, encoding="utf-8")
    result = run("monitor", tmp_path / "scenes.csv", "-o", tmp_path / "store")
    assert result.exit_code == 3 and result.output.startswith("error: ") and words in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "store").exists()


def store_state(store: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``store`` (relative path) → (mtime in ns, content)."""
    return {str(p.relative_to(store)): (p.stat().st_mtime_ns, p.read_bytes()) for p in store.rglob("*") if p.is_file()}


BAD_SCENE_FILE = "a SCENES scene whose file is missing or not a raster (`missing.tif`, a text file)"  # README row


@pytest.mark.parametrize(("name", "text", "words"), [
    ("missing.tif", None, "scene 2024-03-05 file not found: "),
    ("notes.tif", "not a raster", "scene 2024-03-05 file is not a readable raster: "),
])
def test_a_bad_scene_file_leaves_the_store_as_it_was(tmp_path: Path, name: str, text: str | None, words: str) -> None:
    """Every scene is checked before any pair is touched: a done pair keeps its completion record."""
    assert readme_bad_inputs()[BAD_SCENE_FILE] == "3"
    write_scenes(tmp_path, 1)
    if text is not None:
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "scenes.csv").write_text(f"date,path\n2024-01-10,2024-01-10.tif\n2024-03-05,{name}\n",
                                         encoding="utf-8")
    store = tmp_path / "store"
    (store / PAIRS / "2024-01-10_2024-03-05").mkdir(parents=True)
    (store / PAIRS / "2024-01-10_2024-03-05" / "_done.json").write_text("{}", encoding="utf-8")
    (store / HISTORY_GPKG).write_bytes(b"history")
    before = store_state(store)
    result = run("monitor", tmp_path / "scenes.csv", "-o", store)
    assert result.exit_code == 3 and result.output.startswith(f"error: {words}"), result.output
    assert result.output.count("\n") == 1
    assert store_state(store) == before


BAD_STORE = "`monitor -o` a folder holding files `monitor` did not write (`notes.txt`, a `detect` run folder)"


@pytest.mark.parametrize("files", [["notes.txt"], ["change_prob.tif", "changes.gpkg", "flagged.gpkg", "summary.json"]])
def test_monitor_refuses_a_store_holding_other_files(tmp_path: Path, files: list[str]) -> None:
    """The README's Bad inputs row: one error line, exit code 8, nothing added to the folder."""
    assert readme_bad_inputs()[BAD_STORE] == "8"
    write_scenes(tmp_path, 2)
    store = tmp_path / "store"
    store.mkdir()
    for name in files:
        (store / name).write_text("mine", encoding="utf-8")
    result = run("monitor", tmp_path / "scenes.csv", "-o", store)
    assert result.exit_code == 8, result.output
    assert result.output.startswith(f"error: store {store} holds files monitor did not write ({', '.join(files)})")
    assert result.output.count("\n") == 1
    assert sorted(p.name for p in store.iterdir()) == files  # nothing added


def test_a_store_may_hold_what_monitor_writes(tmp_path: Path) -> None:
    """Its pairs, its history and the history's sidecars, atomic_write's temporary files, a desktop's litter."""
    for name in ("pairs", "history.gpkg", "history.gpkg-wal", ".history.gpkg.tmp-1234", ".DS_Store"):
        (tmp_path / name).write_text("", encoding="utf-8")
    check_store(tmp_path)
    check_store(tmp_path / "absent")


def test_monitor_uses_the_library_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr("changewatch.rs.monitor.run.run_monitor", lambda config: seen.append(config) or 1 / 0)
    assert isinstance(run("monitor", "s.csv", "-o", "store").exception, ZeroDivisionError)
    assert seen == [MonitorConfig(scenes="s.csv", store="store")]


def test_first_seen_dates_judge_permit_timing() -> None:
    """STARTED_BEFORE_PERMIT, and PERMIT_EXPIRED on the day first seen even when the as-of date finds a valid permit."""
    x0, y0 = ORIGIN
    squares = [box(x0 + i * 100, y0 - 50, x0 + i * 100 + 50, y0) for i in range(5)]
    changes = gpd.GeoDataFrame({"change_id": [1, 2, 3, 4, 5],
                                "first_seen": ["2024-03-05", "2024-05-20", "2024-03-05", None, "2024-05-20"]},
                               geometry=squares, crs=UTM48N)
    permits = gpd.GeoDataFrame({"permit_id": ["late", "lapsed", "early", "late2", "lapsed2", "new2"],
                                "issued": ["2024-04-01", "2023-01-01", "2024-01-01", "2024-04-01", "2023-01-01",
                                           "2024-06-01"],
                                "expires": [None, "2024-04-30", None, None, "2024-04-30", None]},
                               geometry=[s.buffer(5) for s in (squares[0], squares[1], squares[2], squares[3],
                                                               squares[4], squares[4])], crs=UTM48N)
    judged = crosscheck(changes, permits, rules=RuleConfig(as_of=date(2024, 4, 15)))["reasons"].tolist()
    assert judged == ["STARTED_BEFORE_PERMIT",  # valid on as-of, issued after the change was first seen
                      "PERMIT_EXPIRED",  # valid on as-of, expired before the change was first seen
                      "PERMITTED",  # valid on the day first seen
                      "PERMITTED",  # first seen unknown: judged on as-of alone, as before
                      "PERMIT_EXPIRED,STARTED_BEFORE_PERMIT"]  # first seen between one permit and the next


def test_a_monitor_whose_first_pair_fails_leaves_no_store_behind(tmp_path: Path) -> None:
    """The store and its pairs/ folder, made by this run and still empty, go with the error (exit code kept)."""
    scenes = write_scenes(tmp_path, 3)
    result = CliRunner().invoke(cli, ["monitor", str(scenes), "-o", str(tmp_path / "store"), "--model",
                                      str(tmp_path / "nope.json"), "-q"])
    assert result.exit_code == 6 and "model metadata not found" in result.output
    assert not (tmp_path / "store").exists()
