"""The shipped model on real imagery: the demo end to end, and the recorded val F1 reproduced."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
from click.testing import CliRunner

from changewatch.cli import cli
from changewatch.models.changenet import DEFAULT_MODEL, load_spec
from changewatch.rs.training.config import OSCD_VAL

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_demo_flags_real_changes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "-o", str(out), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "flagged" in result.output and str(out / "flagged.gpkg") in result.output
    with rasterio.open(out / "change_prob.tif") as ds:
        assert ds.crs.to_epsg() == 4326 and ds.shape == (695, 540)
    changes = gpd.read_file(out / "changes.gpkg", layer="changes")
    flagged = gpd.read_file(out / "flagged.gpkg", layer="flagged_changes")
    assert changes.crs.to_epsg() == 4326 and flagged.crs.to_epsg() == 4326
    assert len(flagged) >= 1 and (flagged["reasons"] != "PERMITTED").all()
    # the made-up permits cover some real changes, so some detections are permitted
    assert (changes["reasons"] == "PERMITTED").any()
    codes = set(flagged["reasons"].str.split(",").explode())
    assert {"NO_PERMIT", "NO_BUILD_ZONE"} <= codes <= {"NO_PERMIT", "NO_BUILD_ZONE", "EXCEEDS_PERMIT",
                                                      "PERMIT_EXPIRED", "PERMIT_NOT_YET_VALID"}
    parcels = gpd.read_file(out / "flagged.gpkg", layer="flagged_parcels")
    assert len(parcels) >= 1 and parcels["n_flags"].sum() >= len(flagged)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["flagged"] == len(flagged)
    assert summary["rules"]["as_of"] == "2018-03-23" and summary["rules"]["as_of_source"] == "AFTER scene date tag"
    assert summary["model"]["name"] == "changewatch-rgbn" and summary["model"]["serves_gsd_m"] == [5.0, 30.0]
    assert summary["model"]["chosen_because"].startswith("4 bands per date at 9.98 m GSD, within")  # EPSG:4326
    # The monitor example: BEFORE, AFTER and AFTER again (tagged 2018-09-23) into OUTDIR-monitor.
    store = tmp_path / "demo-monitor"
    assert ("[detected] 2016-09-27_2018-03-23\n[detected] 2018-03-23_2018-09-23\n"
            f"{len(changes)} tracked changes (0 new, 0 growing, {len(changes)} stable, 0 gone); "
            f"history in {store / 'history.gpkg'}\n") in result.output
    tracked = gpd.read_file(store / "history.gpkg", layer="changes")
    assert (tracked["first_seen"] == "2018-03-23").all() and (tracked["last_seen"] == "2018-03-23").all()
    pair = json.loads((store / "pairs" / "2016-09-27_2018-03-23" / "summary.json").read_text())
    assert pair["counts"]["changes"] == len(changes) and pair["rules"]["as_of"] == "2018-03-23"


@pytest.mark.parametrize("bands,model",
                         [(None, DEFAULT_MODEL), ("3,2,1", DEFAULT_MODEL.with_name("changewatch-rgb.json"))],
                         ids=["rgbn", "rgb"])
def test_shipped_models_reproduce_recorded_val_f1(oscd: Path, bands: str | None, model: Path) -> None:
    spec = load_spec(model)
    picked = ["--bands", bands] if bands else []  # no --model: picked by the band count
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(oscd), "--sites", ",".join(OSCD_VAL), "--json",
                                      *picked], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["f1"] == pytest.approx(spec.metrics["val_pooled"]["f1"], abs=0.01)
    assert report["threshold"] == spec.threshold


def test_rgb_scenes_get_the_rgb_model(tmp_path: Path) -> None:
    # the demo pair as plain red, green, blue GeoTIFFs
    for name in ("before", "after"):
        with rasterio.open(ROOT / "tiles" / "hongkong" / f"{name}.tif") as src:
            profile = {**src.profile, "count": 3}
            with rasterio.open(tmp_path / f"{name}.tif", "w", **profile) as dst:
                dst.write(src.read([3, 2, 1]))
    out = tmp_path / "rgb"
    result = CliRunner().invoke(cli, ["detect", str(tmp_path / "before.tif"), str(tmp_path / "after.tif"),
                                      "-o", str(out), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["name"] == "changewatch-rgb" and summary["counts"]["changes"] >= 1
