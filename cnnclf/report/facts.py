"""What a report says about a run, read from the files the run wrote (``config.yaml``, ``fit_time.json``,
``metrics.csv``, ``test/``), its checkpoint and its data file; and the machine the report is written on."""

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

from cnnclf.callbacks import NetworkSummary
from cnnclf.checkpoints import find_checkpoint
from cnnclf.errors import CheckpointError, CnnclfError, ConfigError
from cnnclf.explore import load_datamodule, load_model
from cnnclf.sweeps.results import RUN_RECORD


@dataclass(frozen=True)
class Run:
    folder: Path
    checkpoint: Path | None  # the tested one when the run was tested
    config: dict  # config.yaml, as the fit saved it
    summary: dict  # test/summary.json; empty when the run was not tested
    fit: dict  # fit_time.json; empty when the fit did not finish
    record: dict  # sweep_run.json; empty outside a sweep

    @property
    def label(self) -> str:
        return self.record.get("name") or f"{self.folder.parent.name}/{self.folder.name}"

    def setting(self, section: str, key: str, default=None):
        """A value of ``config.yaml``: ``trainer.max_epochs``, ``model.init_args.lr`` (``section`` then ``key``)."""
        part = self.config.get(section) or {}
        part = part.get("init_args", part) if section in ("model", "data") else part
        return part.get(key, default)


def open_run(path: Path) -> Run:
    """The run of a run folder, or of a checkpoint inside one (``RUN/checkpoints/x.ckpt``)."""
    checkpoint = path if path.is_file() else None
    folder = path.parent.parent if checkpoint else path
    if not (folder / "config.yaml").is_file():
        raise ConfigError(f"{path}: not a run folder, a checkpoint inside one, a sweep folder or a config with a "
                          "finished run (a run folder holds the config.yaml that 'cnnclf fit' saves)")
    summary = read_json(folder / "test" / "summary.json")
    tested = Path(summary.get("checkpoint") or "")
    # The run's own copy first: a run folder that was moved or copied still names the old place.
    candidates = [folder / "checkpoints" / tested.name, tested, *(folder / "checkpoints" / name
                                                                   for name in ("best.ckpt", "last.ckpt"))]
    checkpoint = checkpoint or next((file for file in candidates if file.name and file.is_file()), None)
    return Run(folder, checkpoint, yaml.safe_load((folder / "config.yaml").read_text()), summary,
               read_json(folder / "fit_time.json"), read_json(folder / RUN_RECORD))


def newest_run_of(config: Path, runs: Path = Path("runs")) -> Path:
    """The newest finished run of ``config`` (a shipped name or a file) under ``runs``, as ``--ckpt_path best``
    finds it."""
    logger = (yaml.safe_load(config.read_text()).get("trainer") or {}).get("logger") or {}
    name = (logger.get("init_args") or {}).get("name")
    if not name:
        raise ConfigError(f"{config}: names no experiment (trainer.logger.init_args.name), so it has no runs to find")
    return find_checkpoint(runs / name, "best")[0].parents[1]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Dataset:
    source: str
    digest: str  # SHA-256 of the file, or why there is none
    splits: dict[str, tuple]  # split name -> (images uint8/float (N, C, H, W), targets (N,))
    class_names: list[str]


def read_dataset(run: Run) -> Dataset:
    """The run's data as its saved config reads it (its split seed, resize and channels)."""
    if run.checkpoint is None:
        raise CheckpointError(f"{run.folder}: no checkpoint, so its data module cannot be rebuilt")
    module = load_datamodule(run.checkpoint)
    path = Path(module.path)
    digest = sha256(path) if path.is_file() else "none: the data is built in (no file)"
    data = module.data
    return Dataset(str(path.resolve()) if path.is_file() else module.path, digest,
                   {"train": data.train, "validation": data.val, "test": data.test}, module.class_names)


def layer_table(checkpoint: Path, max_depth: int = 3) -> NetworkSummary:
    """Lightning's layer table of the checkpoint's network, on one input of the data's shape."""
    return NetworkSummary(load_model(checkpoint), max_depth=max_depth)


def environment() -> list[tuple[str, str]]:
    """Versions, checkout, machine and date of the report command."""
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty",
                                 "--abbrev=40"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        commit = ""
    return [("cnnclf", importlib.metadata.version("cnnclf")), ("torch", torch.__version__),
            ("Lightning", importlib.metadata.version("lightning")), ("Python", platform.python_version()),
            ("cnnclf's git commit", commit or "none (not a git checkout)"), ("CPU", cpu_model()),
            ("GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
            ("written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))]


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    return f"{names[0]}, {len(names)} cores" if names else platform.processor() or platform.machine()


def readable(error: Exception) -> str:
    """One line saying why a part of the report is missing."""
    return str(error) if isinstance(error, (CnnclfError, OSError)) else f"{type(error).__name__}: {error}"
