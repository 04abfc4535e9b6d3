"""The shipped model on real imagery: the demo end to end, and the recorded val F1 reproduced."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
from click.testing import CliRunner

from cli import cli
from models.changenet import DEFAULT_MODEL, load_spec
from rs.train import OSCD_VAL

pytestmark = pytest.mark.slow


def test_demo_flags_real_changes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "-o", str(out), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "flagged" in result.output and str(out / "flagged.gpkg") in result.output
    with rasterio.open(out / "change_prob.tif") as ds:
        assert ds.crs.to_epsg() == 4326 and ds.shape == (695, 540)
    changes = gpd.read_file(out / "changes.gpkg")
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


def test_shipped_model_reproduces_recorded_val_f1(oscd: Path) -> None:
    spec = load_spec(DEFAULT_MODEL)
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(oscd), "--sites", ",".join(OSCD_VAL), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["f1"] == pytest.approx(spec.metrics["val_pooled"]["f1"], abs=0.01)
    assert report["threshold"] == spec.threshold
