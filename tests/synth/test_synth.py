"""rs.synth and cli.py synth on small seeded sources (tests/synth_data.py); one check on the real
../shared/data/vhr-buildings, skipped where it is absent."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from changewatch.cli import cli
from changewatch.rs.datasets import find_pairs
from changewatch.rs.synth.config import NuisanceConfig, SynthConfig, parse_gsd
from changewatch.rs.synth.edit import cut_donors, grow_px, paste_buildings, remove_buildings
from changewatch.rs.synth.generate import generate, make_pair, usable
from changewatch.rs.synth.mosaic import find_areas, real_nodata, tile_bounds
from changewatch.rs.synth.nuisance import DateContext, misregister
from changewatch.rs.synth.shadow import DEFAULT_SUN, Sun, sweep
from changewatch.rs.synth.sources import cut_chip, load_sources
from tests.synth_data import SENTINEL, make_source_tree

SHARED_VHR = Path(__file__).resolve().parents[3] / "shared" / "data" / "vhr-buildings"
QUIET = NuisanceConfig(**{name: 0.0 for name in ("season", "colour", "haze", "shadows", "misregister", "blur",
                                                  "resample", "jpeg", "ground", "noise")})


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_source_tree(tmp_path_factory.mktemp("vhr"))


@pytest.fixture(scope="module")
def sources(source_dir: Path) -> list:
    return load_sources(source_dir, 0.5)


def config(source_dir: Path, out: Path, **kw: object) -> SynthConfig:
    return SynthConfig(str(source_dir), str(out), **{"chip": 64, "pairs_per_area": 4, "val_area": "kampala", **kw})


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_tile_bounds_follow_the_slippy_map_formula() -> None:
    half = math.pi * 6378137
    assert tile_bounds(0, 0, 0) == pytest.approx((-half, -half, half, half))
    assert tile_bounds(1, 0, 1) == pytest.approx((0, 0, half, half))
    left, bottom, right, top = tile_bounds(1277168, 1083840, 21)
    assert right - left == pytest.approx(2 * half / 2 ** 21) and top - bottom == pytest.approx(right - left)


def test_sources_on_a_utm_grid_with_instances(source_dir: Path, sources: list) -> None:
    assert [(a.area, a.kind) for a in find_areas(source_dir)] == [
        ("zanzibar", "xyz"), ("kampala", "xyz"), ("testtown", "geotiff")]  # predict/ (no osm/) ignored
    assert [s.name for s in sources] == ["zanzibar-1", "kampala-1", "testtown-1"]
    assert [s.crs.to_epsg() for s in sources] == [32737, 32636, 32645]
    for s in sources:
        assert s.gsd_m == 0.5 and s.transform.a == 0.5 and s.transform.e == -0.5
        assert s.instances.dtype == np.uint16 and s.instances.max() == len(s.footprints) == 14
        assert s.valid.mean() > 0.9
        roofs = s.instances > 0
        assert not np.all(s.image[roofs] == SENTINEL, axis=-1).any()  # the coarser zoom is never read
        # the painted roofs are uniform: the footprints landed on them, not on the textured ground
        assert np.median([s.image[s.instances == i].std(axis=0).mean() for i in range(1, 15)]) < 12
        assert np.median(s.image[~roofs & s.valid].std(axis=0)) > 12


def test_enclosed_black_pixels_are_data_but_edge_gaps_are_not() -> None:
    missing = np.zeros((20, 20), bool)
    missing[5:7, 5:7] = True  # a black speck inside the imagery
    missing[:, 18:] = True  # outside the imagery, touching the edge
    assert (real_nodata(missing, 10) == (np.arange(20) >= 18)[None, :].repeat(20, 0)).all()
    big = np.zeros((20, 20), bool)
    big[4:16, 4:16] = True
    assert real_nodata(big, 10).sum() == 144


def test_sweep_casts_along_the_azimuth() -> None:
    mask = np.zeros((21, 21), bool)
    mask[10, 10] = True
    east = np.argwhere(sweep(mask, 90, 4))
    assert set(east[:, 0]) == {10} and set(east[:, 1]) == set(range(10, 15))
    south = np.argwhere(sweep(mask, 180, 3))
    assert set(south[:, 1]) == {10} and set(south[:, 0]) == set(range(10, 14))


def test_removed_buildings_become_ground_and_nothing_else_changes(sources: list) -> None:
    source = sources[0]
    chip = cut_chip(source, 0, 0, 200, 200)
    ids = np.unique(chip.instances[20:180, 20:180])[1:4]
    out, removed = remove_buildings(chip.image, chip.instances, chip.valid, ids, DEFAULT_SUN, chip.gsd_m,
                                    np.random.default_rng(0))
    assert len(removed) >= 2 and set(removed) <= set(ids)
    changed = np.any(out != chip.image, axis=-1)
    footprints = np.isin(chip.instances, removed)
    assert changed[footprints].mean() > 0.9  # the roofs were repainted
    others = (chip.instances > 0) & ~footprints
    assert not changed[others].any()  # other buildings untouched
    reach = math.ceil(1.3 * DEFAULT_SUN.length_m / chip.gsd_m) + grow_px(chip.gsd_m) + 1  # shadow, walls, feather
    near = cv2.dilate(footprints.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)).astype(bool)
    assert not changed[~near].any()
    ground = chip.image[(chip.instances == 0) & chip.valid].std(axis=0).mean()
    assert out[footprints].std(axis=0).mean() > 0.5 * ground  # textured ground, not a flat blob


def test_pasted_buildings_bring_their_shadow_and_label(sources: list) -> None:
    donors = cut_donors(sources[2].image, sources[2].instances, sources[2].valid, 0.5, "testtown-1", 8.0)
    assert len(donors) == 14
    chip = cut_chip(sources[0], 0, 0, 200, 200)
    occupied = (chip.instances > 0) | ~chip.valid
    sun = Sun(90.0, 2.0, True)
    out, pasted, n = paste_buildings(chip.image, occupied.copy(), donors[:3], sun, 0.5, np.random.default_rng(1), 4)
    assert n == 3 and not (pasted & occupied).any()
    assert pasted.sum() == pytest.approx(sum(int(d.mask.sum()) for d in donors[:3]), abs=3)
    east = sweep(pasted, 90, 3) & ~pasted
    lum = lambda im: im.astype(float).mean(axis=-1)  # noqa: E731
    assert (lum(out) - lum(chip.image))[east].mean() < -15  # the ground east of them is in shadow


def test_labels_are_exactly_the_removed_and_pasted_footprints(source_dir: Path, sources: list, tmp_path: Path) -> None:
    cfg = config(source_dir, tmp_path, nuisance=QUIET, nuisance_only=0.0)
    train = [s for s in usable(sources, cfg) if s.area == "zanzibar"]
    donors = cut_donors(sources[2].image, sources[2].instances, sources[2].valid, 0.5, "testtown-1", 8.0)
    kinds = set()
    for i, weights in enumerate([(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)] * 3):
        pair = make_pair(train, donors, replace(cfg, kind_weights=weights), np.random.default_rng(i), f"p{i}", "train")
        kinds.add(pair.record.kind)
        expected = np.isin(pair.instances, pair.removed) | pair.pasted
        assert ((pair.label == 255) == expected).all() and set(np.unique(pair.label)) <= {0, 255}
        assert not (pair.pasted & (pair.instances > 0)).any()  # pasted on free ground
        # the buildings of each date: change is where exactly one date has a building, and every footprint
        # of the chip (and every pasted one) stands on at least one date
        before, after = pair.building_before == 255, pair.building_after == 255
        assert ((before ^ after) == (pair.label == 255)).all()
        assert ((before | after) == ((pair.instances > 0) | pair.pasted)).all()
        differs = np.any(pair.before != pair.after, axis=-1)
        assert differs[pair.label == 255].mean() > 0.8  # the labelled change is visible
        if pair.record.kind == "appear":
            assert (pair.before[pair.label == 255] != pair.after[pair.label == 255]).any()
            untouched = ~cv2.dilate(pair.label, np.ones((21, 21), np.uint8)).astype(bool)
            assert not differs[untouched].any()  # without nuisance nothing else changes
    assert {"appear", "disappear", "paste", "mix"} <= kinds


def test_nuisance_only_pairs_have_empty_labels(source_dir: Path, tmp_path: Path) -> None:
    result = generate(config(source_dir, tmp_path / "out", nuisance_only=1.0), progress=False)
    assert {r.kind for r in result.pairs} == {"none"}
    for label in (tmp_path / "out").rglob("label/*.png"):
        assert not np.asarray(Image.open(label)).any()
    a, b = (np.asarray(Image.open(tmp_path / "out" / "val" / d / "kampala-0000.png")) for d in "AB")
    assert (a != b).any()  # the dates still differ


def test_same_seed_same_bytes_in_the_levir_layout(source_dir: Path, tmp_path: Path) -> None:
    first = generate(config(source_dir, tmp_path / "one"), progress=False)
    generate(config(source_dir, tmp_path / "two"), progress=False)
    generate(config(source_dir, tmp_path / "three", seed=1), progress=False)
    one, two, three = (files(tmp_path / d) for d in ("one", "two", "three"))
    assert one == two and one.keys() == three.keys() and one != three
    manifests = [json.loads((tmp_path / d / "synth.json").read_text()) for d in ("one", "two")]
    for m in manifests:
        del m["config"]["out"]
    assert manifests[0] == manifests[1]
    m = manifests[0]
    assert m["val_area"] == "kampala" and m["areas"]["train"] == ["testtown", "zanzibar"]
    assert "CC BY 4.0" in m["attribution"] and "ODbL 1.0" in m["attribution"]
    assert m["counts"]["train"]["pairs"] == 8 and m["counts"]["val"]["pairs"] == 4
    assert m["gsd_m"]["requested"] == [0.5, 0.5] and len(m["sources"]) == 3
    pairs = find_pairs(tmp_path / "one" / "train")
    assert len(pairs) == 8 and {p.encoding for p in pairs} == {"0/255"} and all(p.buildings for p in pairs)
    with Image.open(pairs[0].before) as im:
        assert im.mode == "RGB" and im.size == (64, 64)
    assert len(first.pairs) == 12 and not list(tmp_path.glob(".*staging*"))


def test_a_gsd_range_draws_a_gsd_per_pair(source_dir: Path, tmp_path: Path) -> None:
    result = generate(config(source_dir, tmp_path / "multi", gsd_m=(0.5, 1.0), pairs_per_area=6), progress=False)
    gsds = [r.gsd_m for r in result.pairs]
    assert min(gsds) >= 0.5 and max(gsds) <= 1.0 and len(set(gsds)) > 6
    assert parse_gsd("0.3,1.0") == (0.3, 1.0) and parse_gsd("0.5") == (0.5, 0.5)
    with pytest.raises(ValueError):
        parse_gsd("1,0.3")


def test_misregistration_stays_within_two_pixels(sources: list) -> None:
    image = cut_chip(sources[0], 0, 0, 128, 128).image.astype(np.float32)
    ctx = DateContext(np.zeros((128, 128), bool), DEFAULT_SUN, 0.5)
    for seed in range(5):
        moved = misregister(image, ctx, NuisanceConfig(), np.random.default_rng(seed))
        (dx, dy), _ = cv2.phaseCorrelate(image.mean(axis=-1), moved.mean(axis=-1))
        assert 0 < math.hypot(dx, dy) <= 2 * math.sqrt(2) + 0.2


def test_cli_writes_a_set(source_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["synth", "--source", str(source_dir), "-o", str(tmp_path / "set"), "--chip",
                                      "64", "--pairs", "2", "--val-area", "testtown", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "wrote 4 train and 2 val pairs" in result.output
    assert len(find_pairs(tmp_path / "set" / "val")) == 2


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt tile", "unknown val area"])
def test_cli_bad_source_is_one_error_line(source_dir: Path, tmp_path: Path, case: str) -> None:
    source = {"missing": tmp_path / "nope", "empty": tmp_path / "empty"}.get(case, source_dir)
    extra = ["--val-area", "atlantis"] if case == "unknown val area" else []
    (tmp_path / "empty").mkdir()
    if case == "corrupt tile":
        source = tmp_path / "corrupt"
        make_source_tree(source)
        next(source.rglob("OAM-*-19.png")).write_bytes(b"not a png")
    result = CliRunner().invoke(cli, ["synth", "--source", str(source), "-o", str(tmp_path / "out"), "--chip", "64",
                                      "-q", *extra])
    assert result.exit_code == 3
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert not (tmp_path / "out").exists()


def test_the_shared_vhr_buildings_areas() -> None:
    if not SHARED_VHR.is_dir():
        pytest.skip("../shared/data/vhr-buildings is not present")
    areas = find_areas(SHARED_VHR)
    assert sorted({a.area for a in areas}) == ["banepa", "catanduanes", "kampala", "nairobi", "zanzibar"]
    assert sum(len(a.images) for a in areas if a.kind == "xyz") == 1869 and len(areas) == 6
    kampala = next(a for a in areas if a.area == "kampala")
    from changewatch.rs.synth.mosaic import tile_blocks, tile_index, xyz_mosaic

    zoom, tiles = tile_index(kampala.images)
    block = min(tile_blocks(tiles), key=len)  # the single zoom-19 tile, 4×4 tiles at zoom 21
    assert zoom == 21 and len(block) == 16
    mosaic = xyz_mosaic({t: tiles[t] for t in block}, zoom)
    assert mosaic.image.shape == (1024, 1024, 3) and mosaic.valid.mean() > 0.9


def test_jpeg_images_keep_labels_lossless(source_dir: Path, tmp_path: Path) -> None:
    generate(config(source_dir, tmp_path / "jpeg", image_quality=90), progress=False)
    pairs = find_pairs(tmp_path / "jpeg" / "train")
    assert {p.before.suffix for p in pairs} == {p.after.suffix for p in pairs} == {".jpg"}
    assert {p.label.suffix for p in pairs} == {".png"} and {p.encoding for p in pairs} == {"0/255"}
    assert all(p.buildings and p.buildings[0].suffix == ".png" for p in pairs)
