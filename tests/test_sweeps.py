"""Sweeps: every combination trained through ``cnnclf fit``, tabulated, and never trained twice."""

import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from cnnclf.cli import cli_main
from cnnclf.curves import CURVES_FILE, CSVCurveLogger
from cnnclf.errors import ConfigError
from cnnclf.explore import RUN_RECORD, read_run
from cnnclf.shipped import shipped_configs
from cnnclf.sweeps.results import choose_best, group_runs, write_tables
from cnnclf.sweeps.runner import main, run_sweep
from cnnclf.sweeps.spec import load_sweep
from tests.conftest import CONFIGS, write_sweep


def checkpoint_times(folder: Path) -> dict[str, float]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.glob("*/checkpoints/*.ckpt")}


def test_sweep_trains_every_combination_and_tabulates_them(digits_sweep):
    with (digits_sweep / "results.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["run"] for row in rows] == ["optimizer=adam", "optimizer=sgd"]
    for row in rows:
        assert row["status"] == "ok" and 0 <= float(row["test_accuracy"]) <= 1 and row["epochs"] == "2"
        assert Path(row["checkpoint"]).is_file()
        saved = yaml.safe_load((digits_sweep / row["run"] / "config.yaml").read_text())
        assert saved["model"]["init_args"]["optimizer"] == row["model.optimizer"]
    markdown = (digits_sweep / "results.md").read_text()
    assert "| optimizer=sgd | sgd |" in markdown
    assert (digits_sweep / "results.png").stat().st_size > 0


def test_running_a_finished_sweep_again_trains_nothing(digits_sweep, tmp_path):
    before = checkpoint_times(digits_sweep)
    results = run_sweep(write_sweep(tmp_path / "optimizers.yaml", {"model.optimizer": ["adam", "sgd"]}),
                        out=digits_sweep)
    assert checkpoint_times(digits_sweep) == before
    assert [result.status for result in results] == ["ok", "ok"]


def test_a_grown_grid_trains_only_the_new_runs(digits_sweep, tmp_path):
    folder = shutil.copytree(digits_sweep, tmp_path / "out")
    before = checkpoint_times(folder)
    run_sweep(write_sweep(tmp_path / "more.yaml", {"model.optimizer": ["adam", "sgd", "adamw"]}), out=folder)
    after = checkpoint_times(folder)
    assert {key: after[key] for key in before} == before
    assert any(key.startswith("optimizer=adamw/") for key in after)
    with (folder / "results.csv").open() as stream:
        assert [row["run"] for row in csv.DictReader(stream)] == ["optimizer=adam", "optimizer=sgd", "optimizer=adamw"]


def test_changed_settings_are_refused_instead_of_mixed_into_the_table(digits_sweep, tmp_path):
    sweep = write_sweep(tmp_path / "optimizers.yaml", {"model.optimizer": ["adam", "sgd"]}, epochs=3)
    with pytest.raises(ConfigError, match="finished with other settings"):
        run_sweep(sweep, out=digits_sweep)


def test_an_interrupted_run_resumes_from_its_last_checkpoint(digits_sweep, tmp_path):
    folder = shutil.copytree(digits_sweep, tmp_path / "out")
    # What a kill after the last epoch's checkpoint leaves: no test summary, no sweep record.
    shutil.rmtree(folder / "optimizer=sgd" / "test")
    (folder / "optimizer=sgd" / "sweep_run.json").unlink()
    results = run_sweep(write_sweep(tmp_path / "optimizers.yaml", {"model.optimizer": ["adam", "sgd"]}), out=folder)
    log = (folder / "optimizer=sgd" / "sweep.log").read_text()
    first, again = log.split("\n--- cnnclf-sweep: run again at ")  # the interrupted attempt's log is kept
    assert "Seed set to" in first and "Restoring states from the checkpoint" in again
    assert results[1].status == "ok" and results[1].epochs == 2 and results[1].test_accuracy is not None


class SlowSteps(L.Callback):
    """Slow steps, as a large network's on a CPU: longer than the 0.25 s Python gives a child at Ctrl-C."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        time.sleep(0.6)


def test_ctrl_c_lets_the_run_under_way_save_its_step_then_stops_the_sweep(tmp_path):
    sweep = tmp_path / "slow.yaml"
    sweep.write_text(yaml.safe_dump({"base": str(CONFIGS / "digits.yaml"), "grid": {"model.lr": [0.01]},
                                     "set": {"trainer.callbacks": [{"class_path": "tests.test_sweeps.SlowSteps"}],
                                             "trainer.max_epochs": 1, "trainer.enable_progress_bar": False}}))
    command = [str(Path(sys.executable).parent / "cnnclf-sweep"), str(sweep), "--out", str(tmp_path / "out")]
    sweeping = subprocess.Popen(command, start_new_session=True, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "out" / "lr=0.01" / "sweep.log"
    while "Trainable params" not in (log.read_text() if log.is_file() else "") and sweeping.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(sweeping.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the sweep and its run
    assert "interrupted; run the same command again" in sweeping.communicate(timeout=60)[1]
    stopped = log.read_text()
    assert "Stopped at step" in stopped
    step = int(stopped.split("Stopped at step ")[1].split(";")[0])
    assert torch.load(log.parent / "checkpoints/last.ckpt", weights_only=True)["global_step"] == step > 0


def test_a_failed_run_is_tabulated_and_the_command_fails(tmp_path):
    sweep = write_sweep(tmp_path / "bad.yaml", {"model.optimizer": ["rmsprop"]})
    with pytest.raises(SystemExit, match="1 run\\(s\\) failed: optimizer=rmsprop"):
        main([str(sweep), "--out", str(tmp_path / "out")])
    with (tmp_path / "out" / "results.csv").open() as stream:
        row = next(csv.DictReader(stream))
    assert row["status"] == "failed" and "model.optimizer" in row["error"] and row["test_accuracy"] == ""


def test_grid_names_and_arguments(tmp_path):
    sweep = write_sweep(tmp_path / "grid.yaml", {"model": ["cnnclf.models.ConvBNNet"], "model.widths": [[8, 16]],
                                                 "data.normalize": [True, False]})
    runs = load_sweep(sweep).runs()
    assert [run.name for run in runs] == ["model=ConvBNNet,widths=8-16,normalize=true",
                                          "model=ConvBNNet,widths=8-16,normalize=false"]
    arguments = load_sweep(sweep).arguments(runs[1])
    assert arguments[:2] == ["--config", str(CONFIGS / "digits.yaml")]
    assert arguments[2:] == ["--trainer.max_epochs=2", "--trainer.limit_train_batches=5",
                             "--model=cnnclf.models.ConvBNNet", "--model.widths=[8, 16]", "--data.normalize=false"]


@pytest.mark.parametrize(("content", "message"), [
    ({"grid": {"model.lr": [0.1]}}, "'base' must name a config file"),
    ({"base": "nowhere.yaml"}, "'base': no such config nowhere.yaml"),
    ({"base": "digits.yaml", "grid": {"model.lr": 0.1}}, "'grid.model.lr' must be a non-empty list"),
    ({"base": "digits.yaml", "set": {"model.lr": 0.1}, "grid": {"model.lr": [0.1]}}, "in both 'set' and 'grid'"),
    ({"base": "digits.yaml", "grids": {}}, "unknown field\\(s\\) \\['grids'\\]"),
])
def test_bad_sweep_files_are_clear_errors(content, message, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({key: value if key != "base" or value != "digits.yaml" else str(CONFIGS / value)
                                    for key, value in content.items()}))
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)


def test_a_base_config_is_found_beside_the_sweep_file_or_shipped_by_name(tmp_path):
    (tmp_path / "digits.yaml").write_text("trainer:\n  max_epochs: 1\n")  # beside it: this one
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"base": "digits.yaml", "grid": {"model.lr": [0.1]}}))
    assert load_sweep(tmp_path / "sweep.yaml").base == [tmp_path / "digits.yaml"]
    (tmp_path / "digits.yaml").unlink()
    assert load_sweep(tmp_path / "sweep.yaml").base == [CONFIGS / "digits.yaml"]
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"base": "presets/quick", "grid": {"model.lr": [0.1]}}))
    assert load_sweep(tmp_path / "sweep.yaml").base == [CONFIGS / "presets/quick.yaml"]


SHIPPED_SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))


def test_a_shipped_sweep_opens_by_the_name_cnnclf_configs_lists_it_under(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: the name alone must find it
    listed = [name for name in shipped_configs() if name.startswith("sweeps/")]
    assert listed
    for name in listed:
        short = name.removeprefix("sweeps/")
        assert load_sweep(name).runs() == load_sweep(short).runs() == load_sweep(CONFIGS / f"{name}.yaml").runs()
    with pytest.raises(ConfigError, match="no such sweep file"):
        load_sweep("digits")  # a shipped config, but not a sweep


@pytest.mark.parametrize("path", SHIPPED_SWEEPS, ids=[path.stem for path in SHIPPED_SWEEPS])
def test_every_run_of_a_shipped_sweep_parses_to_its_settings(path, capsys):
    sweep = load_sweep(path)
    for run in sweep.runs():
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["fit", *sweep.arguments(run), "--print_config"])
        assert exit_info.value.code in (None, 0), f"{run.name}: {capsys.readouterr().err}"
        printed = yaml.safe_load(capsys.readouterr().out)
        for key, value in {**sweep.fixed, **run.overrides}.items():
            assert resolved_value(printed, key) == value, f"{run.name}: {key}"


def resolved_value(config: dict, key: str):
    """``model.lr`` -> config['model']['init_args']['lr']; ``model`` -> its class_path; top-level keys as they are."""
    section, _, name = key.partition(".")
    node = config[section]
    if not name:
        return node["class_path"] if isinstance(node, dict) else node
    return node["init_args"][name] if "class_path" in node else node[name]


def test_seeds_and_folds_shorthands_add_repeat_axes_last(tmp_path):
    path = write_sweep(tmp_path / "repeats.yaml", {"model.optimizer": ["adam", "sgd"]})
    content = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**content, "seeds": 2, "folds": 3}))
    sweep = load_sweep(path)
    assert sweep.grid == {"model.optimizer": ["adam", "sgd"], "seed_everything": [0, 1], "data.fold": [0, 1, 2]}
    assert sweep.fixed["data.folds"] == 3 and len(sweep.runs()) == 12
    assert sweep.runs()[0].name == "optimizer=adam,seed_everything=0,fold=0"
    for bad, message in [({"seeds": 0}, "'seeds' must be a count"), ({"folds": 1}, "'folds' must be a number"),
                         ({"seeds": [1], "grid": {"seed_everything": [3]}}, "'seeds' sets seed_everything")]:
        path.write_text(yaml.safe_dump({**content, **bad}))
        with pytest.raises(ConfigError, match=message):
            load_sweep(path)


def fake_run(folder: Path, name: str, overrides: dict, test: float | None, val: float | None) -> Path:
    """A finished run's files, as a sweep and its test summary write them."""
    run_dir = folder / name
    (run_dir / "test").mkdir(parents=True)
    (run_dir / RUN_RECORD).write_text(json.dumps({"name": name, "overrides": overrides, "status": "ok"}))
    (run_dir / "test" / "summary.json").write_text(json.dumps({"accuracy": test, "accuracy_ci95": [0, 1],
                                                               "correct": round(100 * test), "images": 100,
                                                               "macro_f1": test}))
    if val is not None:
        CSVCurveLogger(run_dir / CURVES_FILE).log_metrics({"val/acc": val - 0.1, "epoch": 0}, 10)
        CSVCurveLogger(run_dir / CURVES_FILE).log_metrics({"val/acc": val, "epoch": 1}, 20)
    return run_dir


@pytest.mark.parametrize("with_validation", [True, False])
def test_runs_that_differ_only_by_seed_or_fold_are_aggregated_and_the_best_chosen_on_validation(
        tmp_path, with_validation):
    figures = {("adam", 0, 0): (0.90, 0.80), ("adam", 0, 1): (0.94, 0.82), ("adam", 1, 0): (0.92, 0.84),
               ("sgd", 0, 0): (0.96, 0.70), ("sgd", 0, 1): (0.97, 0.72), ("sgd", 1, 0): (0.95, 0.71)}
    results = [read_run(fake_run(tmp_path, f"{optimizer}-{seed}-{fold}", {"model.optimizer": optimizer,
                                 "seed_everything": seed, "data.fold": fold}, test, val if with_validation else None))
               for (optimizer, seed, fold), (test, val) in figures.items()]
    write_tables(results, tmp_path, "t")
    with (tmp_path / "groups.csv").open() as stream:
        groups = {row["setting"]: row for row in csv.DictReader(stream)}
    adam = [test for (optimizer, _, _), (test, _) in figures.items() if optimizer == "adam"]
    assert groups["model.optimizer=adam"]["n"] == "3"
    assert float(groups["model.optimizer=adam"]["test_accuracy_mean"]) == pytest.approx(statistics.mean(adam))
    assert float(groups["model.optimizer=adam"]["test_accuracy_std"]) == pytest.approx(statistics.stdev(adam))
    assert float(groups["model.optimizer=adam"]["test_accuracy_min"]) == 0.90
    markdown = (tmp_path / "results.md").read_text()
    assert (f"| model.optimizer=adam | 3 | {'82.00 ± 2.00 (80.00-84.00)%' if with_validation else ''} | "
            f"92.00 ± 2.00 (90.00-94.00)% |") in markdown
    # sgd tests better, adam validates better: the choice follows validation when every run has it.
    expected = ("Best: model.optimizer=adam, chosen on validation accuracy" if with_validation else
                "Best: model.optimizer=sgd, chosen on the test split (the runs have no validation split)")
    assert expected in markdown
    assert best_name(results, with_validation) == ("adam" if with_validation else "sgd")


def best_name(results, with_validation):
    best, why = choose_best(results)
    assert ("chosen on validation accuracy" in why) == with_validation
    return best.overrides["model.optimizer"]


def test_a_sweep_of_seeds_and_folds_trains_and_aggregates_them(tmp_path):
    path = write_sweep(tmp_path / "cv.yaml", {}, epochs=1)
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "seeds": [3], "folds": 2}))
    results = run_sweep(path, out=tmp_path / "out")
    assert [result.name for result in results] == ["seed_everything=3,fold=0", "seed_everything=3,fold=1"]
    for fold, result in enumerate(results):
        saved = yaml.safe_load((tmp_path / "out" / result.name / "config.yaml").read_text())
        assert (saved["data"]["init_args"]["folds"], saved["data"]["init_args"]["fold"]) == (2, fold)
        assert saved["seed_everything"] == 3 and result.val_accuracy is not None
    (group,) = group_runs(results)
    assert group.figures()["val_accuracy"]["mean"] == pytest.approx(statistics.mean(r.val_accuracy for r in results))
    assert "## Over seeds and folds" in (tmp_path / "out" / "results.md").read_text()


def test_an_option_swept_over_lists_has_its_effect_per_value(tmp_path):
    widths = [([8, 16], 0.90), ([16, 32], 0.80), ([8, 16], 0.70)]
    results = [read_run(fake_run(tmp_path, f"run{index}", {"model.widths": value}, test, None))
               for index, (value, test) in enumerate(widths)]
    write_tables(results, tmp_path, "t")
    markdown = (tmp_path / "results.md").read_text()
    assert "| model.widths | [8, 16] | 2 | 80.00 ± 14.14 (70.00-90.00)% |" in markdown
    assert "| model.widths | [16, 32] | 1 | 80.00% |" in markdown
