"""A sweep file: base configs, settings for every run (``set``), a grid of overrides with one ``cnnclf fit`` run per
combination, and ``seeds:``/``folds:`` repeats of each (docs/sweeps.md shows one). Keys are the CLI's own."""

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cnnclf.config_text import read_yaml
from cnnclf.errors import ConfigError
from cnnclf.shipped import shipped_config

FIELDS = {"base", "set", "grid", "name", "seeds", "folds"}
# the options whose runs are repeats of one setting: the results table aggregates over them
REPEATS = ("seed_everything", "data.split_seed", "data.fold")


@dataclass(frozen=True)
class PlannedRun:
    """One combination of the grid: its directory name and the overrides that make it."""

    name: str
    overrides: dict[str, object]


@dataclass(frozen=True)
class Sweep:
    name: str
    base: list[Path]
    fixed: dict[str, object]
    grid: dict[str, list]

    def runs(self) -> list[PlannedRun]:
        keys = list(self.grid)
        labels = _short_labels(keys)
        planned = []
        for values in itertools.product(*self.grid.values()):
            overrides = dict(zip(keys, values, strict=True))
            name = ",".join(f"{labels[key]}={_value_label(value)}" for key, value in overrides.items())
            planned.append(PlannedRun(name or "base", overrides))
        return planned

    def arguments(self, run: PlannedRun) -> list[str]:
        """The ``cnnclf fit`` arguments of ``run``, before the sweep's own bookkeeping options."""
        configs = [argument for path in self.base for argument in ("--config", str(path))]
        settings = {**self.fixed, **run.overrides}
        return configs + [f"--{key}={cli_value(value)}" for key, value in settings.items()]


def load_sweep(path: str | Path) -> Sweep:
    """The sweep in file ``path``, or the shipped one of that name, with or without its ``sweeps/`` prefix."""
    path = Path(path)
    if not path.is_file():
        path = shipped_config(f"sweeps/{str(path).removeprefix('configs/').removeprefix('sweeps/')}") or path
    if not path.is_file():
        raise ConfigError(f"{path}: no such sweep file, nor a sweep shipped with cnnclf (`cnnclf configs` lists them)")
    content = read_yaml(path.read_text(encoding="utf-8", errors="replace"), str(path))
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping with 'base' and 'grid', found {type(content).__name__}")
    unknown = set(content) - FIELDS
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {sorted(unknown)}; a sweep file has {sorted(FIELDS)}")

    base = content.get("base")
    base = [base] if isinstance(base, str) else base
    if not base or not all(isinstance(item, str) for item in base):
        raise ConfigError(f"{path}: 'base' must name a config file or a list of them, found {base!r}")
    base_paths = [(path.parent / item).resolve() for item in base]  # beside the sweep file, else shipped by name
    base_paths = [resolved if resolved.is_file() else shipped_config(item) or resolved
                  for item, resolved in zip(base, base_paths, strict=True)]
    for item, resolved in zip(base, base_paths, strict=True):
        if not resolved.is_file():
            raise ConfigError(f"{path}: 'base': no such config {item} (looked for {resolved}, nor is it a config "
                              "shipped with cnnclf: `cnnclf configs` lists them)")

    fixed = _mapping(content.get("set") or {}, path, "set")
    grid = _mapping(content.get("grid") or {}, path, "grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: 'grid.{key}' must be a non-empty list of values, found {values!r}")
    seeds, folds, repeats = content.get("seeds"), content.get("folds"), {}
    if type(seeds) is int and seeds >= 1:
        seeds = list(range(seeds))
    if seeds is not None:
        if not (isinstance(seeds, list) and seeds and all(type(seed) is int for seed in seeds)):
            raise ConfigError(f"{path}: 'seeds' must be a count of seeds (0, 1, ...) or a list, found {seeds!r}")
        repeats["seeds"] = ("seed_everything", seeds)
    if folds is not None:
        if type(folds) is not int or folds < 2:
            raise ConfigError(f"{path}: 'folds' must be a number of cross-validation folds >= 2, found {folds!r}")
        fixed = {**fixed, "data.folds": folds}
        repeats["folds"] = ("data.fold", list(range(folds)))
    for field, (key, values) in repeats.items():  # repeat axes last: the runs of one setting follow each other
        if key in fixed or key in grid:
            raise ConfigError(f"{path}: '{field}' sets {key}, which 'set' or 'grid' sets too; keep one")
        grid = {**grid, key: values}
    both = set(fixed) & set(grid)
    if both:
        raise ConfigError(f"{path}: {sorted(both)} in both 'set' and 'grid'; keep each key in one")
    name = content.get("name") or path.stem
    if not re.fullmatch(r"[\w.+-]+", str(name)):
        raise ConfigError(f"{path}: 'name' must be a folder name (letters, digits, . _ + -), found {name!r}")
    return Sweep(str(name), base_paths, fixed, grid)


def cli_value(value: object) -> str:
    """A value as the CLI parses it: strings as they are, everything else as JSON (true, 0.1, [16, 32])."""
    return value if isinstance(value, str) else json.dumps(value)


def _mapping(value: object, path: Path, field: str) -> dict:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ConfigError(f"{path}: '{field}' must map option names (like model.lr) to values, found {value!r}")
    return value


def _short_labels(keys: list[str]) -> dict[str, str]:
    """``model.optimizer`` -> ``optimizer``, unless two keys would then share a label."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last, strict=True)}


def _value_label(value: object) -> str:
    if isinstance(value, str):
        value = value.rsplit(".", 1)[-1] if "." in value and "/" not in value else value  # class paths
    elif isinstance(value, list):
        value = "-".join(map(str, value))
    else:
        value = json.dumps(value)
    return re.sub(r"[^\w.+-]", "-", value)
