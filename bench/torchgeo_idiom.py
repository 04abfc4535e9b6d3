"""changewatch inference vs the torchgeo idiom, side by side in one process (issue 4, ratio 2).

    .bench-venv/bin/python bench/torchgeo_idiom.py BEFORE.tif AFTER.tif [--repeats 2]

Runs in the bench environment only (``bench/raster_engine.sh`` makes it: changewatch's own
environment does not carry torchgeo). Both sides turn the same two files into a change-probability
GeoTIFF on BEFORE's grid with the same network weights (the shipped ``changewatch-rgbn``), tile
256, overlap 64 (stride 192), batch 8, the same per-band normalisation, on the CPU:

- **changewatch**: ``rs.infer`` (statistics, lazy warp, reader thread, folded batch norms,
  channels-last, inference mode, blended tiles, COG) — statistics are part of its timed work;
- **torchgeo idiom**, as its tutorials write it: ``RasterDataset`` for each date, the two joined
  with ``&`` (an IntersectionDataset stacks their bands), ``GridGeoSampler(size=256, stride=192)``,
  a ``DataLoader`` with ``stack_samples``, the network under ``torch.no_grad()``, each tile's centre
  written into a whole-scene array, then one GeoTIFF. It gets the normalisation statistics for free
  (computed before its clock starts). Tried with DataLoader workers 0, 1 and 2; the fastest counts.

Prints seconds per run, Mpx/s and the ratio torchgeo ÷ changewatch, and checks that the two
probability rasters agree (share of pixels on the same side of 0.5). Then the same with the network
replaced on both sides by a pointwise one (``tests.data.BrightnessChangeNet``, no convolutions):
the data path alone, which is what decides the ratio where the network is fast (a GPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repository-only helpers: bench/, tests/

from changewatch.models.changenet import DEFAULT_MODEL, ModelSpec, load_checkpoint  # noqa: E402
from changewatch.rs.align import AlignedPair  # noqa: E402
from changewatch.rs.infer import ChangeModel, InferenceConfig, predict_pair, tiling  # noqa: E402
from changewatch.rs.io.raster import write_probability  # noqa: E402
from changewatch.rs.normalize import CLIP, BandStats, scene_stats  # noqa: E402
from tests.data import BrightnessChangeNet, pointwise_spec  # noqa: E402

TILE, STRIDE, BATCH = 256, 192, 8


Network = tuple[torch.nn.Module, ModelSpec]


def shipped_network() -> Network:
    """The shipped U-Net as a user loads it (eval mode, nothing folded)."""
    network, spec = load_checkpoint(DEFAULT_MODEL)
    return network.eval(), spec


def pointwise_network() -> Network:
    return BrightnessChangeNet(4).eval(), pointwise_spec()


def run_changewatch(before: Path, after: Path, out: Path, network: Network) -> float:
    """Seconds for files → blended probability COG (statistics included)."""
    config = InferenceConfig(tile=TILE, overlap=TILE - STRIDE, batch_size=BATCH, device="cpu")
    start = time.perf_counter()
    model = ChangeModel(*network, torch.device("cpu"))
    with AlignedPair(before, after) as pair:
        write_probability(pair.grid, tiling(pair.grid, config), predict_pair(pair, model, config, False), out)
    return time.perf_counter() - start


def _normaliser(stats: tuple[BandStats, BandStats]) -> tuple[torch.Tensor, torch.Tensor]:
    p50 = np.concatenate([s.p50 for s in stats])
    scale = np.concatenate([np.maximum(s.p98 - s.p2, 1e-6) for s in stats])
    return torch.from_numpy(p50)[None, :, None, None], torch.from_numpy(scale)[None, :, None, None]


def run_torchgeo(before: Path, after: Path, out: Path, stats: tuple[BandStats, BandStats], workers: int,
                 network: Network) -> float:
    """Seconds for the torchgeo idiom: files → whole-scene array → GeoTIFF."""
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    p50, scale = _normaliser(stats)
    start = time.perf_counter()
    before_ds = RasterDataset(paths=[str(before)])
    after_ds = RasterDataset(paths=[str(after)], crs=before_ds.crs, res=before_ds.res)
    dataset = before_ds & after_ds
    sampler = GridGeoSampler(dataset, size=TILE, stride=STRIDE)
    loader = DataLoader(dataset, sampler=sampler, batch_size=BATCH, collate_fn=stack_samples, num_workers=workers)
    with rasterio.open(before) as ref:
        transform, crs, shape = ref.transform, ref.crs, ref.shape
    prob = np.full(shape, np.nan, np.float32)
    margin = (TILE - STRIDE) // 2
    inverse = ~transform
    with torch.no_grad():
        for batch in loader:
            x = ((batch["image"] - p50) / scale).clamp(-CLIP, CLIP)
            p = torch.sigmoid(network[0](x))[:, 0].numpy()
            for tile, query in zip(p, batch["bounds"], strict=True):
                col, row = inverse * (query[0].start, query[1].stop)
                r0, c0 = int(round(row)), int(round(col))
                r1, c1 = min(shape[0], r0 + TILE - margin), min(shape[1], c0 + TILE - margin)
                rs, cs = max(0, r0 + margin), max(0, c0 + margin)
                if r1 > rs and c1 > cs:
                    prob[rs:r1, cs:c1] = tile[rs - r0:r1 - r0, cs - c0:c1 - c0]
    with rasterio.open(out, "w", driver="GTiff", width=shape[1], height=shape[0], count=1, dtype="float32",
                       crs=crs, transform=transform, nodata=float("nan"), tiled=True, compress="deflate") as dst:
        dst.write(prob, 1)
    return time.perf_counter() - start


def agreement(a: Path, b: Path) -> float:
    """Share of pixels valid in both rasters that fall on the same side of 0.5 (on BEFORE's grid)."""
    with rasterio.open(a) as da, rasterio.open(b) as db:
        from rasterio.vrt import WarpedVRT
        with WarpedVRT(da, crs=db.crs, transform=db.transform, width=db.width, height=db.height) as va:
            pa, pb = va.read(1), db.read(1)
    both = np.isfinite(pa) & np.isfinite(pb)
    return float(((pa[both] >= 0.5) == (pb[both] >= 0.5)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="torchgeo DataLoader workers to try")
    args = parser.parse_args()
    import torchgeo

    with rasterio.open(args.before) as ds:
        mpx = ds.width * ds.height / 1e6
    with AlignedPair(args.before, args.after) as pair:
        stats = scene_stats(pair)
    print(f"torch {torch.__version__}, torchgeo {torchgeo.__version__}, {torch.get_num_threads()} threads, "
          f"{mpx:.1f} Mpx, tile {TILE}, stride {STRIDE}, batch {BATCH}")
    for label, make in (("shipped U-Net", shipped_network), ("data path only (pointwise network)", pointwise_network)):
        compare(label, make, args.before, args.after, stats, args.workers, args.repeats, mpx)


def compare(label: str, make: Callable[[], Network], before: Path, after: Path,
            stats: tuple[BandStats, BandStats], workers: list[int], repeats: int, mpx: float) -> None:
    """One table: changewatch and the torchgeo idiom (each DataLoader worker count), alternated."""
    print(f"\n{label}\n")
    print("| run | changewatch (s) | " + " | ".join(f"torchgeo, {w} workers (s)" for w in workers) + " |")
    print("|---|---|" + "---|" * len(workers))
    best_cw, best_tg = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cw_out, tg_out = Path(tmp) / "cw.tif", Path(tmp) / "tg.tif"
        for repeat in range(repeats):
            cw = run_changewatch(before, after, cw_out, make())
            tg = [run_torchgeo(before, after, tg_out, stats, w, make()) for w in workers]
            best_cw.append(cw)
            best_tg.append(min(tg))
            print(f"| {repeat + 1} | {cw:.1f} | " + " | ".join(f"{t:.1f}" for t in tg) + " |", flush=True)
        agree = agreement(cw_out, tg_out)
    cw, tg = float(np.median(best_cw)), float(np.median(best_tg))
    print(f"\nchangewatch {mpx / cw:.2f} Mpx/s, torchgeo idiom (fastest workers) {mpx / tg:.2f} Mpx/s: "
          f"**ratio 2 = {tg / cw:.2f}×** (medians); the two rasters agree on {agree:.1%} of pixels at 0.5")


if __name__ == "__main__":
    main()
