"""The shipped very-high-resolution model end to end: chosen by GSD without flags, one typed polygon per
building. Reads ../shared/data/vhr-buildings (real OpenAerialMap imagery of Kampala, the area the model
never trained on) and skips where it is absent."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from affine import Affine
from click.testing import CliRunner
from rasterio.crs import CRS

from changewatch.cli import cli
from changewatch.rs.synth.config import NuisanceConfig, SynthConfig
from changewatch.rs.synth.generate import make_pair, usable
from changewatch.rs.synth.sources import load_sources
from tests.data import write_raster

KAMPALA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "vhr-buildings" / "oam-ramp" / "ramp-data" /
           "TRAIN" / "HOTOSM" / "2" / "data" / "2")
QUIET = NuisanceConfig(**{name: 0.0 for name in ("season", "colour", "haze", "shadows", "misregister", "blur",
                                                  "resample", "jpeg", "ground", "noise")})

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def new_houses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 0.5 m GeoTIFF pair (UTM 36N) of real Kampala imagery in which four houses appear (removed from BEFORE
    by ``rs.synth``), with their footprints as ``label.tif``."""
    if not KAMPALA.is_dir():
        pytest.skip("../shared/data/vhr-buildings is not present")
    config = SynthConfig(str(KAMPALA), "unused", gsd_m=(0.5, 0.5), nuisance=QUIET, nuisance_only=0.0,
                         kind_weights=(1, 0, 0, 0), max_changed=4)
    pair = make_pair(usable(load_sources(KAMPALA, 0.5), config), [], config, np.random.default_rng(3), "k", "val")
    folder = tmp_path_factory.mktemp("kampala")
    transform, crs = Affine(0.5, 0.0, 450_000.0, 0.0, -0.5, 40_000.0), CRS.from_epsg(32636)
    write_raster(folder / "before.tif", np.moveaxis(pair.before, -1, 0), crs, transform)
    write_raster(folder / "after.tif", np.moveaxis(pair.after, -1, 0), crs, transform)
    write_raster(folder / "label.tif", pair.label[None], crs, transform)
    return folder


def test_detect_at_half_a_metre_picks_the_vhr_model_and_finds_the_new_houses(new_houses: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["detect", str(new_houses / "before.tif"), str(new_houses / "after.tif"), "-o",
                                      str(out), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["name"] == "changewatch-vhr-rgb" and summary["model"]["compared_at_gsd_m"] == 0.5
    assert "0.5 m GSD, within the 0.25–2.5 m" in summary["model"]["chosen_because"]
    changes = gpd.read_file(out / "changes.gpkg", layer="changes")
    assert len(changes) >= 3 and set(changes["change_type"]) == {"new_building"}
    with rasterio.open(new_houses / "label.tif") as ds:
        truth = ds.read(1) > 0
        hits = rasterio.features.rasterize(changes.geometry, out_shape=truth.shape, transform=ds.transform) > 0
    assert (hits & truth).sum() / truth.sum() > 0.5 and (hits & truth).sum() / hits.sum() > 0.5
