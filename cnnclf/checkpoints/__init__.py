"""Checkpoints: reading and writing them safely, finding them, and resuming a run from one (docs/resume.md)."""

from cnnclf.checkpoints.resume import ResumeState
from cnnclf.checkpoints.runs import FINISHED_MARKER, UNNAMED_EXPERIMENT, find_checkpoint, resolve_checkpoint
from cnnclf.checkpoints.safe_io import SafeCheckpointIO, check_fits, checked_class, read_checkpoint

__all__ = ["FINISHED_MARKER", "UNNAMED_EXPERIMENT", "ResumeState", "SafeCheckpointIO", "check_fits",
           "checked_class", "find_checkpoint", "read_checkpoint", "resolve_checkpoint"]
