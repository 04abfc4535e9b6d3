"""cli.py labels: reviewed runs become labelled data that rs.datasets reads (confirmed flags change, dismissed ones
no change, everything else unlabelled), that train fine-tunes on and evaluate scores; the vector-label rule it relies
on, and the sampling of mostly unlabelled sites."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from click.testing import CliRunner
from rasterio.windows import Window

from changewatch.cli import cli
from changewatch.models.changenet import load_checkpoint
from changewatch.rs.align import AlignedPair
from changewatch.rs.datasets import LABEL_NODATA, find_pairs, read_whole
from changewatch.rs.errors import InputFileError
from changewatch.rs.review import load_run, record_decisions
from changewatch.rs.training.config import TrainConfig
from changewatch.rs.training.sampling import SiteArrays, sample_batch
from tests.data import UTM48N, make_site, utm_transform
from tests.review_data import AT, detect_run, legacy_review, pixel_box, reviewed_ward
from tests.test_imports import run_fresh
from tests.test_outputs import error_lines, readme_rows

MARGIN = 8


def decide(run: Path) -> dict[str, list[int]]:
    """Decisions on five of the run's flags, largest first: two confirmed, two dismissed, one to visit."""
    flagged = gpd.read_file(run / "flagged.gpkg", layer="flagged_changes").sort_values("area_m2", ascending=False)
    ids = [int(i) for i in flagged["change_id"].iloc[:5]]
    chosen = {"confirm": ids[:2], "dismiss": ids[2:4], "needs_visit": ids[4:]}
    record_decisions(load_run(run), {i: word for word, found in chosen.items() for i in found}, reviewer="An", at=AT)
    return chosen


@pytest.fixture
def reviewed(pair: tuple[Path, Path], tiny_checkpoint: Path, tmp_path: Path) -> tuple[Path, dict[str, list[int]]]:
    """A detect run ``ward7`` of the generated pair with five of its flags decided (``decide``)."""
    run = detect_run(pair, tiny_checkpoint, tmp_path / "runs" / "ward7")
    return run, decide(run)


def burn(polygons: gpd.GeoSeries, width: int, height: int, transform: object) -> np.ndarray:
    """Pixels whose centre lies in one of ``polygons``."""
    if polygons.empty:
        return np.zeros((height, width), bool)
    return rasterio.features.rasterize(polygons, out_shape=(height, width), transform=transform).astype(bool)


def test_labels_of_a_reviewed_run_read_through_datasets(reviewed: tuple[Path, dict[str, list[int]]],
                                                        tmp_path: Path) -> None:
    run, chosen = reviewed
    out = tmp_path / "labels"
    result = CliRunner().invoke(cli, ["labels", str(run), "-o", str(out), "--margin-px", str(MARGIN)])
    assert result.exit_code == 0, result.output
    flagged = gpd.read_file(run / "flagged.gpkg", layer="flagged_changes").set_index("change_id")
    assert (f"ward7: 2 confirmed → change, 2 dismissed → no change; 1 needs_visit and {len(flagged) - 5} unreviewed "
            "flags left unlabelled") in result.output
    [site] = find_pairs(out)
    assert (site.name, site.encoding) == ("ward7", "vector")
    # the site: the reviewed flags' extent and MARGIN pixels around it, on the run's grid (10 m, origin ORIGIN)
    reviewed_ids = chosen["confirm"] + chosen["dismiss"]
    left, bottom, right, top = flagged.loc[reviewed_ids].total_bounds
    run_t = utm_transform()
    col0, row0 = max(0, round((left - run_t.c) / 10) - MARGIN), max(0, round((run_t.f - top) / 10) - MARGIN)
    col1, row1 = min(96, round((right - run_t.c) / 10) + MARGIN), min(96, round((run_t.f - bottom) / 10) + MARGIN)
    with site.open() as pair:
        grid = pair.grid
        assert (grid.width, grid.height) == (col1 - col0, row1 - row0)
        assert grid.transform == run_t * rasterio.Affine.translation(col0, row0)
        labels = read_whole(pair, site.labels(pair))
    expected = np.full((grid.height, grid.width), LABEL_NODATA, np.uint8)
    expected[burn(flagged.loc[chosen["dismiss"]].geometry, grid.width, grid.height, grid.transform)] = 0
    expected[burn(flagged.loc[chosen["confirm"]].geometry, grid.width, grid.height, grid.transform)] = 1
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) == {0, 1, LABEL_NODATA}
    others = flagged.drop(index=reviewed_ids).geometry  # needs_visit and unreviewed flags: nobody looked
    assert (labels[burn(others, grid.width, grid.height, grid.transform)] == LABEL_NODATA).all()
    # the imagery: the run's pair as it compared it, cut to the site (NaN where invalid), as COGs
    with AlignedPair(*(str(p) for p in (run.parent.parent / "before.tif", run.parent.parent / "after.tif"))) as full:
        window = full.read(Window(col0, row0, grid.width, grid.height))
    for name, data in (("before.tif", window.before), ("after.tif", window.after)):
        with rasterio.open(out / "ward7" / name) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.dtypes[0] == "float32"
            np.testing.assert_array_equal(ds.read(), np.where(window.valid, data, np.nan))
    record = json.loads((out / "labels.json").read_text())
    assert record["sites"]["ward7"]["decisions"] == {"confirm": 2, "dismiss": 2, "needs_visit": 1,
                                                     "unreviewed": len(flagged) - 5, "unmatched": 0}
    assert record["sites"]["ward7"]["reviewers"] == ["An"] and record["margin_px"] == MARGIN


def test_labels_replace_an_earlier_labels_folder_as_a_whole(reviewed: tuple[Path, dict[str, list[int]]],
                                                            tmp_path: Path) -> None:
    run, _ = reviewed
    other = shutil.copytree(run, tmp_path / "runs" / "ward8")
    out = tmp_path / "labels"
    assert CliRunner().invoke(cli, ["labels", str(run), str(other), "-o", str(out)]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "ward7", "ward8"]
    assert CliRunner().invoke(cli, ["labels", str(other), "-o", str(out)]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "ward8"]
    assert [p.name for p in find_pairs(out)] == ["ward8"]


def test_a_short_fine_tune_from_labels_gives_a_checkpoint_that_loads(
        reviewed: tuple[Path, dict[str, list[int]]], tiny_checkpoint: Path, tmp_path: Path) -> None:
    run, _ = reviewed
    other = shutil.copytree(run, tmp_path / "runs" / "ward8")
    out = tmp_path / "labels"
    assert CliRunner().invoke(cli, ["labels", str(run), str(other), "-o", str(out)]).exit_code == 0
    tuned = tmp_path / "tuned.json"
    result = CliRunner().invoke(cli, [
        "train", "--init-from", str(tiny_checkpoint), "--data", str(out), "--train-sites", "ward7",
        "--val-sites", "ward8", "--band-names", "b0,b1,b2,b3", "--out", str(tuned), "--iterations", "4",
        "--val-every", "2", "--crop", "32", "--batch-size", "2", "--threads", "2", "-q"])
    assert result.exit_code == 0, result.output
    network, spec = load_checkpoint(tuned)
    assert spec.training["config"]["init_from"] == str(tiny_checkpoint) and "Fine-tuned from tiny-test" in spec.licence
    assert spec.metrics["val_sites"] == ["ward8"] and spec.threshold is not None
    scored = CliRunner().invoke(cli, ["evaluate", "--data", str(out), "--sites", "ward8", "--model", str(tuned),
                                      "--json", "-q"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.output)["tp"] + json.loads(scored.output)["fn"] > 0  # confirmed pixels were scored


@pytest.mark.slow
def test_review_then_fine_tune_gains_on_a_held_out_ward(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The README's loop: review → labels → evaluate → train --init-from → evaluate, on wards whose new roofs a
    reviewer confirmed and whose shadows they dismissed; the fine-tuned model scores better on a ward held out."""
    wards = {"w1": (1, ((10, 10, 10), (60, 50, 8), (30, 70, 9)), ((50, 10, 10), (75, 75, 8))),
             "w2": (2, ((20, 60, 10), (70, 20, 9)), ((10, 10, 9), (50, 40, 10))),
             "w3": (3, ((15, 40, 9), (60, 65, 10), (40, 10, 8)), ((75, 30, 10), (20, 75, 8)))}
    runs = {name: reviewed_ward(tmp_path, name, seed, built, shadows, tiny_checkpoint)
            for name, (seed, built, shadows) in wards.items()}
    def invoke(args: list[str]) -> str:
        return CliRunner().invoke(cli, args, catch_exceptions=False).output

    invoke(["labels", str(runs["w1"]), str(runs["w2"]), "-o", str(tmp_path / "labels"), "--margin-px", "8"])
    invoke(["labels", str(runs["w3"]), "-o", str(tmp_path / "held-out"), "--margin-px", "8"])

    def f1(model: Path) -> float:
        return float(json.loads(invoke(["evaluate", "--data", str(tmp_path / "held-out"), "--model", str(model),
                                        "--json", "-q"]))["f1"])

    tuned = tmp_path / "tuned.json"
    invoke(["train", "--init-from", str(tiny_checkpoint), "--data", str(tmp_path / "labels"), "--train-sites", "w1",
            "--val-sites", "w2", "--band-names", "b0,b1,b2,b3", "--out", str(tuned), "--iterations", "30",
            "--val-every", "15", "--crop", "32", "--batch-size", "4", "--lr", "3e-3", "--threads", "2", "-q"])
    before, after = f1(tiny_checkpoint), f1(tuned)
    assert before < 0.5 and after > before + 0.3, (before, after)


# --- the vector-label rule labels relies on --------------------------------------------------------------------

def test_a_change_label_column_labels_only_its_polygons(tmp_path: Path) -> None:
    site = make_site(tmp_path / "data", "site", 1, squares=((10, 10, 6),))
    (site / "change.tif").unlink()
    polygons = gpd.GeoDataFrame({"change_label": ["change", "no_change", "change", "no_change"]},
                                geometry=[pixel_box(10, 10, 6), pixel_box(30, 30, 5), pixel_box(50, 50, 4),
                                          pixel_box(52, 52, 4)], crs=UTM48N)
    polygons.to_crs("EPSG:4326").to_file(site / "changes.gpkg")
    [labelled] = find_pairs(tmp_path / "data")
    with labelled.open() as pair:
        labels = read_whole(pair, labelled.labels(pair))
    expected = np.full((64, 64), LABEL_NODATA, np.uint8)
    expected[10:16, 10:16] = 1
    expected[30:35, 30:35] = 0
    expected[50:54, 50:54] = 1
    expected[52:56, 52:56] = 0
    expected[52:54, 52:54] = LABEL_NODATA  # change and no change at once: the labels disagree
    np.testing.assert_array_equal(labels, expected)
    polygons.assign(change_label=["change", "maybe", None, "change"]).to_file(site / "changes.gpkg")
    with labelled.open() as pair, pytest.raises(InputFileError, match="change_label holds 'maybe', None in 2"):
        labelled.labels(pair)


# --- sampling sites labelled only here and there ---------------------------------------------------------------

def site_arrays(name: str, size: int, labelled: tuple[slice, slice] | None) -> SiteArrays:
    """A site of ``size``² pixels whose labels are 255 but in ``labelled`` (no change there)."""
    label = np.full((1, size, size), LABEL_NODATA, np.uint8)
    if labelled is not None:
        label[0][labelled] = 0
    return SiteArrays(name, np.zeros((8, size, size), np.float32), label)


def test_crops_of_mostly_unlabelled_sites_hold_labels() -> None:
    config = TrainConfig(data_dir="", out="unused", crop=32, batch_size=32, flips=False, jitter=0.0)
    sparse = site_arrays("sparse", 256, (slice(200, 210), slice(40, 50)))  # 100 labelled pixels of 65 536
    _, y = sample_batch([sparse], config, np.random.default_rng(0))
    assert all((crop != LABEL_NODATA).any() for crop in y)
    empty, small = site_arrays("empty", 256, None), site_arrays("small", 40, (slice(0, 40), slice(0, 40)))
    _, y = sample_batch([empty, small], config, np.random.default_rng(0))  # drawn by labelled pixels, not size
    assert all((crop != LABEL_NODATA).any() for crop in y)
    with pytest.raises(InputFileError, match="no labelled pixel in the training pairs \\(empty\\)"):
        sample_batch([empty], config, np.random.default_rng(0))


# --- what labels refuses, as the README's Bad inputs table says ---------------------------------------------------

def _no_decision(run: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    record_decisions(load_run(run), {1: "needs_visit"}, reviewer="An", at=AT)
    return [str(run)], ["ward7 holds no confirm or dismiss decision", "1 needs_visit", "review its flags first"]


def _crosscheck_run(run: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    out = tmp_path / "checked"
    result = CliRunner().invoke(cli, ["crosscheck", str(run / "changes.gpkg"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return [str(out)], ["is a cross-check run folder", "labels need a detect run"]


def _same_name(run: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    decide(run)
    other = shutil.copytree(run, tmp_path / "elsewhere" / "ward7")
    return [str(run), str(other)], ["runs named ward7 twice"]


def _unknown_word(run: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    decide(run)
    layer = gpd.read_file(run / "flagged.gpkg", layer="review")
    layer.assign(decision=layer["decision"].replace({"dismiss": "dismissed"})).to_file(run / "flagged.gpkg",
                                                                                      layer="review")
    return [str(run)], ["unknown decision 'dismissed'", "confirm, dismiss or needs_visit"]


def _shrink_before(run: Path) -> None:
    """Cut the run's BEFORE file to 90×90 pixels in place: another extent than the run's grid."""
    with rasterio.open(run.parent.parent / "before.tif") as ds:
        data, profile = ds.read()[:, :90, :90], ds.profile
    with rasterio.open(run.parent.parent / "before.tif", "w", **{**profile, "width": 90, "height": 90}) as ds:
        ds.write(data)


def _scenes_changed(run: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    decide(run)
    _shrink_before(run)
    return [str(run)], ["before.tif changed since the run: checksum differs; re-run detect"]


def _after_overwritten(run: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    decide(run)
    shutil.copyfile(run.parent.parent / "before.tif", run.parent.parent / "after.tif")
    return [str(run)], [f"{(run.parent.parent / 'after.tif').resolve()} changed since the run: checksum differs"]


def _no_checksums_other_grid(run: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    decide(run)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    del summary["inputs"]["files"]
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    _shrink_before(run)
    return [str(run)], ["changed since it ran", "90×90"]


def _legacy(run: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    legacy_review(run, {1: ("confirm", "checked against the AFTER chip"), 2: ("confirm", "new block"),
                        3: ("dismiss", "")})
    return [str(run)], ["ward7: 1 confirmed → change, 1 dismissed → no change; 0 needs_visit"]


def _foreign(run: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    decide(run)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "notes.txt").write_text("mine")
    return [str(run)], ["holds files changewatch did not write (notes.txt)"]


LABELS_ROWS = {  # the start of the README row's first cell → its case
    "`labels` of a run folder without a confirm or dismiss decision": _no_decision,
    "`labels` of a cross-check run folder": _crosscheck_run,
    "`labels` of two run folders of the same name": _same_name,
    "`labels` of a run whose `review` layer holds a decision other than": _unknown_word,
    "`labels` of a run whose scenes changed since it ran": _scenes_changed,
    "`labels` of a run whose scene file changed since it ran (BEFORE copied over AFTER": _after_overwritten,
    "`labels` of a run whose summary.json records no checksums": _no_checksums_other_grid,
    "a `review` layer saved by changewatch 0.2.0": _legacy,
    "`labels -o` a folder holding files `labels` did not write": _foreign,
}


@pytest.mark.parametrize("row", list(LABELS_ROWS))
def test_readme_bad_inputs_rows_of_labels(row: str, pair: tuple[Path, Path], tiny_checkpoint: Path,
                                          tmp_path: Path) -> None:
    [(cell, code)] = [(c, e) for c, e in readme_rows().items() if c.startswith(row)]
    run = detect_run(pair, tiny_checkpoint, tmp_path / "runs" / "ward7")
    runs, words = LABELS_ROWS[row](run, tmp_path)
    out = tmp_path / "labels"
    before = sorted(out.rglob("*")) if out.exists() else None
    result = CliRunner().invoke(cli, ["labels", *runs, "-o", str(out)])
    assert result.exit_code == int(code), result.output
    assert "Traceback" not in result.output
    shown = error_lines(result.output) if result.exit_code else result.output.splitlines()
    assert all(any(w in line for line in shown) for w in words), result.output
    if result.exit_code:
        assert len(shown) == 1
        assert (sorted(out.rglob("*")) if out.exists() else None) == before  # nothing written


def test_labels_load_no_network_library(reviewed: tuple[Path, dict[str, list[int]]], tmp_path: Path) -> None:
    run, _ = reviewed
    codes, heavy = run_fresh(["labels", run, "-o", tmp_path / "labels"])
    assert codes == [0] and heavy == []


def test_labels_refuse_an_output_folder_inside_a_run(reviewed: tuple[Path, dict[str, list[int]]]) -> None:
    run, _ = reviewed
    result = CliRunner().invoke(cli, ["labels", str(run), "-o", str(run / "labels")])
    assert result.exit_code == 8 and "inside the run folder" in result.output and not (run / "labels").exists()


def test_sites_are_normalised_with_the_run_statistics(reviewed: tuple[Path, dict[str, list[int]]],
                                                      tmp_path: Path) -> None:
    """Each site file records the statistics the run normalised its whole scene with, and training
    normalises the site with them, not with the cut-out's own (which differ)."""
    from changewatch.rs.labels import open_as_run, reviewed_run
    from changewatch.rs.normalize import STATS_TAG, normalise, pair_stats_from_arrays, scene_stats
    from changewatch.rs.training.sampling import load_site

    run, _ = reviewed
    labels = ["labels", str(run), "-o", str(tmp_path / "labels"), "--margin-px", "1"]
    assert CliRunner().invoke(cli, labels).exit_code == 0
    with open_as_run(reviewed_run(run)) as whole:
        run_stats = scene_stats(whole)
    (site,) = find_pairs(tmp_path / "labels")
    for path, stats in zip((site.before, site.after), run_stats, strict=True):
        with rasterio.open(path) as ds:
            assert json.loads(ds.tags()[STATS_TAG]) == stats.to_dict()
    loaded = load_site(site)
    with site.open() as pair:
        w = pair.read(Window(0, 0, pair.grid.width, pair.grid.height))
    own = pair_stats_from_arrays(w.before, w.after, w.valid)
    assert own[0].to_dict() != run_stats[0].to_dict()  # the cut-out alone would be normalised otherwise
    bands = w.before.shape[0]
    expected = np.where(w.valid, normalise(w.before, run_stats[0]), 0)
    np.testing.assert_allclose(loaded.x[:bands], expected, atol=1e-5)
