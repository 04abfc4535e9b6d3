"""The training loop: train the change network on labelled pairs, keep the best checkpoint and threshold on val.

Pairs come in any layout ``rs.datasets`` reads (OSCD-style sites, LEVIR-CD folders, vector
labels). They are expected to be small (about 1 Mpx each, as OSCD cities or LEVIR-CD chips): each
is prepared and normalised once with the same code as inference (``rs.training.sampling``) and
kept in memory (about 33 bytes per pixel with 4 bands); training draws random augmented crops.
Every ``val_every`` iterations the network runs over the validation pairs through the real tiled
inference path (``rs.evaluate``); the checkpoint kept is the one with the best pooled val F1, with
the threshold that achieved it. Progress is saved at every validation (``rs.training.state``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from changewatch.models.changenet import (
    ModelSpec,
    build_network,
    is_shipped,
    load_checkpoint,
    load_spec,
    save_checkpoint,
)
from changewatch.models.pretrained import load_pretrained_encoder
from changewatch.rs.config import EvalOptions, PairOptions
from changewatch.rs.datasets import LABEL_NODATA, LabelledPair, find_pairs
from changewatch.rs.errors import InputFileError, ModelError
from changewatch.rs.evaluate import evaluate
from changewatch.rs.infer import ChangeModel, resolve_device
from changewatch.rs.io.files import writing
from changewatch.rs.metrics import best_common_threshold
from changewatch.rs.normalize import METHOD
from changewatch.rs.training.config import OSCD_LICENCE, TrainConfig, default_sites_hint
from changewatch.rs.training.losses import change_loss, parse_loss
from changewatch.rs.training.sampling import SiteArrays, batches, load_site, sample_batch
from changewatch.rs.training.state import Progress, load_state, save_state, write_logs

PRETRAINED_BANDS = ("red", "green", "blue")
WARMUP_SHARE = 0.05  # share of the iterations the one-cycle learning rate rises over


@dataclass
class TrainResult:
    """Where the checkpoint went and how good it was on val (pooled, at its chosen threshold)."""

    checkpoint: Path
    threshold: float
    val: dict[str, Any]  # the checkpoint's val record (Validation.record)
    seconds: float


ValSets = dict[str, list[LabelledPair]]


@dataclass(frozen=True)
class Validation:
    """One validation: the threshold chosen, the F1 it reaches, and the record the checkpoint keeps.

    The record is ``ModelSpec.metrics["val_pooled"]``: the pooled pixel metrics
    (``rs.metrics.PixelMetrics``) of the one val set, or, with several, their mean F1 and each
    set's pooled metrics under ``sets``.
    """

    threshold: float
    f1: float
    record: dict[str, Any]


def validate(network: torch.nn.Module, spec: ModelSpec, device: torch.device, val: ValSets,
              config: TrainConfig) -> Validation:
    """The network on the val sets, run as ``evaluate`` runs a model (tiled, GSD policy auto).

    The threshold maximises the mean of the sets' pooled F1 (one set: its pooled F1), so a small
    set weighs as much as a large one.
    """
    model = ChangeModel(network, spec, device)
    options = EvalOptions(bands=config.select, coregister=config.coregister, zero_is_valid=config.zero_is_valid,
                          threshold=0.5)
    histograms = {name: evaluate(pairs, model, options).histogram for name, pairs in val.items()}
    threshold, per_set = best_common_threshold(histograms)
    if len(per_set) == 1:
        pooled = next(iter(per_set.values())).metrics()
        return Validation(threshold, pooled.f1, asdict(pooled))
    mean_f1 = float(np.mean([c.f1 for c in per_set.values()]))
    return Validation(threshold, mean_f1,
                      {"f1": mean_f1, "sets": {name: asdict(c.metrics()) for name, c in per_set.items()}})


def warmup_share(iterations: int) -> float:
    """The share of ``iterations`` the learning rate warms up over (OneCycleLR's ``pct_start``).

    WARMUP_SHARE, but at least two steps from four iterations on: a warm-up of exactly one step makes
    torch's OneCycleLR divide by zero (e.g. 20 iterations at 5 %).
    """
    return max(WARMUP_SHARE, 2 / iterations) if iterations >= 4 else WARMUP_SHARE


def val_set_names(folders: tuple[str, ...]) -> list[str]:
    """One name per validation folder: its folder name, or the path as given where names repeat (a/val, b/val)."""
    names = [Path(d).name for d in folders]
    return [Path(d).as_posix() if names.count(name) > 1 else name for name, d in zip(names, folders, strict=True)]


def split(config: TrainConfig) -> tuple[list[LabelledPair], ValSets]:
    """Training pairs and validation sets.

    With ``val_data`` each folder is a set of its own; otherwise ``val_sites`` of ``data_dir`` are
    one set. train_sites ("all",) means every pair of ``data_dir`` not used for val.
    """
    if config.val_data:
        val = {name: find_pairs(d) for name, d in zip(val_set_names(config.val_data), config.val_data, strict=True)}
    else:
        hint = default_sites_hint("--val-sites", config.val_sites)
        val = {"val": find_pairs(config.data_dir, list(config.val_sites), hint=hint)} if config.val_sites else {}
    if tuple(config.train_sites) == ("all",):
        names = {p.name for pairs in val.values() for p in pairs if not config.val_data}
        return [p for p in find_pairs(config.data_dir) if p.name not in names], val
    return find_pairs(config.data_dir, list(config.train_sites),
                      hint=default_sites_hint("--train-sites", config.train_sites)), val


def data_licence(data_dir: str | Path) -> str:
    """The licence the training data declares.

    The attribution in a ``synth.json`` in ``data_dir`` or its parent (``cli.py synth`` output), the
    OSCD statement for the OSCD folder (it holds ``README_OSCD_labels.txt``), else a note that none
    was declared (pass ``licence``).
    """
    root = Path(data_dir)
    for manifest in (root / "synth.json", root.parent / "synth.json"):
        if manifest.is_file():
            declared = json.loads(manifest.read_text())
            return f"Trained on synthetic change pairs made by changewatch synth from {declared['attribution']}"
    if (root / "README_OSCD_labels.txt").is_file():
        return OSCD_LICENCE
    return "Training data licence not declared (train --licence)."


def initial_network(config: TrainConfig, device: torch.device) -> tuple[torch.nn.Module, ModelSpec]:
    """A fresh network for ``config``, or, with ``init_from``, that checkpoint's network and weights.

    Its architecture, fusion and encoder; its band count must match.
    """
    licence = config.licence or data_licence(config.data_dir)
    assert config.name is not None, "TrainConfig.__post_init__ names the model"
    if config.init_from:
        network, base = load_checkpoint(config.init_from)
        if len(base.bands) != len(config.bands):
            raise ModelError(f"--init-from {config.init_from} takes {len(base.bands)} bands per date, "
                             f"the training data {len(config.bands)}")
        spec = ModelSpec(name=config.name, architecture=base.architecture, fusion=base.fusion, encoder=base.encoder,
                         encoder_depth=base.encoder_depth, decoder_channels=base.decoder_channels, bands=config.bands,
                         gsd_m=config.gsd_m, gsd_range_m=config.gsd_range_m, outputs=base.outputs,
                         normalisation=METHOD, licence=f"{licence} Fine-tuned from {base.name}: {base.licence}")
        return network.to(device).train(), spec
    spec = ModelSpec(name=config.name, architecture=config.architecture, fusion=config.fusion, encoder=config.encoder,
                     bands=config.bands, gsd_m=config.gsd_m, gsd_range_m=config.gsd_range_m, outputs=config.outputs,
                     normalisation=METHOD, licence=licence)
    network = build_network(spec)
    if config.encoder_weights == "imagenet":
        if tuple(config.bands) != PRETRAINED_BANDS:
            raise ModelError(f"--encoder-weights imagenet needs the bands {', '.join(PRETRAINED_BANDS)} in that order "
                             f"(--band-names), not {', '.join(config.bands)}")
        source = load_pretrained_encoder(network.get_submodule("encoder"), spec.encoder,
                                         dates=2 if spec.fusion == "early" else 1)
        spec.licence = f"{spec.licence} Encoder initialised from ImageNet weights: {source}."
    elif config.encoder_weights is not None:
        raise ModelError(f"unknown encoder weights {config.encoder_weights!r}: use imagenet or none")
    return network.to(device).train(), spec


def iterations_for(config: TrainConfig, sites: list[SiteArrays]) -> int:
    """Optimiser steps: ``config.iterations``, or ``config.epochs`` passes over the labelled pixels."""
    if config.epochs is None:
        return config.iterations
    pixels = sum(int((s.label != LABEL_NODATA).sum()) for s in sites)
    return max(1, math.ceil(config.epochs * pixels / (config.batch_size * config.crop ** 2)))


def _pair_options(config: TrainConfig) -> PairOptions:
    """How training and validation pairs are prepared: the selected bands, at their own pixels."""
    return PairOptions(bands=config.select, gsd="native", coregister=config.coregister,
                       zero_is_valid=config.zero_is_valid)


def try_average(state: Progress, network: torch.nn.Module, spec: ModelSpec, device: torch.device,
                 val: ValSets, sites: list[SiteArrays], config: TrainConfig,
                 rng: np.random.Generator) -> bool:
    """Stochastic weight averaging: the mean of the last validated weights, kept only when it beats the best.

    Batch-norm statistics are re-estimated on 50 training batches; validated like any checkpoint
    and kept (True) only when its val F1 beats the best single checkpoint.
    """
    floating = [k for k, v in state.recent[0].items() if v.is_floating_point()]
    mean = {**state.recent[-1], **{k: torch.stack([r[k] for r in state.recent]).mean(0) for k in floating}}
    network.load_state_dict(mean)
    batches = (torch.from_numpy(sample_batch(sites, config, rng)[0]) for _ in range(50))
    torch.optim.swa_utils.update_bn(batches, network, device)
    checked = validate(network, spec, device, val, config)
    state.log.append({"iteration": f"mean of last {len(state.recent)}", "val_f1": round(checked.f1, 4),
                      "val_threshold": checked.threshold})
    if checked.f1 <= state.best_f1:
        return False
    state.best_f1, state.best_threshold, state.best_metrics = checked.f1, checked.threshold, checked.record
    state.best_state = _weights(network)
    return True


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train, validate every ``val_every`` iterations, and save the best checkpoint to ``config.out``.

    Deterministic on the CPU for a given seed. Writes ``NAME.log.csv`` and ``NAME.log.jsonl`` (one
    row per validation) and ``NAME.state.pt`` (to ``resume`` from) beside the checkpoint; stops
    early after ``patience`` validations without a better val F1. Raises ModelError when ``out`` is
    a shipped model (without ``force``), the loss is unknown, the band names do not fit the data, or
    the state to resume from is missing or not this run's; the errors of ``rs.datasets`` for the data.
    """
    if is_shipped(config.out) and not config.force:
        raise ModelError(f"{config.out} is a model shipped with changewatch: write elsewhere (default runs/) "
                         "or pass --force to replace it")
    session = _Session.start(config)
    session.run(progress)
    return session.finish()


@dataclass
class _Session:
    """One training run in progress: network, optimiser and schedule, data, random generator and progress.

    Progress is what has been done (``state``).
    """

    config: TrainConfig
    network: torch.nn.Module
    spec: ModelSpec
    device: torch.device
    sites: list[SiteArrays]
    val_sets: ValSets
    terms: tuple[str, ...]
    iterations: int
    optimiser: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    rng: np.random.Generator
    state: Progress
    started: float

    @classmethod
    def start(cls, config: TrainConfig) -> _Session:
        """Seed, load the data, build (or load) the network and, with ``resume``, restore the saved state."""
        started = time.perf_counter()
        torch.manual_seed(config.seed)
        torch.set_num_threads(config.threads)
        rng = np.random.default_rng(config.seed)
        device = resolve_device(config.device)
        try:
            terms = parse_loss(config.loss)
        except ValueError as exc:
            raise ModelError(str(exc)) from exc
        train_pairs, val_sets = split(config)
        if not train_pairs:
            raise InputFileError(f"no training pair left in {config.data_dir}: --train-sites "
                                 f"{','.join(config.train_sites)} minus the validation sites is empty (give other "
                                 "--val-sites, or --val-data folders)")
        outputs = load_spec(config.init_from).outputs if config.init_from else config.outputs
        sites = [load_site(s, _pair_options(config), outputs) for s in train_pairs]
        if sites[0].x.shape[0] != 2 * len(config.bands):
            raise ModelError(f"{len(config.bands)} band names given ({', '.join(config.bands)}) for "
                             f"{sites[0].x.shape[0] // 2} bands per date in the data")
        network, spec = initial_network(config, device)
        iterations = iterations_for(config, sites)
        optimiser = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=iterations,
                                                       pct_start=warmup_share(iterations))
        state = load_state(config, network, optimiser, schedule, rng) if config.resume else Progress()
        return cls(config, network, spec, device, sites, val_sets, terms, iterations, optimiser, schedule, rng,
                   state, started)

    @property
    def log_path(self) -> Path:
        return Path(self.config.out).with_suffix(".log.csv")

    def run(self, progress: bool) -> None:
        """Optimiser steps up to ``iterations`` (from where a resumed run stopped), validating as it goes.

        Validates every ``val_every`` steps, at the last step and when out of time; stops early on
        ``patience``.
        """
        config, state = self.config, self.state
        with writing(self.log_path.parent):
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm(range(state.iteration + 1, self.iterations + 1), desc="train", unit="it", disable=not progress,
                   initial=state.iteration, total=self.iterations)
        stream = batches(self.sites, config, self.rng, state.iteration)
        for it in bar:
            self._step(*next(stream))
            state.iteration = it
            out_of_time = (config.max_minutes is not None
                           and time.perf_counter() - self.started > 60 * config.max_minutes)
            if it % config.val_every == 0 or it == self.iterations or out_of_time:
                self._checkpoint(it, bar)
                if config.patience and state.since_best >= config.patience or out_of_time:
                    break

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimiser step on a batch; the running loss is updated."""
        config, device = self.config, self.device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda"):
            logits = self.network(x.to(device, non_blocking=True))
        loss = change_loss(logits.float(), y.to(device, non_blocking=True), config.pos_weight, self.terms,
                           config.focal_gamma)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self.schedule.step()
        running = self.state.running
        self.state.running = loss.item() if math.isnan(running) else 0.98 * running + 0.02 * loss.item()

    def _checkpoint(self, it: int, bar: Any) -> None:
        """Validate, log, and save the state to resume from.

        Keeps the best weights and, for ``average_last``, the recent ones.
        """
        state, config = self.state, self.config
        row: dict[str, object] = {"iteration": it, "loss": round(state.running, 5),
                                  "lr": self.schedule.get_last_lr()[0],
                                  "seconds": round(time.perf_counter() - self.started, 1)}
        if self.val_sets:
            checked = validate(self.network, self.spec, self.device, self.val_sets, config)
            row.update(val_f1=round(checked.f1, 4), val_threshold=checked.threshold)
            if checked.f1 > state.best_f1:
                state.best_f1, state.best_threshold, state.best_metrics = checked.f1, checked.threshold, checked.record
                state.best_state = _weights(self.network)
                state.since_best = 0
            else:
                state.since_best += 1
            bar.set_postfix(loss=f"{state.running:.3f}", val_f1=f"{checked.f1:.3f}")
            if config.average_last:
                state.recent = [*state.recent, _weights(self.network)][-config.average_last:]
        state.log.append(row)
        with writing(self.log_path.parent):
            write_logs(self.log_path, state.log)
            save_state(config, state, self.network, self.optimiser, self.schedule, self.rng)

    def finish(self) -> TrainResult:
        """Try the mean of the recent weights, load the best, and save the checkpoint.

        The checkpoint is saved with its threshold, val metrics and training record.
        """
        state, config, spec = self.state, self.config, self.spec
        averaged = False
        if len(state.recent) > 1:
            averaged = try_average(state, self.network, spec, self.device, self.val_sets, self.sites, config,
                                   self.rng)
            with writing(self.log_path.parent):
                write_logs(self.log_path, state.log)
        if not state.best_state:  # no validation pairs: keep the last weights at the default threshold
            state.best_state, state.best_threshold = self.network.state_dict(), 0.5
        self.network.load_state_dict(state.best_state)
        spec.threshold = state.best_threshold
        spec.metrics = {"val_pooled": state.best_metrics,
                        "val_sites": [p.name for s in self.val_sets.values() for p in s],
                        **({"val_sets": {name: Path(d).as_posix()
                                         for name, d in zip(self.val_sets, config.val_data, strict=True)}}
                           if config.val_data else {})}
        spec.training = {"config": asdict(config), "log": self.log_path.name, "iterations_run": state.iteration,
                         "iterations_planned": self.iterations,
                         "seconds": round(time.perf_counter() - self.started, 1), "averaged_weights": averaged,
                         "torch": torch.__version__}
        with writing(config.out):
            path = save_checkpoint(self.network, spec, config.out)
        return TrainResult(path, state.best_threshold, state.best_metrics, time.perf_counter() - self.started)


def _weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the network's weights on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
