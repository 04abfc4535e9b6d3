"""rs.export and `cli.py export`: every format re-read and compared with the run's layers."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
from click.testing import CliRunner

from changewatch.cli import cli
from changewatch.rs.crosscheck import Layers, Layer, ParcelColumns, RuleConfig, judge
from changewatch.rs.export import LINKS, SHAPEFILE_NAMES, StagedOutput, read_run_layers, write_judgement
from tests.data import UTM48N
from tests.test_crosscheck import AS_OF, X, Y, box, rule_case


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A crosscheck run folder made from the hand-built rule case (UTM 48N) with parcels."""
    ch, permits, zoning = rule_case()
    ch["area_m2"] = ch.area
    ch["max_prob"] = np.linspace(0.5, 0.9, len(ch)).astype(np.float32)
    ch["change_type"] = ["new_building", "enlarged", None, "other_change", "new_building", None, "enlarged",
                         "new_building", "enlarged"]  # None: a change-only model cannot tell
    parcels = gpd.GeoDataFrame({"parcel_id": ["A", "C"], "ward": ["Phường 1", "Phường 2"]},
                               geometry=[box(X - 10, Y - 10, X + 250, Y + 30), box(X + 690, Y - 10, X + 900, Y + 30)],
                               crs=UTM48N)
    layers = Layers(Layer(permits, 0, "p"), Layer(zoning, 0, "z"), Layer(parcels, 0, "q"))
    judgement = judge(ch, layers, RuleConfig(as_of=AS_OF), ParcelColumns())
    run = tmp_path / "run"
    with StagedOutput(run) as out:
        write_judgement(judgement, out.path("changes.gpkg"), out.path("flagged.gpkg"))
        out.path("summary.json").write_text(json.dumps({"rules": {"as_of": AS_OF.isoformat()}, "counts": {}}))
    return run


def same_attributes(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        if pd.api.types.is_numeric_dtype(a[column]) and not pd.api.types.is_bool_dtype(a[column]):
            np.testing.assert_allclose(a[column].astype(float), b[column].astype(float), rtol=1e-6)
        else:
            # empty text may come back as null (dBASE has no empty string): compare both as ""
            assert list(a[column].fillna("").astype(str)) == list(b[column].fillna("").astype(str))


def same_geometries(a: gpd.GeoSeries, b: gpd.GeoSeries, tolerance: float = 1e-6) -> None:
    assert len(a) == len(b)
    assert all(shapely.equals_exact(a.values, b.values, tolerance=tolerance) | shapely.equals(a.values, b.values))


def test_every_format_round_trips(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    result = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    source = read_run_layers(run_dir)
    assert set(source) == {"changes", "flagged_changes", "flagged_parcels", LINKS}
    assert len(source["flagged_parcels"]) == 2 and len(source[LINKS]) == 4
    links = source.pop(LINKS)
    for back in (gpd.read_file(out / "changewatch.gpkg", layer=LINKS, read_geometry=False),
                 pd.read_parquet(out / f"{LINKS}.parquet"), pd.read_csv(out / f"{LINKS}.csv")):
        same_attributes(links, pd.DataFrame(back))
    for name, gdf in source.items():
        attrs = pd.DataFrame(gdf.drop(columns="geometry"))
        # GeoPackage and GeoParquet keep the CRS
        for path in (out / "changewatch.gpkg", out / f"{name}.parquet"):
            back = gpd.read_file(path, layer=name) if path.suffix == ".gpkg" else gpd.read_parquet(path)
            assert back.crs == gdf.crs
            same_attributes(attrs, pd.DataFrame(back.drop(columns="geometry")))
            same_geometries(gdf.geometry, back.geometry)
        # GeoJSON and CSV are in EPSG:4326
        wgs = gdf.to_crs(4326)
        back = gpd.read_file(out / f"{name}.geojson")
        assert back.crs.to_epsg() == 4326
        same_attributes(attrs, pd.DataFrame(back.drop(columns="geometry")))
        same_geometries(wgs.geometry, back.geometry, tolerance=1e-9)
        csv = pd.read_csv(out / f"{name}.csv", keep_default_na=False)
        same_attributes(attrs, csv.drop(columns="wkt"))
        same_geometries(wgs.geometry, gpd.GeoSeries.from_wkt(csv["wkt"], crs=4326), tolerance=1e-9)
        # Shapefile: long names shortened as documented
        shp = gpd.read_file(out / "shapefile" / f"{name}.shp")
        assert shp.crs == gdf.crs
        same_attributes(attrs.rename(columns=SHAPEFILE_NAMES), pd.DataFrame(shp.drop(columns="geometry")))
        same_geometries(gdf.geometry, shp.geometry)
    covering = pq.read_metadata(out / "changes.parquet").metadata[b"geo"]
    meta = json.loads(covering)
    assert meta["version"] == "1.1.0" and "covering" in meta["columns"]["geometry"]


def test_csv_centroids(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(tmp_path / "e"), "--formats", "csv",
                                      "--csv-geometry", "centroid", "--no-stac"], catch_exceptions=False)
    assert result.exit_code == 0
    csv = pd.read_csv(tmp_path / "e" / "changes.csv")
    expected = read_run_layers(run_dir)["changes"].centroid.to_crs(4326)
    np.testing.assert_allclose(csv["lon"], expected.x, atol=1e-9)
    np.testing.assert_allclose(csv["lat"], expected.y, atol=1e-9)
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["changes.csv", "flagged_change_parcels.csv",
                                                                  "flagged_changes.csv", "flagged_parcels.csv"]


def test_stac_item(run_dir: Path, tmp_path: Path) -> None:
    import hashlib

    import pystac

    out = tmp_path / "e"
    assert CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out), "--formats", "gpkg,parquet"]).exit_code == 0
    item = pystac.Item.from_file(str(out / "item.json"))
    assert item.datetime.date() == date(2018, 3, 23) and item.properties["changewatch:version"]
    gpkg = item.assets["changewatch.gpkg"]
    assert Path(gpkg.href) == (out / "changewatch.gpkg").resolve()
    assert gpkg.extra_fields["file:checksum"] == "1220" + hashlib.sha256((out / "changewatch.gpkg").read_bytes()).hexdigest()
    assert "run/changes.gpkg" in item.assets and item.bbox[0] == pytest.approx(106.6, abs=0.5)


def test_export_of_a_non_run_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", str(tmp_path), "-o", str(tmp_path / "e")])
    assert result.exit_code == 3 and "not a changewatch run folder" in result.output
    assert not (tmp_path / "e").exists()
    bad = CliRunner().invoke(cli, ["export", str(tmp_path), "-o", str(tmp_path / "e"), "--formats", "kml"])
    assert bad.exit_code == 2
