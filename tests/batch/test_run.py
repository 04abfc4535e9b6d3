"""rs.batch and `cli.py batch`: manifests, statuses, resume after SIGKILL, Dask LocalCluster = serial, outputs.

Combined outputs: the batch's summary and its combined flagged layer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from shapely.geometry import box

from changewatch.cli import cli
from changewatch.rs.batch.jobs import tile_counts
from changewatch.rs.batch.manifest import read_manifest
from changewatch.rs.batch.resume import is_done, stale_reason
from changewatch.rs.batch.run import run_batch
from changewatch.rs.config import BatchConfig
from changewatch.rs.crosscheck.settings import CrosscheckInputs
from changewatch.rs.errors import ManifestError
from changewatch.rs.infer import InferenceConfig
from tests.data import ORIGIN, UTM48N, make_manifest, plant_square, textured_scene, utm_transform, write_raster

ROOT = Path(__file__).resolve().parents[2]


def config(manifest: Path, outdir: Path, model: Path, **kw: object) -> BatchConfig:
    return BatchConfig(manifest=str(manifest), outdir=str(outdir), model=str(model), threshold=0.5,
                       scheduler=str(kw.pop("scheduler", "serial")), **kw)  # type: ignore[arg-type]


def outputs_of(outdir: Path, area: str) -> tuple[np.ndarray, gpd.GeoDataFrame]:
    with rasterio.open(outdir / area / "change_prob.tif") as ds:
        pixels = ds.read(1)
    return pixels, gpd.read_file(outdir / area / "changes.gpkg", layer="changes")


def assert_same_outputs(a: Path, b: Path, areas: list[str], exact: bool = True) -> None:
    """Same probability pixels (byte-identical, or within 1e-5 when ``exact`` is False) and same features."""
    for area in areas:
        pa, ca = outputs_of(a, area)
        pb, cb = outputs_of(b, area)
        if exact:
            assert pa.tobytes() == pb.tobytes()
            assert ca.drop(columns="geometry").equals(cb.drop(columns="geometry"))
            assert list(ca.geometry.to_wkb()) == list(cb.geometry.to_wkb())
        else:
            np.testing.assert_allclose(pa, pb, atol=1e-5, equal_nan=True)
            assert list(ca["change_id"]) == list(cb["change_id"])
            np.testing.assert_allclose(ca["area_m2"], cb["area_m2"], rtol=1e-6)


def test_manifest_csv_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("area_id,before,after,permits,masks\nw1,x/b.tif,x/a.tif,,c1.tif;c2.tif\n"
                                    "w2,b.tif,a.tif,p.gpkg,\n")
    jobs = read_manifest(tmp_path / "m.csv", {"permits": "/shared.gpkg"})
    assert [j.area_id for j in jobs] == ["w1", "w2"]
    assert jobs[0].masks == (str(tmp_path / "c1.tif"), str(tmp_path / "c2.tif")) and jobs[1].masks == ()
    assert jobs[0].before == str(tmp_path / "x" / "b.tif") and jobs[0].permits == "/shared.gpkg"
    assert jobs[1].permits == str(tmp_path / "p.gpkg")
    (tmp_path / "m.yaml").write_text("permits: p.gpkg\nzoning: z.gpkg\njobs:\n"
                                     "  - {area_id: w1, before: b.tif, after: a.tif, as_of: 2018-03-23}\n")
    [job] = read_manifest(tmp_path / "m.yaml")
    assert job.permits == str(tmp_path / "p.gpkg") and job.zoning == str(tmp_path / "z.gpkg")
    assert job.parcels is None and job.as_of == date(2018, 3, 23)


@pytest.mark.parametrize("text,message", [
    ("area_id,before\nw1,b.tif\n", "lacks column"),
    ("area_id,before,after\nw1,b,a\nw1,b,a\n", "listed twice"),
    ("area_id,before,after\n../up,b,a\n", "area_id"),
    ("area_id,before,after,as_of\nw1,b,a,23/03/2018\n", "not a YYYY-MM-DD date"),
    ("area_id,before,after,as_of\nw1,b,a,2018-W12-5\n", "not a YYYY-MM-DD date"),
    ("area_id,before,after,colour\nw1,b,a,red\n", "unknown column"),
    ("area_id,before,after\n", "no jobs"),
])
def test_bad_manifests(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / "m.csv")


@pytest.mark.parametrize("name", ["m.csv", "m.yaml"])
def test_manifest_that_is_not_utf8(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes("area_id,before,after\nw1,São_Paulo/b.tif,a.tif\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="cannot be parsed.*utf-8"):
        read_manifest(tmp_path / name)
    result = CliRunner().invoke(cli, ["batch", str(tmp_path / name), "-o", str(tmp_path / "out")])
    assert result.exit_code == 3 and result.output.startswith("error: manifest") and "Traceback" not in result.output


def test_manifest_with_a_byte_order_mark(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("area_id,before,after\nw1,b.tif,a.tif\n", encoding="utf-8-sig")  # Excel's CSV
    assert [j.area_id for j in read_manifest(tmp_path / "m.csv")] == ["w1"]


def test_three_jobs_one_broken(tmp_path: Path, tiny_checkpoint: Path) -> None:
    manifest = make_manifest(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["batch", str(manifest), "-o", str(out), "--model", str(tiny_checkpoint),
                                      "--scheduler", "serial", "--threshold", "0.5", "--json-log"],
                                catch_exceptions=False)
    assert result.exit_code == 7
    records = {r["area_id"]: r for r in map(json.loads, result.output.strip().splitlines())}
    assert {k: r["status"] for k, r in records.items()} == {"ward0": "done", "ward1": "done", "broken": "failed"}
    assert "AFTER file not found" in records["broken"]["error"] and records["broken"]["exit_code"] == 3
    jobs = {j.area_id: j for j in read_manifest(manifest)}
    settings = config(manifest, out, tiny_checkpoint)
    assert all(stale_reason(out / a, jobs[a], settings) is None for a in ("ward0", "ward1"))
    assert not (out / "broken").exists()
    summary = json.loads((out / "batch_summary.json").read_text())
    assert [j["area_id"] for j in summary["jobs"]] == ["ward0", "ward1", "broken"]
    assert (out / "batch_summary.csv").read_text().count("\n") == 4
    combined = gpd.read_file(out / "flagged.gpkg", layer="flagged_changes")
    assert combined.crs.to_epsg() == 4326
    expected = sum(len(gpd.read_file(out / a / "flagged.gpkg", layer="flagged_changes")) for a in ("ward0", "ward1"))
    assert len(combined) == expected and set(combined["area_id"]) <= {"ward0", "ward1"}


def test_resume_skips_done_and_redoes_tampered(tmp_path: Path, tiny_checkpoint: Path) -> None:
    manifest = make_manifest(tmp_path, broken=False)
    out = tmp_path / "out"
    run_batch(config(manifest, out, tiny_checkpoint))
    (out / "ward1" / "changes.gpkg").write_bytes(b"half-written")  # a corrupted output
    statuses = {r.area_id: r.status for r in run_batch(config(manifest, out, tiny_checkpoint, resume=True)).records}
    assert statuses == {"ward0": "skipped", "ward1": "done"}
    assert is_done(out / "ward1", read_manifest(manifest)[1], config(manifest, out, tiny_checkpoint))


def test_resume_redoes_jobs_whose_inputs_settings_or_model_changed(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The completion record stores what the job depended on; --resume compares (the outputs of a job
    skipped after its AFTER was replaced would be stale)."""
    import torch

    from changewatch.models.changenet import build_network, load_spec, save_checkpoint

    manifest = make_manifest(tmp_path, broken=False)
    x, y = ORIGIN
    permits = gpd.GeoDataFrame({"permit_id": ["P1"], "issued": ["2020-01-01"], "expires": [None]},
                               geometry=[box(x, y - 300, x + 300, y)], crs=UTM48N)
    permits.to_file(tmp_path / "permits.gpkg")
    layers = CrosscheckInputs(permits=str(tmp_path / "permits.gpkg"))
    out = tmp_path / "out"
    run_batch(config(manifest, out, tiny_checkpoint, layers=layers))

    def resume(**kw: object) -> dict[str, tuple[str, str]]:
        result = run_batch(config(manifest, out, tiny_checkpoint, layers=layers, resume=True, **kw))
        return {r.area_id: (r.status, r.resume_reason) for r in result.records}

    up_to_date = {"ward0": ("skipped", ""), "ward1": ("skipped", "")}
    assert resume() == up_to_date
    # ward1's AFTER is replaced by another scene of the same size
    write_raster(tmp_path / "a1.tif", plant_square(textured_scene(96, 96, seed=11), 60, 60, 12), UTM48N,
                 utm_transform(origin=(ORIGIN[0] + 5000, ORIGIN[1])))
    statuses = resume()
    assert statuses["ward0"] == ("skipped", "") and statuses["ward1"][0] == "done"
    assert statuses["ward1"][1].startswith("inputs changed") and "a1.tif" in statuses["ward1"][1]
    assert resume() == up_to_date  # the redone job's record is up to date
    # a sidecar GDAL reads with the scene appears beside ward0's BEFORE
    (tmp_path / "b0.tif.aux.xml").write_text("<PAMDataset></PAMDataset>\n")
    assert resume()["ward0"] == ("done", f"inputs changed: {tmp_path / 'b0.tif.aux.xml'}")
    # the permit layer every job reads is edited
    permits.assign(expires="2021-01-01").to_file(tmp_path / "permits.gpkg")
    assert {a: s[1].split(":")[0] for a, s in resume().items()} == {a: "inputs changed" for a in ("ward0", "ward1")}
    # a setting that changes results, then one that does not
    assert resume(min_area_m2=100.0) == {a: ("done", "settings changed: min_area_m2") for a in ("ward0", "ward1")}
    assert resume(min_area_m2=100.0, inference=InferenceConfig(batch_size=3)) == up_to_date
    # the model is retrained in place
    torch.manual_seed(7)
    spec = load_spec(tiny_checkpoint)
    save_checkpoint(build_network(spec), spec, tiny_checkpoint)
    assert resume(min_area_m2=100.0) == {a: ("done", f"model changed: {tiny_checkpoint.resolve()}")
                                         for a in ("ward0", "ward1")}
    # a record written before dependencies were recorded
    record = json.loads((out / "ward0" / "_done.json").read_text())
    del record["depends"]
    (out / "ward0" / "_done.json").write_text(json.dumps(record))
    assert resume(min_area_m2=100.0)["ward0"] == ("done", "its completion record is unreadable or from an older "
                                                          "changewatch")


@pytest.mark.slow
def test_sigkill_then_resume_equals_clean_run(tmp_path: Path, tiny_checkpoint: Path) -> None:
    manifest = make_manifest(tmp_path, n_good=4, broken=False, size=384)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_batch(config(manifest, clean, tiny_checkpoint))
    cmd = [sys.executable, str(ROOT / "cli.py"), "batch", str(manifest), "-o", str(killed), "--model",
           str(tiny_checkpoint), "--threshold", "0.5", "--scheduler", "serial", "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "ward0" / "_done.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # land somewhere inside a later job
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "batch_summary.json").exists(), "the run finished before it could be killed"
    resumed = CliRunner().invoke(cli, cmd[2:] + ["--resume"], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert "[skipped] ward0" in resumed.output
    areas = [f"ward{i}" for i in range(4)]
    assert_same_outputs(clean, killed, areas, exact=True)
    assert not list(killed.glob("**/.*staging*")) and not list(killed.glob(".batch-tmp-*"))


@pytest.mark.slow
@pytest.mark.parametrize("split_mpx", [64.0, 0.001], ids=["job-per-task", "tiles-as-tasks"])
def test_local_cluster_matches_serial(tmp_path: Path, tiny_checkpoint: Path, split_mpx: float) -> None:
    manifest = make_manifest(tmp_path, size=160)
    inference = InferenceConfig(tile=64, overlap=16, batch_size=2)  # 9 tiles a scene: 5 tasks of ≤ 2 when split
    serial, dask = tmp_path / "serial", tmp_path / "dask"
    a = run_batch(config(manifest, serial, tiny_checkpoint, inference=inference))
    b = run_batch(config(manifest, dask, tiny_checkpoint, scheduler="local", workers=2, split_mpx=split_mpx,
                         tiles_per_task=2, inference=inference))
    assert [(r.area_id, r.status, r.changes, r.flagged) for r in a.records] == \
        [(r.area_id, r.status, r.changes, r.flagged) for r in b.records]
    assert [r.tile_tasks for r in b.records] == ([5, 5, 0] if split_mpx < 1 else [0, 0, 0])
    assert_same_outputs(serial, dask, ["ward0", "ward1"], exact=False)  # thread counts differ


def test_combined_parcels_over_overlapping_areas(tmp_path: Path, tiny_checkpoint: Path) -> None:
    # two areas over the same ground share one parcel layer: each parcel appears once in the combined table
    before = textured_scene(96, 96, seed=5)
    after = plant_square(plant_square(before, 20, 20, 14), 60, 50, 16)
    write_raster(tmp_path / "b.tif", before, UTM48N, utm_transform())
    write_raster(tmp_path / "a.tif", after, UTM48N, utm_transform())
    x, y = ORIGIN
    parcels = gpd.GeoDataFrame({"parcel_id": ["W", "E"], "ward": ["1", "2"]},
                               geometry=[box(x, y - 960, x + 480, y), box(x + 480, y - 960, x + 960, y)], crs=UTM48N)
    parcels.to_file(tmp_path / "parcels.gpkg")
    (tmp_path / "jobs.csv").write_text("area_id,before,after\nnorth,b.tif,a.tif\nsouth,b.tif,a.tif\n")
    out = tmp_path / "out"
    run_batch(config(tmp_path / "jobs.csv", out, tiny_checkpoint,
                     layers=CrosscheckInputs(parcels=str(tmp_path / "parcels.gpkg"))))
    per_area = gpd.read_file(out / "north" / "flagged.gpkg", layer="flagged_parcels")
    combined = gpd.read_file(out / "flagged.gpkg", layer="flagged_parcels")
    assert len(per_area) >= 1 and len(combined) == len(per_area) and combined.crs.to_epsg() == 4326
    merged = combined.set_index("parcel_id")
    for _, row in per_area.iterrows():
        assert merged.loc[row["parcel_id"], "n_flags"] == 2 * row["n_flags"]
        assert merged.loc[row["parcel_id"], "flagged_area_m2"] == pytest.approx(2 * row["flagged_area_m2"])
        assert merged.loc[row["parcel_id"], "areas"] == "north,south"
        assert merged.loc[row["parcel_id"], "worst_reason"] == row["worst_reason"]


def test_tile_counts_are_on_the_grid_the_model_sees(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """1 m imagery under a 10 m model is compared on a 10 m grid (--gsd auto): the progress bar's
    tile count follows it; a job that cannot be opened counts 0 tiles."""
    scene = textured_scene(600, 600, seed=5)
    write_raster(tmp_path / "b.tif", scene, UTM48N, utm_transform(pixel_m=1.0))
    write_raster(tmp_path / "a.tif", scene, UTM48N, utm_transform(pixel_m=1.0))
    (tmp_path / "jobs.csv").write_text("area_id,before,after\nvhr,b.tif,a.tif\nbroken,b.tif,missing.tif\n")
    jobs = read_manifest(tmp_path / "jobs.csv")
    native = tile_counts(jobs, config(tmp_path / "jobs.csv", tmp_path / "out", tiny_checkpoint, gsd="native"))
    auto = tile_counts(jobs, config(tmp_path / "jobs.csv", tmp_path / "out", tiny_checkpoint))
    assert native == {"vhr": 9, "broken": 0} and auto == {"vhr": 1, "broken": 0}
