"""Planners' review decisions survive a re-run: carried to the new flag with the same outline (IoU ≥ 0.5,
whatever its id), the rest kept in layer review_unmatched; an unreadable flagged.gpkg is not replaced."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from click.testing import CliRunner
from shapely.geometry import box

from changewatch.cli import cli
from changewatch.rs.io.vector import layer_names
from changewatch.rs.review import Run, load_run, review_table, save_review
from changewatch.rs.runfolder import LAYER_REVIEW, LAYER_UNMATCHED, match_decisions, read_run_layers
from tests.data import AS_OF, UTM48N, rule_case


def test_decisions_follow_outlines_not_ids() -> None:
    previous = gpd.GeoDataFrame({
        "change_id": [1, 2, 3, 4, 5, 6], "reasons": ["NO_PERMIT"] * 6,
        "review": ["confirm", "dismiss", "needs visit", "confirm", "dismiss", "confirm"],
        "note": ["a", "b", "c", "d", "e", "f"], "inspector": ["An", "Binh", "Chi", "Dung", "Em", "Phuong"],
    }, geometry=[box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10), box(60, 0, 70, 10),
                 box(100, 0, 110, 10), box(100, 0, 110, 9)], crs=UTM48N)
    flagged = gpd.GeoDataFrame({"change_id": [15, 13, 11, 14, 12], "reasons": ["EXCEEDS_PERMIT"] * 5}, geometry=[
        box(100, 0, 110, 10),  # 15: the same outline as 5 (IoU 1) and nearly 6's (0.9): one decision only, 5's
        box(45, 0, 55, 10),    # 13: overlaps 3 by IoU 1/3: not the same change
        box(1, 0, 11, 10),     # 11: 1 shifted by a pixel, IoU 90/110
        box(80, 0, 90, 10),    # 14: new
        box(20, 0, 30, 10),    # 12: 2 unchanged
    ], crs=UTM48N)
    carried = match_decisions(previous, flagged, Path("flagged.gpkg"))
    review = carried.review.sort_values("change_id")
    assert list(review["change_id"]) == [11, 12, 15]
    assert list(review["previous_change_id"]) == [1, 2, 5]
    assert list(review["review"]) == ["confirm", "dismiss", "dismiss"]
    assert list(review["inspector"]) == ["An", "Binh", "Em"]
    assert list(review["reasons"]) == ["EXCEEDS_PERMIT"] * 3  # the new run's reasons, on the new outline
    assert review["match_iou"].tolist() == pytest.approx([90 / 110, 1.0, 1.0], abs=1e-4)
    assert review.geometry.iloc[0].equals(box(1, 0, 11, 10))
    assert list(carried.unmatched["change_id"]) == [3, 4, 6] and list(carried.unmatched["note"]) == ["c", "d", "f"]
    assert carried.record().carried == 3 and carried.record().unmatched == 3


def _crosscheck(changes: gpd.GeoDataFrame, folder: Path, out: Path) -> CliRunner.invoke:
    changes.to_file(folder / "changes.gpkg")
    return CliRunner().invoke(cli, ["crosscheck", str(folder / "changes.gpkg"), "-o", str(out), "--as-of",
                                    AS_OF.isoformat()], catch_exceptions=False)


def test_crosscheck_rerun_keeps_the_decisions(tmp_path: Path) -> None:
    changes, _, _ = rule_case()  # no permits: all nine are flagged NO_PERMIT
    out = tmp_path / "run"
    assert _crosscheck(changes, tmp_path, out).exit_code == 0
    layers = read_run_layers(out)
    decisions = pd.DataFrame({"change_id": range(1, 10), "review": ["confirm", "dismiss", "needs visit"] * 3,
                              "note": [f"note {i}" for i in range(1, 10)]})
    save_review(Run(out, {}, layers), decisions)
    # the re-run numbers the changes the other way round and no longer finds change 4
    rerun = changes.drop(index=3).assign(change_id=lambda d: 100 - d["change_id"])
    result = _crosscheck(rerun, tmp_path, out)
    assert result.exit_code == 0 and "review decisions kept: 8 on the new flags" in result.output
    review = gpd.read_file(out / "flagged.gpkg", layer=LAYER_REVIEW).sort_values("previous_change_id")
    assert list(review["previous_change_id"]) == [1, 2, 3, 5, 6, 7, 8, 9]
    assert list(review["change_id"]) == [99, 98, 97, 95, 94, 93, 92, 91]
    kept = decisions.set_index("change_id").loc[[1, 2, 3, 5, 6, 7, 8, 9]]
    assert list(review["review"]) == list(kept["review"]) and list(review["note"]) == list(kept["note"])
    unmatched = gpd.read_file(out / "flagged.gpkg", layer=LAYER_UNMATCHED)
    assert list(unmatched["change_id"]) == [4] and list(unmatched["review"]) == ["confirm"]
    summary = json.loads((out / "crosscheck_summary.json").read_text())
    assert summary["review"]["carried"] == 8 and summary["review"]["unmatched"] == 1
    # change 4 is found again: its decision comes back from review_unmatched
    assert _crosscheck(changes, tmp_path, out).exit_code == 0
    review = gpd.read_file(out / "flagged.gpkg", layer=LAYER_REVIEW)
    assert sorted(review["change_id"]) == list(range(1, 10))
    assert LAYER_UNMATCHED not in layer_names(out / "flagged.gpkg")
    assert review.set_index("change_id").loc[4, "note"] == "note 4"


def test_detect_rerun_keeps_the_notebook_decisions(pair: tuple[Path, Path], tiny_checkpoint: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["detect", *map(str, pair), "-o", str(out), "--model", str(tiny_checkpoint), "--threshold", "0.5",
            "--tile", "64", "--overlap", "16", "-q"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    run = load_run(out)
    table = review_table(run)
    assert len(table) >= 2
    table.loc[0, ["review", "note"]] = ["dismiss", "shadow of a crane"]
    table.loc[1, "review"] = "confirm"
    save_review(run, table)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and f"review decisions kept: {len(table)} on the new flags" in result.output
    again = review_table(load_run(out))
    pd.testing.assert_frame_equal(again[["change_id", "review", "note"]], table[["change_id", "review", "note"]],
                                  check_dtype=False)
    assert json.loads((out / "summary.json").read_text())["review"]["unmatched"] == 0


def test_an_unreadable_flagged_gpkg_is_not_replaced(tmp_path: Path) -> None:
    changes, _, _ = rule_case()
    out = tmp_path / "run"
    assert _crosscheck(changes, tmp_path, out).exit_code == 0
    (out / "flagged.gpkg").write_bytes(b"SQLite format 3\x00 but cut short")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = _crosscheck(changes, tmp_path, out)
    assert result.exit_code == 8
    assert result.output.startswith("error: ") and "flagged.gpkg cannot be read" in result.output
    assert "review decisions it may hold cannot be carried over" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
