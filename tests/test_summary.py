"""rs.summary and rs.runfolder: a run's summary is one typed record, written in the layout the
files have always had and read back, also from files of earlier versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from changewatch.rs.errors import InputFileError
from changewatch.rs.grid import GridSpec
from changewatch.rs.runfolder import CROSSCHECK_SUMMARY, SUMMARY, read_summary, write_summary
from changewatch.rs.summary import (
    Areas,
    ChangeLayerInputs,
    Counts,
    ReviewRecord,
    RulesRecord,
    RunSummary,
    SceneInputs,
    Thresholds,
)

RULES = RulesRecord("2018-03-23", "given", 20.0, 0.1, False)


def crosscheck_summary() -> RunSummary:
    return RunSummary(Counts(3, 2, 1, {"NO_PERMIT": 2}, None), Areas(300.0, 200.0),
                      ChangeLayerInputs(permits="/p.gpkg", changes="/c.gpkg", change_ids_assigned=True), RULES,
                      review=ReviewRecord("/old/flagged.gpkg", 1, 0, 0.5))


def test_a_cross_check_summary_keeps_its_layout_and_reads_back(tmp_path: Path) -> None:
    summary = crosscheck_summary()
    data = summary.to_dict()
    assert list(data) == ["changewatch_version", "created_utc", "counts", "areas_m2", "inputs", "rules", "warnings",
                          "config", "review"]  # no detect-only sections
    assert data["inputs"]["changes"] == "/c.gpkg" and data["inputs"]["layer_counts"] == {}
    write_summary(summary, tmp_path / CROSSCHECK_SUMMARY)
    assert read_summary(tmp_path) == summary and not read_summary(tmp_path).is_detect


def test_a_detect_summary_reads_back(tmp_path: Path) -> None:
    summary = RunSummary(Counts(1, 1, 0, {"NO_PERMIT": 1}, None, {"new_building": 1}), Areas(100.0, 100.0),
                         SceneInputs(before="/b.tif", after="/a.tif", crs="EPSG:32648", width=96, height=96,
                                     grid=GridSpec("EPSG:32648", 10.0)), RULES,
                         thresholds=Thresholds(0.5, 200.0, 0.0), timings_s={"total_s": 1.5}, platform={"python": "3"})
    write_summary(summary, tmp_path / SUMMARY)
    written = json.loads((tmp_path / SUMMARY).read_text())
    assert written["inputs"]["grid"] == {"crs": "EPSG:32648", "resolution": 10.0} and written["model"] is None
    back = read_summary(tmp_path)
    assert back == summary and back.is_detect and back.inputs.grid == GridSpec("EPSG:32648", 10.0)


def test_an_earlier_cross_check_summary_is_read(tmp_path: Path) -> None:
    """Up to 0.2 a cross-check recorded its areas under counts, and no areas_m2."""
    old = crosscheck_summary().to_dict()
    del old["areas_m2"]
    old["counts"] |= {"changes_area_m2": 300.0, "flagged_area_m2": 200.0}
    (tmp_path / CROSSCHECK_SUMMARY).write_text(json.dumps(old))
    back = read_summary(tmp_path / CROSSCHECK_SUMMARY)
    assert back.areas_m2 == Areas(300.0, 200.0) and back.counts == crosscheck_summary().counts


def test_a_folder_without_a_readable_summary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="holds no run summary"):
        read_summary(tmp_path)
    (tmp_path / SUMMARY).write_text('{"counts": {}}')
    with pytest.raises(InputFileError, match="is not a readable run summary"):
        read_summary(tmp_path)
