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
from changewatch.models.spec import DEFAULT_MODEL
from changewatch.rs.align import AlignedPair
from changewatch.rs.config import EvalOptions
from changewatch.rs.datasets import detect_encoding, find_pairs, read_whole
from changewatch.rs.errors import IncompatibleScenesError, InputFileError
from changewatch.rs.evaluate import evaluate
from changewatch.rs.infer import ChangeModel
from tests.data import (
    UTM48N,
    BrightnessChangeNet,
    make_levir,
    make_vector_site,
    pointwise_spec,
    textured_scene,
    write_png,
)

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


def test_evaluate_on_plain_png_pairs(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "levir", SQUARES)
    report = evaluate(find_pairs(root), pointwise(3), EvalOptions(threshold=0.5, object_min_m2=50.0))
    assert report.pooled.f1 == pytest.approx(1.0) and report.pooled.tp == 12 * 12 + 8 * 8 + 10 * 10
    assert (report.objects.total, report.objects.hit) == (3, 3)  # 1 m pixels: every square ≥ 50 m²
    assert (report.objects.predicted, report.objects.matched) == (3, 3)  # areas of plain pixels: --pixel-size-m
    small = evaluate(find_pairs(root), pointwise(3), EvalOptions(0.5, 100.0, 1.0))
    assert small.objects.total == 2  # the 8×8 square is under 100 m²
    assert (small.objects.predicted, small.objects.matched) == (2, 2)  # and so is its prediction
    half = evaluate(find_pairs(root), pointwise(3), EvalOptions(threshold=0.5, object_min_m2=20.0,
                                                                      pixel_size_m=0.5, gsd="native"))
    assert (half.objects.total, half.objects.predicted, half.objects.matched) == (2, 2, 2)  # 8×8 px = 16 m²


def test_plain_images_of_a_given_gsd_follow_the_gsd_rules(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "levir", SQUARES, size=128)
    with find_pairs(root)[0].open(pixel_size_m=0.5) as pair:  # placed on a local metric grid of 0.5 m pixels
        assert pair.grid.crs is not None and pair.grid.pixel_size_m() == pytest.approx(0.5)
        assert (pair.grid.width, pair.grid.height) == (128, 128)
    # a 10 m model compares 0.5 m imagery at 10 m: 128 px of 0.5 m become 7 px, too small to judge
    s2 = ["--model", str(DEFAULT_MODEL.with_name("changewatch-rgb.json"))]
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(root), "--pixel-size-m", "0.5", "-q", *s2])
    assert result.exit_code == 4 and "too small" in result.output
    native = CliRunner().invoke(cli, ["evaluate", "--data", str(root), "--pixel-size-m", "0.5", "--gsd", "native",
                                      "-q", *s2])
    assert native.exit_code == 0, native.output
    # without --model, 0.5 m RGB imagery gets the very-high-resolution model, at its own pixels
    vhr = CliRunner().invoke(cli, ["evaluate", "--data", str(root), "--pixel-size-m", "0.5", "-q"])
    assert vhr.exit_code == 0 and "changewatch-vhr-rgb (3 bands per date at 0.5 m GSD, within" in vhr.output


def test_evaluate_cli_json_on_levir_pngs(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "levir", SQUARES, size=128)  # the shipped model's minimum scene side
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(root), "--json", "-q", "--object-min-m2", "20",
                                      "--pixel-size-m", "0.5", "--gsd", "native"],
                                catch_exceptions=False)  # the shipped RGB model at the images' own pixels
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"precision", "recall", "f1", "iou", "object_recall", "sites"} <= set(report)
    assert set(report["sites"]) == set(SQUARES)
    # 0.5 m pixels: 12×12 px = 36 m² and 10×10 px = 25 m² count, 8×8 px = 16 m² is under 20 m²
    assert report["objects"] == 2 and report["sites"]["tile_0001"]["objects"] == 1


def test_object_recall_counts_each_polygon_of_vector_labels(tmp_path: Path) -> None:
    make_vector_site(tmp_path / "vec", "district", 1, ((10, 10, 12), (40, 30, 8)), layer_crs="EPSG:32648")
    report = evaluate(find_pairs(tmp_path / "vec"), pointwise(4), EvalOptions(threshold=0.5))
    assert (report.objects.total, report.objects.hit) == (2, 2)  # 10 m pixels: both squares ≥ 200 m², both hit


def as_jpeg(png: Path, quality: int = 75) -> Path:
    """A lossy copy of a label PNG, as cities save labels from image editors (rasterio's JPEG driver)."""
    import rasterio.shutil

    jpeg = png.with_suffix(".jpg")
    rasterio.shutil.copy(png, jpeg, driver="JPEG", QUALITY=str(quality))
    png.unlink()
    return jpeg


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_lossy_and_colour_labels_read_as_their_white_change(tmp_path: Path) -> None:
    reference = evaluate(find_pairs(make_levir(tmp_path / "png", SQUARES)), pointwise(3), EvalOptions(threshold=0.5))
    jpeg_root = make_levir(tmp_path / "jpeg", SQUARES)
    noisy = [as_jpeg(p) for p in sorted((jpeg_root / "label").iterdir())]
    with open_plain(noisy[0]) as ds:  # JPEG noise: the 0/255 label now holds other values, 1 among them
        values = np.unique(ds.read(1))
    assert len(values) > 2 and 1 in values
    pairs = find_pairs(jpeg_root)
    assert [p.encoding for p in pairs] == [">=128", ">=128", "0/255"]  # tile_0003 has no change: still exact 0
    jpeg = evaluate(pairs, pointwise(3), EvalOptions(threshold=0.5))
    assert jpeg.pooled.f1 == pytest.approx(reference.pooled.f1, abs=0.02)  # was 0.0: read as 0/1 labels

    rgb_root = make_levir(tmp_path / "rgb", SQUARES)
    for k, label in enumerate(sorted((rgb_root / "label").iterdir())):  # white, or a colour, = change
        with open_plain(label) as ds:
            grey = ds.read(1)
        write_png(label, np.stack([grey] * 3) if k == 0 else np.stack([np.zeros_like(grey)] * 2 + [grey]))
    rgb = evaluate(find_pairs(rgb_root), pointwise(3), EvalOptions(threshold=0.5))
    assert (rgb.pooled.tp, rgb.pooled.fp, rgb.pooled.fn) == (reference.pooled.tp, reference.pooled.fp,
                                                             reference.pooled.fn)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_label_encodings_per_file(tmp_path: Path) -> None:
    from changewatch.rs.datasets import BINARISED, label_encodings

    write_png(tmp_path / "exact.png", np.where(expected_labels(((5, 5, 9),)) == 1, 255, 0).astype(np.uint8))
    soft = np.stack([np.where(expected_labels(((5, 5, 9),)) == 1, 255, 0)] * 3).astype(np.uint8)
    soft[:, 4, 4:15] = 128  # an anti-aliased edge in a colour label
    write_png(tmp_path / "soft.png", soft)
    grey_soft = soft[:1].copy()
    write_png(tmp_path / "grey_soft.png", grey_soft)
    assert label_encodings([tmp_path / "exact.png", tmp_path / "soft.png"]) == ["0/255", BINARISED]
    with pytest.raises(InputFileError, match="expected 0/1"):  # a lossless single-band label must be exact
        label_encodings([tmp_path / "grey_soft.png"])


def open_plain(path: Path):  # noqa: ANN201
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)
