"""Read YAML from an untrusted config, inline ``--config`` or sweep file with bounded work (docs/safety.md).

PyYAML builds an alias as a shared reference, so an 840-byte file of nested aliases loads cheaply and then takes
gigabytes and minutes once jsonargparse copies or prints it; a 50,000-deep flow sequence overflows the recursion limit;
30 MB of pure-Python parsing hangs. So the size is checked first, then the events, before anything is built.
"""

import yaml

from cnnclf.errors import ConfigError
from cnnclf.limits import check_limit

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_DEPTH = 64
MAX_NODES = 100_000  # a config has tens of values; a sweep's grid a few hundred


def read_yaml(text: str, where: str) -> object:
    """The YAML document ``text`` from ``where`` (a file, or the option that gave it), checked first."""
    check_limit("CONFIG_KB", -(-len(text.encode()) // 1024), f"{where}: its size in KiB", ConfigError)
    try:
        _check_events(text, where)
        return yaml.load(text, Loader=LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as error:  # jsonargparse's message names no file
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from None


def _check_events(text: str, where: str) -> None:
    anchored: dict[str, int] = {}  # anchor -> the size of its node, aliases expanded
    open_collections: list[list] = []  # [anchor, size so far] of each collection being read
    total = 0
    for event in yaml.parse(text, Loader=LOADER):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(open_collections) == MAX_DEPTH:
                raise ConfigError(f"{where}: collections nested deeper than {MAX_DEPTH}")
            open_collections.append([event.anchor, 1])
            total += 1
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = open_collections.pop()
            if anchor:
                anchored[anchor] = size
            if open_collections:
                open_collections[-1][1] += size
        elif isinstance(event, (yaml.AliasEvent, yaml.ScalarEvent)):
            if isinstance(event, yaml.AliasEvent) and event.anchor not in anchored:
                raise ConfigError(f"{where}: the alias *{event.anchor[:40]} refers to a node that contains it")
            size = anchored[event.anchor] if isinstance(event, yaml.AliasEvent) else 1
            if isinstance(event, yaml.ScalarEvent) and event.anchor:
                anchored[event.anchor] = 1
            total += size
            if open_collections:
                open_collections[-1][1] += size
        if total > MAX_NODES:
            raise ConfigError(f"{where}: more than {MAX_NODES} values once its aliases are expanded (an alias bomb?)")
