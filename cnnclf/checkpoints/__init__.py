"""Checkpoints: reading and writing them safely, finding them, and resuming a run from one.

How a run resumes (``cnnclf fit ... --ckpt_path last``):

1. ``runs.resolve_checkpoint`` turns ``last`` into the newest run's ``checkpoints/last.ckpt``; the CLI
   checks the class it names (``safe_io.checked_class``), and that the run has epochs left to train
   (``runs.check_training_left``), before anything is built.
2. Lightning loads it through ``safe_io.SafeCheckpointIO`` (weights only); the model's
   ``on_load_checkpoint`` refuses one of other data or another architecture (``safe_io.check_fits``).
3. Lightning restores weights, optimizer, schedule and loop counters into a new ``version_N``.
4. As training starts, ``callback.RunCheckpoints`` checks the schedule's planned length, puts the
   training batches at the saved position in the epoch and each process's random generators back.
5. Training carries on; ``RunCheckpoints`` writes ``best.ckpt``/``last.ckpt``, and ``last.ckpt`` on SIGTERM or Ctrl-C.
"""

from cnnclf.checkpoints.callback import RunCheckpoints
from cnnclf.checkpoints.runs import (
    FINISHED_MARKER,
    UNNAMED_EXPERIMENT,
    check_training_left,
    find_checkpoint,
    resolve_checkpoint,
)
from cnnclf.checkpoints.safe_io import SafeCheckpointIO, check_fits, check_restorable, checked_class, read_checkpoint

__all__ = ["FINISHED_MARKER", "UNNAMED_EXPERIMENT", "RunCheckpoints", "SafeCheckpointIO", "check_fits",
           "check_restorable", "check_training_left", "checked_class", "find_checkpoint",
           "read_checkpoint",
           "resolve_checkpoint"]
