"""rs.infer: tiled inference blends exactly and without seams, masks invalid pixels, writes a georeferenced COG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from changewatch.models.changenet import DEFAULT_MODEL
from changewatch.rs.align import AlignedPair
from changewatch.rs.errors import ModelError
from changewatch.rs.infer import (
    ChangeModel,
    InferenceConfig,
    model_input,
    predict_pair,
    read_ahead,
    resolve_device,
    tiling,
)
from changewatch.rs.io.raster import PROB_MAX_ERROR, write_probability
from changewatch.rs.normalize import scene_stats
from tests.data import (
    UTM48N,
    BrightnessChangeNet,
    plant_square,
    pointwise_spec,
    textured_scene,
    utm_transform,
    write_raster,
)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """The shared 96×96 pair (a 10×10 bright square at rows 40–49, cols 30–39) with one count of sensor noise on
    AFTER, as two real acquisitions have: no tile is identical on both dates, so every tile is the network's
    answer (identical tiles have no change by rule: test_tiles_whose_dates_are_identical_have_no_change)."""
    before = textured_scene(96, 96, seed=1)
    noise = np.random.default_rng(7).integers(0, 2, before.shape, dtype=before.dtype)
    after = plant_square(before + noise, 40, 30, 10)
    return (write_raster(tmp_path / "before.tif", before, UTM48N, utm_transform()),
            write_raster(tmp_path / "after.tif", after, UTM48N, utm_transform()))


def pointwise_model(bands: int = 4) -> ChangeModel:
    return ChangeModel(BrightnessChangeNet(bands), pointwise_spec(bands), torch.device("cpu"))


def blended(pair: AlignedPair, model: ChangeModel, config: InferenceConfig, folder: Path) -> np.ndarray:
    """The probability raster ``detect`` would write, read back whole."""
    path = write_probability(pair.grid, tiling(pair.grid, config), predict_pair(pair, model, config, False),
                             folder / "prob.tif")
    with rasterio.open(path) as ds:
        return ds.read(1)


def whole_image_probability(pair: AlignedPair, model: ChangeModel) -> np.ndarray:
    w = pair.read(Window(0, 0, pair.grid.width, pair.grid.height))
    x = model_input(w.before, w.after, w.valid, scene_stats(pair))
    return model.predict(x[None])[0, 0]


@pytest.mark.parametrize("tile,overlap,batch", [(32, 8, 3), (40, 0, 1), (256, 64, 8)])
def test_tiled_prediction_equals_whole_image(pair: tuple[Path, Path], tile: int, overlap: int, batch: int,
                                             tmp_path: Path) -> None:
    model = pointwise_model()
    with AlignedPair(*pair) as p:
        expected = whole_image_probability(p, model)
        stitched = blended(p, model, InferenceConfig(tile, overlap, batch), tmp_path)
    np.testing.assert_allclose(stitched, expected, atol=PROB_MAX_ERROR + 1e-6)
    # the planted 10×10 square is the change, the rest is not
    assert (stitched[40:50, 30:40] > 0.5).all()
    assert (np.delete(np.delete(stitched, np.s_[40:50], 0), np.s_[30:40], 1) < 0.5).all()


def test_invalid_pixels_are_nan(tmp_path: Path) -> None:
    scene = textured_scene(48, 48, seed=2)
    after = scene.copy()
    after[:, :, :8] = 0
    write_raster(tmp_path / "b.tif", scene, UTM48N, utm_transform(), nodata=0)
    write_raster(tmp_path / "a.tif", after, UTM48N, utm_transform(), nodata=0)
    with AlignedPair(tmp_path / "b.tif", tmp_path / "a.tif") as p:
        out = blended(p, pointwise_model(), InferenceConfig(32, 8, 2), tmp_path)
    assert np.isnan(out[:, :8]).all() and not np.isnan(out[:, 8:]).any()


class TileBorderNet(torch.nn.Module):
    """A network whose output ignores the image and runs from 0.05 at a tile's left edge to 0.95
    at its right: the worst case of a border effect, which would show as a seam at every tile edge."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.linspace(0.05, 0.95, x.shape[-1])
        return torch.logit(p).expand(x.shape[0], 1, x.shape[2], x.shape[3])


def test_overlaps_are_blended_without_seams(pair: tuple[Path, Path], tmp_path: Path) -> None:
    spec = pointwise_spec()
    model = ChangeModel(TileBorderNet(), spec, torch.device("cpu"))
    with AlignedPair(*pair) as p:
        out = blended(p, model, InferenceConfig(64, 32, 2), tmp_path)  # tiles at columns 0 and 32
    steps = np.abs(np.diff(out, axis=1))
    assert steps.max() < 0.06  # cropping each tile's middle instead would jump by ≈ 0.45 at column 48
    np.testing.assert_allclose(out[:, :16], np.broadcast_to(np.linspace(0.05, 0.95, 64)[:16], (96, 16)),
                               atol=PROB_MAX_ERROR + 1e-6)


def test_write_probability_is_a_georeferenced_cog(pair: tuple[Path, Path], tmp_path: Path) -> None:
    with AlignedPair(*pair) as p:
        config = InferenceConfig(32, 8, 4)
        path = write_probability(p.grid, tiling(p.grid, config), predict_pair(p, pointwise_model(), config, False),
                                 tmp_path / "prob.tif")
        grid, expected = p.grid, whole_image_probability(p, pointwise_model())
    with rasterio.open(path) as ds:
        assert ds.crs == UTM48N and ds.transform == grid.transform and ds.shape == (96, 96)
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert ds.profile["compress"].lower() == "lerc_deflate" and ds.profile["tiled"]
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        stored = ds.read(1)
        assert (stored[40:50, 30:40] > 0.5).all()
        np.testing.assert_allclose(stored, expected, atol=PROB_MAX_ERROR + 1e-6)  # LERC: lossy within the bound
    assert sorted(f.name for f in tmp_path.iterdir()) == ["after.tif", "before.tif", "prob.tif"]  # no scratch left


def test_padding_to_network_multiple() -> None:
    spec = pointwise_spec()
    spec.encoder_depth = 5  # U-Nets need sides divisible by 32
    seen: list[tuple[int, ...]] = []

    class Recorder(BrightnessChangeNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape))
            return super().forward(x)

    model = ChangeModel(Recorder(4), spec, torch.device("cpu"))
    prob = model.predict(np.zeros((2, 8, 45, 70), np.float32))
    assert prob.shape == (2, 1, 45, 70) and seen == [(2, 8, 64, 96)]


def test_band_mismatch_is_a_model_error(pair: tuple[Path, Path]) -> None:
    with AlignedPair(*pair) as p, pytest.raises(ModelError, match="expects 3 bands"):
        next(predict_pair(p, pointwise_model(bands=3), InferenceConfig(), progress=False))


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA"):
            resolve_device("cuda")


class FakePair:
    """Stands in for an AlignedPair in read_ahead: counts re-opened copies and closes."""

    def __init__(self) -> None:
        self.copies: list[FakePair] = []
        self.closed = False

    def reopen(self) -> FakePair:
        copy = FakePair()
        self.copies.append(copy)
        return copy

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("workers", [1, 3])
def test_read_ahead_keeps_order_raises_and_stops(workers: int) -> None:
    pair = FakePair()
    assert list(read_ahead(pair, lambda p, i: i * 2, range(100), workers, depth=4)) == list(range(0, 200, 2))
    assert 1 <= len(pair.copies) <= workers and all(c.closed for c in pair.copies)

    def broken(p: FakePair, i: int) -> int:
        if i == 1:
            raise ValueError("disk on fire")
        return i

    got = read_ahead(FakePair(), broken, range(10), workers, depth=2)
    assert next(got) == 0
    with pytest.raises(ValueError, match="disk on fire"):
        next(got)
    endless = read_ahead(pair, lambda p, i: i, iter(range(10**9)), workers, depth=2)
    assert next(endless) == 0
    endless.close()  # returns: queued reads are cancelled, not left running


def test_more_reader_threads_give_the_same_raster(pair: tuple[Path, Path], tmp_path: Path) -> None:
    with AlignedPair(*pair) as p:
        one = blended(p, pointwise_model(), InferenceConfig(32, 8, 2, readers=1), tmp_path)
        three = blended(p, pointwise_model(), InferenceConfig(32, 8, 2, readers=3), tmp_path)
    np.testing.assert_array_equal(one, three)


def test_tiles_without_valid_pixels_skip_the_network(tmp_path: Path) -> None:
    scene = textured_scene(96, 96, seed=3)
    after = scene.copy()
    after[:, :, :64] = 0  # the left two thirds have no AFTER data
    write_raster(tmp_path / "b.tif", scene, UTM48N, utm_transform(), nodata=0)
    write_raster(tmp_path / "a.tif", after, UTM48N, utm_transform(), nodata=0)
    calls: list[int] = []

    class Counting(BrightnessChangeNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(x.shape[0])
            return super().forward(x)

    model = ChangeModel(Counting(4), pointwise_spec(), torch.device("cpu"))
    with AlignedPair(tmp_path / "b.tif", tmp_path / "a.tif") as p:
        out = blended(p, model, InferenceConfig(32, 0, 1), tmp_path)
    assert sum(calls) == 3 * 1  # 9 tiles of 32², only the right column has AFTER data
    assert np.isnan(out[:, :64]).all() and not np.isnan(out[:, 64:]).any()


def test_amp_only_on_cuda() -> None:
    model = ChangeModel(BrightnessChangeNet(4), pointwise_spec(), torch.device("cpu"), amp=True)
    assert model.amp is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_shipped_model_fp16_on_gpu_matches_fp32() -> None:
    from changewatch.models.changenet import DEFAULT_MODEL

    x = np.random.default_rng(0).normal(0, 1, (2, 8, 128, 128)).astype(np.float32)
    fp32 = ChangeModel.load(DEFAULT_MODEL, "cuda", amp=False).predict(x)
    fp16 = ChangeModel.load(DEFAULT_MODEL, "cuda", amp=True).predict(x)
    cpu = ChangeModel.load(DEFAULT_MODEL, "cpu").predict(x)
    np.testing.assert_allclose(fp32, cpu, atol=1e-3)
    np.testing.assert_allclose(fp16, fp32, atol=2e-2)


def test_a_scene_smaller_than_the_model_was_trained_on_is_refused(tmp_path: Path) -> None:
    from dataclasses import replace

    from changewatch.models.changenet import load_spec
    from changewatch.rs.errors import IncompatibleScenesError
    from changewatch.rs.grid import Grid

    assert load_spec(DEFAULT_MODEL).min_side_px == 128  # trained on 128 px crops
    assert pointwise_spec().min_side_px == 1  # no training record: its size multiple, 2**0
    model = ChangeModel(BrightnessChangeNet(4), replace(pointwise_spec(), training={"config": {"crop": 64}}),
                        torch.device("cpu"))
    with pytest.raises(IncompatibleScenesError, match=r"30×24 pixels.*needs at least 64×64"):
        model.check_grid(Grid(UTM48N, utm_transform(), 30, 24))
    model.check_grid(Grid(UTM48N, utm_transform(), 64, 500))
    with pytest.raises(IncompatibleScenesError, match=r"200000×200000 pixels \(40.0 Gpx\).*crop the scenes"):
        model.check_grid(Grid(UTM48N, utm_transform(), 200_000, 200_000))
    before = write_raster(tmp_path / "b.tif", textured_scene(24, 30), UTM48N, utm_transform())
    with AlignedPair(before, before) as pair, pytest.raises(IncompatibleScenesError, match="at least 64×64"):
        next(predict_pair(pair, model, InferenceConfig(), progress=False))


class ConstantNet(torch.nn.Module):
    """A network that calls change (probability 0.9) everywhere, whatever it sees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1, *x.shape[2:]), float(torch.logit(torch.tensor(0.9))))


@pytest.mark.parametrize("redelivered", [lambda s: s, lambda s: s + 7, lambda s: s * 2],
                         ids=["identical", "offset", "gain"])
def test_tiles_whose_dates_are_the_same_have_no_change(tmp_path: Path, redelivered: Any) -> None:
    """A tile holding the same values on both dates, up to a uniform offset or gain (which per-date normalisation
    removes), gets probability 0 there, whatever the network says; a tile with any other difference keeps the
    network's answer."""
    scene = textured_scene(96, 96, seed=4)
    after = redelivered(scene.astype(np.float64)).astype(scene.dtype)
    after[:, 5, :32] += 1  # one row of the left third differs by one count
    write_raster(tmp_path / "b.tif", scene, UTM48N, utm_transform())
    write_raster(tmp_path / "a.tif", after, UTM48N, utm_transform())
    model = ChangeModel(ConstantNet(), pointwise_spec(), torch.device("cpu"))
    with AlignedPair(tmp_path / "b.tif", tmp_path / "a.tif") as p:
        out = blended(p, model, InferenceConfig(32, 0, 2), tmp_path)
    np.testing.assert_allclose(out[:32, :32], 0.9, atol=PROB_MAX_ERROR)  # the tile holding the changed row
    np.testing.assert_allclose(out[:, 32:], 0.0, atol=PROB_MAX_ERROR)
    np.testing.assert_allclose(out[32:, :32], 0.0, atol=PROB_MAX_ERROR)
