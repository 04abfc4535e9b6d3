"""The training losses: weighted BCE, soft Dice and focal loss of change, BCE + Dice of buildings.

Weighted BCE, soft Dice and focal loss of the change output, and BCE + Dice of the building
outputs of semantic models; 255 labels are ignored.
"""

from __future__ import annotations

import torch

from changewatch.rs.datasets import LABEL_NODATA

LOSSES = ("bce", "dice", "focal")


def parse_loss(text: str) -> tuple[str, ...]:
    """'bce+dice' → ('bce', 'dice'); an unknown or empty term is a ValueError."""
    terms = tuple(t.strip().lower() for t in text.split("+") if t.strip())
    unknown = [t for t in terms if t not in LOSSES]
    if not terms or unknown:
        raise ValueError(f"loss {text!r}: use terms of {', '.join(LOSSES)} joined with '+', e.g. bce+dice")
    return terms


def change_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float, terms: tuple[str, ...] = ("bce", "dice"),
                gamma: float = 2.0, building_weight: float = 0.5) -> torch.Tensor:
    """Loss of logits (N, outputs, H, W) against uint8 targets (N, outputs, H, W; 255 ignored).

    Change (channel 0): the sum of the ``terms`` over labelled pixels — weighted BCE, soft Dice of
    the change class, and focal loss (BCE down-weighting easy pixels by (1 − p_t)^gamma, with the
    same class weight). Building outputs (further channels, if any): BCE + soft Dice each, times
    ``building_weight`` (an auxiliary task: what stands on the ground at each date).
    """
    total = _binary_loss(logits[:, 0], target[:, 0], pos_weight, terms, gamma)
    for k in range(1, logits.shape[1]):
        total = total + building_weight * _binary_loss(logits[:, k], target[:, k], 1.0, ("bce", "dice"), gamma)
    return total


def _binary_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float, terms: tuple[str, ...],
                 gamma: float) -> torch.Tensor:
    """``terms`` of one binary output: logits and targets (N, H, W), 255 = ignored."""
    keep = target != LABEL_NODATA
    t = (target == 1).float()
    weight = torch.tensor(pos_weight, device=logits.device)
    total = logits.new_zeros(())
    if not keep.any():
        return total + 0.0 * logits.sum()  # nothing labelled (no building masks here): no gradient
    if "bce" in terms:
        total = total + torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], t[keep], pos_weight=weight)
    if "focal" in terms:
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], t[keep], reduction="none")
        p_t = torch.exp(-bce)
        w = torch.where(t[keep] > 0, weight, torch.ones_like(bce))
        total = total + (w * (1 - p_t) ** gamma * bce).mean()
    if "dice" in terms:
        p = torch.sigmoid(logits) * keep
        total = total + 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    return total
