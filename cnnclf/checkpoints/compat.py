"""Options older checkpoints store that the architectures no longer all take."""

from cnnclf.errors import ConfigError

# Options of the architectures with such layers; checkpoints written while they were ImageClassifier's
# store them for every architecture, which accepts them where they make no difference.
RETIRED_OPTIONS = {"dropout": None, "final_relu": False}  # name: the one value accepted (None: any)


def check_retired(architecture: str, retired: dict) -> None:
    """Refuse any of ``retired`` (the options ``architecture`` does not take) that would change the model."""
    for name, value in retired.items():
        if name not in RETIRED_OPTIONS:
            raise ConfigError(f"{architecture} takes no argument '{name}'")
        accepted = RETIRED_OPTIONS[name]
        if accepted is not None and value != accepted:
            raise ConfigError(f"{architecture} has no {name} option, found {name}={value}")
