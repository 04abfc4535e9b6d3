"""rs.train: a short run on tiny generated sites learns, validates and saves a loadable checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

import pytest

from changewatch.models.changenet import load_checkpoint
from changewatch.rs.datasets import find_pairs
from changewatch.rs.errors import ModelError
from changewatch.rs.train import change_loss, iterations_for, load_site, parse_loss, sample_batch, train
from changewatch.rs.training.config import TrainConfig


def test_load_site_and_sample_batch(sites: Path) -> None:
    site = load_site(find_pairs(sites, ["alpha"])[0])
    assert site.x.shape == (8, 64, 64) and site.x.dtype == np.float32
    assert int((site.label == 1).sum()) == 12 * 12 + 8 * 8 and len(site.positives) == 208
    config = TrainConfig(data_dir=str(sites), out="unused", crop=32, batch_size=6)
    x, y = sample_batch([site], config, np.random.default_rng(0))
    assert x.shape == (6, 8, 32, 32) and y.shape == (6, 1, 32, 32)
    assert (y == 1).any()  # half the crops are centred on change


def test_loss_ignores_unlabelled_pixels() -> None:
    logits = torch.zeros(1, 1, 4, 4)
    target = torch.full((1, 1, 4, 4), 255, dtype=torch.uint8)
    target[0, 0, 0, 0] = 1
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


def tiny_config(sites: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(data_dir=str(sites), out=str(out), train_sites=("alpha", "beta"), val_sites=("gamma",),
                encoder="resnet18", crop=32, batch_size=2, iterations=6, val_every=3, lr=3e-3, threads=1, seed=0)
    return TrainConfig(**{**base, **kw})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0].state_dict()


def test_training_is_deterministic_with_a_seed(sites: Path, tmp_path: Path) -> None:
    a = train(tiny_config(sites, tmp_path / "a.json"), progress=False)
    b = train(tiny_config(sites, tmp_path / "b.json"), progress=False)
    for k, v in weights(a.checkpoint).items():
        torch.testing.assert_close(v, weights(b.checkpoint)[k], rtol=0, atol=0)


def test_resume_continues_an_interrupted_run_to_the_same_weights(sites: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    whole = train(tiny_config(sites, tmp_path / "whole.json"), progress=False)
    from changewatch.rs import train as train_module

    calls = {"n": 0}
    real = train_module.sample_batch

    def crash_at_step_5(*args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # the state saved at step 3 survives
        return real(*args)

    monkeypatch.setattr(train_module, "sample_batch", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(sites, tmp_path / "cut.json"), progress=False)
    monkeypatch.setattr(train_module, "sample_batch", real)
    resumed = train(tiny_config(sites, tmp_path / "cut.json", resume=True), progress=False)
    for k, v in weights(whole.checkpoint).items():
        torch.testing.assert_close(v, weights(resumed.checkpoint)[k], rtol=0, atol=0)
    rows = list(csv.DictReader(open(tmp_path / "cut.log.csv")))
    assert [int(r["iteration"]) for r in rows] == [3, 6]
    assert (tmp_path / "cut.log.jsonl").read_text().count("\n") == 2
    with pytest.raises(ModelError, match="different crop"):
        train(tiny_config(sites, tmp_path / "cut.json", resume=True, crop=64), progress=False)


@pytest.mark.parametrize("fusion", ["siamese-diff", "siamese-concat"])
def test_siamese_networks_train_and_round_trip(sites: Path, tmp_path: Path, fusion: str) -> None:
    result = train(tiny_config(sites, tmp_path / "s.json", fusion=fusion, iterations=2, val_every=2), progress=False)
    network, spec = load_checkpoint(result.checkpoint)
    assert spec.fusion == fusion and type(network).__name__ == "SiameseNet"


def test_fine_tuning_starts_from_a_checkpoint(sites: Path, tmp_path: Path) -> None:
    base = train(tiny_config(sites, tmp_path / "base.json", fusion="siamese-diff", iterations=2, val_every=2),
                 progress=False)
    tuned = train(tiny_config(sites, tmp_path / "tuned.json", init_from=str(base.checkpoint), encoder="mobilenet_v2",
                              iterations=2, val_every=2, lr=1e-12), progress=False)
    spec = load_checkpoint(tuned.checkpoint)[1]
    assert (spec.fusion, spec.encoder) == ("siamese-diff", "resnet18")  # the checkpoint's network, not --encoder
    for k, v in weights(base.checkpoint).items():  # a vanishing learning rate: weights barely move
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(v, weights(tuned.checkpoint)[k], rtol=1e-3, atol=1e-3)


def test_augmentations_keep_shapes_and_labels(sites: Path) -> None:
    site = load_site(find_pairs(sites, ["alpha"])[0])
    config = TrainConfig(data_dir=str(sites), out="unused", crop=32, batch_size=16, shift_px=2,
                         scale_range=(0.5, 2.0), jitter=0.0, flips=False)
    x, y = sample_batch([site], config, np.random.default_rng(1))
    assert x.shape == (16, 8, 32, 32) and y.shape == (16, 1, 32, 32)
    assert set(np.unique(y)) <= {0, 1, 255} and (y == 1).any()


def test_band_jitter_scales_each_band_of_each_date_on_its_own(sites: Path) -> None:
    site = load_site(find_pairs(sites, ["alpha"])[0])
    plain = TrainConfig(data_dir=str(sites), out="unused", crop=32, batch_size=4, jitter=0.0)
    jittered = TrainConfig(data_dir=str(sites), out="unused", crop=32, batch_size=4, jitter=0.0, band_jitter=0.2)
    x0, y0 = sample_batch([site], plain, np.random.default_rng(3))
    x1, y1 = sample_batch([site], jittered, np.random.default_rng(3))
    assert np.array_equal(y0[0], y1[0])  # same first crop: only the gains differ
    ratios = [float(np.median(x1[0, b][x0[0, b] != 0] / x0[0, b][x0[0, b] != 0])) for b in range(8)]
    assert len({round(r, 4) for r in ratios}) == 8 and all(0.3 < r < 1.7 for r in ratios)


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
    assert iterations_for(config, [site]) == 2 * 64 * 64 // (2 * 32 * 32)


def test_misregistration_shift_on_a_site_smaller_than_the_crop(tmp_path: Path) -> None:
    from tests.data import make_site

    small = load_site(find_pairs(make_site(tmp_path / "s", "tiny", 4, size=20, squares=((5, 5, 6),)).parent)[0])
    config = TrainConfig(data_dir="", out="unused", crop=32, batch_size=8, shift_px=2)
    x, y = sample_batch([small], config, np.random.default_rng(0))
    assert x.shape == (8, 8, 32, 32) and (y == 255).any() and (y == 1).any()


def test_weight_averaging_is_validated_and_logged(sites: Path, tmp_path: Path) -> None:
    result = train(tiny_config(sites, tmp_path / "swa.json", iterations=9, average_last=3), progress=False)
    rows = list(csv.DictReader(open(tmp_path / "swa.log.csv")))
    assert [r["iteration"] for r in rows] == ["3", "6", "9", "mean of last 3"]
    spec = load_checkpoint(result.checkpoint)[1]
    best_single = max(float(r["val_f1"]) for r in rows[:3])
    assert spec.training["averaged_weights"] == (float(rows[-1]["val_f1"]) > best_single)


def test_train_never_replaces_a_shipped_model_without_force(sites: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from changewatch.cli import cli
    from changewatch.models.changenet import DEFAULT_MODEL

    shipped = {p: p.read_bytes() for p in DEFAULT_MODEL.parent.glob("changewatch-*")}
    with pytest.raises(ModelError, match="shipped"):
        train(tiny_config(sites, DEFAULT_MODEL), progress=False)
    monkeypatch.chdir(tmp_path)  # the default --out is relative: runs/ under the working folder
    result = CliRunner().invoke(cli, ["train", "--data", str(sites), "--train-sites", "alpha", "--val-sites", "gamma",
                                      "--encoder", "resnet18", "--crop", "32", "--batch-size", "2", "--iterations",
                                      "2", "--val-every", "2", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "changewatch.json").is_file()
    assert {p: p.read_bytes() for p in DEFAULT_MODEL.parent.glob("changewatch-*")} == shipped


def test_separate_val_sets_choose_one_threshold_by_their_mean_f1(sites: Path, tmp_path: Path) -> None:
    import shutil

    for name in ("beta", "gamma"):  # two val folders of one pair each
        shutil.copytree(sites / name, tmp_path / f"set_{name}" / name)
    config = tiny_config(sites, tmp_path / "m.json", train_sites=("alpha",), val_sites=(),
                         val_data=(str(tmp_path / "set_beta"), str(tmp_path / "set_gamma")), loader_workers=1)
    result = train(config, progress=False)
    metrics = load_checkpoint(result.checkpoint)[1].metrics
    sets = metrics["val_pooled"]["sets"]
    assert set(sets) == {"set_beta", "set_gamma"}
    assert metrics["val_pooled"]["f1"] == pytest.approx((sets["set_beta"]["f1"] + sets["set_gamma"]["f1"]) / 2)
    assert metrics["val_sites"] == ["beta", "gamma"]


def test_common_threshold_maximises_the_mean_of_set_f1() -> None:
    from changewatch.rs.evaluate import ProbHistogram, best_common_threshold

    big, small = ProbHistogram(), ProbHistogram()
    big.add(np.array([0.50] * 100 + [0.30] * 1000), np.array([True] * 100 + [False] * 1000))
    small.add(np.array([0.25] * 10 + [0.10] * 10), np.array([True] * 10 + [False] * 10))
    threshold, at = best_common_threshold({"big": big, "small": small})
    # the mean of the two sets' F1 is best where the small set is perfect: (0.10, 0.25]
    assert 0.10 < threshold <= 0.25 and at["small"].f1 == 1.0
    # pooling their pixels instead would favour the big set: (0.30, 0.50]
    pooled = ProbHistogram()
    pooled += big
    pooled += small
    assert 0.30 < pooled.best_threshold()[0] <= 0.50


def test_semantic_model_learns_buildings_of_each_date(tmp_path: Path) -> None:
    from changewatch.models.changenet import SEMANTIC_OUTPUTS
    from changewatch.rs.infer import ChangeModel
    from tests.data import make_levir

    root = make_levir(tmp_path / "levir", {"a": ((30, 30, 12),), "b": ((10, 40, 10),), "c": ((40, 10, 14),)},
                      buildings=True)
    site = load_site(find_pairs(root, ["a"])[0], outputs=SEMANTIC_OUTPUTS)
    assert site.label.shape == (3, 64, 64)
    assert (site.label[1, 2:8, 2:8] == 1).all() and (site.label[1, 30:42, 30:42] == 0).all()
    assert (site.label[2, 30:42, 30:42] == 1).all() and (site.label[0, 2:8, 2:8] == 0).all()
    config = tiny_config(root, tmp_path / "m.json", train_sites=("a", "b"), val_sites=("c",), outputs=SEMANTIC_OUTPUTS,
                         bands=("red", "green", "blue"))
    result = train(config, progress=False)
    network, spec = load_checkpoint(result.checkpoint)
    assert spec.outputs == SEMANTIC_OUTPUTS
    prob = ChangeModel(network, spec, torch.device("cpu")).predict(np.zeros((1, 6, 64, 64), np.float32))
    assert prob.shape == (1, 3, 64, 64)


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


def test_max_minutes_stops_early_with_a_last_validation(sites: Path, tmp_path: Path) -> None:
    result = train(tiny_config(sites, tmp_path / "m.json", iterations=50, val_every=25, max_minutes=1e-9),
                   progress=False)
    rows = list(csv.DictReader(open(tmp_path / "m.log.csv")))
    assert [int(r["iteration"]) for r in rows] == [1] and rows[0]["val_f1"] != ""
    assert load_checkpoint(result.checkpoint)[1].training["iterations_run"] == 1


def test_gsd_range_is_recorded_and_checked(sites: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from changewatch.cli import cli

    result = train(tiny_config(sites, tmp_path / "m.json", gsd_m=0.5, gsd_range_m=(0.25, 2.5)), progress=False)
    spec = load_checkpoint(result.checkpoint)[1]
    assert spec.gsd_range_m == (0.25, 2.5) and spec.serves_gsd_m == (0.25, 2.5)
    assert load_checkpoint(train(tiny_config(sites, tmp_path / "n.json", gsd_m=10.0), progress=False).checkpoint)[
        1].serves_gsd_m == (5.0, 30.0)  # by default half to three times the training GSD
    bad = CliRunner().invoke(cli, ["train", "--data", str(sites), "--gsd-m", "0.5", "--gsd-range", "1,2"])
    assert bad.exit_code == 2 and "--gsd-range" in bad.output


def test_licence_comes_from_what_the_data_declares(sites: Path, tmp_path: Path) -> None:
    from changewatch.rs.train import data_licence
    from changewatch.rs.training.config import OSCD_LICENCE

    assert "not declared" in data_licence(sites)
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "synth.json").write_text('{"attribution": "imagery X, CC BY 4.0; footprints Y, ODbL 1.0"}')
    (tmp_path / "synth" / "train").mkdir()
    assert "CC BY 4.0" in data_licence(tmp_path / "synth" / "train") and "ODbL" in data_licence(tmp_path / "synth")
    (tmp_path / "oscd").mkdir()
    (tmp_path / "oscd" / "README_OSCD_labels.txt").write_text("labels")
    assert data_licence(tmp_path / "oscd") == OSCD_LICENCE
    result = train(tiny_config(sites, tmp_path / "m.json", licence="CC0 city labels"), progress=False)
    assert load_checkpoint(result.checkpoint)[1].licence == "CC0 city labels"


def test_resume_from_state_files_that_are_not_what_they_claim(sites: Path, tmp_path: Path) -> None:
    """A .state.pt holding pickled objects, truncated, garbage or incomplete: exit 6 with one line,
    and nothing in it runs (torch.load(weights_only=True))."""
    import io
    import pickle

    from click.testing import CliRunner

    from changewatch.cli import cli
    from tests.test_models import _Payload

    train(tiny_config(sites, tmp_path / "m.json"), progress=False)
    state = tmp_path / "m.state.pt"
    good = state.read_bytes()
    marker = tmp_path / "payload-ran"
    zipped = io.BytesIO()
    torch.save({"progress": _Payload(marker)}, zipped)
    incomplete = io.BytesIO()
    torch.save({k: v for k, v in torch.load(state, weights_only=True).items() if k != "optimiser"}, incomplete)
    cases = {
        "pickled objects": (pickle.dumps({"config": _Payload(marker)}), "holds pickled objects"),
        "pickled objects in a torch file": (zipped.getvalue(), "holds pickled objects"),
        "truncated": (good[: len(good) // 2], "truncated or corrupt"),
        "empty": (b"", "truncated or corrupt"),
        "garbage": (b"PK\x03\x04" + bytes(range(200)), "truncated or corrupt"),
        "incomplete": (incomplete.getvalue(), "does not hold a complete training state"),
    }
    for name, (data, words) in cases.items():
        state.write_bytes(data)
        with pytest.raises(ModelError, match=words):
            train(tiny_config(sites, tmp_path / "m.json", resume=True), progress=False)
        assert not marker.exists(), name
    state.write_bytes(cases["pickled objects"][0])
    result = CliRunner().invoke(cli, ["train", "--data", str(sites), "--out", str(tmp_path / "m.json"), "--resume",
                                      "--train-sites", "alpha,beta", "--val-sites", "gamma", "--encoder", "resnet18",
                                      "--crop", "32", "--batch-size", "2", "--iterations", "6", "--val-every", "3",
                                      "--lr", "3e-3", "-q"])
    assert result.exit_code == 6, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --resume:") and "holds pickled objects" in lines[0]
    assert not marker.exists()
