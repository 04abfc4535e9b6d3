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
from shapely.geometry import box

from changewatch.cli import cli
from changewatch.rs.crosscheck.judge import judge
from changewatch.rs.crosscheck.layers import Layer, Layers
from changewatch.rs.crosscheck.settings import ParcelColumns, RuleConfig
from changewatch.rs.export import SHAPEFILE_NAMES
from changewatch.rs.runfolder import (
    CROSSCHECK_SUMMARY,
    LAYER_LINKS,
    StagedOutput,
    read_run_layers,
    write_judgement,
    write_summary,
)
from changewatch.rs.summary import ChangeLayerInputs, RulesRecord, RunSummary
from tests.data import AS_OF, UTM48N, X, Y, rule_case


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
        summary = RunSummary(judgement.counts(), judgement.areas(), ChangeLayerInputs(changes="changes.gpkg"),
                             RulesRecord(AS_OF.isoformat(), "given", 20.0, 0.1, False))
        write_summary(summary, out.path(CROSSCHECK_SUMMARY))
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
    assert set(source) == {"changes", "flagged_changes", "flagged_parcels", LAYER_LINKS}
    assert len(source["flagged_parcels"]) == 2 and len(source[LAYER_LINKS]) == 4
    links = source.pop(LAYER_LINKS)
    for back in (gpd.read_file(out / "changewatch.gpkg", layer=LAYER_LINKS, read_geometry=False),
                 pd.read_parquet(out / f"{LAYER_LINKS}.parquet"), pd.read_csv(out / f"{LAYER_LINKS}.csv")):
        same_attributes(links, pd.DataFrame(back))
    for name, gdf in source.items():
        attrs = pd.DataFrame(gdf.drop(columns="geometry"))
        # GeoPackage and GeoParquet keep the CRS
        for path in (out / "changewatch.gpkg", out / f"{name}.parquet"):
            back = gpd.read_file(path, layer=name) if path.suffix == ".gpkg" else gpd.read_parquet(path)
            assert back.crs == gdf.crs
            same_attributes(attrs, pd.DataFrame(back.drop(columns="geometry")))
            same_geometries(gdf.geometry, back.geometry)
        # GeoJSON and CSV are in EPSG:4326; GeoJSON (RFC 7946) rounded to 7 decimals, rings counterclockwise
        wgs = gdf.to_crs(4326)
        back = gpd.read_file(out / f"{name}.geojson")
        assert back.crs.to_epsg() == 4326
        same_attributes(attrs, pd.DataFrame(back.drop(columns="geometry")))
        assert (shapely.hausdorff_distance(wgs.geometry.values, back.geometry.values) < 1e-7).all()
        csv = pd.read_csv(out / f"{name}.csv", keep_default_na=False)
        same_attributes(attrs, csv.drop(columns="wkt"))
        same_geometries(wgs.geometry, gpd.GeoSeries.from_wkt(csv["wkt"], crs=4326), tolerance=1e-9)
        # Shapefile: long names shortened as documented, booleans as 1/0
        shp = gpd.read_file(out / "shapefile" / f"{name}.shp")
        assert shp.crs == gdf.crs
        as_integers = attrs.astype({c: int for c in attrs.columns if pd.api.types.is_bool_dtype(attrs[c])})
        same_attributes(as_integers.rename(columns=SHAPEFILE_NAMES), pd.DataFrame(shp.drop(columns="geometry")))
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
    assert gpkg.href == "./changewatch.gpkg"
    assert Path(gpkg.get_absolute_href()) == (out / "changewatch.gpkg").resolve()
    assert (gpkg.media_type, gpkg.roles) == ("application/geopackage+sqlite3", ["data"])
    digest = hashlib.sha256((out / "changewatch.gpkg").read_bytes()).hexdigest()
    assert gpkg.extra_fields["file:checksum"] == "1220" + digest
    read = {link.title: link for link in item.links if link.rel == "derived_from"}  # the run's files: inputs
    assert read["run folder: changes.gpkg"].extra_fields["file:checksum"] == "1220" + hashlib.sha256(
        (run_dir / "changes.gpkg").read_bytes()).hexdigest()
    assert not any(key.startswith("run/") for key in item.assets) and item.bbox[0] == pytest.approx(106.6, abs=0.5)


def test_export_of_a_non_run_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", str(tmp_path), "-o", str(tmp_path / "e")])
    assert result.exit_code == 3 and "not a changewatch run folder" in result.output
    assert not (tmp_path / "e").exists()
    bad = CliRunner().invoke(cli, ["export", str(tmp_path), "-o", str(tmp_path / "e"), "--formats", "kml"])
    assert bad.exit_code == 2


def long_text_run(tmp_path: Path) -> Path:
    """A run folder whose change 2 touches 40 permits (permit_ids: 479 bytes) and carries an owner column
    with a long Vietnamese name (more than 10 bytes in UTF-8)."""
    from changewatch.rs.crosscheck.judge import Judgement

    many = ",".join(f"GP-{i:04d}/2023" for i in range(40))
    ch = gpd.GeoDataFrame({"change_id": [1, 2], "area_m2": [400.0, 400.0], "permit_ids": ["GP-1", many],
                           "reasons": ["PERMITTED", "EXCEEDS_PERMIT"], "CHỦ_ĐẦU_TƯ": ["Nguyễn Văn A", "Đ" * 200]},
                          geometry=[box(X, Y, X + 20, Y + 20), box(X + 100, Y, X + 120, Y + 20)], crs=UTM48N)
    run = tmp_path / "run"
    with StagedOutput(run) as out:
        write_judgement(Judgement(ch, ch[ch["reasons"] != "PERMITTED"].reset_index(drop=True), None),
                        out.path("changes.gpkg"), out.path("flagged.gpkg"))
    return run


def test_shapefile_loses_nothing_silently(tmp_path: Path) -> None:
    import warnings

    run = long_text_run(tmp_path)
    out = tmp_path / "e"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # GDAL's "truncated"/"laundered" warnings would mean it cut something itself
        result = CliRunner().invoke(cli, ["export", str(run), "-o", str(out), "--formats", "shp"],
                                    catch_exceptions=False)
    assert result.exit_code == 0, result.output
    source = read_run_layers(run)["changes"]
    shp = gpd.read_file(out / "shapefile" / "changes.shp")  # readable: names cut between characters
    assert list(shp.columns) == ["change_id", "area_m2", "permit_ids", "reasons", "CHỦ_Đ", "geometry"]
    assert shp["permit_ids"].iloc[1] == source["permit_ids"].iloc[1].encode()[:254].decode()
    assert shp["CHỦ_Đ"].iloc[1] == "Đ" * 127  # 254 bytes
    full = pd.read_csv(out / "shapefile" / "changes_full_values.csv")
    assert list(full.columns) == ["change_id", "permit_ids", "CHỦ_ĐẦU_TƯ"] and list(full["change_id"]) == [2]
    assert full["permit_ids"].iloc[0] == source["permit_ids"].iloc[1] and full["CHỦ_ĐẦU_TƯ"].iloc[0] == "Đ" * 200
    names = pd.read_csv(out / "shapefile" / "field_names.csv")
    assert ["changes", "CHỦ_ĐẦU_TƯ", "CHỦ_Đ"] in names.values.tolist()
    record = json.loads((out / "item.json").read_text())["properties"]["changewatch:shapefile"]
    assert record["changes"] == {"fields": {"CHỦ_ĐẦU_TƯ": "CHỦ_Đ"}, "values": {"permit_ids": 1, "CHỦ_ĐẦU_TƯ": 1},
                                 "full_values": "shapefile/changes_full_values.csv"}


def test_shapefile_field_names_are_unique() -> None:
    from changewatch.rs.export import shapefile_fields

    assert shapefile_fields(["change_id", "valid_permit_ids", "construction_a", "construction_b", "constructi"]) == {
        "valid_permit_ids": "valid_pids", "construction_a": "construc_1", "construction_b": "construc_2"}


def test_export_into_an_earlier_export_leaves_no_stale_files(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    assert CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out)]).exit_code == 0
    assert CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out), "--formats", "geojson"]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["changes.geojson", "flagged_changes.geojson",
                                                     "flagged_parcels.geojson", "item.json"]
    (out / "notes.txt").write_text("mine")  # not ours: the folder is not replaced, nothing is lost
    refused = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out)])
    assert refused.exit_code == 8 and (out / "notes.txt").read_text() == "mine"
    item = json.loads((out / "item.json").read_text())
    assert sorted(k for k in item["assets"] if not k.startswith("run/")) == [
        "changes.geojson", "flagged_changes.geojson", "flagged_parcels.geojson"]


def test_export_refuses_a_folder_inside_the_run_no_format_and_a_missing_run(run_dir: Path, tmp_path: Path) -> None:
    inside = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(run_dir / "sub")])
    assert inside.exit_code == 8 and "inside the run folder" in inside.output and not (run_dir / "sub").exists()
    nothing = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(tmp_path / "e"), "--formats", ""])
    assert nothing.exit_code == 2 and "no format given" in nothing.output
    missing = CliRunner().invoke(cli, ["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "e")])
    assert missing.exit_code == 3 and "does not exist" in missing.output
