"""Stage 3 — infer: run the change network tile by tile and stitch a probability raster.

Reads one batch of tiles at a time from an AlignedPair, so memory is bounded by
``batch_size × tile²`` whatever the scene size; writes each tile's core straight into a tiled
GeoTIFF, then finishes it as a compressed Cloud-Optimised GeoTIFF with overviews. Pixels invalid
on either date are NaN (the raster's nodata) and are never called change.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from models.changenet import ModelSpec, load_checkpoint
from rs.align import AlignedPair, Grid
from rs.errors import ModelError
from rs.normalize import BandStats, normalise, scene_stats
from rs.tiling import Tile, TileGrid


@dataclass(frozen=True)
class InferenceConfig:
    """How to run the network: tile side and overlap (pixels), tiles per batch, device name, and
    whether to use fp16 autocast on CUDA (ignored on the CPU, where it did not help)."""

    tile: int = 256
    overlap: int = 64
    batch_size: int = 8
    device: str = "auto"
    amp: bool = True


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available else CPU; ``cpu``/``cuda``/``cuda:N`` as given.

    Raises ModelError when CUDA is asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but no CUDA GPU is available to torch")
    return device


class ChangeModel:
    """A loaded change network on a device, mapping normalised image pairs to probabilities."""

    def __init__(self, network: torch.nn.Module, spec: ModelSpec, device: torch.device, amp: bool = True,
                 path: Path | None = None) -> None:
        self.spec = spec
        self.device = device
        self.path = path  # the checkpoint it was loaded from, when it was
        self.amp = amp and device.type == "cuda"  # fp16 autocast: tensor cores on GPUs
        self.network = network.to(device=device, memory_format=torch.channels_last).eval()
        self._multiple = 2 ** spec.encoder_depth

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "auto", amp: bool = True) -> ChangeModel:
        """Load a safetensors checkpoint (see ``models.changenet``) onto ``device``."""
        network, spec = load_checkpoint(path)
        return cls(network, spec, resolve_device(device), amp, Path(path))

    def check_bands(self, band_count: int) -> None:
        """Raise ModelError unless the input has as many bands per date as the model expects."""
        if band_count != len(self.spec.bands):
            raise ModelError(
                f"model {self.spec.name} expects {len(self.spec.bands)} bands per date "
                f"({', '.join(self.spec.bands)}) but the scenes have {band_count}"
            )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Change probability (N, rows, cols) for a float32 batch (N, 2×bands, rows, cols).

        Tiles are reflect-padded to the network's size multiple and cropped back.
        """
        n, _, rows, cols = batch.shape
        pad_r = -rows % self._multiple
        pad_c = -cols % self._multiple
        if pad_r or pad_c:
            batch = np.pad(batch, ((0, 0), (0, 0), (0, pad_r), (0, pad_c)), mode="reflect")
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            logits = self.network(x)
        prob = torch.sigmoid(logits.float())
        return prob[:, 0, :rows, :cols].cpu().numpy()


class ModelCache:
    """Loads each checkpoint once and hands the same ChangeModel out again (one per process or
    Dask worker). ``fixed``: a model to hand out for every path instead (tests, notebooks)."""

    def __init__(self, device: str = "auto", amp: bool = True, fixed: ChangeModel | None = None) -> None:
        self.device, self.amp, self.fixed = device, amp, fixed
        self._models: dict[Path, ChangeModel] = {}

    def get(self, path: str | os.PathLike[str]) -> ChangeModel:
        """The model stored at ``path`` (loaded on first use)."""
        if self.fixed is not None:
            return self.fixed
        key = Path(path).resolve()
        if key not in self._models:
            self._models[key] = ChangeModel.load(key, self.device, self.amp)
        return self._models[key]


def model_input(before: np.ndarray, after: np.ndarray, valid: np.ndarray,
                stats: tuple[BandStats, BandStats]) -> np.ndarray:
    """Early-fusion input (2×bands, rows, cols): both dates normalised, invalid pixels set to 0."""
    x = np.concatenate([normalise(before, stats[0]), normalise(after, stats[1])], axis=0)
    x[:, ~valid] = 0.0
    return x


def predict_tiles(
    pair: AlignedPair,
    model: ChangeModel,
    tiles: Iterable[Tile],
    stats: tuple[BandStats, BandStats],
    batch_size: int,
) -> Iterator[tuple[Window, np.ndarray]]:
    """Yield (core window, float32 probabilities) for ``tiles``, ``batch_size`` tiles per forward pass.

    ``stats`` are the whole scene's (``scene_stats``), so any subset of tiles — a Dask task's
    share, say — is normalised exactly as in a single run. Probabilities are NaN where either
    date is invalid; tiles whose core is all invalid skip the network. Windows are read in a
    background thread while the network runs. Memory: about three batches of tiles.
    """
    batch: list[tuple[Tile, np.ndarray, np.ndarray]] = []

    def flush() -> Iterator[tuple[Window, np.ndarray]]:
        probs = model.predict(np.stack([x for _, x, _ in batch]))
        for (tile, _, valid), prob in zip(batch, probs):
            rows, cols = tile.core_in_tile
            core = prob[rows, cols].copy()
            core[~valid[rows, cols]] = np.nan
            yield tile.core, core
        batch.clear()

    def read(tile: Tile) -> tuple[Tile, np.ndarray | None, np.ndarray]:
        w = pair.read(tile.read)
        rows, cols = tile.core_in_tile
        if not w.valid[rows, cols].any():  # nothing to predict: no network pass for this tile
            return tile, None, w.valid
        return tile, model_input(w.before, w.after, w.valid, stats), w.valid

    for tile, x, valid in prefetched(map(read, tiles), depth=2 * batch_size):
        if x is None:
            yield tile.core, np.full((int(tile.core.height), int(tile.core.width)), np.nan, np.float32)
            continue
        batch.append((tile, x, valid))
        if len(batch) == batch_size:
            yield from flush()
    if batch:
        yield from flush()


T = TypeVar("T")
_DONE = object()


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` ahead of the consumer.

    Reading and decoding the next windows (GDAL releases the GIL) overlaps with the network's
    forward pass. Only the background thread touches what ``items`` reads from; an exception
    raised there is re-raised here; closing the generator stops the thread.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            buffer.put(exc)

    worker = threading.Thread(target=produce, name="changewatch-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                pass
            worker.join(timeout=0.05)


def predict_pair(
    pair: AlignedPair,
    model: ChangeModel,
    config: InferenceConfig,
    progress: bool = True,
) -> Iterator[tuple[Window, np.ndarray]]:
    """Yield (core window, float32 probabilities) covering the pair's grid exactly once, in this process."""
    model.check_bands(pair.band_count)
    tiles = TileGrid(pair.grid.height, pair.grid.width, config.tile, config.overlap)
    bar = tqdm(tiles, total=len(tiles), desc="tiles", unit="tile", disable=not progress)
    yield from predict_tiles(pair, model, bar, scene_stats(pair), config.batch_size)


def write_probability(grid: Grid, chunks: Iterator[tuple[Window, np.ndarray]], path: str | os.PathLike[str]) -> Path:
    """Write (window, probabilities) chunks as a float32 COG at ``path`` (nodata NaN, CRS of ``grid``).

    Chunks go to a tiled scratch GeoTIFF next to ``path`` as they arrive; the COG (deflate,
    overviews) is then written under a temporary name and renamed, so ``path`` is either absent
    or complete.
    """
    path = Path(path)
    profile = {
        "driver": "GTiff", "dtype": "float32", "count": 1, "nodata": float("nan"),
        "width": grid.width, "height": grid.height, "crs": grid.crs, "transform": grid.transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256,
    }
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".prob-") as scratch:
        raw = Path(scratch) / "raw.tif"
        with rasterio.open(raw, "w", **profile) as dst:
            dst.set_band_description(1, "change probability")
            for window, values in chunks:
                dst.write(values, 1, window=window)
        cog = Path(scratch) / "cog.tif"
        rasterio.shutil.copy(raw, cog, driver="COG", compress="DEFLATE", predictor="YES",
                             blocksize=256, overview_resampling="AVERAGE")
        os.replace(cog, path)
    return path
