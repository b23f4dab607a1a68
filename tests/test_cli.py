"""End to end through LightningCLI on tiny report-format pickles and the embedded digits."""

import csv
import json
import subprocess
import warnings
from argparse import Namespace
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cnnclf.cli import cli_main
from cnnclf.hardware import without_emulated_bf16
from cnnclf.noise import silence_lightning_noise
from tests.conftest import CONFIGS

DATASET_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def run(subcommand: str, config: str | Path, runs: Path, *extra: str):
    return cli_main([subcommand, "--config", str(config), "--trainer.logger.init_args.save_dir", str(runs),
                     "--trainer.default_root_dir", str(runs),
                     "--trainer.enable_progress_bar", "false", *extra])


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory) -> Path:
    """The best checkpoint of one epoch of ``cnnclf fit`` on the digits."""
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path_factory.mktemp("runs"), "--trainer.max_epochs", "1",
                 "--test_after_fit", "false")
    return Path(fitted.trainer.checkpoint_callback.best_model_path)


def data_path_for(config: Path, tiny_data: dict[str, Path]) -> list[str]:
    dataset = config.stem.split("_")[0]
    return ["--data.path", str(tiny_data[dataset])] if dataset in tiny_data else []


@pytest.mark.parametrize("config", DATASET_CONFIGS, ids=[c.stem for c in DATASET_CONFIGS])
def test_every_config_runs_a_fast_dev_run(config, tiny_data, tmp_path, capsys):
    cli = run("fit", config, tmp_path, "--trainer.fast_dev_run", "true", *data_path_for(config, tiny_data))
    assert cli.trainer.global_step == 1
    metrics = cli.trainer.callback_metrics  # after test_after_fit these are the test metrics
    assert metrics and all(torch.isfinite(value) for value in metrics.values())
    # The test summary is computed (the smoke test covers it) but saved nowhere: there is no run folder.
    if "test/acc" in metrics:
        assert "highest-loss images not saved (fast_dev_run)" in capsys.readouterr().out
    assert not [*tmp_path.rglob("summary.*"), *tmp_path.rglob("*.png"), *tmp_path.rglob("fit_time.json")]


def test_fit_then_test_from_checkpoint_reproduces_accuracy(tmp_path):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "2",
                 "--trainer.limit_train_batches", "3")
    accuracy_at_fit = fitted.trainer.callback_metrics["test/acc"].item()
    run_dir = Path(fitted.trainer.log_dir)
    for name in ("config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "test/summary.txt",
                 "test/summary.json", "test/confusion_matrix.png"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))

    fit_config = (run_dir / "config.yaml").read_text()
    tested = run("test", CONFIGS / "digits.yaml", tmp_path, "--ckpt_path", "best")
    assert tested.trainer.callback_metrics["test/acc"].item() == pytest.approx(accuracy_at_fit)
    summary = json.loads((Path(tested.trainer.log_dir) / "test/summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(accuracy_at_fit)
    assert summary["images"] == 450
    # The test reported into the run that made the checkpoint, and says which checkpoint it tested.
    assert Path(tested.trainer.log_dir).resolve() == run_dir.resolve()
    assert Path(summary["checkpoint"]).resolve() == (run_dir / "checkpoints/best.ckpt").resolve()
    assert (run_dir / "config.yaml").read_text() == fit_config and (run_dir / "test_config.yaml").is_file()
    assert [path.name for path in run_dir.parent.iterdir()] == [run_dir.name]

    checkpoint = torch.load(run_dir / "checkpoints/best.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["image_shape"] == [1, 8, 8]


def test_orl_report_uses_labels_1_to_40(tiny_data, tmp_path):
    cli = run("fit", CONFIGS / "orl_fixed.yaml", tmp_path, "--data.path", str(tiny_data["orl"]),
              "--data.resize", "[46, 46]", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1")
    summary = json.loads((Path(cli.trainer.log_dir) / "test/summary.json").read_text())
    assert summary["class_names"] == [str(label) for label in range(1, 41)]
    assert set(summary["per_class"]) >= {"1", "40", "macro avg"} and "0" not in summary["per_class"]
    assert summary["images"] == 40


def test_resume_from_last_continues_the_step_count(tmp_path):
    constant = ["--model.lr_schedule", "constant", "--test_after_fit", "false"]  # a schedule cannot stretch
    first = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "1", *constant)
    steps_per_epoch = first.trainer.global_step
    resumed = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "2", *constant,
                  "--ckpt_path", "last")
    assert resumed.trainer.global_step == 2 * steps_per_epoch


def test_missing_last_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="--ckpt_path last: no checkpoint under"):
        run("fit", CONFIGS / "digits.yaml", tmp_path, "--ckpt_path", "last")


@pytest.mark.parametrize("limit", ["max_epochs", "max_steps"])
def test_a_fit_of_zero_epochs_or_steps_is_refused_before_anything_is_created(limit, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run("fit", CONFIGS / "digits.yaml", tmp_path, f"--trainer.{limit}", "0")
    assert str(exit_info.value.code) == (f"cnnclf: error: --trainer.{limit} 0: nothing would be trained; give at "
                                         "least 1, or evaluate a checkpoint with `cnnclf test` and the same "
                                         "--config, --ckpt_path best|last|FILE")
    assert not any(tmp_path.iterdir())


def test_predict_writes_labels_in_the_dataset_label_space(tiny_data, tmp_path):
    run("fit", CONFIGS / "orl_fixed.yaml", tmp_path, "--data.path", str(tiny_data["orl"]),
        "--data.resize", "[46, 46]", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
        "--test_after_fit", "false")
    predicted = run("predict", CONFIGS / "orl_fixed.yaml", tmp_path, "--data.path", str(tiny_data["orl"]),
                    "--data.resize", "[46, 46]", "--ckpt_path", "best")
    with (Path(predicted.trainer.log_dir) / "predictions.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["source"] for row in rows] == [str(index) for index in range(40)]
    assert all(1 <= int(row["label"]) <= 40 for row in rows)
    assert all(0 < float(row["probability"]) <= 1 for row in rows)


def test_predict_on_image_files(tmp_path):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "1", "--test_after_fit", "false",
                 "--trainer.limit_train_batches", "2")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg", "c.pgm"):
        Image.fromarray(rng.integers(0, 255, (20, 16), dtype=np.uint8)).save(images / name)
    predicted = run("predict", CONFIGS / "digits.yaml", tmp_path, "--ckpt_path",
                    fitted.trainer.checkpoint_callback.best_model_path,
                    "--data.predict_files", f"[{images}/*]")
    with (Path(predicted.trainer.log_dir) / "predictions.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [Path(row["source"]).name for row in rows] == ["a.png", "b.jpg", "c.pgm"]
    assert all(row["label"] in [str(d) for d in range(10)] for row in rows)


def test_predict_needs_only_the_checkpoint_and_image_files(tmp_path, monkeypatch):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "1", "--test_after_fit", "false",
                 "--trainer.limit_train_batches", "2")
    run_dir = Path(fitted.trainer.log_dir)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.jpg", "c.pgm"):
        Image.fromarray(rng.integers(0, 255, (20, 16), dtype=np.uint8)).save(images / name)
    (images / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)  # no config, no data path: everything comes from the checkpoint
    best = str(run_dir / "checkpoints/best.ckpt")
    for files in ([str(images)], [str(images / "c.pgm"), str(images / "a.jpg")]):  # a folder; a shell-expanded list
        cli_main(["predict", "--ckpt_path", best, "--data.predict_files", *files, "--trainer.enable_progress_bar",
                  "false"])
        with (run_dir / "predictions.csv").open() as stream:
            rows = list(csv.DictReader(stream))
        expected = ["a.jpg", "b.png", "c.pgm"] if len(files) == 1 else ["c.pgm", "a.jpg"]
        assert [Path(row["source"]).name for row in rows] == expected
        assert all(row["label"] in [str(d) for d in range(10)] for row in rows)
    assert [path.name for path in run_dir.parent.iterdir()] == [run_dir.name]


def test_predict_from_a_recipe_with_a_training_callback_does_not_ask_for_that_callback(tiny_data, tmp_path):
    fitted = run("fit", CONFIGS / "cifar_best.yaml", tmp_path, "--data.path", str(tiny_data["cifar"]),
                 "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--test_after_fit", "false")
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # below the filters cnnclf adds
        cli_main(["predict", "--ckpt_path", fitted.trainer.checkpoint_callback.best_model_path, "--data.predict_files",
                  str(image), "--trainer.enable_progress_bar", "false"])
    assert not [warning for warning in shown if "callbacks used to create" in str(warning.message)]  # Lookahead's


def test_the_callback_request_is_silenced_for_evaluating_only_also_within_one_process():
    def shown(evaluating: bool) -> bool:
        silence_lightning_noise(evaluating=evaluating)
        with warnings.catch_warnings(record=True) as caught:  # under the filters as they are
            warnings.warn_explicit("Be aware that when using `ckpt_path`, callbacks used to create the checkpoint "
                                   "need to be provided", UserWarning, "call.py", 284,
                                   module="lightning.pytorch.trainer.call", registry={})
        return bool(caught)

    assert (shown(evaluating=True), shown(evaluating=False), shown(evaluating=True)) == (False, True, False)


def test_best_without_a_config_is_the_newest_finished_run_of_any_experiment(tmp_path, monkeypatch):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path / "runs", "--trainer.max_epochs", "1", "--test_after_fit",
                 "false")
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    monkeypatch.chdir(tmp_path)  # the default runs/ folder holds the digits experiment, not a "default" one
    cli_main(["predict", "--ckpt_path", "best", "--data.predict_files", str(image), "--trainer.enable_progress_bar",
              "false"])
    assert (Path(fitted.trainer.log_dir) / "predictions.csv").is_file()


def test_a_command_that_fails_before_working_creates_no_run(tmp_path):
    for failing in (["test", "--ckpt_path", "best"], ["fit", "--trainer.max_epochs", "-5"],
                    ["predict", "--ckpt_path", str(tmp_path / "missing.ckpt")]):
        with pytest.raises(SystemExit):
            run(failing[0], CONFIGS / "digits.yaml", tmp_path / "runs", *failing[1:])
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_for_other_data_is_refused_before_its_run_is_touched(trained_digits, tiny_data, tmp_path):
    run_dir = trained_digits.parents[1]
    before = {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")}
    with pytest.raises(SystemExit, match=r"trained for 10 classes of \[1, 8, 8\] images, but this data has"):
        run("test", CONFIGS / "mnist.yaml", tmp_path, "--data.path", str(tiny_data["mnist"]),
            "--ckpt_path", str(trained_digits))
    assert {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")} == before


def test_predict_with_a_config_and_image_files_needs_no_pickle(trained_digits, tmp_path, monkeypatch):
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    monkeypatch.chdir(tmp_path)  # mnist_fixed's data/seed/MNIST is not here
    cli_main(["predict", "--config", "mnist_fixed", "--ckpt_path", str(trained_digits), "--data.predict_files",
              str(image), "--trainer.enable_progress_bar", "false"])
    assert (trained_digits.parents[1] / "predictions.csv").is_file()


def test_a_model_option_typed_beside_a_checkpoint_replaces_the_checkpoints(trained_digits, tmp_path, capsys):
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    predicted = cli_main(["predict", "--ckpt_path", str(trained_digits), "--data.predict_files", str(image),
                          "--model.tta_hflip", "true", "--prediction_csv.output", str(tmp_path / "out.csv"),
                          "--trainer.enable_progress_bar", "false"])
    assert predicted.model.hparams.tta_hflip is True
    assert "cnnclf: --model.tta_hflip true replaces the checkpoint's false" in capsys.readouterr().err


def test_a_resumed_fit_refuses_a_model_option_the_checkpoint_has_otherwise(trained_digits, tmp_path):
    run_dir = trained_digits.parents[1]
    before = {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")}
    with pytest.raises(SystemExit, match=r"--model.lr 5.0: a resumed fit goes on with the checkpoint's model, "
                                         r"optimizer and schedule \(lr: 0.002\); start a new run"):
        run("fit", CONFIGS / "digits.yaml", tmp_path, "--ckpt_path", str(trained_digits), "--model.lr", "5")
    assert {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")} == before


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a read-only mount (as a shared drive is), where the system allows one to be made."""
    source, folder = tmp_path / "source", tmp_path / "read_only"
    source.mkdir(), folder.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("no read-only bind mount here (it takes root)")
    yield source, folder
    subprocess.run(["umount", "--lazy", str(folder)], check=True)  # a checkpoint read from it stays mapped


def test_a_folder_the_system_refuses_to_write_is_a_one_line_error(read_only_folder, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run("fit", "digits", read_only_folder[1] / "runs")
    assert str(exit_info.value.code) == f"cnnclf: error: {read_only_folder[1] / 'runs'}: Read-only file system"


def test_a_checkpoint_on_a_read_only_share_is_used_and_the_outputs_go_elsewhere(trained_digits, read_only_folder,
                                                                                 tmp_path, capsys):
    source, folder = read_only_folder
    run_copy = source / "digits/version_0"
    run_copy.mkdir(parents=True)
    (run_copy / "checkpoints").mkdir()
    (run_copy / "checkpoints/best.ckpt").write_bytes(trained_digits.read_bytes())
    shared = folder / "digits/version_0/checkpoints/best.ckpt"
    tested = run("test", "digits", tmp_path / "mine", "--ckpt_path", str(shared))
    assert Path(tested.trainer.log_dir).is_relative_to(tmp_path / "mine")
    assert (Path(tested.trainer.log_dir) / "test/summary.json").is_file()
    assert f"{folder / 'digits/version_0'} is read-only: this command writes under {tmp_path / 'mine'}" in (
        capsys.readouterr().err)


def test_predictions_go_to_the_file_asked_for(trained_digits, tmp_path):
    image, output = tmp_path / "digit.png", tmp_path / "out" / "mine.csv"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    cli_main(["predict", "--ckpt_path", str(trained_digits), "--data.predict_files", str(image),
              "--prediction_csv.output", str(output), "--trainer.enable_progress_bar", "false"])
    with output.open() as stream:
        assert [Path(row["source"]).name for row in csv.DictReader(stream)] == ["digit.png"]


def write_non_utf8_config(folder: Path) -> str:
    path = folder / "latin1.yaml"
    path.write_bytes("# réglages\ntrainer:\n  max_epochs: 2\n".encode("latin-1"))
    return str(path)


@pytest.mark.parametrize(("arguments", "message"), [
    (["predict", "--ckpt_path", "{ckpt}"], "predict on what? --data.predict_files takes image files"),
    (["fit", "--data.path", "{ckpt}"], "required: fit.model; --config NAME takes a shipped config"),
    (["test", "--config", "{digits}", "--ckpt_path", "{ckpt}"], "x.ckpt: not saved by Lightning"),
    (["validate", "--config", "{digits}", "--data.val_split", "0"], "validate needs a validation split"),
    (["fit", "--config", "{mnist}", "--data.path", "null"], "data: the following arguments are required: path"),
    (["fit", "--config", "{digits}", "--model.widths", "[8,16]"],
     "model: Option 'widths' is not accepted; `cnnclf fit --model.help ReportMNISTNet` lists the options"),
    (["fit", "--model.help", "NoSuchNet"], "--model NoSuchNet: no such class; --model takes one of AirbenchNet"),
    (["fit", "--config", "{digits}", "--model", "NoSuchNet"],
     "--model NoSuchNet: no such class; --model takes one of AirbenchNet, ConvBNNet"),
    (["fit", "--config", "{digits}", "--trainer.max_epochs", "-5"], "`max_epochs` must be a non-negative integer"),
    (["fit", "--config", "{latin1}"], "latin1.yaml: not UTF-8 text (byte 0xe9 at offset 3); save the config as UTF-8"),
    (["fit", "--config", "{digits}", "--config", "{broken}"],
     "broken.yaml: not valid YAML at line 3, column 1: did not find expected ',' or ']'"),
    (["fit", "--config", "{digits}", "--data.batch_size", "abc"], "data.batch_size: Expected a <class 'int'>"),
    (["fit", "--config", "{digits}", "--data.val_split", "1.5"],
     "val_split must be a fraction in [0, 1) or a count >= 1, found 1.5"),
    (["fit", "--config", "{digits}", "--trainer.max_epochs", "-1"],
     "--trainer.max_epochs -1 trains until stopped, and the cosine learning-rate schedule is planned to its last "
     "step: give --trainer.max_epochs N or --trainer.max_steps N"),
    (["fit", "--config", "{digits}", "--trainer.max_steps", "-3"], "`max_steps` must be a non-negative integer"),
    (["fit", "--config", "{digits}", "--trainer.max_epoch", "2"],
     "unrecognized arguments: --trainer.max_epoch 2; did you mean --trainer.max_epochs?"),
    (["test", "--config", "{digits}", "--config", "{typo}"],
     "Subcommand 'test' does not accept option 'trainer.max_epoch'; did you mean trainer.max_epochs?"),
    (["fit", "--config", "{digits}", "--chekpoint.monitor", "x"], "did you mean --checkpoint.monitor?"),
    (["fit", "--config", "{digits}", "--trainer.foo", "2"], "--trainer.foo 2; `cnnclf fit --help` lists the options"),
    (["fit", "--config", "{digits}", "--data.batch", "2"],
     "data: Option 'batch' is not accepted; did you mean --data.batch_size?"),
    (["fit", "--conf", "{digits}"], "unrecognized arguments: --conf"),
    (["fit", "--confi={digits}"], "did you mean --config?"),
    (["predict", "--config", "{digits}", "--weights_only", "false"], "unrecognized arguments: --weights_only false"),
])
def test_errors_keep_their_reason_in_one_line(arguments, message, tmp_path):
    values = {"ckpt": str(tmp_path / "x.ckpt"), "mnist": str(CONFIGS / "mnist.yaml"),
              "digits": str(CONFIGS / "digits.yaml"), "latin1": write_non_utf8_config(tmp_path),
              "broken": str(tmp_path / "broken.yaml"), "typo": str(tmp_path / "typo.yaml")}
    (tmp_path / "broken.yaml").write_text("trainer:\n  max_epochs: [1\n")
    (tmp_path / "typo.yaml").write_text("trainer:\n  max_epoch: 2\n")
    torch.save({"state_dict": {}}, tmp_path / "x.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        cli_main([argument.format(**values) for argument in arguments]
                 + ["--trainer.default_root_dir", str(tmp_path / "runs")])
    text = str(exit_info.value.code)
    assert text.startswith("cnnclf: error: ") and message in text, text
    assert "\n" not in text


def test_model_help_marks_nothing_the_data_decides_as_required(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--model.help", "ReportMNISTNet"])
    assert "required" not in capsys.readouterr().out


@pytest.mark.parametrize(("architecture", "own_option"), [("ReportORLNet", "probability of the dropout layers"),
                                                          ("ResNet9", "channels of the first stage")])
def test_model_help_describes_every_option(architecture, own_option, capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--model.help", architecture])
    printed = " ".join(capsys.readouterr().out.split())
    assert f"Options of {architecture}" in printed and own_option in printed
    assert "learning rate (the peak rate with ``onecycle``)" in printed
    assert "the number of classes; decided by the data" in printed


NOISE = ("litlogger", "LeafSpec", "log_every_n_steps", "already configured with model summary",
         "not supported by the model summary", "The dirpath has changed", "Couldn't infer the batch indices",
         "train_metrics", "test_metrics", "Warning", "estimate number of stepping batches", "GPU available",
         "TPU available", "\r")


def test_the_demo_prints_no_lightning_noise(tmp_path, capfd):
    fitted = run("fit", "digits", tmp_path, "--trainer.max_epochs", "1", "--config", str(CONFIGS / "presets/bf16.yaml"))
    run("test", "digits", tmp_path / "elsewhere", "--ckpt_path", fitted.trainer.checkpoint_callback.best_model_path)
    cli_main(["predict", "--config", "digits", "--trainer.logger.init_args.save_dir", str(tmp_path),
              "--ckpt_path", "best"])  # its progress bar is left on: standard output here is no terminal
    printed = capfd.readouterr()
    for noise in NOISE:
        assert noise not in printed.out + printed.err, noise
    assert "| net.0.0 " in printed.out  # the layer table, network layers only


def test_a_fit_stopped_before_its_first_validation_is_not_warned_of_its_monitor(tmp_path, capsys, recwarn):
    run("fit", "digits", tmp_path, "--trainer.max_steps", "3")
    assert not [warning for warning in recwarn if "monitored key" in str(warning.message)]
    assert "Trained 1 epoch (3 steps) in " in capsys.readouterr().out


@pytest.mark.parametrize(("override", "message"), [
    (["--model.optimizer", "rmsprop"], "model.optimizer: Expected a typing.Literal['sgd', 'adam', 'adamw']"),
    (["--data.batch_size", "-5"], "batch sizes must be positive, found batch_size=-5"),
    (["--data.path", "/does/not/exist"], "/does/not/exist: no such file"),
    (["--model.num_classes", "5"], "model.num_classes is decided by the data (its data.num_classes), found 5"),
])
def test_bad_config_values_are_one_line_errors(tiny_data, tmp_path, override, message):
    with pytest.raises(SystemExit) as exit_info:
        run("fit", CONFIGS / "mnist.yaml", tmp_path, "--data.path", str(tiny_data["mnist"]), *override)
    text = str(exit_info.value.code)
    assert text.startswith("cnnclf: error: ") and message in text
    assert "\n" not in text


def test_print_config_shows_the_resolved_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(CONFIGS / "mnist.yaml"), "--config", str(CONFIGS / "presets/quick.yaml"),
                  "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: cnnclf.models.ReportMNISTNet" in printed
    assert "max_epochs: 2" in printed and "final_relu: true" in printed


class LastCheckpointSteps(L.Callback):
    """Records the step of last.ckpt on disk as each epoch starts."""

    def __init__(self) -> None:
        self.steps = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        last = Path(trainer.log_dir) / "checkpoints" / "last.ckpt"
        self.steps.append(torch.load(last, weights_only=True)["global_step"] if last.is_file() else None)


def test_without_validation_only_last_is_kept_every_epoch_and_stands_for_best(tmp_path):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "3", "--data.val_split", "0",
                 "--trainer.limit_train_batches", "2",
                 "--trainer.callbacks+=tests.test_cli.LastCheckpointSteps")
    checkpoints = Path(fitted.trainer.log_dir) / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["last.ckpt"]
    probe = next(c for c in fitted.trainer.callbacks if isinstance(c, LastCheckpointSteps))
    steps_per_epoch = fitted.trainer.num_training_batches
    assert probe.steps == [None, steps_per_epoch, 2 * steps_per_epoch]
    accuracy = fitted.trainer.callback_metrics["test/acc"].item()
    with warnings.catch_warnings():  # the checkpoint's callback state is found: Lightning has nothing to warn of
        warnings.filterwarnings("error", message=".*callbacks used to create the checkpoint")
        tested = run("test", CONFIGS / "digits.yaml", tmp_path, "--ckpt_path", "best", "--data.val_split", "0")
    assert tested.trainer.callback_metrics["test/acc"].item() == pytest.approx(accuracy)


PRESETS = sorted((CONFIGS / "presets").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[preset.stem for preset in PRESETS])
def test_every_preset_stacks_on_a_config(preset, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(CONFIGS / "digits.yaml"), "--config", str(preset), "--print_config"])
    assert exit_info.value.code in (None, 0), capsys.readouterr().err
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = yaml.safe_load(preset.read_text())
    for key, value in expected.get("model", {}).get("init_args", {}).items():
        assert printed["model"]["init_args"][key] == value
    for key, value in expected.get("trainer", {}).items():
        if not key.startswith("callbacks"):  # callbacks+ appends; test_presets.py checks them
            assert printed["trainer"][key] == value


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_arithmetic_trains_in_fp32(native, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("cnnclf.hardware.cpu_has_bf16", lambda: native)
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--config", str(CONFIGS / "presets/bf16.yaml"),
                 "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                 "--test_after_fit", "false")
    assert fitted.trainer.precision == ("bf16-mixed" if native else "32-true")
    assert ("running in 32-true instead" in capsys.readouterr().err) is not native


@pytest.mark.parametrize(("precision", "instead"), [("bf16-mixed", "16-mixed"), ("bf16-true", "32-true"),
                                                  ("16-mixed", "16-mixed")])
def test_bf16_on_a_gpu_older_than_ampere_trains_in_a_native_precision(precision, instead, monkeypatch):
    monkeypatch.setattr("cnnclf.hardware.trains_on_cuda", lambda accelerator: True)
    monkeypatch.setattr("cnnclf.hardware.gpu_has_bf16", lambda: False)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda: "Tesla T4")
    trainer = Namespace(accelerator="gpu", precision=precision, strategy="auto")
    said = without_emulated_bf16(trainer) or ""
    assert trainer.precision == instead
    assert (f"this GPU (Tesla T4) has no bf16 arithmetic (before Ampere), where precision {precision} runs "
            f"several times slower: running in {instead} instead" in said) is (precision != instead)


@pytest.mark.parametrize("strategy", ["ddp_fork", "ddp_notebook"])
def test_a_forking_strategy_keeps_cuda_unstarted_and_the_precision_asked_for(strategy, monkeypatch):
    def started_cuda() -> bool:
        raise AssertionError("asked the GPU: CUDA started before Lightning forks its processes")

    monkeypatch.setattr("cnnclf.hardware.trains_on_cuda", lambda accelerator: True)
    monkeypatch.setattr("cnnclf.hardware.gpu_has_bf16", started_cuda)
    trainer = Namespace(accelerator="gpu", precision="bf16-mixed", strategy=strategy)
    without_emulated_bf16(trainer)
    assert trainer.precision == "bf16-mixed"


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="for machines without a GPU")
def test_the_gpu_preset_on_a_machine_without_a_gpu_is_one_line_with_the_way_out(tmp_path):
    with pytest.raises(SystemExit, match=r"accelerator gpu \(presets/gpu sets it\) needs a GPU.*leave out presets/gpu"):
        run("fit", CONFIGS / "digits.yaml", tmp_path, "--config", str(CONFIGS / "presets/gpu.yaml"))
    assert list(tmp_path.iterdir()) == []  # refused before a run folder exists


@pytest.mark.slow
def test_compile_through_the_cli_trains_the_compiled_network(tmp_path):
    # The model summary and the TensorBoard graph run the network first; compiled before them,
    # torch.compile would silently fall back to eager for the whole run.
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--model.compile", "true", "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
                 "--trainer.limit_test_batches", "2")
    assert fitted.trainer.global_step == 3
    assert torch._dynamo.utils.counters["frames"]["ok"] >= 1
    assert "test/acc" in fitted.trainer.callback_metrics


def test_predict_on_fewer_batches_than_images_writes_the_rows_it_predicted(tmp_path):
    predicted = run("predict", CONFIGS / "digits.yaml", tmp_path, "--trainer.limit_predict_batches", "2",
                    "--data.eval_batch_size", "10")
    with (Path(predicted.trainer.log_dir) / "predictions.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert 0 < len(rows) < len(predicted.datamodule.predict_sources)
    assert [row["source"] for row in rows] == [str(index) for index in range(len(rows))]


def test_predict_with_a_checkpoint_without_hyper_parameters_is_one_line(tmp_path):
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, bare)
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["predict", "--ckpt_path", str(bare), "--data.predict_files", str(image)])
    text = str(exit_info.value.code)
    assert text.startswith("cnnclf: error: ") and "do not say the classes and image shape" in text, text
    assert "\n" not in text


class StopAfterOneEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


@pytest.mark.parametrize("limits", [["--trainer.max_epochs", "-1", "--model.lr_schedule", "constant",
                                     "--trainer.callbacks+=tests.test_cli.StopAfterOneEpoch"],
                                    ["--trainer.max_epochs", "-1", "--trainer.max_steps", "3"],
                                    ["--trainer.max_epochs", "null", "--trainer.max_steps", "2"]])
def test_every_epoch_limit_lightning_accepts_trains(limits, tmp_path):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--test_after_fit", "false", *limits)
    steps = {"3": 3, "2": 2}.get(limits[-1], fitted.trainer.num_training_batches)
    assert fitted.trainer.global_step == steps


def test_a_batch_limit_of_1_is_one_batch_and_1_0_all_of_them(tmp_path):
    config = tmp_path / "one_batch.yaml"
    config.write_text("trainer:\n  limit_val_batches: 1\n  limit_test_batches: 1.0\n")
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--config", str(config), "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "1", "--trainer.limit_predict_batches=1")
    trainer = fitted.trainer
    assert (trainer.limit_train_batches, trainer.limit_val_batches, trainer.limit_test_batches) == (1, 1, 1.0)
    assert type(trainer.limit_train_batches) is int and type(trainer.limit_test_batches) is float
    assert (trainer.global_step, trainer.num_val_batches) == (1, [1]) and trainer.num_test_batches[0] > 1
    assert trainer.limit_predict_batches == 1 and type(trainer.limit_predict_batches) is int


@pytest.mark.parametrize("subcommand", ["test", "predict"])
def test_weights_only_is_not_offered(subcommand, capsys):
    with pytest.raises(SystemExit):
        cli_main([subcommand, "--help"])
    assert "--weights_only" not in capsys.readouterr().out


def test_the_main_help_lists_every_subcommand_in_whole_sentences(capsys):
    from cnnclf.argv import COMMANDS

    with pytest.raises(SystemExit):
        cli_main(["--help"])
    printed = capsys.readouterr().out
    subcommands = " ".join(printed.partition("Available subcommands:")[2].split())
    for name in [*COMMANDS, "fit", "validate", "test", "predict"]:
        assert f" {name} " in subcommands and name in printed.partition("\n\n")[0], name  # the usage lines
    assert "never run on your" not in subcommands and "Useful to" not in subcommands
    assert subcommands.count(".") >= len(COMMANDS) + 4  # each description ends its sentence


def test_a_command_that_fails_at_once_says_nothing_of_bf16_and_one_that_runs_says_it_once(tmp_path, monkeypatch,
                                                                                          capfd):
    monkeypatch.setattr("cnnclf.hardware.cpu_has_bf16", lambda: False)
    bf16 = ["--config", str(CONFIGS / "presets/bf16.yaml"), "--trainer.accelerator", "cpu"]
    with pytest.raises(SystemExit):
        run("fit", CONFIGS / "mnist.yaml", tmp_path, *bf16, "--data.path", str(tmp_path / "missing"))
    assert "bf16" not in capfd.readouterr().err
    run("fit", CONFIGS / "digits.yaml", tmp_path, *bf16, "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2")
    printed = capfd.readouterr()
    assert (printed.out + printed.err).count("running in 32-true instead") == 1
    assert "GPU available" not in printed.out + printed.err and "TPU available" not in printed.out + printed.err


def test_a_label_smoothed_test_loss_is_logged_beside_the_plain_cross_entropy(tmp_path):
    short = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
             "--trainer.limit_test_batches", "2"]
    smoothed = run("fit", CONFIGS / "digits.yaml", tmp_path, *short, "--model.label_smoothing", "0.3")
    metrics = smoothed.trainer.callback_metrics
    assert {"test/nll", "test/loss"} <= set(metrics) and metrics["test/nll"] != metrics["test/loss"]
    plain = run("fit", CONFIGS / "digits.yaml", tmp_path, *short, "--test_after_fit", "false")
    assert "val/loss" in plain.trainer.callback_metrics and "val/nll" not in plain.trainer.callback_metrics


def test_seed_data_without_the_shared_data_says_what_it_needs(tmp_path):
    import subprocess

    done = subprocess.run(["make", "-s", "seed-data", f"SHARED={tmp_path}", f"VENV={tmp_path}/venv"],
                          cwd=CONFIGS.parent, capture_output=True, text=True)
    assert done.returncode != 0 and not (tmp_path / "venv").exists()  # refused before installing anything
    assert f"make seed-data needs {tmp_path}/data/make_seed_pickles.py" in done.stderr
    assert "make fit DATASET=mnist DATA=folder, or pass --data.path FILE" in done.stderr
