"""The command line as cnnclf reads it before LightningCLI does (config names, a shell-expanded list of image
files, the data module a predict needs), and its errors in one line, naming what to do where jsonargparse's
would not (a model name, a config file's encoding)."""

import difflib
import json
import os
import pydoc
import re
import sys
from pathlib import Path

from jsonargparse import ArgumentError, ArgumentParser
from lightning import Trainer
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser

from cnnclf import data, models
from cnnclf.compare import main as compare_main
from cnnclf.config_text import read_yaml
from cnnclf.errors import CnnclfError, ConfigError, refused
from cnnclf.shipped import print_shipped_configs, shipped_config

CONFIG_OPTIONS = ("--config", "-c")
LIST_OPTION = "--data.predict_files"


def prepared_arguments(args: list[str]) -> list[str]:
    args = collect_list(args, LIST_OPTION)
    for index, arg in enumerate(args):
        option, equals, value = arg.partition("=")
        if option in CONFIG_OPTIONS and equals:
            args[index] = f"{option}={config_path(value)}"
        elif index > 0 and args[index - 1] in CONFIG_OPTIONS:
            args[index] = config_path(arg)
        elif index > 0 and args[index - 1] in ("--model", "--data", "--model.help", "--data.help"):
            check_class_name(arg, args[index - 1].removesuffix(".help"))
    given = {arg.partition("=")[0] for arg in args}
    if "--data.root" in given and "--data" not in given:  # a folder of images: the folder data module
        first = next(index for index, arg in enumerate(args) if arg.partition("=")[0] == "--data.root")
        args.insert(first, "--data=cnnclf.data.ImageFolderDataModule")
        given.add("--data")
        if "--ckpt_path" in given and not given & {*CONFIG_OPTIONS, "--model"}:  # the checkpoint's model
            args.append("--model=cnnclf.models.ImageClassifier")
    asks_for_help = any(option in ("--help", "-h", "--print_config") or option.endswith(".help") for option in given)
    if args[:1] == ["predict"] and not given & {*CONFIG_OPTIONS, "--data", LIST_OPTION} and not asks_for_help:
        raise ConfigError("predict on what? --data.predict_files takes image files (files, a folder or a glob); "
                          "--config NAME with --data.path predicts that pickle's test split")
    if args[:1] == ["predict"] and LIST_OPTION in given and not given & {"--data", "--data.path"}:
        args.append("--data=cnnclf.data.ImageFilesDataModule")  # a config's pickle is not needed
        if not given & {*CONFIG_OPTIONS, "--model"}:  # LightningCLI replaces it with the class the checkpoint names
            args.append("--model=cnnclf.models.ImageClassifier")
    return args


def collect_list(args: list[str], option: str) -> list[str]:
    """``OPTION a b c`` (as a shell expands ``OPTION *.png``) as ``OPTION=["a", "b", "c"]``."""
    if option not in args:
        return list(args)
    start = args.index(option) + 1
    end = next((index for index in range(start, len(args)) if args[index].startswith("-")), len(args))
    values = args[start:end]
    if len(values) == 1 and values[0].lstrip().startswith("["):
        return list(args)  # already a list: `OPTION '[a.png, b.png]'`
    return args[:start - 1] + [f"{option}={json.dumps(values, ensure_ascii=False)}"] + args[end:]  # YAML too


def config_path(value: str) -> str:
    value = os.path.expanduser(value)  # `--config=~/x.yaml`: no shell expands it
    path = Path(value)
    if not os.path.isfile(path):  # False, not OSError, for an inline config longer than a file name
        shipped = None if value.startswith("{") else shipped_config(value)
        if shipped is None:
            if ":" in value:  # a config written inline: `--config '{trainer: {max_epochs: 2}}'`
                read_yaml(value, "--config")
                return value
            raise ConfigError(f"--config {value}: no such file, nor a config shipped with cnnclf "
                              "(`cnnclf configs` lists them)")
        path = shipped
    try:
        read_yaml(path.read_text(encoding="utf-8"), str(path))  # bounded, and its errors name the file
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#x} at offset {error.start}); "
                          "save the config as UTF-8") from None
    return str(path)


def check_class_name(value: str, option: str) -> None:
    """A bare class name must be one of cnnclf's: jsonargparse would only say it is no import path."""
    package, base = (models, models.ImageClassifier) if option == "--model" else (data, data.PickledImageDataModule)
    names = sorted(name for name in package.__all__
                   if isinstance(getattr(package, name), type) and issubclass(getattr(package, name), base))
    if "." not in value and not value.startswith(("{", "[")) and value not in names and value != "help":
        raise ConfigError(f"{option} {value}: no such class; {option} takes one of {', '.join(names)} "
                          "(or a full import path)")


PARSER_KEY = re.compile(r'\s*Parser key "([^"]+)":')


MAIN_DESCRIPTION = "Train, evaluate and use CNN image classifiers on pickled image datasets."


def report_main(args: list[str]) -> None:
    from cnnclf.report import main  # its figures and tables cost the other commands nothing

    main(args)


# cnnclf's own subcommands, run by ``cli_main`` before LightningCLI and listed in its help: name -> (a function
# of the arguments after the name, its help).
COMMANDS = {"configs": (print_shipped_configs, "List the configs shipped with cnnclf; --config takes them by name."),
            "compare": (compare_main, "Compare two checkpoints or tested runs on the same test images (paired)."),
            "report": (report_main, "Write runs, a sweep or checkpoints up as Markdown and HTML.")}


# A whole number counts batches. Lightning's Optional[Union[int, float]] reaches jsonargparse as Union[float, int]
# (typing caches unions whatever their order), which makes 1 into 1.0, all the batches.
BATCH_LIMITS = [f"limit_{split}_batches" for split in ("train", "val", "test", "predict")]


class ConciseErrorParser(LightningArgumentParser):
    """Reports a bad value in one line: the option and the reason (the innermost ``ArgumentError``: jsonargparse
    wraps a model or data argument's in every type it tried). No option may be abbreviated: a prefix that names
    one option today may name another tomorrow. The main parser (made without a description) describes cnnclf."""

    def __init__(self, *args, description: str = MAIN_DESCRIPTION, **kwargs) -> None:
        super().__init__(*args, description=description, allow_abbrev=False, **kwargs)

    def add_class_arguments(self, theclass, nested_key=None, *args, skip=None, **kwargs):
        trainer = isinstance(theclass, type) and issubclass(theclass, Trainer)
        added = super().add_class_arguments(theclass, nested_key, *args, **kwargs,
                                            skip={*(skip or ()), *(BATCH_LIMITS if trainer else ())})
        for name in BATCH_LIMITS if trainer else ():
            self.add_argument(f"--{nested_key}.{name}", type=int | float | None, default=None,
                              help="batches per epoch (a whole number) or the fraction of them (a float); all: 1.0")
        return added

    def add_subcommands(self, *args, **kwargs):
        """cnnclf's own subcommands, then Lightning's, each helped by its docstring's first sentence."""
        subcommands = super().add_subcommands(*args, **kwargs)
        add = subcommands.add_subcommand
        for name, (_, text) in COMMANDS.items():
            add(name, ConciseErrorParser(description=text), help=text)
        self.subcommand_parsers = {}  # the option names a config file's misspelled key is compared with

        def add_lightning_subcommand(name, parser, help=None, **options):
            self.subcommand_parsers[name] = parser
            return add(name, parser, help=help and help.partition(". ")[0].removesuffix(".") + ".", **options)

        subcommands.add_subcommand = add_lightning_subcommand
        return subcommands

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        reason = concise_parse_error(message, ex)
        if re.fullmatch(r"the following arguments are required: \w+\.model", reason):
            reason += ("; --config NAME takes a shipped config (`cnnclf configs` lists them) or a file, --model CLASS "
                       "an architecture (ConvBNNet, ResNet9, ...)")
        sys.exit(f"cnnclf: error: {reason}{where_the_option_is(message, self)}")


def concise_parse_error(message: str, error: BaseException | None) -> str:
    inner = []
    while error is not None:
        if isinstance(error, ArgumentError):
            inner.append(str(error))
        error = error.__cause__ or error.__context__
    parts = [message, *inner[-1:]]
    keys = [match.group(1) for match in map(PARSER_KEY.match, parts) if match]
    reason = PARSER_KEY.sub("", parts[-1], count=1)
    one_line = " ".join(line.strip() for line in reason.splitlines() if line.strip())
    return f"{'.'.join(keys)}: {one_line}" if keys else one_line


def where_the_option_is(message: str, parser: ArgumentParser) -> str:
    """For an option nothing accepts: the accepted name closest to it, or where the accepted ones are listed."""
    command = parser.prog.split()[-1]
    if unknown := re.match(r"unrecognized arguments: (--)([\w.]+)|Subcommand '(\w+)' does not accept option "
                           r"'()([\w.]+)'", message):  # from the command line or from a config file
        dashes, typed = unknown.group(1) or unknown.group(4), unknown.group(2) or unknown.group(5)
        command = unknown.group(3) or command
        parser, listing = getattr(parser, "subcommand_parsers", {}).get(command, parser), "--help"
    elif in_class := re.search(r'key "(\w+)":.*class_path \'([\w.]+)\':\s*Option \'(\w+)\' is not', message, re.S):
        group, class_path, name = in_class.groups()
        parser = ArgumentParser()
        parser.add_class_arguments(pydoc.locate(class_path), group)
        dashes, typed, listing = "--", f"{group}.{name}", f"--{group}.help {class_path.rpartition('.')[2]}"
    else:
        return ""
    known = [key.replace(".init_args.", ".") for key in parser.get_defaults().keys()]  # noqa: SIM118 (a Namespace)
    group, _, name = typed.rpartition(".")
    in_group = {key.rpartition(".")[2]: key for key in known if key.rpartition(".")[0] == group}
    close = ([in_group[match] for match in difflib.get_close_matches(name, in_group, n=1)] if in_group
             else difflib.get_close_matches(typed, known, n=1))  # the group itself misspelled
    return f"; did you mean {dashes}{close[0]}?" if close else f"; `cnnclf {command} {listing}` lists the options"


def user_error_in(error: BaseException | None) -> Exception | None:
    """The user's error behind ``error`` (jsonargparse wraps errors raised while instantiating): a
    ``CnnclfError``, Lightning's ``MisconfigurationException`` for a trainer setting it refuses, or a file the
    system refused (a read-only or full disk)."""
    while error is not None and not isinstance(error, (CnnclfError, MisconfigurationException)) and not refused(error):
        error = error.__cause__ or error.__context__
    return error
