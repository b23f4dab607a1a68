"""Which file ``--ckpt_path best|last`` means, the run folder a checkpoint's evaluation reports into, whether a
``fit`` has anything left to train, and removing a run that failed before it trained."""

import shutil
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
    of every experiment for a test, validate or predict without a config) by its file; for those three,
    point the logger at the run that wrote it, so that reports, predictions and TensorBoard scalars land
    beside it. Whether it did."""
    wanted = config.ckpt_path
    if wanted in ("best", "last"):
        options = getattr(config.trainer.logger, "init_args", None)
        if getattr(options, "save_dir", None) is None:
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
    if subcommand == "fit" or folder.name != "checkpoints":
        return False
    options = getattr(config.trainer.logger, "init_args", None)
    if getattr(options, "save_dir", None) is not None:
        options.save_dir, options.name, options.version = str(folder.parent.parent), "", folder.parent.name
    config.trainer.default_root_dir = str(folder.parent)
    return True


def check_training_left(config, subcommand: str) -> None:
    """Refuse, before anything is created, a ``fit`` that would train nothing: limits of 0 epochs or steps, or a
    checkpoint to resume that already reached the limits (Lightning would start a run, train nothing and finish)."""
    trainer = config.trainer
    if subcommand != "fit" or trainer.fast_dev_run:  # a fast_dev_run sets its own limits
        return
    for option, limit in (("max_epochs", trainer.max_epochs), ("max_steps", trainer.max_steps)):
        if limit == 0:
            raise ConfigError(f"--trainer.{option} 0: nothing would be trained; give at least 1, or evaluate a "
                              "checkpoint with `cnnclf test` and the same --config, --ckpt_path best|last|FILE")
    if config.get("ckpt_path") is None:
        return
    options = getattr(config.trainer.logger, "init_args", None)
    version = getattr(options, "version", None)
    if version is not None and getattr(options, "save_dir", None) is not None and (
            Path(options.save_dir, options.name or "", version if isinstance(version, str) else f"version_{version}")
            .resolve() == Path(config.ckpt_path).resolve().parents[1]):
        return  # resumed into its own run (as a sweep does after a kill): the fit ends that run and tests it
    checkpoint = read_checkpoint(config.ckpt_path, mmap=True)
    if "loops" not in checkpoint:  # not Lightning's: check_restorable refuses it as the fit starts
        return
    max_epochs = trainer.max_epochs
    if max_epochs is None:  # Lightning's default: 1000 epochs, unless a number of steps is the limit
        max_epochs = 1000 if trainer.max_steps == -1 else -1
    reached = [f"{name} {done} of --trainer.{option} {limit}"
               for name, done, option, limit in (("epoch", epochs_trained(checkpoint), "max_epochs", max_epochs),
                                                 ("step", checkpoint["global_step"], "max_steps", trainer.max_steps))
               if limit != -1 and done >= limit]
    if reached:
        raise CheckpointError(f"{config.ckpt_path}: the checkpoint finished training ({reached[0]}): nothing left to "
                              f"train; test it with `cnnclf test` and the same --config and --ckpt_path, or train "
                              "longer in a new run")


def epochs_trained(checkpoint: dict) -> int:
    """The epochs whose training a checkpoint holds, by its fit loop's counters.

    Lightning counts an epoch as processed only after its validation: a checkpoint saved as the
    validation of epoch N ends (the usual ``best.ckpt``/``last.ckpt``) says N - 1 processed,
    with the epoch's last batch done; one stopped during that validation has it still to finish.
    """
    loop = checkpoint["loops"]["fit_loop"]
    epochs = loop["epoch_progress"]["current"]
    if epochs["processed"] == epochs["started"]:
        return epochs["processed"]
    validation = loop.get("epoch_loop.val_loop.batch_progress", {}).get("total", {})
    mid_validation = validation.get("processed", 0) < validation.get("started", 0)
    return epochs["processed"] + int(loop["epoch_loop.batch_progress"]["is_last_batch"] and not mid_validation)


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



#: what Lightning writes into a new run before its first step
STARTING_FILES = ("config.yaml", "hparams.yaml")


def remove_unstarted_run(folder: Path) -> None:
    """Remove the run folder ``folder`` (a logger's ``version_N``) if it holds only what a fit writes before
    training (its config, its hyper-parameters, a TensorBoard file): a fit that fails before its first step
    leaves no run behind."""
    if not (folder.name.startswith("version_") and folder.is_dir()):
        return
    if all(entry.is_file() and (entry.name in STARTING_FILES or entry.name.startswith("events."))
           for entry in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)
