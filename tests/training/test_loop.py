"""rs.training.loop: a short run on tiny generated sites learns, validates and saves a loadable checkpoint;
it resumes from its saved state (rs.training.state) to the same weights."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from changewatch.models.changenet import load_checkpoint
from changewatch.rs.datasets import find_pairs
from changewatch.rs.errors import InputFileError, ModelError
from changewatch.rs.training.config import TrainConfig
from changewatch.rs.training.loop import train, val_set_names, warmup_share
from changewatch.rs.training.sampling import load_site


@pytest.mark.slow  # 60 iterations and three validations: about a minute on two cores
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
    from changewatch.rs.training import sampling as train_module  # where the training loop draws its batches

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
    from changewatch.rs.training.config import OSCD_LICENCE
    from changewatch.rs.training.loop import data_licence

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
    from tests.models.test_changenet import _Payload

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


def test_val_folders_of_the_same_name_stay_separate_sets() -> None:
    assert val_set_names(("x/dsifn", "y/sztaki")) == ["dsifn", "sztaki"]
    assert val_set_names(("a/val", "b/val", "c/other")) == ["a/val", "b/val", "other"]


@pytest.mark.parametrize("iterations", [1, 2, 3, 20, 40, 10000])
def test_learning_rate_schedule_runs_for_any_number_of_iterations(iterations: int) -> None:
    """A warm-up of exactly one step made torch's OneCycleLR divide by zero (``train --iterations 20``)."""
    optimiser = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=0.1, total_steps=iterations,
                                                   pct_start=warmup_share(iterations))
    for _ in range(iterations):
        optimiser.step()
        schedule.step()


def test_no_training_pair_left_is_one_clear_error(sites: Path, tmp_path: Path) -> None:
    """``--train-sites all`` minus the val sites leaving nothing was an IndexError traceback."""
    names = tuple(p.name for p in find_pairs(sites))
    with pytest.raises(InputFileError, match="no training pair left"):
        train(tiny_config(sites, tmp_path / "m.json", train_sites=("all",), val_sites=names), progress=False)


DEFAULT_SITES_ROWS = {  # README Bad inputs row → (train's options, words of its error line)
    "`train --data DIR --train-sites all` of data without OSCD's cities, no `--val-sites`":
        (["--train-sites", "all"], "no labelled pair named beirut, cupertino, hongkong, nantes under {data}: "
         "--val-sites defaults to OSCD's validation cities: name this data's pairs with --val-sites NAME,NAME or "
         "give a separate val set with --val-data DIR"),
    "`train --data DIR` of data without OSCD's cities, no `--train-sites`":
        (["--val-sites", "alpha"], "--train-sites defaults to OSCD's training cities: name this data's pairs with "
         "--train-sites NAME,NAME or 'all'"),
}


@pytest.mark.parametrize("row", list(DEFAULT_SITES_ROWS))
def test_default_oscd_sites_missing_from_the_data_are_named_as_the_default(row: str, sites: Path,
                                                                           tmp_path: Path) -> None:
    from click.testing import CliRunner

    from changewatch.cli import cli
    from tests.test_cli import readme_bad_inputs

    assert readme_bad_inputs()[row] == "3"
    options, words = DEFAULT_SITES_ROWS[row]
    out = tmp_path / "runs" / "m.json"
    result = CliRunner().invoke(cli, ["train", "--data", str(sites), "--out", str(out), *options])
    assert result.exit_code == 3, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert words.format(data=sites) in result.output
    assert not out.parent.exists()


def test_sites_the_user_names_get_no_default_hint(sites: Path) -> None:
    with pytest.raises(InputFileError, match=r"no labelled pair named delta under [^:]*$"):
        train(TrainConfig(data_dir=str(sites), train_sites=("all",), val_sites=("delta",)), progress=False)
