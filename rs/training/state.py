"""What a training run has done so far, saved at every validation so that ``resume`` continues it.

Tensors and plain data only: loaded with ``torch.load(weights_only=True)``; and its logs.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from changewatch.rs.errors import ModelError
from changewatch.rs.io.files import atomic_write
from changewatch.rs.training.config import TrainConfig


@dataclass
class Progress:
    """What a run has done so far: saved at every validation so that ``resume`` can continue."""

    iteration: int = 0
    running: float = math.nan
    best_f1: float = -1.0
    best_threshold: float = 0.5
    best_metrics: dict[str, Any] = field(default_factory=dict)  # Validation.record of the best step
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    since_best: int = 0
    log: list[dict[str, object]] = field(default_factory=list)
    recent: list[dict[str, torch.Tensor]] = field(default_factory=list)  # the last validated weights (average_last)


def state_path(config: TrainConfig) -> Path:
    """Where a run's resumable state is saved: ``NAME.state.pt`` beside the checkpoint ``config.out``."""
    return Path(config.out).with_suffix(".state.pt")


def save_state(config: TrainConfig, progress: Progress, network: torch.nn.Module, optimiser: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator) -> None:
    """Everything needed to continue the run, written atomically.

    Tensors and plain data only, so it loads with ``torch.load(weights_only=True)``.
    """
    state = {"progress": asdict(progress), "network": network.state_dict(), "optimiser": optimiser.state_dict(),
             "schedule": schedule.state_dict(), "numpy_rng": json.dumps(rng.bit_generator.state),
             "torch_rng": torch.get_rng_state(), "config": json.dumps(asdict(config))}
    with atomic_write(state_path(config)) as tmp:
        torch.save(state, tmp)


def load_state(config: TrainConfig, network: torch.nn.Module, optimiser: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator) -> Progress:
    """Restore a run from ``NAME.state.pt``; returns its progress.

    Loaded with ``torch.load(weights_only=True)``: tensors and plain data only, nothing in the file
    is executed. Raises ModelError when the file is missing, holds pickled objects, is truncated or
    corrupt, or was saved by a run with other settings.
    """
    path = state_path(config)
    if not path.exists():
        raise ModelError(f"--resume: no saved training state at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on a foreign pickle protocol: the file is judged below
            state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"--resume: {path} is not a training state changewatch wrote (it holds pickled objects "
                         "other than tensors and plain data, or is not a torch file); it was refused without "
                         "running anything in it. Delete it to train from the start") from exc
    except (OSError, EOFError, RuntimeError, ValueError) as exc:
        raise ModelError(f"--resume: {path} is truncated or corrupt ({type(exc).__name__}); delete it to train "
                         "from the start") from exc
    try:
        saved = json.loads(state["config"])
        changed = [k for k in ("data_dir", "fusion", "encoder", "architecture", "bands", "crop", "batch_size",
                               "iterations", "epochs", "init_from")
                   if saved.get(k) != json.loads(json.dumps(asdict(config)))[k]]
        if changed:
            raise ModelError(f"--resume: {path} was saved by a run with different {', '.join(changed)}")
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        return Progress(**state["progress"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise ModelError(f"--resume: {path} does not hold a complete training state of this run "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); delete it to train "
                         "from the start") from exc


def write_logs(path: Path, rows: list[dict[str, object]]) -> None:
    """The validation log as CSV (``path``) and JSON lines (``.jsonl`` beside it), atomically."""
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[-1]).index(k) if k in rows[-1] else 99)
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    with atomic_write(path.with_suffix(".jsonl")) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
