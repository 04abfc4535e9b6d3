"""cli.py through click's CliRunner: outputs on disk, help, exit codes, nothing partial on failure."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from shapely.geometry import box

from changewatch.cli import cli
from changewatch.models.spec import DEFAULT_MODEL
from tests.data import ORIGIN, UTM48N, constant_checkpoint, textured_scene, utm_transform, write_raster


def run(*args: str) -> CliRunner.invoke:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def permits_file(tmp_path: Path, column: str = "permit_id") -> Path:
    x, y = ORIGIN
    gdf = gpd.GeoDataFrame({column: ["P1"], "issued": ["2020-01-01"], "expires": ["2030-12-31"]},
                           geometry=[box(x, y - 960, x + 960, y)], crs=UTM48N)
    gdf.to_file(tmp_path / f"permits_{column}.gpkg")
    return tmp_path / f"permits_{column}.gpkg"


@pytest.mark.parametrize("command", [[], ["detect"], ["demo"], ["train"], ["evaluate"]])
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


def test_detect_writes_all_outputs(pair: tuple[Path, Path], tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run("detect", *pair, "-o", out, "--model", tiny_checkpoint, "--permits", permits_file(tmp_path),
                 "--threshold", "0.5", "--tile", "64", "--overlap", "16", "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["change_prob.qml", "change_prob.tif", "changes.gpkg",
                                                     "flagged.gpkg", "summary.json"]
    with rasterio.open(out / "change_prob.tif") as ds:
        assert ds.crs == UTM48N and ds.shape == (96, 96)
    changes = gpd.read_file(out / "changes.gpkg", layer="changes")
    flagged = gpd.read_file(out / "flagged.gpkg", layer="flagged_changes")
    assert changes.crs == UTM48N and flagged.crs == UTM48N
    assert {"change_id", "area_m2", "mean_prob", "reasons", "permit_ids", "flagged"} <= set(changes.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["changes"] == len(changes) and summary["counts"]["flagged"] == len(flagged)
    assert summary["thresholds"] == {"probability": 0.5, "min_area_m2": 200.0, "simplify_m": 0.0}
    assert summary["model"]["name"] == "tiny-test" and summary["inputs"]["crs"] == "EPSG:32648"
    assert not list(tmp_path.glob(".run.staging-*"))


def test_detect_warns_about_a_layer_outside_the_scene(pair: tuple[Path, Path], tiny_checkpoint: Path,
                                                      tmp_path: Path) -> None:
    import shapely

    inside = gpd.read_file(permits_file(tmp_path)).to_crs(4326)
    swapped = inside.set_geometry(shapely.transform(inside.geometry.to_numpy(), lambda xy: xy[:, ::-1]))  # lat/lon
    swapped.to_file(tmp_path / "swapped.gpkg")
    result = run("detect", *pair, "-o", tmp_path / "run", "--model", tiny_checkpoint, "--permits",
                 tmp_path / "swapped.gpkg", "--threshold", "0.5", "--tile", "64", "--overlap", "16", "-q")
    assert result.exit_code == 0, result.output
    assert f"warning: permits layer {tmp_path / 'swapped.gpkg'}: none of its 1 features lies inside" in result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["inputs"]["layer_counts"]["permits"] == {"features": 1, "in_scene": 0, "repaired": 0,
                                                            "dropped_empty": 0}
    assert len(summary["warnings"]) == 1 and summary["inputs"]["layer_counts"]["zoning"] is None


def test_detect_line_counts_change_types_of_a_building_model(pair: tuple[Path, Path], tmp_path: Path) -> None:
    # every pixel: change, no building BEFORE, a building AFTER → one new building over the whole scene
    buildings = constant_checkpoint(tmp_path / "models" / "buildings.json", (5.0, -5.0, 5.0))
    result = run("detect", *pair, "-o", tmp_path / "b", "--model", buildings, "--tile", "64", "--overlap", "16", "-q")
    assert result.exit_code == 0, result.output
    assert "1 change polygons (1 new_building, 0 demolished, 0 enlarged, 0 other_change), 1 flagged" in result.output
    change_only = constant_checkpoint(tmp_path / "models" / "change.json", (5.0,))
    result = run("detect", *pair, "-o", tmp_path / "c", "--model", change_only, "--tile", "64", "--overlap", "16", "-q")
    assert result.exit_code == 0 and "1 change polygons, 1 flagged" in result.output


def test_detect_on_a_user_grid(pair: tuple[Path, Path], tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run("detect", *pair, "-o", out, "--model", tiny_checkpoint, "--crs", "EPSG:4326",
                 "--resolution", "0.0002", "--readers", "2", "--threshold", "0.5", "-q")
    assert result.exit_code == 0, result.output
    with rasterio.open(out / "change_prob.tif") as ds:
        assert ds.crs == "EPSG:4326" and ds.res == pytest.approx((0.0002, 0.0002))
        assert (ds.bounds.left / 0.0002) == pytest.approx(round(ds.bounds.left / 0.0002))  # edges on multiples
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["grid"] == {"crs": "EPSG:4326", "resolution": 0.0002}
    assert summary["config"]["inference"]["readers"] == 2
    assert gpd.read_file(out / "changes.gpkg", layer="changes").crs == "EPSG:4326"


def _bad_inputs(tmp_path: Path, pair: tuple[Path, Path]) -> dict[str, tuple[list[object], int, str]]:
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    truncated = tmp_path / "truncated.tif"
    with rasterio.open(pair[1]) as src:
        profile = {**src.profile, "compress": "deflate", "tiled": True, "blockxsize": 32, "blockysize": 32}
        with rasterio.open(truncated, "w", **profile) as dst:
            dst.write(src.read())
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])  # header intact, data cut
    far = write_raster(tmp_path / "far.tif", textured_scene(96, 96), UTM48N,
                       utm_transform(origin=(ORIGIN[0] + 90_000, ORIGIN[1])))
    three = write_raster(tmp_path / "three.tif", textured_scene(96, 96, bands=3), UTM48N, utm_transform())
    return {
        "missing file": ([pair[0], tmp_path / "nope.tif"], 3, "AFTER file not found"),
        "not a raster": ([junk, pair[1]], 3, "not a readable raster"),
        "truncated file": ([pair[0], truncated], 3, "AFTER file is corrupt or truncated"),
        "no overlap": ([pair[0], far], 4, "do not overlap"),
        "band counts": ([pair[0], three], 4, "4 bands but AFTER has 3"),
        "permit column": ([*pair, "--permits", permits_file(tmp_path, "id")], 5, "lacks column(s) permit_id"),
        "model file": ([*pair, "--model", tmp_path / "nope.json"], 6, "model metadata not found"),
        "missing band": ([*pair, "--bands", "1,2,3,7"], 4, "has no band '7'"),
        "no valid pixels in common": ([pair[0], write_raster(tmp_path / "empty.tif", np.zeros((4, 96, 96), np.uint16),
                                                             UTM48N, utm_transform(), nodata=0)],
                                      4, "no valid pixels in common"),
        "band count vs model": ([*pair, "--bands", "1,2,3"], 6, "expects 4 bands per date"),
        "unknown grid CRS": ([*pair, "--crs", "EPSG:999999"], 4, "unknown grid CRS"),
        "band order vs model": ([*_reordered(tmp_path, S2), "--bands", "B08,B04,B03,B02", "--model", DEFAULT_MODEL],
                                6, "give them in that order"),
    }


@pytest.mark.parametrize("case", ["missing file", "not a raster", "truncated file", "no overlap", "band counts",
                                  "permit column", "model file", "missing band", "band count vs model",
                                  "no valid pixels in common", "unknown grid CRS", "band order vs model"])
def test_bad_input_one_line_exit_code_no_output(case: str, pair: tuple[Path, Path], tiny_checkpoint: Path,
                                                tmp_path: Path) -> None:
    args, code, message = _bad_inputs(tmp_path, pair)[case]
    model = [] if "--model" in args else ["--model", tiny_checkpoint]
    out = tmp_path / "out"
    result = run("detect", *args, "-o", out, *model, "-q")
    assert result.exit_code == code
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_failed_run_keeps_previous_outputs(pair: tuple[Path, Path], tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run("detect", *pair, "-o", out, "--model", tiny_checkpoint, "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = run("detect", pair[0], tmp_path / "missing.tif", "-o", out, "--model", tiny_checkpoint, "-q")
    assert result.exit_code == 3
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overlap_must_be_smaller_than_tile(pair: tuple[Path, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["detect", *map(str, pair), "-o", str(tmp_path / "o"), "--tile", "64",
                                      "--overlap", "64"])
    assert result.exit_code == 2 and "--overlap" in result.output


def test_evaluate_json(sites: Path, tiny_checkpoint: Path) -> None:
    result = run("evaluate", "--data", sites, "--sites", "alpha,beta", "--model", tiny_checkpoint, "--json")
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert {"precision", "recall", "f1", "iou"} <= set(report) and set(report["sites"]) == {"alpha", "beta"}
    objects = {"object_precision", "object_recall_iou50", "object_f1", "objects_predicted", "objects_matched"}
    assert objects <= set(report) and objects <= set(report["sites"]["alpha"])
    table = run("evaluate", "--data", sites, "--model", tiny_checkpoint, "-q")
    assert table.exit_code == 0 and "POOLED" in table.output and "gamma" in table.output
    assert "obj. F1@.5" in table.output and "objects at IoU ≥ 0.5:" in table.output


def test_crosscheck_command_with_column_mapping(tmp_path: Path) -> None:
    from tests.data import AS_OF, rule_case

    ch, permits, zoning = rule_case()
    ch = ch.drop(columns="change_id")  # ids are assigned 1…n when the layer has none
    ch.to_file(tmp_path / "changes.gpkg")
    permits.rename(columns={"permit_id": "SO_GP", "issued": "NGAY_CAP", "expires": "NGAY_HET"}).to_file(
        tmp_path / "permits.gpkg")
    zoning.to_file(tmp_path / "zoning.gpkg")
    (tmp_path / "columns.toml").write_text(
        '[permits]\npermit_id = "SO_GP"\nissued = "NGAY_CAP"\nexpires = "NGAY_HET"\n')
    out = tmp_path / "cc"
    result = run("crosscheck", tmp_path / "changes.gpkg", "-o", out, "--permits", tmp_path / "permits.gpkg",
                 "--zoning", tmp_path / "zoning.gpkg", "--as-of", AS_OF.isoformat(),
                 "--columns", tmp_path / "columns.toml")
    assert result.exit_code == 0, result.output
    judged = gpd.read_file(out / "changes.gpkg", layer="changes")
    assert list(judged["change_id"]) == list(range(1, 10))
    assert judged["reasons"].iloc[-1] == "NO_BUILD_ZONE,NO_PERMIT" and judged["reasons"].iloc[0] == "PERMITTED"
    summary = json.loads((out / "crosscheck_summary.json").read_text())
    assert summary["rules"]["as_of"] == "2018-03-23" and summary["inputs"]["change_ids_assigned"]
    assert summary["counts"]["flagged"] == 6


def test_columns_config_errors(tmp_path: Path) -> None:
    from tests.data import rule_case

    ch, permits, _ = rule_case()
    ch.to_file(tmp_path / "changes.gpkg")
    permits.to_file(tmp_path / "permits.gpkg")
    (tmp_path / "bad.yaml").write_text("permits:\n  permit_no: X\n")
    result = run("crosscheck", tmp_path / "changes.gpkg", "-o", tmp_path / "o", "--permits",
                 tmp_path / "permits.gpkg", "--columns", tmp_path / "bad.yaml")
    assert result.exit_code == 3 and "permits: unknown key(s) permit_no" in result.output
    (tmp_path / "map.yaml").write_text("permits:\n  permit_id: SO_GP\n")
    result = run("crosscheck", tmp_path / "changes.gpkg", "-o", tmp_path / "o", "--permits",
                 tmp_path / "permits.gpkg", "--columns", tmp_path / "map.yaml")
    assert result.exit_code == 5 and "lacks column(s) SO_GP" in result.output
    assert not (tmp_path / "o").exists()


# Rows of the README's "Bad inputs" table added with change types: (rules file text, exit code, message words)
BAD_RULES = [
    ("demolition_needs_permit: maybe\n", 3, "demolition_needs_permit must be true or false, not 'maybe'"),
    ("demolition_needs_permit: 1\n", 3, "demolition_needs_permit must be true or false, not 1"),
]


@pytest.mark.parametrize("text, code, words", BAD_RULES)
def test_bad_rules_one_line_exit_code_nothing_written(text: str, code: int, words: str, tmp_path: Path) -> None:
    from tests.data import rule_case

    ch, permits, _ = rule_case()
    ch.to_file(tmp_path / "changes.gpkg")
    permits.to_file(tmp_path / "permits.gpkg")
    (tmp_path / "rules.yaml").write_text(text)
    result = run("crosscheck", tmp_path / "changes.gpkg", "-o", tmp_path / "o", "--permits",
                 tmp_path / "permits.gpkg", "--columns", tmp_path / "rules.yaml")
    assert result.exit_code == code
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: columns config") and words in lines[0]
    assert not (tmp_path / "o").exists()


# --- README "Bad inputs": every row, run through the CLI ------------------------------------------

def _scenes(tmp_path: Path, before: np.ndarray, after: np.ndarray, **kw: object) -> list[Path]:
    return [write_raster(tmp_path / "b.tif", before, UTM48N, utm_transform(), **kw),
            write_raster(tmp_path / "a.tif", after, UTM48N, utm_transform(), **kw)]


def _plain_pair(tmp_path: Path) -> list[Path]:
    scene = textured_scene(96, 96, seed=1)
    return _scenes(tmp_path, scene, scene + 1)


def _nan(tmp_path: Path) -> list[Path]:
    scene = textured_scene(96, 96, seed=1).astype(np.float32) / 10000
    after = scene.copy()
    after[:, 60:, :30] = np.nan
    return _scenes(tmp_path, scene, after)


def _zero_fill(tmp_path: Path) -> list[Path]:
    scene = textured_scene(96, 96, seed=1)
    after = scene.copy()
    after[:, 60:, :30] = 0
    return _scenes(tmp_path, scene, after)


def _rgba(tmp_path: Path) -> list[Path]:
    alpha = np.full((1, 128, 128), 255, np.uint8)
    alpha[:, :8] = 0
    data = [np.concatenate([(textured_scene(128, 128, bands=3, seed=s) // 16).astype(np.uint8), alpha]) for s in (1, 2)]
    return _scenes(tmp_path, *data, photometric="RGB", alpha="YES")


def _rgb_nir(tmp_path: Path) -> list[Path]:
    """Red, green, blue, NIR named by the colours of the first three only (an RGB + NIR aerial layout)."""
    from rasterio.enums import ColorInterp

    paths = _scenes(tmp_path, textured_scene(128, 128, seed=1), textured_scene(128, 128, seed=2))
    for path in paths:
        with rasterio.open(path, "r+") as ds:
            ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
    return paths


S2 = ("B02", "B03", "B04", "B08")


def _reordered(tmp_path: Path, names: tuple[str, ...] = ("B08", "B04", "B03", "B02")) -> list[Path]:
    scene = textured_scene(96, 96, seed=1)
    return [write_raster(tmp_path / "b.tif", scene, UTM48N, utm_transform(), descriptions=S2),
            write_raster(tmp_path / "a.tif", scene[::-1], UTM48N, utm_transform(), descriptions=names)]


def _flipped(tmp_path: Path) -> list[Path]:
    t = utm_transform()
    up = Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + t.e * 96)
    return [write_raster(tmp_path / f"{n}.tif", textured_scene(96, 96, seed=s)[:, ::-1].copy(), UTM48N, up)
            for n, s in (("b", 1), ("a", 2))]


def _rotated(tmp_path: Path) -> list[Path]:
    t = utm_transform()
    rot = (Affine.translation(*(t * (48, 48))) * Affine.rotation(3.0)
           * Affine.translation(*(-v for v in t * (48, 48))) * t)
    return [write_raster(tmp_path / "b.tif", textured_scene(96, 96, seed=1), UTM48N, rot),
            write_raster(tmp_path / "a.tif", textured_scene(96, 96, seed=2), UTM48N, t)]


def _located_by(tmp_path: Path, kind: str) -> list[Path]:
    from rasterio.control import GroundControlPoint
    from rasterio.rpc import RPC

    t = utm_transform()
    before = write_raster(tmp_path / "b.tif", textured_scene(96, 96, seed=1), UTM48N, t)
    with rasterio.open(tmp_path / "a.tif", "w", driver="GTiff", width=96, height=96, count=4, dtype="uint16") as ds:
        ds.write(textured_scene(96, 96, seed=2))
        if kind == "gcps":
            ds.gcps = ([GroundControlPoint(row=r, col=c, x=(t * (c, r))[0], y=(t * (c, r))[1])
                        for r in (0, 48, 96) for c in (0, 48, 96)], UTM48N)
        else:
            ds.rpcs = RPC(height_off=0, height_scale=1, lat_off=10.8, lat_scale=0.1, line_den_coeff=[1] + [0] * 19,
                          line_num_coeff=[0, 0, 1] + [0] * 17, line_off=48, line_scale=48, long_off=106.7,
                          long_scale=0.1, samp_den_coeff=[1] + [0] * 19, samp_num_coeff=[0, 1] + [0] * 18,
                          samp_off=48, samp_scale=48)
    return [before, tmp_path / "a.tif"]


def _mosaics(tmp_path: Path, far: bool) -> list[Path]:
    from tests.data import write_vrt

    out = []
    for name, seed in (("b", 1), ("a", 2)):
        tile = write_raster(tmp_path / f"{name}.tif", textured_scene(96, 96, seed=seed), UTM48N, utm_transform())
        spots = [(tile, 150_000, 120_000)] + ([(tile, 10, 10)] if far else [])
        out.append(write_vrt(tmp_path / f"{name}.vrt", spots, 200_000))
    return out


def _tiny_clip(tmp_path: Path) -> list[Path]:
    return _scenes(tmp_path, textured_scene(24, 30, seed=1), textured_scene(24, 30, seed=2))


def _baseline_0400(tmp_path: Path) -> list[Path]:
    scene = textured_scene(96, 96, seed=1)
    paths = _scenes(tmp_path, scene, scene + 1000, nodata=0)
    with rasterio.open(paths[1], "r+") as ds:
        ds.update_tags(PROCESSING_BASELINE="04.00", BOA_ADD_OFFSET="-1000")
    return paths


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


BAD_INPUTS = {  # README row's input → (make the inputs, extra options, exit code, check of the output or message)
    "float imagery with NaN and no nodata tag":
        (_nan, [], 0, lambda out, msg: _summary(out)["inputs"]["validity"]["after"]["sample"]["nan"] == 36 * 30),
    "pixels 0 in every band, no nodata declared (Sentinel-2 swath edge)":
        (_zero_fill, [], 0, lambda out, msg: _summary(out)["inputs"]["validity"]["after"]["zero_fill"]),
    "RGB + alpha band (GIS and tile-tool exports)":
        (_rgba, ["--model", None], 0, lambda out, msg: _summary(out)["model"]["name"] == "changewatch-rgb"
         and _summary(out)["inputs"]["validity"]["after"]["alpha_band_as_mask"] == 4),
    "AFTER's named bands stored in another order (B08,B04,B03,B02)":
        (_reordered, [], 0, lambda out, msg: [b["index"] for b in _summary(out)["inputs"]["bands_compared"]["after"]]
         == [4, 3, 2, 1]),
    "both files name their bands and the names differ":
        (lambda p: _reordered(p, ("B08", "B04", "B03", "B01")), [], 4,
         lambda out, msg: "differ" in msg and "--bands" in msg),
    "`--bands 1,2,3,4` picking the same named bands in another order":
        (_reordered, ["--bands", "1,2,3,4"], 4, lambda out, msg: "the same bands in another order" in msg),
    "`--bands` that includes an alpha band":
        (_rgba, ["--bands", "1,2,3,4"], 4, lambda out, msg: "band 4 of BEFORE is its alpha band" in msg),
    "`--bands B08,B04,B03,B02` (named bands in another order than the model's)":
        (lambda p: _reordered(p, S2), ["--model", None, "--bands", "B08,B04,B03,B02"], 6,
         lambda out, msg: "--bands B08,B04,B03,B02 are nir,red,green,blue; the model changewatch-rgbn takes "
         "blue,green,red,nir: give them in that order" in msg),
    "`--bands B02,B02,B03,B04` (a named band twice)":
        (lambda p: _reordered(p, S2), ["--model", None, "--bands", "B02,B02,B03,B04"], 6,
         lambda out, msg: "are blue,blue,green,red" in msg and "blue given twice" in msg),
    "bands whose names do not say what they are (no descriptions, `band 1`…) picked as `--bands 4,3,2,1`":
        (lambda p: _scenes(p, textured_scene(96, 96, seed=1), textured_scene(96, 96, seed=2)),
         ["--bands", "4,3,2,1"], 0,
         lambda out, msg: [b["index"] for b in _summary(out)["inputs"]["bands_compared"]["before"]] == [4, 3, 2, 1]),
    "bottom-up raster (positive y pixel size)":
        (_flipped, [], 0, lambda out, msg: rasterio.open(out / "change_prob.tif").transform == utm_transform()),
    "rotated geotransform":
        (_rotated, [], 0, lambda out, msg: rasterio.open(out / "change_prob.tif").transform.b == 0),
    "raster located only by ground control points":
        (lambda p: _located_by(p, "gcps"), [], 0, lambda out, msg: _summary(out)["inputs"]["width"] == 96),
    "raster located only by RPCs":
        (lambda p: _located_by(p, "rpcs"), [], 4, lambda out, msg: "located only by RPCs" in msg
         and "gdalwarp -rpc" in msg),
    "VRT mosaic of a few tiles in a huge extent (200 000² pixels)":
        (lambda p: _mosaics(p, far=False), [], 0, lambda out, msg: _summary(out)["inputs"]["width"] == 96),
    "common grid over 4 Gpx":
        (lambda p: _mosaics(p, far=True), [], 4, lambda out, msg: "4 Gpx one run takes" in msg),
    "scene smaller than the model's training crops (30 × 24 px)":
        (_tiny_clip, ["--model", None], 4, lambda out, msg: "needs at least 128×128" in msg),
    "Sentinel-2 processing baseline 04.00 date (+1000 DN) against an older one":
        (_baseline_0400, [], 0, lambda out, msg: _summary(out)["inputs"]["radiometry"]["after"]["tags"]
         == {"PROCESSING_BASELINE": "04.00", "BOA_ADD_OFFSET": "-1000"}),
    "RGB + NIR file whose colours name three of its bands (red, green, blue, undefined)":
        (_rgb_nir, ["--model", None], 6,
         lambda out, msg: "are red,green,blue,?" in msg and "blue,green,red,nir" in msg),
    "`--crs` that PROJ does not know (`EPSG:99999`)":
        (_plain_pair, ["--crs", "EPSG:99999"], 4, lambda out, msg: "unknown grid CRS 'EPSG:99999'" in msg),
    "`--resolution 10` with a geographic `--crs` (`EPSG:4326`: degrees)":
        (_plain_pair, ["--crs", "EPSG:4326", "--resolution", "10"], 4,
         lambda out, msg: "degrees for EPSG:4326" in msg and "projected --crs" in msg),
}


def readme_bad_inputs() -> dict[str, str]:
    """The README's Bad inputs table: input → exit code."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {row[0].lstrip("| ").strip(): row[-1].rstrip(" |").strip() for row in rows[1:]}


def test_every_imagery_row_of_the_readme_table_is_checked() -> None:
    table = readme_bad_inputs()
    for name, (_, _, code, _) in BAD_INPUTS.items():
        assert table.get(name) == str(code), name


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_table(name: str, tmp_path: Path, tiny_checkpoint: Path) -> None:
    make, options, code, check = BAD_INPUTS[name]
    before, after = make(tmp_path)
    model = [] if options[:2] == ["--model", None] else ["--model", tiny_checkpoint]
    options = options[2:] if options[:2] == ["--model", None] else options
    out = tmp_path / "out"
    result = run("detect", before, after, "-o", out, *model, *options, "--threshold", "0.5", "--tile", "64",
                 "--overlap", "16", "-q")
    assert result.exit_code == code, result.output
    assert (code == 0) != result.output.startswith("error:") and check(out, result.output), result.output
    if code:
        assert not out.exists()  # inputs are checked before anything is written


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_bad_inputs_table_jpeg_labels(tmp_path: Path) -> None:
    import rasterio.shutil

    from tests.data import make_levir

    assert readme_bad_inputs()["JPEG or 3-channel label images (`evaluate`, `train`)"] == "0"
    root = make_levir(tmp_path / "levir", {"a": ((10, 10, 30), (70, 60, 20)), "b": ((40, 40, 25),)}, size=128)
    for png in list((root / "label").iterdir()):
        rasterio.shutil.copy(png, png.with_suffix(".jpg"), driver="JPEG", QUALITY="75")
        png.unlink()
    result = run("evaluate", "--data", root, "--json", "-q", "--object-min-m2", "100", "--no-coregister")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["sites"]["a"]["objects"] == 2 and report["sites"]["b"]["objects"] == 1  # the squares, not noise


class _Captured(Exception):
    """Raised by a stand-in for the library, once it has seen the configuration a command built."""


def _capture(seen: dict[str, object], key: str):
    def stand_in(config: object, *args: object, **kwargs: object) -> None:
        seen[key] = config
        raise _Captured

    return stand_in


def test_commands_use_the_library_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without options, each command builds exactly the configuration the library defaults to."""
    from changewatch.rs import evaluate, pipeline
    from changewatch.rs.batch import jobs, manifest
    from changewatch.rs.batch import run as batch_run  # imported now, so that it binds the real read_manifest
    from changewatch.rs.config import BatchConfig, DetectConfig, EvalOptions, InferenceConfig
    from changewatch.rs.training import loop
    from changewatch.rs.training.config import TrainConfig

    seen: dict[str, object] = {}
    monkeypatch.setattr(pipeline, "detect", _capture(seen, "detect"))
    monkeypatch.setattr(loop, "train", _capture(seen, "train"))
    monkeypatch.setattr(manifest, "read_manifest", lambda *a, **k: [])
    monkeypatch.setattr(batch_run, "read_manifest", lambda *a, **k: [])
    monkeypatch.setattr(jobs, "tile_counts", lambda found, config: _capture(seen, "batch")(config))
    monkeypatch.setattr(evaluate, "evaluate_folder",
                        lambda data, names, model, options, inference, **kw: _capture(seen, "evaluate")(
                            (data, names, model, options, inference)))
    for args in (["detect", "b.tif", "a.tif", "-o", "out"], ["train", "--data", "d"], ["batch", "m.csv", "-o", "o"],
                 ["evaluate", "--data", "d"]):
        assert isinstance(CliRunner().invoke(cli, args).exception, _Captured), args
    assert seen["detect"] == DetectConfig("b.tif", "a.tif", "out")
    assert seen["train"] == TrainConfig(data_dir="d")
    assert seen["batch"] == BatchConfig(manifest="m.csv", outdir="o")
    assert seen["evaluate"] == ("d", None, None, EvalOptions(), InferenceConfig())


def test_detect_workers_is_a_deprecated_spelling_of_readers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from changewatch.rs import pipeline

    seen: dict[str, object] = {}
    monkeypatch.setattr(pipeline, "detect", _capture(seen, "detect"))
    result = CliRunner().invoke(cli, ["detect", "b.tif", "a.tif", "-o", "out", "--workers", "3"])
    assert isinstance(result.exception, _Captured)
    assert seen["detect"].inference.readers == 3  # type: ignore[attr-defined]
    assert "warning: --workers is deprecated, use --readers" in result.stderr
    assert "--workers" not in run("detect", "--help").output and "--readers" in run("detect", "--help").output


@pytest.mark.parametrize(("args", "words"), [
    (["detect"], ["Missing argument 'BEFORE'", "'cli detect --help'"]),
    (["detect", "a.tif", "b.tif", "--bogus"], ["No such option '--bogus'"]),
    (["nosuch"], ["No such command 'nosuch'", "'cli --help'"]),
    (["export", "run", "-o", "out", "--formats", "xls"], ["unknown format(s) xls"]),
])
def test_usage_errors_are_one_error_line(args: list[str], words: list[str]) -> None:
    result = CliRunner().invoke(cli, args, prog_name="cli")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines[0]


def test_no_arguments_prints_the_help() -> None:
    result = CliRunner().invoke(cli, [], prog_name="cli")
    assert result.exit_code == 2 and "Usage: cli [OPTIONS] COMMAND" in result.output and "error:" not in result.output


def test_an_unknown_crs_prints_one_line_on_the_real_stderr(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """GDAL would print its own 'ERROR 1: PROJ: …' line to the process's stderr (not seen by CliRunner)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "cli.py"), "detect",
                           *map(str, pair), "-o", str(tmp_path / "out"), "--crs", "EPSG:99999", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 4 and done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith("error: unknown grid CRS 'EPSG:99999'")
