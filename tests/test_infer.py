"""rs.infer: tiled inference stitches exactly, masks invalid pixels, writes a georeferenced COG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from rs.align import AlignedPair
from rs.errors import ModelError
from rs.infer import ChangeModel, InferenceConfig, model_input, predict_pair, resolve_device, write_probability
from rs.normalize import scene_stats
from tests.data import UTM48N, BrightnessChangeNet, pointwise_spec, textured_scene, utm_transform, write_raster


def pointwise_model(bands: int = 4) -> ChangeModel:
    return ChangeModel(BrightnessChangeNet(bands), pointwise_spec(bands), torch.device("cpu"))


def whole_image_probability(pair: AlignedPair, model: ChangeModel) -> np.ndarray:
    w = pair.read(Window(0, 0, pair.grid.width, pair.grid.height))
    x = model_input(w.before, w.after, w.valid, scene_stats(pair))
    return model.predict(x[None])[0]


@pytest.mark.parametrize("tile,overlap,batch", [(32, 8, 3), (40, 0, 1), (256, 64, 8)])
def test_tiled_prediction_equals_whole_image(pair: tuple[Path, Path], tile: int, overlap: int, batch: int) -> None:
    model = pointwise_model()
    with AlignedPair(*pair) as p:
        expected = whole_image_probability(p, model)
        stitched = np.full((96, 96), -1.0, np.float32)
        for window, prob in predict_pair(p, model, InferenceConfig(tile, overlap, batch), progress=False):
            stitched[window.toslices()] = prob
    np.testing.assert_allclose(stitched, expected, atol=1e-6)
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
        chunks = list(predict_pair(p, pointwise_model(), InferenceConfig(32, 8, 2), progress=False))
    out = np.zeros((48, 48), np.float32)
    for window, prob in chunks:
        out[window.toslices()] = prob
    assert np.isnan(out[:, :8]).all() and not np.isnan(out[:, 8:]).any()


def test_write_probability_is_a_georeferenced_cog(pair: tuple[Path, Path], tmp_path: Path) -> None:
    with AlignedPair(*pair) as p:
        path = write_probability(p.grid, predict_pair(p, pointwise_model(), InferenceConfig(32, 8, 4), False),
                                 tmp_path / "prob.tif")
        grid = p.grid
    with rasterio.open(path) as ds:
        assert ds.crs == UTM48N and ds.transform == grid.transform and ds.shape == (96, 96)
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert ds.profile["compress"].lower() == "deflate" and ds.profile["tiled"]
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert (ds.read(1)[40:50, 30:40] > 0.5).all()
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
    assert prob.shape == (2, 45, 70) and seen == [(2, 8, 64, 96)]


def test_band_mismatch_is_a_model_error(pair: tuple[Path, Path]) -> None:
    with AlignedPair(*pair) as p, pytest.raises(ModelError, match="expects 3 bands"):
        next(predict_pair(p, pointwise_model(bands=3), InferenceConfig(), progress=False))


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA"):
            resolve_device("cuda")


def test_prefetched_keeps_order_raises_and_stops() -> None:
    from rs.infer import prefetched

    assert list(prefetched(iter(range(100)), depth=3)) == list(range(100))

    def broken():
        yield 1
        raise ValueError("disk on fire")

    got = prefetched(broken(), depth=2)
    assert next(got) == 1
    with pytest.raises(ValueError, match="disk on fire"):
        next(got)
    endless = prefetched(iter(range(10**9)), depth=2)
    assert next(endless) == 0
    endless.close()  # returns: the reader thread is stopped, not left filling the buffer


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
    out = np.zeros((96, 96), np.float32)
    with AlignedPair(tmp_path / "b.tif", tmp_path / "a.tif") as p:
        for window, prob in predict_pair(p, model, InferenceConfig(32, 0, 1), progress=False):
            out[window.toslices()] = prob
    assert sum(calls) == 3 * 1  # 9 tiles of 32², only the right column has AFTER data
    assert np.isnan(out[:, :64]).all() and not np.isnan(out[:, 64:]).any()


def test_amp_only_on_cuda() -> None:
    model = ChangeModel(BrightnessChangeNet(4), pointwise_spec(), torch.device("cpu"), amp=True)
    assert model.amp is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_shipped_model_fp16_on_gpu_matches_fp32() -> None:
    from models.changenet import DEFAULT_MODEL

    x = np.random.default_rng(0).normal(0, 1, (2, 8, 128, 128)).astype(np.float32)
    fp32 = ChangeModel.load(DEFAULT_MODEL, "cuda", amp=False).predict(x)
    fp16 = ChangeModel.load(DEFAULT_MODEL, "cuda", amp=True).predict(x)
    cpu = ChangeModel.load(DEFAULT_MODEL, "cpu").predict(x)
    np.testing.assert_allclose(fp32, cpu, atol=1e-3)
    np.testing.assert_allclose(fp16, fp32, atol=2e-2)
