"""Which file ``--ckpt_path best|last`` means, and the run folder a command on a checkpoint writes into."""

import os
import sys
from pathlib import Path

from cnnclf.checkpoints.safe_io import read_checkpoint
from cnnclf.errors import CheckpointError, ConfigError

#: written by ``FitTimer`` when training ends normally; a run without it stopped early or is still running
FINISHED_MARKER = "fit_time.json"

#: the experiment (TensorBoard logger) name when no config names one
UNNAMED_EXPERIMENT = "default"

#: the run folders of every experiment under a runs folder
EVERY_EXPERIMENTS_RUNS = "*/*"


def resolve_checkpoint(config, subcommand: str) -> bool:
    """Replace ``config.ckpt_path`` (a file, or ``best``/``last`` among the runs of the config's experiment, or
    of every experiment for a test, validate or predict without a config) by its file, and point the logger
    at the run that wrote it: a resumed fit carries on in its own run folder, and reports, predictions and
    TensorBoard scalars land beside it. Whether it did."""
    wanted, options = config.ckpt_path, getattr(config.trainer.logger, "init_args", None)
    logged = getattr(options, "save_dir", None) is not None
    if wanted in ("best", "last"):
        if not logged:
            root, runs = Path(config.trainer.default_root_dir or ".") / "lightning_logs", "*"
        elif options.name == UNNAMED_EXPERIMENT and not config.get("config") and subcommand != "fit":
            root, runs = Path(options.save_dir), EVERY_EXPERIMENTS_RUNS  # e.g. predict with only image files
        else:
            root, runs = Path(options.save_dir) / (options.name or ""), "*"
        path, why = find_checkpoint(root, wanted, runs)
        print(f"cnnclf: --ckpt_path {wanted} is {path} ({why})", file=sys.stderr)
        config.ckpt_path = str(path)
    elif not Path(wanted).is_file():
        raise ConfigError(f"--ckpt_path {wanted}: no such checkpoint file")
    folder = Path(config.ckpt_path).resolve().parent  # <run>/checkpoints/x.ckpt
    # Lightning restores the best checkpoint's ranking only into the folder named as the fit named it (`runs/...`
    # stays relative), and else starts a best-v1.ckpt: that name, where it is this folder
    named = [state.get("dirpath") for state in read_checkpoint(config.ckpt_path).get("callbacks", {}).values()
             if isinstance(state, dict)]
    folder = next((Path(name) for name in named if isinstance(name, str) and os.path.isdir(name)
                   and os.path.samefile(name, folder)), folder)
    if folder.name != "checkpoints":
        return False
    if not os.access(folder.parent, os.W_OK):  # a checkpoint on a read-only share: write where it would be without
        elsewhere = getattr(options, "save_dir", None) or config.trainer.default_root_dir or "."
        print(f"cnnclf: {folder.parent} is read-only: this command writes under {elsewhere} instead", file=sys.stderr)
        return False
    if logged:
        options.save_dir, options.name, options.version = str(folder.parent.parent), "", folder.parent.name
    config.trainer.default_root_dir = str(folder.parent)
    return True


def find_checkpoint(runs_root: Path, which: str, runs: str = "*") -> tuple[Path, str]:
    """The checkpoint ``--ckpt_path best|last`` stands for among the run folders ``runs_root/runs``, and why that one.

    ``last``: the newest run's ``last.ckpt`` (to resume). ``best``: the newest finished run's
    ``best.ckpt``, or its ``last.ckpt`` when it trained without validation. A run that stopped
    early is never taken for ``best``.
    """
    lasts = sorted(runs_root.glob(f"{runs}/checkpoints/last.ckpt"), key=lambda path: path.stat().st_mtime)
    if not lasts:
        raise CheckpointError(f"--ckpt_path {which}: no checkpoint under {runs_root}/{runs}/checkpoints; train with "
                              "'cnnclf fit' first, or pass a checkpoint file")
    if which == "last":
        return lasts[-1], "the newest run's last checkpoint"
    finished = [last for last in lasts if (last.parents[1] / FINISHED_MARKER).is_file()]
    if not finished:
        raise CheckpointError(f"--ckpt_path best: no run under {runs_root} finished training (the newest, "
                              f"{lasts[-1].parents[1]}, stopped early or is still running); resume it with "
                              "--ckpt_path last, or pass a checkpoint file")
    best = finished[-1].with_name("best.ckpt")
    if best.is_file():
        return best, "the best checkpoint of the newest finished run"
    return finished[-1], "the newest finished run trained without validation: its last checkpoint"

