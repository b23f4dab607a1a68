"""Lightning's messages that a cnnclf user cannot act on, silenced one by one by their text.

Each one is named here, not all warnings: anything new from Lightning or torch still shows. A progress bar
redrawn with carriage returns is noise in a log: it shows only on a terminal.
"""

import logging
import pydoc
import sys
import warnings

from lightning.pytorch.callbacks import ProgressBar

WARNINGS = (
    # cli_main(args) is how tests and notebooks run the CLI, whatever their own process's argv.
    r"LightningCLI's args parameter is intended to run from within Python",
    # Lightning's own pytree helper calls an API torch deprecated; nothing a user can change.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # The predictions writer numbers rows itself; it needs no batch indices from the loader.
    r"Couldn't infer the batch indices",
    # A resumed fit carries on in its own run folder, which holds its checkpoints.
    r"Checkpoint directory .* exists and is not empty",
    # Recipes train in bf16; the summary's size estimate (its only use of precision) assumes fp32.
    r"Precision .* is not supported by the model summary",
    # Train metrics are logged per epoch; a small dataset has fewer steps than the logging interval.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # A fit that stops before its first validation has no val/acc to rank by (once validation has run, a monitor
    # it does not log is Lightning's error, not this warning): last.ckpt holds the weights, and `best` takes it.
    r"`ModelCheckpoint\(monitor=.*\)` could not find the monitored key",
)

EVALUATION_WARNINGS = (
    # test, validate and predict need none of the state a training callback (Lookahead) keeps; a resumed fit
    # does, so there the warning stays.
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
    # A checkpoint tested outside the run that wrote it carries that run's folder; nothing is lost. A resumed fit
    # would lose the best checkpoint's ranking: there it shows.
    r"The dirpath has changed from",
)

INFO_MESSAGES = (
    "💡 Tip: For seamless cloud logging",  # an advertisement
    # Lightning's device report; a GPU that is there but unused is still said (Lightning warns of it).
    "GPU available: False", "TPU available: False",
    "Loading `train_dataloader` to estimate number of stepping batches",  # step-wise schedules count the steps
)


def drop_messages(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(INFO_MESSAGES)


def silence_lightning_noise(evaluating: bool) -> None:
    theirs = r"(lightning|torch)\b"  # the modules that warn
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=theirs)
    for message in EVALUATION_WARNINGS:  # shown again for a fit after a test in the same process (a notebook)
        warnings.filterwarnings("ignore" if evaluating else "default", message=message, module=theirs)
    # Where rank_zero_info logs; a filter already there is not added twice.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(drop_messages)


def progress_bar_for_this_output(trainer) -> None:
    """No progress bar where standard output (Lightning's bars write there) is not a terminal, nor where the
    config asks for none: then a preset's progress bar (there for its refresh rate) gives way too."""
    if not sys.stdout.isatty():
        trainer.enable_progress_bar = False
    if trainer.enable_progress_bar is False and trainer.callbacks:
        trainer.callbacks = [callback for callback in trainer.callbacks
                             if not issubclass(pydoc.locate(callback.class_path), ProgressBar)]
