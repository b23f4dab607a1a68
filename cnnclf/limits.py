"""How much an input may ask of the machine: each figure, raised by its ``CNNCLF_MAX_*`` variable. A file decides the
size of what cnnclf builds (the dense layer grows with the image, the metrics with the classes), so each such size is
checked against a figure here before anything is built."""

import os

from cnnclf.errors import CnnclfError, ConfigError

DEFAULTS = {
    "DATASET_MB": 2048,  # a dataset pickle's size (the course's int64 MNIST is 421 MiB)
    "CLASSES": 1000,  # the metrics keep a classes x classes matrix per stage
    "CHANNELS": 64,
    "MILLION_WEIGHTS": 200,  # a model's parameters, in millions (ResNet-9 on CIFAR: 6.6)
    "CONFIG_KB": 1024,  # a config or sweep file, or an inline --config
}


def limit(name: str) -> int:
    text = os.environ.get(f"CNNCLF_MAX_{name}", str(DEFAULTS[name]))
    if not text.isdecimal():  # isdigit() would pass '²', which int() refuses
        raise ConfigError(f"CNNCLF_MAX_{name} must be a whole number, found {text[:40]!r}")
    return int(text)


def check_limit(name: str, found: int, what: str, error: type[CnnclfError]) -> None:
    """Raise ``error`` when ``found`` is past the figure ``name``; ``what`` says where ``found`` came from."""
    allowed = limit(name)
    if found > allowed:
        raise error(f"{what}: {found}, more than the {allowed} cnnclf allows (set CNNCLF_MAX_{name} to raise it)")
