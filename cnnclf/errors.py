"""Errors a user can act on; the CLI prints them as one line instead of a traceback."""


class CnnclfError(ValueError):
    """Bad input from the user: a file, a config value or a checkpoint. The message says what to fix."""


class DatasetError(CnnclfError):
    """A dataset file or its contents are not what cnnclf can train on."""


class ConfigError(CnnclfError):
    """A configuration value that cannot work (a negative batch size, a checkpoint that is not there)."""


class CheckpointError(CnnclfError):
    """A checkpoint that is missing, truncated, refused as unsafe, or made for other data."""


class NonFiniteLossError(CnnclfError):
    """Training diverged: the loss became NaN or infinite."""
