"""rs.training.losses: the loss terms, labelled pixels only (and epochs as optimiser steps)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from changewatch.rs.datasets import find_pairs
from changewatch.rs.training.config import TrainConfig
from changewatch.rs.training.loop import iterations_for
from changewatch.rs.training.losses import change_loss, parse_loss
from changewatch.rs.training.sampling import load_site


def test_loss_ignores_unlabelled_pixels() -> None:
    logits = torch.zeros(1, 1, 4, 4)
    target = torch.full((1, 1, 4, 4), 255, dtype=torch.uint8)
    target[0, 0, 0, 0] = 1
    a = change_loss(logits, target, pos_weight=1.0)
    logits2 = logits.clone()
    logits2[0, 0, 3, 3] = 50.0  # an ignored pixel: must not change the loss's BCE part
    b = change_loss(logits2, target, pos_weight=1.0)
    assert torch.isclose(a, b, atol=1e-6)


def test_losses_and_epochs(sites: Path) -> None:
    assert parse_loss("BCE + focal") == ("bce", "focal")
    with pytest.raises(ValueError, match="terms of"):
        parse_loss("bce+hinge")
    logits = torch.zeros(1, 1, 4, 4)
    target = torch.full((1, 1, 4, 4), 255, dtype=torch.uint8)
    target[0, 0, 0, 0] = 1
    a = change_loss(logits, target, 1.0, ("focal",))
    logits2 = logits.clone()
    logits2[0, 0, 3, 3] = 50.0  # an ignored pixel
    assert torch.isclose(a, change_loss(logits2, target, 1.0, ("focal",)))
    assert a > 0 and torch.isclose(change_loss(logits, target, 1.0, ("focal",), gamma=0.0),
                                   change_loss(logits, target, 1.0, ("bce",)))
    site = load_site(find_pairs(sites, ["alpha"])[0])
    config = TrainConfig(data_dir=str(sites), out="unused", crop=32, batch_size=2, epochs=2.0)
    assert iterations_for(config, [site]) == 2 * 64 * 64 // (2 * 32 * 32)  # rs.training.loop


def test_building_outputs_of_pairs_without_building_masks_are_ignored(sites: Path) -> None:
    from changewatch.models.changenet import SEMANTIC_OUTPUTS

    site = load_site(find_pairs(sites, ["alpha"])[0], outputs=SEMANTIC_OUTPUTS)
    assert (site.label[1:] == 255).all() and (site.label[0] == 1).any()
    logits = torch.zeros(1, 3, 8, 8, requires_grad=True)
    target = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    target[:, 0] = 0
    loss = change_loss(logits, target, pos_weight=1.0)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None and (logits.grad[:, 1:] == 0).all()
