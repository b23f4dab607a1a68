"""What a user looks at after a run: the test summary's pictures, and the notebook helpers that open runs
from wherever the notebook's kernel started."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnnclf.checkpoints import FINISHED_MARKER
from cnnclf.curves import CURVES_FILE, CSVCurveLogger
from cnnclf.errors import CheckpointError, ConfigError, DatasetError
from cnnclf.explore import (
    RUN_RECORD,
    checkpoint_to_explore,
    load_datamodule,
    load_model,
    predict_split,
    read_curve,
    read_run,
    repository_root,
)
from cnnclf.summary import most_confused, plot_confusion_matrix
from cnnclf.sweeps.results import load_results, write_tables
from tests.conftest import report_records, write_report_pickle
from tests.test_cli import CONFIGS, run


def test_importing_cnnclf_leaves_the_matplotlib_backend_alone():
    # A fresh interpreter, as a Jupyter kernel is: this one has imported cnnclf already.
    code = ("import matplotlib; matplotlib.use('svg'); "
            "import cnnclf.callbacks, cnnclf.explore, cnnclf.summary, cnnclf.sweeps.results; "
            "print(matplotlib.get_backend())")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert printed.strip() == "svg"


def test_most_confused_lists_the_largest_off_diagonal_cells_first():
    matrix = np.array([[5, 2, 0], [3, 4, 1], [0, 0, 6]])
    assert most_confused(matrix, ["a", "b", "c"]) == [
        {"true": "b", "predicted": "a", "count": 3},
        {"true": "a", "predicted": "b", "count": 2},
        {"true": "b", "predicted": "c", "count": 1},
    ]
    assert most_confused(np.diag([3, 4]), ["a", "b"]) == []


def test_an_image_the_model_is_certain_of_has_a_loss_of_zero_not_minus_zero():
    from cnnclf.summary import scores

    loss, predicted, confidence = scores(torch.tensor([[100.0, -100.0]]), torch.tensor([0]))
    assert not torch.signbit(loss).any() and f"{loss.item():.6f}" == "0.000000" and predicted.item() == 0


def test_confusion_matrix_of_40_classes_keeps_its_labels_apart(tmp_path):
    names = [str(label) for label in range(1, 41)]
    figure = plot_confusion_matrix(np.eye(40, dtype=int) * 3, names)
    figure.savefig(tmp_path / "matrix.png", dpi=60)
    labels = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert labels == names and not figure.axes[0].texts  # 1,600 cell counts would overlap: colour only


@pytest.fixture(scope="module")
def tested_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    fitted = run("fit", CONFIGS / "digits.yaml", runs, "--trainer.max_epochs", "1")
    return Path(fitted.trainer.log_dir)


def test_test_summary_names_the_most_confused_pairs_and_the_highest_loss_images(tested_run):
    summary = json.loads((tested_run / "test" / "summary.json").read_text())
    matrix, names = np.array(summary["confusion_matrix"]), summary["class_names"]
    assert summary["most_confused"] == most_confused(matrix, names)
    text = (tested_run / "test" / "summary.txt").read_text()
    pair = summary["most_confused"][0]
    assert f"{pair['true']} -> {pair['predicted']}: {pair['count']}" in text
    assert f"checkpoint: {summary['checkpoint']}\n" in text and summary["checkpoint"].endswith("best.ckpt")
    assert "confusion_matrix.png" in text and "top_losses.png" in text

    # The highest-loss images in the summary are the top 16 of the whole test split.
    checkpoint = tested_run / "checkpoints" / "best.ckpt"
    result = predict_split(load_model(checkpoint), *load_datamodule(checkpoint).data.test)
    worst = result.loss.topk(16).indices
    losses = [entry["loss"] for entry in summary["top_losses"]]
    assert losses == pytest.approx(result.loss[worst].tolist(), rel=1e-4)
    assert [(entry["true"], entry["predicted"]) for entry in summary["top_losses"]] == [
        (names[true], names[predicted]) for true, predicted in zip(result.targets[worst].tolist(),
                                                                   result.predicted[worst].tolist(), strict=True)]
    assert (tested_run / "test" / "top_losses.png").stat().st_size > 10_000


def test_the_test_summary_json_is_written_last(tested_run):
    """A test cut short leaves no summary.json beside its figures, so reports and sweeps see the run untested."""
    written = {path.name: path.stat().st_mtime_ns for path in (tested_run / "test").iterdir()}
    assert len(written) == 6 and all(time <= written["summary.json"] for time in written.values())


def test_test_summary_figures_are_in_tensorboard(tested_run):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tested_run)).Reload()
    assert {"test/confusion_matrix", "test/top_losses"} <= set(accumulator.Tags()["tensors"])


def test_read_curve_keeps_the_latest_value_of_a_step_logged_again_by_a_resumed_fit(tmp_path):
    first = CSVCurveLogger(tmp_path / CURVES_FILE)
    for step in range(5):
        first.log_metrics({"val/acc": step, "epoch": step}, step)
    resumed = CSVCurveLogger(tmp_path / CURVES_FILE)  # from a checkpoint at step 3: steps 3 and 4 are logged again
    for step in range(3, 7):
        resumed.log_metrics({"val/acc": 10 * step, "epoch": step}, step)
    assert read_curve(tmp_path, "val/acc") == ([0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 30, 40, 50, 60])
    assert read_curve(tmp_path, "train/loss") == ([], [])


def test_a_run_writes_its_per_epoch_curves_as_csv(tested_run):
    for name in ("train/epoch_loss", "train/acc", "train/f1", "train/lr", "val/loss", "val/acc", "val/f1"):
        steps, values = read_curve(tested_run, name)
        assert len(steps) == 1 and all(np.isfinite(values)), name  # one epoch
    accuracy = json.loads((tested_run / "test" / "summary.json").read_text())["accuracy"]
    assert read_curve(tested_run, "test/acc")[1] == [pytest.approx(accuracy, abs=1e-6)]


@pytest.fixture
def repository(tmp_path) -> Path:
    """A folder laid out like a cnnclf checkout, and a kernel's working directory in its notebooks/."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    return tmp_path


def test_repository_root_is_found_from_the_notebooks_folder(repository, monkeypatch):
    monkeypatch.chdir(repository / "notebooks")
    assert repository_root() == repository.resolve()
    with pytest.raises(ConfigError, match="not inside the cnnclf repository"):
        repository_root(repository.parent)


def _finished_run(runs: Path, experiment: str, checkpoints: list[str], age: int) -> Path:
    run_dir = runs / experiment / "version_0"
    (run_dir / "checkpoints").mkdir(parents=True)
    for name in checkpoints:
        (run_dir / "checkpoints" / name).write_bytes(b"")
        os.utime(run_dir / "checkpoints" / name, (1_000_000 + age, 1_000_000 + age))
    (run_dir / FINISHED_MARKER).write_text("{}")
    return run_dir / "checkpoints"


def test_a_notebook_opens_by_default_what_best_means_without_a_config(repository, monkeypatch):
    monkeypatch.chdir(repository / "notebooks")
    with pytest.raises(CheckpointError, match="no checkpoint to explore by default"):
        checkpoint_to_explore()
    digits = _finished_run(repository / "runs", "digits", ["best.ckpt", "last.ckpt"], age=0)
    assert checkpoint_to_explore() == (digits / "best.ckpt", "the best checkpoint of the newest finished run")
    # Trained later without validation (9 of the shipped recipes): only last.ckpt, and it is the one.
    orl = _finished_run(repository / "runs", "orl_best", ["last.ckpt"], age=1)
    path, why = checkpoint_to_explore()
    assert path == orl / "last.ckpt" and "without validation" in why


def test_a_checkpoint_given_to_a_notebook_opens_outside_the_repository(repository, tmp_path_factory, monkeypatch):
    checkpoints = _finished_run(repository / "runs", "digits", ["best.ckpt"], age=0)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert checkpoint_to_explore(str(checkpoints / "best.ckpt"))[0] == checkpoints / "best.ckpt"
    with pytest.raises(CheckpointError, match="runs/x.ckpt: no such checkpoint file"):
        checkpoint_to_explore("runs/x.ckpt")
    monkeypatch.chdir(repository / "notebooks")
    assert checkpoint_to_explore("runs/digits/version_0/checkpoints/best.ckpt")[0] == checkpoints / "best.ckpt"


def test_a_runs_relative_data_path_is_read_from_the_repository_root(repository, monkeypatch):
    pickle_path = write_report_pickle(repository / "data" / "MNIST", report_records(30, (28, 28), list(range(10))),
                                      report_records(10, (28, 28), list(range(10)), seed=1))
    run_dir = repository / "runs" / "mnist" / "version_0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"class_path": "cnnclf.data.MNISTDataModule", "init_args": {"path": "data/MNIST"}}}))
    monkeypatch.chdir(repository / "notebooks")
    data = load_datamodule(run_dir / "checkpoints" / "best.ckpt")
    assert Path(data.path) == pickle_path
    with pickle_path.open("rb") as stream:
        assert len(data.data.test[1]) == len(pickle.load(stream)["test"])


def test_a_runs_relative_image_folder_is_read_from_the_repository_root(repository, monkeypatch):
    from PIL import Image

    for label in ("cat", "dog"):
        (repository / "photos" / label).mkdir(parents=True)
        for index in range(3):
            level = 40 + 150 * (label == "dog") + index
            Image.new("L", (8, 8), level).save(repository / "photos" / label / f"{index}.png")
    run_dir = repository / "runs" / "photos" / "version_0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"class_path": "cnnclf.data.ImageFolderDataModule",
                  "init_args": {"root": "photos", "test_split": 1, "cache": False}}}))
    monkeypatch.chdir(repository / "notebooks")
    data = load_datamodule(run_dir / "checkpoints" / "best.ckpt")
    assert Path(data.root) == repository / "photos" and data.class_names == ["cat", "dog"]


@pytest.fixture
def mnist_run_checkpoint(repository, monkeypatch) -> Path:
    """A run whose config reads data/MNIST (not there), seen from a kernel in the repository's notebooks/."""
    run_dir = repository / "runs" / "mnist" / "version_0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"class_path": "cnnclf.data.MNISTDataModule", "init_args": {"path": "data/MNIST"}}}))
    monkeypatch.chdir(repository / "notebooks")
    return run_dir / "checkpoints" / "best.ckpt"


def test_a_runs_data_path_that_is_not_there_says_what_to_pass_to_load_datamodule(mnist_run_checkpoint):
    with pytest.raises(DatasetError, match=r"gives data.path 'data/MNIST'\); pass the dataset's pickle file: "
                                           r"load_datamodule\(checkpoint, path=...\)") as raised:
        load_datamodule(mnist_run_checkpoint)
    assert "--data.path" not in str(raised.value)


def test_a_data_path_given_to_load_datamodule_is_read_from_the_working_directory(mnist_run_checkpoint):
    write_report_pickle(Path("mine"), report_records(20, (28, 28), list(range(10))),
                        report_records(10, (28, 28), list(range(10)), seed=1))
    data = load_datamodule(mnist_run_checkpoint, path="mine")
    assert len(data.data.test[1]) == 10


def test_sweep_results_name_checkpoints_that_open_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = Path("sweep") / "optimizer=adam"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"")
    (run_dir / RUN_RECORD).write_text(json.dumps({"name": "optimizer=adam", "overrides": {}, "status": "ok"}))
    write_tables([read_run(run_dir)], Path("sweep"), "sweep")
    monkeypatch.chdir(tmp_path / "sweep")
    (row,) = load_results(".")
    assert Path(row["checkpoint"]).is_file()
    with pytest.raises(ConfigError, match="run the sweep first"):
        load_results(tmp_path / "elsewhere")


@pytest.mark.slow
def test_two_processes_select_the_same_highest_loss_images_as_one(tmp_path):
    """The per-process selections, gathered at the end, are the top of the whole test split."""
    digits = list(range(10))
    data = write_report_pickle(tmp_path / "MNIST", report_records(100, (28, 28), digits),
                               report_records(45, (28, 28), digits, seed=1))
    common = ["--config", str(CONFIGS / "mnist_fixed.yaml"), "--data.path", str(data), "--data.val_split", "20",
              "--data.batch_size", "20", "--trainer.max_epochs", "1", "--trainer.precision", "32-true",
              "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu"]
    fitted = subprocess.run([sys.executable, "-m", "cnnclf", "fit", *common, "--trainer.strategy", "ddp",
                             "--trainer.devices", "2", "--trainer.logger.init_args.save_dir", str(tmp_path / "ddp")],
                            capture_output=True, text=True, timeout=300)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    (run_dir,) = (tmp_path / "ddp" / "mnist-fixed").iterdir()
    two = json.loads((run_dir / "test" / "summary.json").read_text())["top_losses"]
    single = run("test", CONFIGS / "mnist_fixed.yaml", tmp_path / "single", *common[2:],
                 "--ckpt_path", str(run_dir / "checkpoints" / "best.ckpt"))
    one = json.loads((Path(single.trainer.log_dir) / "test" / "summary.json").read_text())["top_losses"]
    assert len(two) == 16
    assert [entry["loss"] for entry in two] == pytest.approx([entry["loss"] for entry in one], rel=1e-5)
    assert torch.tensor([entry["loss"] for entry in two]).diff().le(0).all()
