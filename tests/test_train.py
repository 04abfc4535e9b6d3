"""rs.train: a short run on tiny generated sites learns, validates and saves a loadable checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from models.changenet import load_checkpoint
from rs.train import TrainConfig, change_loss, load_site, sample_batch, train


def test_load_site_and_sample_batch(sites: Path) -> None:
    site = load_site(sites / "alpha")
    assert site.x.shape == (8, 64, 64) and site.x.dtype == np.float32
    assert int((site.label == 1).sum()) == 12 * 12 + 8 * 8 and len(site.positives) == 208
    config = TrainConfig(data_dir=str(sites), out="unused", crop=32, batch_size=6)
    x, y = sample_batch([site], config, np.random.default_rng(0))
    assert x.shape == (6, 8, 32, 32) and y.shape == (6, 32, 32)
    assert (y == 1).any()  # half the crops are centred on change


def test_loss_ignores_unlabelled_pixels() -> None:
    logits = torch.zeros(1, 1, 4, 4)
    target = torch.full((1, 4, 4), 255, dtype=torch.uint8)
    target[0, 0, 0] = 1
    a = change_loss(logits, target, pos_weight=1.0)
    logits2 = logits.clone()
    logits2[0, 0, 3, 3] = 50.0  # an ignored pixel: must not change the loss's BCE part
    b = change_loss(logits2, target, pos_weight=1.0)
    assert torch.isclose(a, b, atol=1e-6)


def test_short_training_lowers_loss_and_saves_checkpoint(sites: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    config = TrainConfig(data_dir=str(sites), out=str(out), train_sites=("alpha", "beta"), val_sites=("gamma",),
                         encoder="resnet18", crop=32, batch_size=4, iterations=60, val_every=20, lr=3e-3,
                         threads=2, seed=0)
    result = train(config, progress=False)
    rows = list(csv.DictReader(open(out.with_suffix(".log.csv"))))
    assert [int(r["iteration"]) for r in rows] == [20, 40, 60]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    net, spec = load_checkpoint(result.checkpoint)
    assert spec.threshold == result.threshold and spec.metrics["val_sites"] == ["gamma"]
    assert spec.training["config"]["iterations"] == 60
