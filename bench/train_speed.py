"""Training speed: samples (crops) per second of ``rs.training``'s step on this machine.

    .venv/bin/python bench/train_speed.py [--data ../shared/data/oscd] [--threads 1 2] [--steps 30]

For each fusion (early, siamese-diff, siamese-concat) and torch thread count, times ``--steps``
optimiser steps of the shipped configuration (U-Net, MobileNetV2 encoder, 128² crops, batch 8,
BCE + Dice, all augmentations on) on crops of the OSCD train cities, after 3 warm-up steps,
alternating the configurations over ``--repeats`` rounds. Batch sampling (augmentation) is
included, validation is not. With ``--device cuda`` it measures the GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repository-only helpers: bench/, tests/

from changewatch.models.changenet import FUSIONS, ModelSpec, build_network  # noqa: E402
from changewatch.rs.datasets import find_pairs  # noqa: E402
from changewatch.rs.training.config import OSCD_TRAIN, TrainConfig  # noqa: E402
from changewatch.rs.training.losses import change_loss  # noqa: E402
from changewatch.rs.training.sampling import load_site, sample_batch  # noqa: E402


def steps_per_second(fusion: str, threads: int, sites: list, steps: int, device: str) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = TrainConfig(data_dir="", out="", fusion=fusion, shift_px=1, scale_range=(0.8, 1.25))
    network = build_network(ModelSpec(fusion=fusion)).to(device).train()
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def step() -> None:
        x, y = sample_batch(sites, config, rng)
        loss = change_loss(network(torch.from_numpy(x).to(device)), torch.from_numpy(y).to(device), 10.0)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for _ in range(3):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * config.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "oscd"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sites = [load_site(p) for p in find_pairs(args.data, list(OSCD_TRAIN))]
    configs = [(f, t) for f in FUSIONS for t in args.threads]
    results: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    for _ in range(args.repeats):
        for fusion, threads in configs:
            results[(fusion, threads)].append(steps_per_second(fusion, threads, sites, args.steps, args.device))
    print(f"device {args.device}, torch {torch.__version__}, 128² crops, batch 8, {args.steps} steps per figure\n")
    print("| fusion | threads | samples/s (each repeat) | median | 10 000 steps take (min) |")
    print("|---|---|---|---|---|")
    for (fusion, threads), values in results.items():
        median = float(np.median(values))
        print(f"| {fusion} | {threads} | {', '.join(f'{v:.1f}' for v in values)} | {median:.1f} | "
              f"{10_000 * 8 / median / 60:.0f} |")


if __name__ == "__main__":
    main()
