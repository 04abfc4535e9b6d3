"""Inference throughput of change models side by side, on the CPU or a GPU.

    .venv/bin/python bench/infer_speed.py [--size 2048] [--device cpu] [--repeats 2] \
        [--model models/changewatch-rgbn.json] [--model models/changewatch-vhr-rgb.json] [--untrained ENCODER]

For each model, in one process and alternating so that machine noise hits all alike:

- *ceiling*: forward passes of the network alone on in-memory random tiles (as many tiles, of the
  same size and batch, as the scene needs; batch norms folded, channels-last, inference mode);
- *tiled path*: what ``detect`` runs before vectorising — scene statistics, aligned windowed reads
  (AFTER warped from EPSG:4326), normalisation, the network, cos² blending into the probability
  COG (``rs.infer.predict_pair`` + ``write_probability``).

Prints Mpx/s, km²/h at the model's GSD (pixels × GSD²) and the ratio ceiling ÷ tiled path (1.0:
the engine adds nothing to the network's own time). ``--untrained ENCODER`` adds an untrained
early-fusion RGB U-Net with that smp encoder (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repository-only helpers: bench/, tests/

from bench.detect_scale import make_pair  # noqa: E402
from changewatch.models.changenet import DEFAULT_MODEL, ModelSpec, build_network  # noqa: E402
from changewatch.rs.align import AlignedPair  # noqa: E402
from changewatch.rs.infer import ChangeModel, InferenceConfig, predict_pair, resolve_device, tiling  # noqa: E402
from changewatch.rs.io.raster import write_probability  # noqa: E402


def load(name: str, device: str) -> ChangeModel:
    """A checkpoint path, or ``untrained:ENCODER`` for an untrained RGB semantic U-Net."""
    if name.startswith("untrained:"):
        spec = ModelSpec(name=name, encoder=name.split(":", 1)[1], bands=("red", "green", "blue"), gsd_m=0.5,
                         outputs=("change", "building_before", "building_after"))
        return ChangeModel(build_network(spec).eval(), spec, resolve_device(device))
    return ChangeModel.load(name, device)


def ceiling(model: ChangeModel, tiles: int, config: InferenceConfig) -> float:
    """Seconds for the network alone on ``tiles`` random tiles."""
    x = np.random.default_rng(0).normal(0, 1, (config.batch_size, model.spec.in_channels, config.tile, config.tile))
    x = x.astype(np.float32)
    model.predict(x[:1])
    _sync(model)
    start = time.perf_counter()
    for done in range(0, tiles, config.batch_size):
        model.predict(x[: min(config.batch_size, tiles - done)])
    _sync(model)
    return time.perf_counter() - start


def tiled(model: ChangeModel, before: Path, after: Path, config: InferenceConfig, out: Path) -> float:
    """Seconds for statistics, aligned reads, the network and the blended COG over the scene."""
    bands = tuple(str(b) for b in range(1, len(model.spec.bands) + 1))
    start = time.perf_counter()
    with AlignedPair(before, after, bands) as pair:
        write_probability(pair.grid, tiling(pair.grid, config), predict_pair(pair, model, config, False), out,
                          model.spec.outputs)
    _sync(model)
    return time.perf_counter() - start


def _sync(model: ChangeModel) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="scene side in pixels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--readers", type=int, default=1, help="reader threads of the tiled path")
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--untrained", action="append", default=[], help="smp encoder of an untrained RGB U-Net")
    args = parser.parse_args()
    names = (args.model or [str(DEFAULT_MODEL)]) + [f"untrained:{e}" for e in args.untrained]
    config = InferenceConfig(device=args.device, batch_size=args.batch_size, readers=args.readers)
    models = {name: load(name, args.device) for name in names}
    torch.set_num_threads(torch.get_num_threads())
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}, "
          f"{torch.get_num_threads()} threads), scene {args.size}², tile {config.tile}, overlap {config.overlap}, "
          f"batch {config.batch_size}, reader threads {config.readers}\n")
    print("| model | GSD (m) | tiles | ceiling Mpx/s | tiled path Mpx/s | tiled path km²/h | ratio ceiling ÷ tiled |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        before, after = make_pair(Path(tmp), args.size)
        with AlignedPair(before, after) as pair:
            tiles, mpx = len(tiling(pair.grid, config)), pair.grid.width * pair.grid.height / 1e6
        for repeat in range(args.repeats):
            for model in models.values():
                c = ceiling(model, tiles, config)
                t = tiled(model, before, after, config, Path(tmp) / f"prob{repeat}.tif")
                km2_h = mpx / t * model.spec.gsd_m ** 2 * 3600
                print(f"| {model.spec.name} | {model.spec.gsd_m:g} | {tiles} | {mpx / c:.2f} | {mpx / t:.2f} "
                      f"| {km2_h:,.0f} | {c / t:.2f} |", flush=True)


if __name__ == "__main__":
    main()
