"""Tiny datasets written in the report's exact pickle format, and a CLI runner."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def dataset_cache_in_a_temporary_folder(tmp_path_factory):
    """Keep the dataset cache of every run the tests start (subprocesses too) out of the user's home."""
    previous = os.environ.get("CNNCLF_CACHE_DIR")
    os.environ["CNNCLF_CACHE_DIR"] = str(tmp_path_factory.mktemp("dataset-cache"))
    yield
    if previous is None:
        del os.environ["CNNCLF_CACHE_DIR"]
    else:
        os.environ["CNNCLF_CACHE_DIR"] = previous


def report_records(count: int, shape: tuple[int, ...], labels: list[int], dtype=np.uint8,
                   seed: int = 0) -> list[dict]:
    """``count`` records cycling through ``labels``; each class gets its own mean brightness,
    so the tiny sets are learnable and accuracy means something."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        label = labels[index % len(labels)]
        level = 40 + 170 * (labels.index(label) / max(len(labels) - 1, 1))
        image = np.clip(rng.normal(level, 20, shape), 0, 255).astype(dtype)
        records.append({"image": image, "label": label})
    return records


def write_report_pickle(path: Path, train: list[dict], test: list[dict], protocol: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        pickle.dump({"train": train, "test": test}, stream, protocol=protocol)
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """MNIST (int64 28x28, like the course file), ORL (112x92x3, labels 1..40), CIFAR (uint8 32x32x3)."""
    folder = tmp_path_factory.mktemp("seed")
    digits = list(range(10))
    faces = list(range(1, 41))
    return {
        "mnist": write_report_pickle(folder / "MNIST", report_records(200, (28, 28), digits, np.int64),
                                     report_records(50, (28, 28), digits, np.int64, seed=1)),
        "orl": write_report_pickle(folder / "ORL", report_records(120, (112, 92, 3), faces),
                                   report_records(40, (112, 92, 3), faces, seed=1)),
        "cifar": write_report_pickle(folder / "CIFAR", report_records(200, (32, 32, 3), digits),
                                     report_records(50, (32, 32, 3), digits, seed=1)),
    }


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write_sweep(path: Path, grid: dict, epochs: int = 2) -> Path:
    """A sweep on the bundled digits: ``epochs`` short epochs per run."""
    path.write_text(yaml.safe_dump({
        "base": str(CONFIGS / "digits.yaml"),
        "set": {"trainer.max_epochs": epochs, "trainer.limit_train_batches": 5},
        "grid": grid,
    }, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def digits_sweep(tmp_path_factory) -> Path:
    """A finished two-run sweep (Adam vs SGD) on the digits; returns its output folder."""
    from cnnclf.sweeps.runner import run_sweep

    folder = tmp_path_factory.mktemp("sweep")
    run_sweep(write_sweep(folder / "optimizers.yaml", {"model.optimizer": ["adam", "sgd"]}), out=folder / "out")
    return folder / "out"
