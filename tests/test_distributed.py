"""Two processes on the CPU (DDP over gloo), launched the way a user would: ``cnnclf fit --trainer.devices 2``."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, report_records, write_report_pickle
from tests.test_cli import run

DDP = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
# 80 training images after 20 for validation: 40 per process, 2 batches of 20 each; 45 test images
# do not split evenly over 2 processes, so padding would show up as a 46th. In fp32, one process and
# two compute the same logits; bf16 rounding varies with the batch's make-up.
FP32 = ["--trainer.precision", "32-true"]
OPTIONS = ["--data.val_split", "20", "--data.batch_size", "20", "--trainer.max_epochs", "2",
           "--trainer.enable_progress_bar", "false", "--model_summary.max_depth", "0", *FP32]


def cnnclf(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnclf", *arguments], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def pickle_45(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp-data")
    digits = list(range(10))
    return write_report_pickle(folder / "MNIST", report_records(100, (28, 28), digits),
                               report_records(45, (28, 28), digits, seed=1))


def test_two_processes_train_test_and_predict_exactly_once_per_image(pickle_45, tmp_path):
    runs = tmp_path / "runs"
    common = ["--config", str(CONFIGS / "mnist_fixed.yaml"), "--data.path", str(pickle_45),
              "--trainer.logger.init_args.save_dir", str(runs), *OPTIONS]
    fitted = cnnclf("fit", *common, *DDP)
    assert fitted.returncode == 0, fitted.stderr[-3000:]

    # Rank 0 alone wrote the run: one run directory, two checkpoints, one report.
    (run_dir,) = (runs / "mnist-fixed").iterdir()
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    summary = json.loads((run_dir / "test" / "summary.json").read_text())
    assert summary["images"] == 45

    # The same checkpoint tested by one process gives exactly the same figures.
    single = run("test", CONFIGS / "mnist_fixed.yaml", tmp_path / "single", "--data.path", str(pickle_45),
                 "--ckpt_path", str(run_dir / "checkpoints" / "best.ckpt"), *FP32)
    single_summary = json.loads((Path(single.trainer.log_dir) / "test" / "summary.json").read_text())
    assert summary["confusion_matrix"] == single_summary["confusion_matrix"]

    predicted = cnnclf("predict", *common, *DDP, "--ckpt_path", str(run_dir / "checkpoints" / "best.ckpt"))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    (predict_dir,) = [path for path in (runs / "mnist-fixed").iterdir() if (path / "predictions.csv").exists()]
    with (predict_dir / "predictions.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["source"] for row in rows] == [str(index) for index in range(45)]
    predicted_counts = [0] * 10
    for row in rows:
        predicted_counts[int(row["label"])] += 1
    assert predicted_counts == [sum(column) for column in zip(*summary["confusion_matrix"], strict=True)]


def test_fewer_training_images_than_a_batch_per_process_is_refused_before_training(pickle_45, tmp_path):
    result = cnnclf("fit", "--config", str(CONFIGS / "mnist_fixed.yaml"), "--data.path", str(pickle_45),
                    "--trainer.logger.init_args.save_dir", str(tmp_path), *OPTIONS, *DDP,
                    "--data.batch_size", "64")
    assert result.returncode != 0
    assert "the train split has 80 images, 40 for each of 2 processes: fewer than one batch of 64" in result.stderr
    assert not list(tmp_path.glob("**/*.ckpt"))


def test_two_processes_space_their_saves_and_resume_ranking_from_the_best_so_far(pickle_45, tmp_path):
    # Both decisions are rank 0's, broadcast: a process deciding alone would leave the other waiting forever.
    runs = tmp_path / "runs"
    common = ["--config", str(CONFIGS / "mnist_fixed.yaml"), "--data.path", str(pickle_45),
              "--trainer.logger.init_args.save_dir", str(runs), *OPTIONS, *DDP, "--model.lr_schedule", "constant",
              "--last_checkpoint.train_time_interval", "1:00:00", "--test_after_fit", "false"]
    fitted = cnnclf("fit", *common)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    resumed = cnnclf("fit", *common, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for run_dir in sorted((runs / "mnist-fixed").iterdir()):
        assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert json.loads((run_dir / "fit_time.json").read_text())["trained_epochs"] == 1
