"""Many areas at once: batch manifest rows naming an area's SCENES, run as monitors on batch's runner.

Also where a monitor pair's as-of date came from (``rules.as_of_source``), kept out of the settings
fingerprint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from click.testing import CliRunner

from changewatch.cli import cli
from changewatch.rs.batch.jobs import JobRecord, run_job
from changewatch.rs.batch.manifest import AnyJob, AreaJob, Job, read_manifest
from changewatch.rs.batch.resume import job_settings, stale_reason
from changewatch.rs.batch.run import run_batch
from changewatch.rs.config import AS_OF_GIVEN, AS_OF_SCENES, BatchConfig, DemoConfig, InferenceConfig, MonitorConfig
from changewatch.rs.crosscheck.settings import CrosscheckInputs, RuleConfig
from changewatch.rs.errors import ManifestError
from changewatch.rs.monitor.history import HISTORY_GPKG
from changewatch.rs.monitor.run import PAIRS, STORE_FILES, pair_job, pair_settings, run_monitor
from changewatch.rs.monitor.scenes import consecutive_pairs, read_scenes
from tests.test_cli import readme_bad_inputs
from tests.test_monitor import DATES, A, B, C, at, model, permits, write_scenes


def fixed_runner(jobs: list[AnyJob], config: BatchConfig) -> Iterator[JobRecord]:
    """batch's serial runner with the test's fixed model (``tests.test_monitor.model``)."""
    models = model()
    for job in jobs:
        yield run_job(job, config, models)


def areas(root: Path, dates: int = 4) -> Path:
    """Manifest ``root/areas.csv``: areas n1 and n2 (scenes rows, the monitor test's scenes), and a pair row p1."""
    for area in ("n1", "n2"):
        (root / area).mkdir(exist_ok=True)
        write_scenes(root / area, dates)
    permits(root / "n1")
    (root / "areas.csv").write_text("area_id,before,after,scenes,permits\n"
                                    "n1,,,n1/scenes.csv,n1/permits.gpkg\n"
                                    "p1,n1/2024-01-10.tif,n1/2024-03-05.tif,,n1/permits.gpkg\n"
                                    "n2,,,n2/scenes.csv,\n", encoding="utf-8")
    return root / "areas.csv"


def batch(manifest: Path, out: Path) -> BatchConfig:
    return BatchConfig(manifest=str(manifest), outdir=str(out), threshold=0.5, min_area_m2=0.0,
                       inference=InferenceConfig(64, 16, 4), scheduler="serial")


def pair_times(store: Path) -> dict[str, int]:
    return {p.name: (p / "_done.json").stat().st_mtime_ns for p in (store / PAIRS).iterdir()}


def test_a_manifest_may_mix_scenes_rows_and_pair_rows(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("area_id,before,after,scenes,as_of\nw1,b.tif,a.tif,,\nw2,,,x/s.csv,2024-06-01\n",
                                    encoding="utf-8")
    w1, w2 = read_manifest(tmp_path / "m.csv", {"permits": "/shared.gpkg"})
    assert w1 == Job("w1", str(tmp_path / "b.tif"), str(tmp_path / "a.tif"), permits="/shared.gpkg")
    assert w2 == AreaJob("w2", str(tmp_path / "x" / "s.csv"), permits="/shared.gpkg", as_of=date(2024, 6, 1))
    (tmp_path / "m.yaml").write_text("- {area_id: w3, scenes: s.yaml}\n", encoding="utf-8")
    assert read_manifest(tmp_path / "m.yaml") == [AreaJob("w3", str(tmp_path / "s.yaml"))]
    (tmp_path / "only.csv").write_text("area_id,scenes\nw4,s.csv\n", encoding="utf-8")  # no before, after columns
    assert read_manifest(tmp_path / "only.csv") == [AreaJob("w4", str(tmp_path / "s.csv"))]


@pytest.mark.parametrize(("name", "text", "words"), [
    ("m.csv", "area_id,before,after,scenes\nw1,b.tif,a.tif,\nw2,b.tif,,s.csv\n",
     "line 3 (area w2): give either scenes (a monitor of many dates) or before and after, not both"),
    ("m.csv", "area_id,before,after,scenes\nw1,b.tif,a.tif,\n\nw2,,,\n",
     "line 4 (area w2): before and after are required (or scenes)"),
    ("m.csv", "area_id,scenes,masks\nw1,s.csv,cloud.tif\n",
     "line 2 (area w1): masks belong to one before/after pair; a scenes row takes none"),
    ("m.csv", "area_id,scenes\nw1,s.csv\nw1,t.csv\n", "line 3: area_id 'w1' is listed twice"),
    ("m.csv", "area_id,scenes,as_of\nw1,s.csv,01/06/2024\n", "line 2 (area w1): as_of '01/06/2024' is not a"),
    ("m.csv", "area_id,before\nw1,b.tif\n", "lacks column(s) after (or scenes)"),
    ("m.yaml", "- {area_id: w1, scenes: s.csv}\n- {area_id: w2, scenes: t.csv, after: a.tif}\n",
     "entry 2 (area w2): give either scenes"),
])
def test_bad_rows_are_refused_naming_the_manifest_line(tmp_path: Path, name: str, text: str, words: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError, match=words.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(tmp_path / name)


def test_scenes_rows_run_monitor_into_the_area_folder_and_resume(tmp_path: Path) -> None:
    manifest, out = areas(tmp_path), tmp_path / "out"
    result = run_batch(batch(manifest, out), runner=fixed_runner)
    n1, p1, n2 = result.records
    assert (n1.kind, n1.status, n1.pairs_detected, n1.changes, n1.flagged) == ("monitor", "done", 3, 3, 2)
    assert (p1.kind, p1.status, p1.changes) == ("detect", "done", 2)
    assert (n2.pairs_detected, n2.changes, n2.flagged) == (3, 3, 3)  # no permits: every change flagged
    changes = gpd.read_file(out / "n1" / HISTORY_GPKG, layer="changes")
    assert (at(changes, A)["first_seen"], at(changes, C)["first_seen"]) == ("2024-03-05", "2024-05-20")
    assert (at(changes, B)["reasons"], at(changes, C)["status"]) == ("NO_PERMIT", "growing")
    assert sorted(p.name for p in (out / "n1").iterdir()) == sorted(STORE_FILES)
    combined = gpd.read_file(out / "flagged.gpkg", layer="flagged_changes")
    assert set(combined["area_id"]) == {"p1"}  # monitor rows' changes stay in their history.gpkg
    summary = pd.read_csv(out / "batch_summary.csv").set_index("area_id")
    assert summary.loc["n1", "kind"] == "monitor" and summary.loc["n1", "pairs_detected"] == 3

    # Run again: no pair of a scenes row is detected again (with or without --resume), the history is the same.
    times = pair_times(out / "n1")
    again = run_batch(batch(manifest, out), runner=fixed_runner)
    assert [(r.status, r.pairs_detected) for r in again.records] == [("skipped", 0), ("done", 0), ("skipped", 0)]
    assert pair_times(out / "n1") == times
    pd.testing.assert_frame_equal(gpd.read_file(out / "n1" / HISTORY_GPKG, layer="changes"), changes)

    # A fifth date in n1's SCENES: its one new pair only. A batch killed before a pair's completion record was
    # written (n2's middle pair): that pair only.
    write_scenes(tmp_path / "n1", 5)
    (out / "n2" / PAIRS / "2024-03-05_2024-05-20" / "_done.json").unlink()
    resumed = run_batch(replace(batch(manifest, out), resume=True), runner=fixed_runner)
    assert [(r.area_id, r.status, r.pairs_detected) for r in resumed.records] == [
        ("n1", "done", 1), ("p1", "skipped", 0), ("n2", "done", 1)]
    assert {k: v for k, v in pair_times(out / "n1").items() if k in times} == times
    assert "2024-08-01_2024-10-15" in pair_times(out / "n1")
    later = gpd.read_file(out / "n1" / HISTORY_GPKG, layer="changes")
    assert sorted(later["status"]) == ["new", "stable", "stable", "stable"]


def test_a_failing_area_is_recorded_and_the_others_run(tmp_path: Path) -> None:
    manifest, out = areas(tmp_path, dates=2), tmp_path / "out"
    (tmp_path / "n2" / "scenes.csv").write_text("date,path\n2024-01-10,a.tif\n2024-01-10,b.tif\n", encoding="utf-8")
    result = run_batch(batch(manifest, out), runner=fixed_runner)
    n1, p1, n2 = result.records
    assert (n1.status, p1.status, n2.status, n2.exit_code) == ("done", "done", "failed", 3)
    assert "line 3: date 2024-01-10 is listed twice" in n2.error
    assert not (out / "n2").exists()


def test_monitor_pairs_record_where_their_as_of_date_came_from(tmp_path: Path) -> None:
    """Each pair's summary says its as-of date is its AFTER date in SCENES, or given (--as-of)."""
    scenes = write_scenes(tmp_path, 2)
    config = MonitorConfig(scenes=str(scenes), store=str(tmp_path / "store"), threshold=0.5, min_area_m2=0.0,
                           inference=InferenceConfig(64, 16, 4))
    run_monitor(config, models=model())
    pair = tmp_path / "store" / PAIRS / f"{DATES[0]}_{DATES[1]}"
    rules = json.loads((pair / "summary.json").read_text())["rules"]
    assert (rules["as_of"], rules["as_of_source"]) == (DATES[1], AS_OF_SCENES)
    given = replace(config, store=str(tmp_path / "given"),
                    layers=CrosscheckInputs(rules=RuleConfig(as_of=date(2024, 12, 31))))
    run_monitor(given, models=model())
    rules = json.loads((tmp_path / "given" / PAIRS / pair.name / "summary.json").read_text())["rules"]
    assert (rules["as_of"], rules["as_of_source"]) == ("2024-12-31", AS_OF_GIVEN)

    # Provenance only: not a setting of the pair's job, so pairs finished before it was recorded (their summary
    # says "given") are not run again.
    [scene_pair] = consecutive_pairs(read_scenes(scenes))
    job = pair_job(scene_pair, config)
    assert job.as_of_source == AS_OF_SCENES and "as_of_source" not in job_settings(job, pair_settings(config))
    assert stale_reason(pair, replace(job, as_of_source=AS_OF_GIVEN), pair_settings(config)) is None
    assert json.loads((pair / "_done.json").read_text())["depends"]["settings"] == job_settings(job,
                                                                                                pair_settings(config))


BAD_ROWS = {  # the README's Bad inputs rows (first cell) → (manifest text, words of the error line)
    "a batch manifest row naming both `scenes` and `before`/`after`":
        ("area_id,before,after,scenes\nw1,b.tif,a.tif,s.csv\n",
         "line 2 (area w1): give either scenes (a monitor of many dates) or before and after, not both"),
    "a batch manifest row with neither `scenes` nor both of `before`, `after`":
        ("area_id,before,after,scenes\nw1,b.tif,,\n", "line 2 (area w1): before and after are required (or scenes)"),
    "a batch manifest `scenes` row with `masks`":
        ("area_id,scenes,masks\nw1,s.csv,cloud.tif\n",
         "line 2 (area w1): masks belong to one before/after pair; a scenes row takes none"),
}


@pytest.mark.parametrize("row", list(BAD_ROWS))
def test_bad_manifest_rows_one_error_line_exit_3_nothing_written(tmp_path: Path, row: str) -> None:
    assert readme_bad_inputs()[row] == "3"
    text, words = BAD_ROWS[row]
    (tmp_path / "m.csv").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["batch", str(tmp_path / "m.csv"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 3 and result.output == f"error: manifest {tmp_path / 'm.csv'}, {words}\n"
    assert not (tmp_path / "out").exists()


BAD_AREA = "a batch `scenes` row whose SCENES file is wrong (a date listed twice, a missing scene)"  # README row


def test_a_bad_scenes_file_fails_its_row_only(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The README's row: the area's job fails with monitor's error line, the batch exits 7."""
    assert readme_bad_inputs()[BAD_AREA] == "7"
    manifest = areas(tmp_path, dates=2)
    (tmp_path / "n2" / "scenes.csv").write_text("date,path\n2024-01-10,a.tif\n2024-01-10,b.tif\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["batch", str(manifest), "-o", str(tmp_path / "out"), "--scheduler", "serial",
                                      "--model", str(tiny_checkpoint), "--tile", "64", "--overlap", "16", "-q"])
    assert result.exit_code == 7, result.output
    assert "[done] n1: 1 pairs detected, " in result.output
    assert f"[failed]  n2: scenes {tmp_path / 'n2' / 'scenes.csv'}, line 3: date 2024-01-10 is listed twice" \
        in result.output
    assert "2 of 3 jobs done" in result.output


@pytest.mark.slow
def test_scenes_rows_on_a_local_dask_cluster(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """On Dask (split_mpx 0: every pair's tiles spread as tasks) the stores equal those of a serial run."""
    manifest = areas(tmp_path, dates=3)
    common = ["--model", str(tiny_checkpoint), "--tile", "64", "--overlap", "16", "--threshold", "0.5", "-q"]
    for out, scheduler in (("serial", ["--scheduler", "serial"]),
                           ("dask", ["--scheduler", "local", "--workers", "2", "--split-mpx", "0"])):
        result = CliRunner().invoke(cli, ["batch", str(manifest), "-o", str(tmp_path / out), *common, *scheduler])
        assert result.exit_code == 0, result.output
    for area in ("n1", "n2"):
        serial = gpd.read_file(tmp_path / "serial" / area / HISTORY_GPKG, layer="observations")
        dask = gpd.read_file(tmp_path / "dask" / area / HISTORY_GPKG, layer="observations")
        assert len(serial) and list(serial["change_id"]) == list(dask["change_id"])
        assert list(serial["area_m2"]) == pytest.approx(list(dask["area_m2"]), rel=1e-6)
    record = {r["area_id"]: r for r in json.loads((tmp_path / "dask" / "batch_summary.json").read_text())["jobs"]}
    assert record["n1"]["pairs_detected"] == 2 and record["n1"]["tile_tasks"] > 0


@pytest.mark.parametrize(("outdir", "store", "expected"), [
    ("out/demo", None, Path("out/demo-monitor")),
    ("out/demo/", None, Path("out/demo-monitor")),
    (".", None, Path.cwd().with_name(f"{Path.cwd().name}-monitor")),
    ("out/demo", "elsewhere/store", Path("elsewhere/store")),
])
def test_the_demo_monitor_store_goes_beside_its_outdir(outdir: str, store: str | None, expected: Path) -> None:
    assert DemoConfig(outdir, store).store_path() == expected


@pytest.mark.slow
def test_a_batch_killed_anywhere_in_its_scenes_rows_resumes_to_the_clean_result(tmp_path: Path,
                                                                                 tiny_checkpoint: Path) -> None:
    """SIGKILL at several file-system changes (tests/killpoints.py), then the batch again: the stores equal a clean
    run's, and nothing a killed run left stays behind."""
    from tests.test_outputs import run_killed

    manifest = areas(tmp_path, dates=3)

    def args(out: Path) -> list[object]:
        return ["batch", manifest, "-o", out, "--model", tiny_checkpoint, "--tile", 64, "--overlap", 16,
                "--threshold", 0.5, "--scheduler", "serial", "-q"]

    clean = tmp_path / "clean"
    changes = run_killed(clean, -1, "changewatch.cli:cli", *args(clean))
    swaps = [i for i, (event, path) in enumerate(changes) if event == "os.rename" and ".staging-" in path]
    assert len(swaps) >= 5  # a folder replaced per pair and pair row
    # a quarter, half and three quarters through, and just before n2's first pair's staging folder becomes its folder
    for kill_at in (len(changes) // 4, len(changes) // 2, 3 * len(changes) // 4, swaps[3]):
        out = tmp_path / f"killed-{kill_at}"
        assert run_killed(out, kill_at, "changewatch.cli:cli", *args(out)) == [], f"not killed at {kill_at}"
        resumed = CliRunner().invoke(cli, [str(a) for a in args(out)], catch_exceptions=False)
        assert resumed.exit_code == 0, resumed.output
        for area in ("n1", "n2"):
            assert sorted(p.name for p in (out / area / PAIRS).iterdir()) == \
                sorted(p.name for p in (clean / area / PAIRS).iterdir())
            for layer in ("changes", "observations"):
                pd.testing.assert_frame_equal(gpd.read_file(out / area / HISTORY_GPKG, layer=layer),
                                              gpd.read_file(clean / area / HISTORY_GPKG, layer=layer))
        assert not [p for p in out.rglob(".*") if ".staging-" in p.name or ".old-" in p.name or ".tmp" in p.name]
