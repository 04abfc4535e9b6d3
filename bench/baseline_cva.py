"""Trivial baseline for the change model: change-vector magnitude, no training.

    .venv/bin/python bench/baseline_cva.py [--data ../shared/data/oscd]

Each date is normalised exactly as the model's input (``rs.normalize``); the change score is
the Euclidean norm of the per-pixel difference of all bands. The threshold is the one with the
best pooled F1 on the OSCD *train* cities, then applied unchanged to the *val* cities; the best
threshold on val itself is reported too, which is the protocol the shipped model's threshold
follows (chosen on val). Both go through the same tiled evaluation path as the model. Prints
Markdown tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repository-only helpers: bench/, tests/

from changewatch.models.changenet import ModelSpec  # noqa: E402
from changewatch.rs.config import EvalOptions  # noqa: E402
from changewatch.rs.evaluate import evaluate, find_sites  # noqa: E402
from changewatch.rs.infer import ChangeModel  # noqa: E402
from changewatch.rs.training.config import OSCD_TRAIN, OSCD_VAL  # noqa: E402


class ChangeVectorMagnitude(torch.nn.Module):
    """Probability = sigmoid(2 · (‖after − before‖ − 2)): a monotone map of the CVA magnitude."""

    def __init__(self, bands: int) -> None:
        super().__init__()
        self.bands = bands

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x[:, self.bands:] - x[:, : self.bands]
        magnitude = torch.linalg.vector_norm(d, dim=1, keepdim=True)
        return 2.0 * (magnitude - 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "oscd")
    args = parser.parse_args()
    spec = ModelSpec(name="cva-baseline", encoder_depth=0)
    model = ChangeModel(ChangeVectorMagnitude(len(spec.bands)), spec, torch.device("cpu"))
    on_train = evaluate(find_sites(args.data, list(OSCD_TRAIN)), model, EvalOptions(threshold=0.5))
    threshold, train_c = on_train.histogram.best_threshold(step=0.001)
    val = evaluate(find_sites(args.data, list(OSCD_VAL)), model, EvalOptions(threshold=threshold))
    print(f"CVA baseline, threshold {threshold:.3f} chosen on train (train F1 {train_c.f1:.3f})\n")
    print("| site | precision | recall | F1 | IoU |\n|---|---|---|---|---|")
    for name, c in [*val.sites.items(), ("**pooled val**", val.pooled)]:
        print(f"| {name} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.iou:.3f} |")
    val_threshold, val_best = val.histogram.best_threshold(step=0.001)
    print(f"\nWith the threshold chosen on val itself ({val_threshold:.3f}): pooled val precision "
          f"{val_best.precision:.3f}, recall {val_best.recall:.3f}, F1 {val_best.f1:.3f}, IoU {val_best.iou:.3f}")


if __name__ == "__main__":
    main()
