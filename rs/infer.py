"""Stage 3 — infer: run the change network tile by tile.

Reads one batch of tiles at a time from an AlignedPair (reader threads prepare the next ones), so
memory is bounded by ``batch_size × tile²`` whatever the scene size, and yields each tile's
probabilities; ``rs.io.raster.write_probability`` blends them, weighted by a smooth window
(``rs.tiling``), into the compressed Cloud-Optimised GeoTIFF a run writes. Pixels invalid on
either date are NaN and are never called change.

torch is imported only where a network is placed on a device or run (``resolve_device``,
``ChangeModel``): importing this module stays light, so commands that stop before inference
(errors, ``batch --resume`` with nothing to redo) never load it.
"""

from __future__ import annotations

import copy
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from tqdm.auto import tqdm

from changewatch.models.spec import ModelSpec, load_spec
from changewatch.rs.align import AlignedPair
from changewatch.rs.config import InferenceConfig
from changewatch.rs.errors import ModelError
from changewatch.rs.grid import Grid
from changewatch.rs.normalize import BandStats, normalise, scene_stats
from changewatch.rs.tiling import Tile, TileGrid

SAME_ATOL = 1e-4  # normalised units: 0.2 DN of a 2 000 DN p2–p98 range, 0.02 DN of 8-bit imagery's ~200
CHANGE_OUTPUT = 0  # index of the change probability among a model's outputs (ModelSpec.outputs: change first)

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available else CPU; ``cpu``/``cuda``/``cuda:N`` as given.

    Raises ModelError when CUDA is asked for but not available.
    """
    import torch  # heavy: here, where a network is first placed (module docstring)

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but no CUDA GPU is available to torch")
    return device


class ChangeModel:
    """A change network ready for inference on a device, mapping normalised image pairs to probabilities.

    Built from a copy of ``network`` in eval mode with its batch norms folded into the
    convolutions, for ``spec`` on ``device``; ``amp``: fp16 autocast (CUDA only); ``path``: the
    checkpoint it was loaded from, when it was.
    """

    def __init__(self, network: torch.nn.Module, spec: ModelSpec, device: torch.device, amp: bool = True,
                 path: Path | None = None) -> None:
        import torch  # loaded already: ``network`` is a torch module

        from changewatch.models.changenet import fold_batchnorm

        self.spec = spec
        self.device = device
        self.path = path  # the checkpoint it was loaded from, when it was
        self.amp = amp and device.type == "cuda"  # fp16 autocast: tensor cores on GPUs
        # A copy, so that a network still being trained is left as it is; batch norms folded away.
        inference = fold_batchnorm(copy.deepcopy(network).eval())
        # torch's overloads of Module.to omit device= with memory_format=, which it accepts
        self.network = inference.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._multiple = 2 ** spec.encoder_depth

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = InferenceConfig.device,
             amp: bool = InferenceConfig.amp) -> ChangeModel:
        """Load a safetensors checkpoint (see ``models.changenet``) onto ``device``."""
        from changewatch.models.changenet import load_checkpoint  # torch, smp: where a network is built

        network, spec = load_checkpoint(path)
        return cls(network, spec, resolve_device(device), amp, Path(path))

    def check_bands(self, band_count: int) -> None:
        """Raise ModelError unless the input has as many bands per date as the model expects."""
        self.spec.check_bands(band_count)

    def check_grid(self, grid: Grid) -> None:
        """Raise IncompatibleScenesError when the model cannot run on ``grid`` (``ModelSpec.check_grid``)."""
        self.spec.check_grid(grid)

    def predict(self, batch: np.ndarray, tta: bool = False) -> np.ndarray:
        """Probabilities (N, outputs, rows, cols) for a float32 batch (N, 2×bands, rows, cols).

        One channel per ``spec.outputs``, change first.

        Tiles are reflect-padded to the network's size multiple and cropped back. ``tta``:
        test-time augmentation, the mean probability over the four flips (none, left-right,
        up-down, both) of each tile — four forward passes.
        """
        import torch  # loaded already, with the network

        n, _, rows, cols = batch.shape
        pad_r = -rows % self._multiple
        pad_c = -cols % self._multiple
        if pad_r or pad_c:
            batch = np.pad(batch, ((0, 0), (0, 0), (0, pad_r), (0, pad_c)), mode="reflect")
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, memory_format=torch.channels_last)
        flips: list[tuple[int, ...]] = [(), (3,), (2,), (2, 3)] if tta else [()]
        prob = torch.zeros((n, len(self.spec.outputs), *x.shape[2:]), device=self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            for dims in flips:
                logits = self.network(x.flip(dims) if dims else x)
                prob += torch.sigmoid(logits.float()).flip(dims) if dims else torch.sigmoid(logits.float())
        return (prob[:, :, :rows, :cols] / len(flips)).cpu().numpy()


class ModelCache:
    """Loads each checkpoint once and hands the same ChangeModel out again (one per process or Dask worker).

    Models are loaded on ``device``, with fp16 autocast when ``amp`` (CUDA only). ``fixed``: a
    model to hand out for every path instead (tests, notebooks).
    """

    def __init__(self, device: str = InferenceConfig.device, amp: bool = InferenceConfig.amp,
                 fixed: ChangeModel | None = None) -> None:
        self.device, self.amp, self.fixed = device, amp, fixed
        self._models: dict[Path, ChangeModel] = {}

    def spec(self, path: str | os.PathLike[str]) -> ModelSpec:
        """The metadata of the model ``get`` hands out for ``path``, without loading its weights."""
        if self.fixed is not None:
            return self.fixed.spec
        key = Path(path).resolve()
        return self._models[key].spec if key in self._models else load_spec(key)

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


def same_dates(x: np.ndarray, valid: np.ndarray) -> bool:
    """Whether both dates of a model input (2×bands, rows, cols) agree on every valid pixel within ``SAME_ATOL``.

    In normalised units (``rs.normalize``: 1 = the p2–p98 range of a band), so a uniform offset or
    gain between the dates — which per-date normalisation removes — still counts as the same.
    """
    bands = x.shape[0] // 2
    return bool(np.allclose(x[:bands, valid], x[bands:, valid], rtol=0.0, atol=SAME_ATOL))


def predict_tiles(
    pair: AlignedPair,
    model: ChangeModel,
    tiles: Iterable[Tile],
    stats: tuple[BandStats, BandStats],
    config: InferenceConfig,
) -> Iterator[tuple[Tile, np.ndarray]]:
    """Yield (tile, float32 probabilities (outputs, rows, cols) over the tile's window) for ``tiles``, in order.

    ``config.batch_size`` tiles per forward pass. Blend them with ``write_probability``.

    ``stats`` are the whole scene's (``scene_stats``), so any subset of tiles — a Dask task's
    share, say — is normalised exactly as in a single run. Probabilities are NaN where either
    date is invalid; tiles without a valid pixel skip the network. ``config.readers`` background
    threads (each with its own file handles) read, warp and normalise the next tiles while the
    network runs. Memory: about three batches of tiles.

    A tile whose two dates are the same once normalised (``same_dates``: the same scene delivered
    twice, a copy re-tagged with a later date, a re-delivery with a uniform offset or gain) has
    change probability 0 there, whatever the network says: the network sees the same input on both
    dates, and an early-fusion network is not trained to be exactly invariant to that (it was seen
    calling change on a scene compared with itself). Its other outputs (buildings) are the network's.
    """
    batch: list[tuple[Tile, np.ndarray, np.ndarray, bool]] = []

    def flush() -> Iterator[tuple[Tile, np.ndarray]]:
        probs = model.predict(np.stack([x for _, x, _, _ in batch]), config.tta)
        for (tile, _, valid, same), prob in zip(batch, probs, strict=True):
            if same:
                prob[CHANGE_OUTPUT, valid] = 0.0
            prob[:, ~valid] = np.nan
            yield tile, prob
        batch.clear()

    def read(p: AlignedPair, tile: Tile) -> tuple[Tile, np.ndarray | None, np.ndarray, bool]:
        w = p.read(tile.read)
        if not w.valid.any():  # nothing to predict: no network pass for this tile
            return tile, None, w.valid, False
        x = model_input(w.before, w.after, w.valid, stats)
        return tile, x, w.valid, same_dates(x, w.valid)

    for tile, x, valid, same in read_ahead(pair, read, tiles, config.readers, depth=2 * config.batch_size):
        if x is None:
            yield tile, np.full((len(model.spec.outputs), *valid.shape), np.nan, np.float32)
            continue
        batch.append((tile, x, valid, same))
        if len(batch) == config.batch_size:
            yield from flush()
    if batch:
        yield from flush()


T = TypeVar("T")
R = TypeVar("R")


def read_ahead(pair: AlignedPair, read: Callable[[AlignedPair, T], R], items: Iterable[T], readers: int,
               depth: int) -> Iterator[R]:
    """``read(pair, item)`` for each item, in order, computed by ``readers`` background threads.

    The threads run up to ``depth`` items ahead of the consumer.

    Reading, warping and decoding (GDAL releases the GIL) overlap with the network's forward pass.
    GDAL handles are not thread-safe, so each thread reads through its own re-opened copy of
    ``pair``; an exception raised in a thread is re-raised here; closing the generator cancels
    what is queued and closes the copies.
    """
    local = threading.local()
    opened: list[AlignedPair] = []
    lock = threading.Lock()

    def task(item: T) -> R:
        if not hasattr(local, "pair"):
            local.pair = pair.reopen()
            with lock:
                opened.append(local.pair)
        return read(local.pair, item)

    pool = ThreadPoolExecutor(max(1, readers), thread_name_prefix="changewatch-reader")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(task, item))
            if len(pending) >= max(depth, readers):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for p in opened:
            p.close()


def predict_pair(
    pair: AlignedPair,
    model: ChangeModel,
    config: InferenceConfig,
    progress: bool = True,
) -> Iterator[tuple[Tile, np.ndarray]]:
    """Yield (tile, float32 probabilities) for every tile of the pair's grid, in this process."""
    model.check_bands(pair.band_count)
    model.check_grid(pair.grid)
    tiles = tiling(pair.grid, config)
    bar = tqdm(tiles, total=len(tiles), desc="tiles", unit="tile", disable=not progress)
    yield from predict_tiles(pair, model, bar, scene_stats(pair), config)


def tiling(grid: Grid, config: InferenceConfig) -> TileGrid:
    """The tiles ``config`` cuts ``grid`` into."""
    return TileGrid(grid.height, grid.width, config.tile, config.overlap)
