"""rs.datasets: the three labelled layouts read correctly; label encodings detected; object recall."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from rasterio.windows import Window

from changewatch.cli import cli
from changewatch.rs.align import AlignedPair
from changewatch.rs.datasets import detect_encoding, find_pairs, read_whole
from changewatch.rs.errors import IncompatibleScenesError, InputFileError
from changewatch.rs.evaluate import EvalOptions, evaluate, object_counts
from changewatch.rs.infer import ChangeModel
from tests.data import (UTM48N, BrightnessChangeNet, make_levir, make_vector_site, pointwise_spec, textured_scene,
                        write_png)

SQUARES = {"tile_0001": ((10, 10, 12), (40, 30, 8)), "tile_0002": ((20, 40, 10),), "tile_0003": ()}


def pointwise(bands: int) -> ChangeModel:
    return ChangeModel(BrightnessChangeNet(bands), pointwise_spec(bands), torch.device("cpu"))


def expected_labels(squares: tuple[tuple[int, int, int], ...], size: int = 64) -> np.ndarray:
    label = np.zeros((size, size), np.uint8)
    for row, col, side in squares:
        label[row:row + side, col:col + side] = 1
    return label


def test_sites_layout(sites: Path) -> None:
    pairs = find_pairs(sites)
    assert [p.name for p in pairs] == ["alpha", "beta", "gamma"] and {p.encoding for p in pairs} == {"0/1"}
    with pairs[0].open() as pair:
        labels = read_whole(pair, pairs[0].labels(pair))
    np.testing.assert_array_equal(labels, expected_labels(((10, 10, 12), (40, 30, 8))))
    assert [p.name for p in find_pairs(sites, ["gamma", "alpha"])] == ["gamma", "alpha"]
    with pytest.raises(InputFileError, match="no labelled pair named delta"):
        find_pairs(sites, ["delta"])
    with pytest.raises(InputFileError, match="no labelled pairs"):
        find_pairs(sites / "alpha")


@pytest.mark.parametrize("change_value,encoding", [(255, "0/255"), (1, "0/1")])
def test_levir_layout_of_plain_pngs(tmp_path: Path, change_value: int, encoding: str) -> None:
    root = make_levir(tmp_path / "levir", SQUARES, change_value=change_value)
    pairs = find_pairs(root)
    assert [p.name for p in pairs] == list(SQUARES) and {p.encoding for p in pairs} == {encoding}
    for p in pairs:
        with p.open() as pair:
            assert pair.plain and pair.grid.crs is None and pair.band_count == 3
            labels = read_whole(pair, p.labels(pair))
            w = pair.read(Window(0, 0, 64, 64))
        np.testing.assert_array_equal(labels, expected_labels(SQUARES[p.name]))
        assert w.valid.all()


def test_label_encoding_detection(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", np.zeros((1, 8, 8), np.uint8))
    write_png(tmp_path / "b.png", np.full((1, 8, 8), 255, np.uint8))
    write_png(tmp_path / "c.png", np.full((1, 8, 8), 7, np.uint8))
    assert detect_encoding([tmp_path / "a.png", tmp_path / "b.png"]) == "0/255"
    assert detect_encoding([tmp_path / "a.png"]) == "0/255"  # all zero: either reading gives no change
    with pytest.raises(InputFileError, match="expected 0/1"):
        detect_encoding([tmp_path / "c.png"])


def test_plain_images_of_different_sizes_are_refused(tmp_path: Path) -> None:
    a = write_png(tmp_path / "a.png", (textured_scene(32, 32, 3) // 16).astype(np.uint8))
    b = write_png(tmp_path / "b.png", (textured_scene(32, 40, 3) // 16).astype(np.uint8))
    with pytest.raises(IncompatibleScenesError, match="different sizes"):
        AlignedPair(a, b)


@pytest.mark.parametrize("layer_crs", ["EPSG:4326", "EPSG:32648"])
def test_vector_label_layout_is_rasterised_on_the_grid(tmp_path: Path, layer_crs: str) -> None:
    squares = ((10, 10, 12), (40, 30, 8))
    make_vector_site(tmp_path / "vec", "district", 1, squares, layer_crs=layer_crs)
    (pair_def,) = find_pairs(tmp_path / "vec")
    assert pair_def.encoding == "vector" and pair_def.label.name == "changes.gpkg"
    with pair_def.open() as pair:
        assert pair.grid.crs == UTM48N
        np.testing.assert_array_equal(read_whole(pair, pair_def.labels(pair)), expected_labels(squares))


def test_object_counts_by_hand() -> None:
    label = np.zeros((6, 6), np.uint8)
    objects = np.zeros((6, 6), np.int32)
    objects[0:2, 0:2] = 1  # 4 px, hit
    objects[4:6, 4:6] = 2  # 4 px, missed
    objects[0, 5] = 3      # 1 px: below the minimum size
    label[objects > 0] = 1
    prob = np.zeros((6, 6), np.float32)
    prob[1, 1] = 0.9
    prob[0, 5] = 0.9
    assert object_counts(label, objects, prob, 0.5, min_pixels=2) == object_counts(label, objects, prob, 0.5, 4)
    counts = object_counts(label, objects, prob, 0.5, min_pixels=2)
    assert (counts.total, counts.hit, counts.recall) == (2, 1, 0.5)
    assert object_counts(label, objects, prob, 0.5, min_pixels=1).total == 3


def test_evaluate_on_plain_png_pairs(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "levir", SQUARES)
    report = evaluate(find_pairs(root), pointwise(3), threshold=0.5, options=EvalOptions(object_min_m2=50.0))
    assert report.pooled.f1 == pytest.approx(1.0) and report.pooled.tp == 12 * 12 + 8 * 8 + 10 * 10
    assert (report.objects.total, report.objects.hit) == (3, 3)  # 1 m pixels: every square ≥ 50 m²
    small = evaluate(find_pairs(root), pointwise(3), threshold=0.5, options=EvalOptions(100.0, 100.0, 1.0))
    assert small.objects.total == 2  # the 8×8 square is under 100 m²


def test_evaluate_cli_json_on_levir_pngs(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "levir", SQUARES, size=128)  # the shipped model's minimum scene side
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(root), "--json", "-q", "--object-min-m2", "20",
                                      "--pixel-size-m", "0.5"], catch_exceptions=False)  # the shipped RGB model
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"precision", "recall", "f1", "iou", "object_recall", "sites"} <= set(report)
    assert set(report["sites"]) == set(SQUARES)
    # 0.5 m pixels: 12×12 px = 36 m² and 10×10 px = 25 m² count, 8×8 px = 16 m² is under 20 m²
    assert report["objects"] == 2 and report["sites"]["tile_0001"]["objects"] == 1


def test_object_recall_counts_each_polygon_of_vector_labels(tmp_path: Path) -> None:
    make_vector_site(tmp_path / "vec", "district", 1, ((10, 10, 12), (40, 30, 8)), layer_crs="EPSG:32648")
    report = evaluate(find_pairs(tmp_path / "vec"), pointwise(4), threshold=0.5)
    assert (report.objects.total, report.objects.hit) == (2, 2)  # 10 m pixels: both squares ≥ 200 m², both hit
