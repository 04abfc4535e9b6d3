"""Planners' review decisions: only those a person made are saved, each with its reviewer and time, checked;
layers of earlier versions are read by the documented rule; decisions survive a re-run: carried to the new flag
with the same outline (IoU ≥ 0.5, whatever its id), the rest kept in layer review_unmatched; an unreadable
flagged.gpkg is not replaced."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from click.testing import CliRunner
from shapely.geometry import box

from changewatch.cli import cli
from changewatch.rs.decisions import match_decisions, read_decisions
from changewatch.rs.errors import DecisionError
from changewatch.rs.io.vector import layer_names
from changewatch.rs.review import Run, load_run, record_decisions, review_table, save_review
from changewatch.rs.runfolder import LAYER_REVIEW, LAYER_UNMATCHED, read_run_layers
from tests.data import AS_OF, UTM48N, rule_case
from tests.review_data import AT, detect_args, detect_run, legacy_review


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
    decisions = pd.DataFrame({"change_id": range(1, 10), "decision": ["confirm", "dismiss", "needs_visit"] * 3,
                              "reviewer": "An", "reviewed_at": "2024-05-02T14:03:00+07:00",
                              "note": [f"note {i}" for i in range(1, 10)]})
    save_review(Run(out, {}, layers), decisions)  # type: ignore[arg-type]
    # the re-run numbers the changes the other way round and no longer finds change 4
    rerun = changes.drop(index=3).assign(change_id=lambda d: 100 - d["change_id"])
    result = _crosscheck(rerun, tmp_path, out)
    assert result.exit_code == 0 and "review decisions kept: 8 on the new flags" in result.output
    review = gpd.read_file(out / "flagged.gpkg", layer=LAYER_REVIEW).sort_values("previous_change_id")
    assert list(review["previous_change_id"]) == [1, 2, 3, 5, 6, 7, 8, 9]
    assert list(review["change_id"]) == [99, 98, 97, 95, 94, 93, 92, 91]
    kept = decisions.set_index("change_id").loc[[1, 2, 3, 5, 6, 7, 8, 9]]
    for column in ("decision", "reviewer", "reviewed_at", "note"):
        assert list(review[column]) == list(kept[column])
    unmatched = gpd.read_file(out / "flagged.gpkg", layer=LAYER_UNMATCHED)
    assert list(unmatched["change_id"]) == [4] and list(unmatched["decision"]) == ["confirm"]
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
    assert len(table) >= 3
    ids = table["change_id"].tolist()
    record_decisions(run, {ids[0]: ("dismiss", "shadow of a crane"), ids[1]: "confirm"}, reviewer="An",
                     at="2024-05-02T14:03:00+07:00")
    table = review_table(load_run(out))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "review decisions kept: 2 on the new flags" in result.output
    again = review_table(load_run(out))
    columns = ["change_id", "decision", "reviewer", "reviewed_at", "note"]
    pd.testing.assert_frame_equal(again[columns], table[columns], check_dtype=False)
    assert again["decision"].tolist()[:3] == ["dismiss", "confirm", None]  # the third flag: still unreviewed
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


# --- decisions: only those a person made, each with its reviewer and time ------------------------------------

@pytest.fixture
def run_dir(pair: tuple[Path, Path], tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A detect run of the generated pair: a few dozen flags, nobody has reviewed them."""
    return detect_run(pair, tiny_checkpoint, tmp_path / "run")


def test_nothing_is_saved_unless_a_decision_is_given(run_dir: Path) -> None:
    gpkg = run_dir / "flagged.gpkg"
    untouched = gpkg.read_bytes()
    run = load_run(run_dir)
    table = review_table(run)
    assert table["decision"].isna().all() and (table["note"] == "").all()  # no default decision
    assert record_decisions(run, {}, reviewer="") is None  # the notebook run top to bottom
    assert save_review(run, table) is None  # a table of unreviewed flags
    assert gpkg.read_bytes() == untouched and LAYER_REVIEW not in layer_names(gpkg)
    first, second = table["change_id"].iloc[:2]
    assert record_decisions(run, {first: ("confirm", "new block")}, reviewer="An", at=AT) == gpkg
    saved = gpd.read_file(gpkg, layer=LAYER_REVIEW)
    assert saved[["change_id", "decision", "reviewer", "reviewed_at", "note"]].values.tolist() == [
        [first, "confirm", "An", AT, "new block"]]
    record_decisions(run, {first: "dismiss", second: "needs_visit"}, reviewer="Binh")  # replaces the first one
    saved = gpd.read_file(gpkg, layer=LAYER_REVIEW).set_index("change_id")
    assert saved["decision"].to_dict() == {first: "dismiss", second: "needs_visit"}
    assert set(saved["reviewer"]) == {"Binh"} and saved.loc[first, "note"] == ""
    assert datetime.fromisoformat(saved.loc[second, "reviewed_at"]).tzinfo is not None  # now, with its offset
    assert review_table(load_run(run_dir))["decision"].notna().sum() == 2  # the others: still unreviewed


@pytest.mark.parametrize("decisions,reviewer,at,words", [
    ({1: "confirmed"}, "An", AT, ["unknown decision 'confirmed'", "change_id 1", "confirm, dismiss or needs_visit"]),
    ({1: "needs visit"}, "An", AT, ["unknown decision 'needs visit'"]),
    ({1: "confirm"}, " ", AT, ["reviewer"]),
    ({1: "confirm"}, "An", "2024-05-02T14:03", ["no UTC offset"]),
    ({1: "confirm"}, "An", "yesterday", ["not an ISO 8601 time"]),
    ({99999: "confirm"}, "An", AT, ["no flag with change_id 99999"]),
])
def test_decisions_are_checked(run_dir: Path, decisions: dict[int, str], reviewer: str, at: str,
                               words: list[str]) -> None:
    untouched = (run_dir / "flagged.gpkg").read_bytes()
    with pytest.raises(DecisionError) as caught:
        record_decisions(load_run(run_dir), decisions, reviewer=reviewer, at=at)
    assert all(w in str(caught.value) for w in words), caught.value
    assert isinstance(caught.value, ValueError) and caught.value.exit_code == 5
    assert (run_dir / "flagged.gpkg").read_bytes() == untouched


def test_a_table_of_decisions_needs_who_and_when(run_dir: Path) -> None:
    run = load_run(run_dir)
    table = review_table(run)
    table.loc[0, "decision"] = "dismiss"
    with pytest.raises(DecisionError, match="names no reviewer"):
        save_review(run, table)
    table.loc[0, "reviewer"] = "An"
    with pytest.raises(DecisionError, match="no reviewed_at"):
        save_review(run, table)
    old_style = table.drop(columns=["decision"]).assign(review="confirm")
    with pytest.raises(DecisionError, match="'review' column"):
        save_review(run, old_style)
    table.loc[0, "reviewed_at"] = AT
    save_review(run, table)
    assert read_decisions(run_dir / "flagged.gpkg")["decision"].tolist() == ["dismiss"]


def test_review_layers_of_earlier_versions_are_read_by_the_rule(run_dir: Path, pair: tuple[Path, Path],
                                                                tiny_checkpoint: Path) -> None:
    legacy_review(run_dir, {1: ("confirm", "checked against the AFTER chip"),  # the old notebook's example
                            2: ("confirm", "new block"), 3: ("dismiss", ""), 4: ("needs visit", "ask the ward"),
                            5: ("needs visit", "")})  # and every other flag: 'needs visit', the old default
    table = review_table(load_run(run_dir)).set_index("change_id")
    assert table["decision"].dropna().to_dict() == {2: "confirm", 3: "dismiss", 4: "needs_visit"}
    assert table.loc[[2, 3, 4], "reviewer"].isna().all() and table.loc[[2, 3, 4], "reviewed_at"].isna().all()
    assert table.loc[4, "note"] == "ask the ward"
    # a new decision keeps the earlier ones as they were (without reviewer: they had none)
    record_decisions(load_run(run_dir), {6: "dismiss"}, reviewer="An", at=AT)
    saved = read_decisions(run_dir / "flagged.gpkg").set_index("change_id")
    assert saved["decision"].to_dict() == {2: "confirm", 3: "dismiss", 4: "needs_visit", 6: "dismiss"}
    assert "review" not in saved and saved["reviewer"].isna().sum() == 3
    # a re-run carries them in this version's columns
    legacy_review(run_dir, {2: ("confirm", "new block"), 3: ("dismiss", "")})
    result = CliRunner().invoke(cli, detect_args(*pair, run_dir, tiny_checkpoint))
    assert result.exit_code == 0 and "review decisions kept: 2 on the new flags" in result.output
    carried = gpd.read_file(run_dir / "flagged.gpkg", layer=LAYER_REVIEW).set_index("change_id")
    assert "review" not in carried and carried["decision"].to_dict() == {2: "confirm", 3: "dismiss"}


def test_an_unknown_word_in_a_saved_layer_is_named(run_dir: Path) -> None:
    record_decisions(load_run(run_dir), {1: "confirm"}, reviewer="An", at=AT)
    layer = gpd.read_file(run_dir / "flagged.gpkg", layer=LAYER_REVIEW).assign(decision="confirmed")
    layer.to_file(run_dir / "flagged.gpkg", layer=LAYER_REVIEW)  # edited by hand in QGIS
    with pytest.raises(DecisionError, match="unknown decision 'confirmed' \\(change_id 1\\) in layer review of"):
        review_table(load_run(run_dir))
    legacy_review(run_dir, {1: ("maybe", "")})
    with pytest.raises(DecisionError, match="unknown review 'maybe'"):
        review_table(load_run(run_dir))
