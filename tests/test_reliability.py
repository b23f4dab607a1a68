"""Killed runs resume exactly, reruns repeat exactly, and a diverged run keeps nothing from it."""

import json
import logging
import os
import re
import signal
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import CONFIGS, report_records, write_report_pickle
from tests.test_cli import run

# ConvBNNet with dropout, translations, mirroring on alternate epochs and a cosine schedule: every source of
# state a resume must restore.
RECIPE = ["--model", "cnnclf.models.ConvBNNet", "--model.widths", "[8, 16]", "--model.dropout", "0.3",
          "--data.translate", "1", "--data.hflip", "alternate", "--trainer.max_epochs", "3",
          "--test_after_fit", "false"]
KILL_AT_STEP = 25  # the digits' training split is 19 batches of 64: mid-way through the second epoch


class SignalAtStep(L.Callback):
    """Sends this process a real signal after training step ``step``: SIGTERM as a cluster scheduler
    would, or SIGINT (2) as Ctrl-C does."""

    def __init__(self, step: int, signal_number: int = int(signal.SIGTERM)) -> None:
        self.step, self.signal_number = step, signal_number

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal_number)


class SignalMidStep(SignalAtStep):
    """The signal in the middle of step ``step``: after its backward pass, before its optimizer step."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pass

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal_number)


def fit(runs: Path, *extra: str):
    return run("fit", CONFIGS / "digits.yaml", runs, *RECIPE, *extra)


def final_state(cli) -> tuple[int, dict, dict]:
    metrics = {key: value.item() for key, value in cli.trainer.callback_metrics.items()}
    return cli.trainer.global_step, metrics, {k: v.clone() for k, v in cli.model.state_dict().items()}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return final_state(fit(tmp_path_factory.mktemp("straight")))


def test_killed_and_resumed_run_ends_exactly_like_a_straight_run(straight, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        fit(tmp_path, "--trainer.callbacks+=tests.test_reliability.SignalAtStep",
            f"--trainer.callbacks.step={KILL_AT_STEP}")
    assert stopped.value.code == 128 + signal.SIGTERM
    saved = torch.load(tmp_path / "digits/version_0/checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == KILL_AT_STEP

    assert_the_same_run(final_state(fit(tmp_path, "--ckpt_path", "last")), straight)


def assert_the_same_run(resumed: tuple[int, dict, dict], straight: tuple[int, dict, dict]) -> None:
    (steps, metrics, weights), (straight_steps, straight_metrics, straight_weights) = resumed, straight
    assert steps == straight_steps
    assert metrics == pytest.approx(straight_metrics, rel=1e-5)
    for name, tensor in straight_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_ctrl_c_saves_where_training_stopped_and_says_how_to_resume(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    try:
        with pytest.raises(SystemExit) as stopped:
            fit(tmp_path, "--trainer.callbacks+=tests.test_reliability.SignalAtStep",
                f"--trainer.callbacks.step={KILL_AT_STEP}", f"--trainer.callbacks.signal_number={signal.SIGINT:d}")
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores a second Ctrl-C from then on
    assert stopped.value.code == 1
    last = tmp_path / "digits/version_0/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == KILL_AT_STEP
    assert f"Stopped at step {KILL_AT_STEP}; saved {last}; resume with --ckpt_path last" in capsys.readouterr().out
    assert "weights_only" not in caplog.text  # Lightning's note on a choice left unset: it is made here
    assert fit(tmp_path, "--ckpt_path", "last").trainer.current_epoch == 3


def test_ctrl_c_in_the_middle_of_a_step_stops_after_it_and_resumes_exactly(straight, tmp_path, capsys):
    try:
        with pytest.raises(SystemExit):
            fit(tmp_path, "--trainer.callbacks+=tests.test_reliability.SignalMidStep",
                f"--trainer.callbacks.step={KILL_AT_STEP}", f"--trainer.callbacks.signal_number={signal.SIGINT:d}")
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    saved = torch.load(tmp_path / "digits/version_0/checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == KILL_AT_STEP + 1  # the step under way, finished
    assert "Ctrl-C: stopping before the next training step" in capsys.readouterr().err
    assert_the_same_run(final_state(fit(tmp_path, "--ckpt_path", "last")), straight)


def test_a_killed_run_with_lookahead_averaging_resumes_exactly(tmp_path):
    lookahead = ["--trainer.callbacks+=cnnclf.models.lookahead.Lookahead", "--trainer.callbacks.start_epoch=1",
                 "--trainer.callbacks.every_n_steps=2"]
    straight = final_state(fit(tmp_path / "straight", *lookahead))
    with pytest.raises(SystemExit):
        fit(tmp_path / "killed", *lookahead, "--trainer.callbacks+=tests.test_reliability.SignalAtStep",
            f"--trainer.callbacks.step={KILL_AT_STEP}")
    assert_the_same_run(final_state(fit(tmp_path / "killed", *lookahead, "--ckpt_path", "last")), straight)


def test_the_same_seed_repeats_a_run_and_another_seed_does_not(straight, tmp_path):
    steps, metrics, weights = final_state(fit(tmp_path / "again"))
    assert (steps, metrics) == straight[:2]
    assert all(torch.equal(weights[name], tensor) for name, tensor in straight[2].items())

    _, other_metrics, _ = final_state(fit(tmp_path / "other", "--seed_everything", "7"))
    assert other_metrics["train/loss"] != metrics["train/loss"]


def test_a_random_seed_is_recorded_in_the_run_config(tmp_path):
    cli = run("fit", CONFIGS / "digits.yaml", tmp_path, "--seed_everything", "true",
              "--trainer.max_epochs", "1", "--test_after_fit", "false")
    saved = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())
    assert isinstance(saved["seed_everything"], int) and saved["seed_everything"] is not True


DIVERGING_OPTIONS = ["--data.val_split", "20", "--data.batch_size", "20", "--data.normalize", "false",
                     "--model.lr_schedule", "constant", "--model.lr", "0.001", "--test_after_fit", "false"]


def huge_pixels_file(runs: Path) -> Path:
    """10 classes whose pixels are so large that the logits overflow."""
    huge = [{"image": record["image"].astype(np.float32) * 1e36, "label": record["label"]}
            for record in report_records(100, (28, 28), list(range(10)))]
    return write_report_pickle(runs / "huge", huge, report_records(20, (28, 28), list(range(10)), seed=1))


def diverging_fit(runs: Path, *extra: str) -> None:
    """A fit of 4 steps on calm data, resumed on huge pixels: the loss overflows at step 6."""
    calm = write_report_pickle(runs / "calm", report_records(100, (28, 28), list(range(10))),
                               report_records(20, (28, 28), list(range(10)), seed=1))
    config = CONFIGS / "mnist_fixed.yaml"
    run("fit", config, runs, "--data.path", str(calm), "--trainer.max_epochs", "1", *DIVERGING_OPTIONS)
    run("fit", config, runs, "--data.path", str(huge_pixels_file(runs)), "--trainer.max_epochs", "2",
        "--ckpt_path", "last", *DIVERGING_OPTIONS, *extra)


def assert_no_checkpoint_after_step_4(runs: Path) -> None:
    checkpoints = sorted(runs.glob("**/*.ckpt"))
    # The first run's two: the resumed fit carried on in the same run and saved nothing.
    assert [path.relative_to(runs / "mnist-fixed").as_posix() for path in checkpoints] == [
        "version_0/checkpoints/best.ckpt", "version_0/checkpoints/last.ckpt"]
    for path in checkpoints:
        state = torch.load(path, weights_only=True)
        assert state["global_step"] == 4
        assert all(torch.isfinite(tensor).all() for tensor in state["state_dict"].values())


@pytest.mark.parametrize("ending", [[], ["--trainer.val_check_interval", "2"]], ids=["epoch end", "validation"])
def test_a_diverging_loss_stops_training_and_keeps_no_checkpoint_from_it(tmp_path, ending):
    # The guard reads the losses every 50 steps and at each epoch's end (step 8), and before a
    # validation (here after step 6).
    with pytest.raises(SystemExit, match=r"loss became non-finite \(NaN or inf\) at step 6 \(epoch 1\)"):
        diverging_fit(tmp_path, *ending)
    assert_no_checkpoint_after_step_4(tmp_path)


@pytest.mark.parametrize("options", [["--trainer.max_steps", "3"], ["--trainer.accumulate_grad_batches", "2"]],
                         ids=["training ends mid-epoch", "accumulated gradients"])
def test_the_guard_names_the_step_and_epoch_of_the_first_bad_loss(tmp_path, options):
    # The first batch's loss overflows: step 1 of epoch 0. A fit ending after step 3 (mid-epoch)
    # reads it as training ends, before the last checkpoint; a batch whose gradients are
    # accumulated belongs to the step it accumulates for.
    with pytest.raises(SystemExit, match=r"non-finite \(NaN or inf\) at step 1 \(epoch 0\)"):
        run("fit", CONFIGS / "mnist_fixed.yaml", tmp_path, "--data.path", str(huge_pixels_file(tmp_path)),
            "--trainer.max_epochs", "2", *DIVERGING_OPTIONS, *options)
    assert not list(tmp_path.glob("**/*.ckpt"))


def test_a_run_stopped_between_its_divergence_and_the_guards_read_saves_nothing(tmp_path):
    # The guard reads the losses at the epoch's end (step 8); SIGTERM comes after step 6.
    with pytest.raises(SystemExit) as stopped:
        diverging_fit(tmp_path, "--trainer.callbacks+=tests.test_reliability.SignalAtStep",
                      "--trainer.callbacks.step=6")
    assert stopped.value.code == 128 + signal.SIGTERM
    assert_no_checkpoint_after_step_4(tmp_path)


def test_a_schedule_cannot_be_stretched_on_resume(tmp_path):
    run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "1", "--test_after_fit", "false")
    with pytest.raises(SystemExit, match="cosine learning-rate schedule was planned for 19 steps, this run has 38"):
        run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert [run.name for run in (tmp_path / "digits").iterdir()] == ["version_0"]  # the refused resume left none


def test_resuming_a_finished_run_trains_nothing_and_says_so(tmp_path, capsys):
    run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "1", "--test_after_fit", "false")
    last = tmp_path / "digits/version_0/checkpoints/last.ckpt"
    saved = last.read_bytes()
    for limit in (["--trainer.max_epochs", "1"], ["--trainer.max_epochs", "3", "--trainer.max_steps", "19"]):
        run("fit", CONFIGS / "digits.yaml", tmp_path, *limit, "--ckpt_path", "last", "--test_after_fit", "false")
        printed = capsys.readouterr().out
        assert "Nothing left to train: the checkpoint had reached the run's limits, at step 19" in printed
    assert last.read_bytes() == saved
    assert [path.name for path in (tmp_path / "digits").iterdir()] == ["version_0"]


def test_a_resumed_fit_reports_the_epochs_and_steps_it_trained_itself(tmp_path, capsys):
    constant = ["--model.lr_schedule", "constant", "--test_after_fit", "false"]
    run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "2", *constant)
    first = json.loads((tmp_path / "digits/version_0/fit_time.json").read_text())
    run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "4", "--ckpt_path", "last", *constant)
    resumed = json.loads((tmp_path / "digits/version_0/fit_time.json").read_text())  # the run carried on
    assert {key: first[key] for key in ("epochs", "steps", "trained_epochs", "trained_steps", "resumed_at_epoch",
                                        "resumed_at_step")} == {"epochs": 2, "steps": 38, "trained_epochs": 2,
                                                                "trained_steps": 38, "resumed_at_epoch": None,
                                                                "resumed_at_step": None}
    assert {key: resumed[key] for key in ("epochs", "steps", "trained_epochs", "trained_steps", "resumed_at_epoch",
                                          "resumed_at_step")} == {"epochs": 4, "steps": 76, "trained_epochs": 2,
                                                                  "trained_steps": 38, "resumed_at_epoch": 3,
                                                                  "resumed_at_step": 38}
    printed = capsys.readouterr().out
    assert "Trained 2 epochs (38 steps) in " in printed
    assert re.search(r"Trained epochs 3-4 \(38 steps\) in \d+\.\d s \(resumed at epoch 3, step 38\)", printed)


class SigtermAtEpochEnd(L.Callback):
    """Sends this process a real SIGTERM as the first epoch ends: the fit stops between two epochs."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_fit_stopped_between_epochs_and_resumed_reports_the_epochs_it_trained(tmp_path, capsys):
    constant = ["--model.lr_schedule", "constant", "--test_after_fit", "false", "--trainer.max_epochs", "3"]
    with pytest.raises(SystemExit):
        run("fit", CONFIGS / "digits.yaml", tmp_path, *constant,
            "--trainer.callbacks+=tests.test_reliability.SigtermAtEpochEnd")
    run("fit", CONFIGS / "digits.yaml", tmp_path, *constant, "--ckpt_path", "last")
    resumed = json.loads((tmp_path / "digits/version_0/fit_time.json").read_text())
    assert {key: resumed[key] for key in ("epochs", "steps", "trained_epochs", "trained_steps", "resumed_at_epoch",
                                          "resumed_at_step")} == {"epochs": 3, "steps": 57, "trained_epochs": 2,
                                                                  "trained_steps": 38, "resumed_at_epoch": 2,
                                                                  "resumed_at_step": 19}
    assert re.search(r"Trained epochs 2-3 \(38 steps\) in \d+\.\d s \(resumed at epoch 2, step 19\)",
                     capsys.readouterr().out)


@pytest.mark.parametrize(("runs_folder", "checkpoint"), [("absolute", "last"), ("relative", "last"),
                                                         ("relative", "its absolute path")])
def test_a_resumed_fit_keeps_the_best_so_far_until_it_trains_a_better_one(tmp_path, monkeypatch, runs_folder,
                                                                          checkpoint):
    """A learning rate too small to move val/acc: no epoch after the first is better, resumed or not."""
    monkeypatch.chdir(tmp_path)
    runs = tmp_path if runs_folder == "absolute" else Path("runs")  # `runs/` as the configs have it
    settings = ["--model.lr", "1e-9", "--model.lr_schedule", "constant", "--test_after_fit", "false"]
    first = run("fit", CONFIGS / "digits.yaml", runs, "--trainer.max_epochs", "2", *settings)
    if checkpoint != "last":
        checkpoint = str(tmp_path / runs / "digits/version_0/checkpoints/last.ckpt")
    resumed = run("fit", CONFIGS / "digits.yaml", runs, "--trainer.max_epochs", "4", "--ckpt_path", checkpoint,
                  *settings)
    best = Path(resumed.trainer.checkpoint_callback.best_model_path)
    assert best.resolve() == (runs / "digits/version_0/checkpoints/best.ckpt").resolve()  # the run's own folder
    assert sorted(path.name for path in best.parent.iterdir()) == ["best.ckpt", "last.ckpt"]  # no best-v1.ckpt
    assert torch.load(best, weights_only=True)["epoch"] == 0
    assert resumed.trainer.checkpoint_callback.best_model_score == first.trainer.checkpoint_callback.best_model_score


def test_a_resumed_fit_that_trains_a_better_model_makes_it_the_runs_best(tmp_path):
    settings = ["--model.lr_schedule", "constant", "--test_after_fit", "false"]
    first = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "1", *settings)
    earlier_score = first.trainer.checkpoint_callback.best_model_score
    resumed = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "3", "--ckpt_path", "last",
                  *settings)
    best = resumed.trainer.checkpoint_callback
    assert best.best_model_score > earlier_score
    assert Path(best.best_model_path) == tmp_path / "digits/version_0/checkpoints/best.ckpt"
    assert torch.load(best.best_model_path, weights_only=True)["epoch"] >= 1


def test_a_resume_whose_earlier_best_is_gone_tests_its_own_best(tmp_path):
    settings = ["--model.lr_schedule", "constant"]
    first = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "1", "--test_after_fit", "false",
                *settings)
    Path(first.trainer.checkpoint_callback.best_model_path).unlink()  # a cleaned-out folder
    resumed = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last",
                  "--test_after_fit", "true", *settings)
    best = Path(resumed.trainer.checkpoint_callback.best_model_path)
    assert best == tmp_path / "digits/version_0/checkpoints/best.ckpt"
    assert torch.load(best, weights_only=True)["epoch"] == 1
    assert "test/acc" in resumed.trainer.callback_metrics


def test_a_fit_resumed_from_an_epoch_end_logs_its_figures_without_warning(tmp_path):
    constant = ["--model.lr_schedule", "constant", "--test_after_fit", "false"]
    run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "2", *constant)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "3", "--ckpt_path", "last",
                      *constant)
    assert not [str(warning.message) for warning in caught if "before the ``update``" in str(warning.message)
                or "could not find the monitored key" in str(warning.message)]
    first, again = ({event.step: event.value for event in EventAccumulator(str(folder)).Reload().Scalars("train/acc")}
                    for folder in (tmp_path / "digits/version_0", resumed.trainer.log_dir))
    assert 56 in again and all(again[step] == first[step] for step in again.keys() & first.keys())
