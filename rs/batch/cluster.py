"""Where a batch's jobs run: in this process, or as Dask tasks on a LocalCluster or an existing cluster.

The tiles of large scenes are spread over every worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker, worker_client

from changewatch.rs.align import AlignedPair, PairSource
from changewatch.rs.batch.jobs import JobRecord, run_job
from changewatch.rs.batch.manifest import AnyJob
from changewatch.rs.batch.scheduler import connect, is_remote
from changewatch.rs.config import BatchConfig, InferenceConfig
from changewatch.rs.infer import ChangeModel, ModelCache, predict_pair, predict_tiles, tiling
from changewatch.rs.normalize import BandStats, scene_stats
from changewatch.rs.tiling import Tile

Runner = Callable[[list[AnyJob], BatchConfig], Iterator[JobRecord]]


def run_serial(jobs: list[AnyJob], config: BatchConfig) -> Iterator[JobRecord]:
    """Run jobs one after another in this process, loading each model once."""
    models = ModelCache(config.inference.device, config.inference.amp)
    for job in jobs:
        yield run_job(job, config, models)


class ModelPlugin(WorkerPlugin):
    """Dask worker plugin: each worker keeps one ModelCache, so a model is loaded once per worker.

    The batch's ``--model`` is loaded as soon as the worker starts, not once per task. The
    constructor takes that model's path (None: none), the device, the torch threads per worker and
    whether to use fp16 autocast on CUDA.
    """

    name = "changewatch-model"

    def __init__(self, model: str | None, device: str, threads: int, amp: bool = True) -> None:
        self.model_path, self.device, self.threads, self.amp = model, device, threads, amp
        self.models: ModelCache | None = None

    def setup(self, worker: Any) -> None:
        """On a worker's start: limit torch to ``threads`` threads, create its ModelCache, load the batch's model."""
        import torch

        torch.set_num_threads(self.threads)
        self.models = ModelCache(self.device, self.amp)
        if self.model_path:
            self.models.get(self.model_path)

    def teardown(self, worker: Any) -> None:
        """On a worker's end: drop its ModelCache and the models in it."""
        self.models = None


def _worker_models() -> ModelCache:
    plugin = get_worker().plugins[ModelPlugin.name]
    assert isinstance(plugin, ModelPlugin) and plugin.models is not None, "ModelPlugin.setup has not run on this worker"
    return plugin.models


def _predict_chunk(source: PairSource, model_path: str, tiles: list[Tile], stats: tuple[BandStats, BandStats],
                   config: InferenceConfig) -> list[tuple[Tile, np.ndarray]]:
    """Dask task: probabilities of some tiles of one scene (the worker opens the pair itself, as prepared)."""
    with source.open() as pair:
        return list(predict_tiles(pair, _worker_models().get(model_path), tiles, stats, config))


@dataclass
class ClusterPredictor:
    """Predictor for ``detect`` that spreads a large scene's tiles over the Dask cluster.

    Scenes up to ``split_mpx`` megapixels run in the calling task; larger ones are cut into tasks
    of ``tiles_per_task`` tiles, normalised with statistics computed once for the whole scene, and
    their results are blended into the raster as they arrive (in any order).
    """

    split_mpx: float
    tiles_per_task: int = 32
    tasks: int = 0  # tile tasks submitted so far (provenance: 0 means the scene ran in one task)

    def __call__(self, pair: AlignedPair, model: ChangeModel, config: InferenceConfig,
                 progress: bool) -> Iterator[tuple[Tile, np.ndarray]]:
        """Yield (tile, float32 probabilities (outputs, rows, cols)) for every tile of ``pair``'s grid.

        Small scenes, and models not loaded from a checkpoint, run in this task (``predict_pair``);
        larger scenes are spread over the cluster as the class docstring says.
        """
        if pair.grid.width * pair.grid.height <= self.split_mpx * 1e6 or model.path is None:
            yield from predict_pair(pair, model, config, progress)
            return
        model.check_bands(pair.band_count)
        stats = scene_stats(pair)
        tiles = list(tiling(pair.grid, config))
        chunks = [tiles[i:i + self.tiles_per_task] for i in range(0, len(tiles), self.tiles_per_task)]
        with worker_client() as client:
            futures = [client.submit(_predict_chunk, pair.source, str(model.path), chunk, stats, config, pure=False)
                       for chunk in chunks]
            self.tasks += len(futures)
            for future in as_completed(futures):
                yield from future.result()
                future.release()


def _run_on_worker(job: AnyJob, config: BatchConfig) -> JobRecord:
    predictor = ClusterPredictor(config.split_mpx, config.tiles_per_task)
    record = run_job(job, config, _worker_models(), predictor)
    record.tile_tasks = predictor.tasks
    return record


def run_dask(jobs: list[AnyJob], config: BatchConfig) -> Iterator[JobRecord]:
    """Run jobs as Dask tasks on a LocalCluster (``local``) or the cluster at ``config.scheduler``."""
    if config.scheduler == "local":
        workers = config.workers or max(1, os.cpu_count() or 1)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        cluster, client = None, connect(config.scheduler)
    try:
        client.register_plugin(ModelPlugin(config.model, config.inference.device, threads=1, amp=config.inference.amp))
        futures = [client.submit(_run_on_worker, job, config, key=f"job-{job.area_id}", pure=False) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def runner_for(scheduler: str) -> Runner:
    """``serial`` runs in this process; ``local`` and ``tcp://…`` run on Dask."""
    if scheduler == "serial":
        return run_serial
    if scheduler == "local" or is_remote(scheduler):
        return run_dask
    raise ValueError(f"unknown scheduler {scheduler!r}: use serial, local or tcp://host:port")
