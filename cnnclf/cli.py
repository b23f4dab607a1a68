"""``cnnclf fit|validate|test|predict``: LightningCLI with the data deciding the model's shape.

The data module's ``num_classes``, ``image_shape``, label names and channel statistics are
linked into the model at instantiation, so they are never configured twice. ``--ckpt_path``
also takes ``best`` or ``last``: the newest such checkpoint of this experiment's runs. Every
checkpoint is read ``weights_only`` and written atomically (``cnnclf.checkpoints``).
"""

import pydoc
import signal
import sys
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cnnclf import models
from cnnclf.callbacks import BestAndLastCheckpoint, FitTimer, NonFiniteLossGuard, PredictionCSV, TestReport
from cnnclf.checkpoints import SafeCheckpointIO, checked_class, read_checkpoint
from cnnclf.data import PickledImageDataModule
from cnnclf.errors import CnnclfError, ConfigError
from cnnclf.models import ImageClassifier

DATA_TO_MODEL = {
    "num_classes": "num_classes",
    "image_shape": "image_shape",
    "label_names": "class_names",
    "input_mean": "input_mean",
    "input_std": "input_std",
}

TRAINER_DEFAULTS = {
    "default_root_dir": "runs",
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "default", "log_graph": True, "default_hp_metric": False},
    },
}


class ConciseErrorParser(LightningArgumentParser):
    """Reports a bad value in one line: the key and what it expected.

    jsonargparse explains a bad value by listing every type it tried (for a subclass argument,
    also ``NoneType``); the user needs only the one that applies.
    """

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        sys.exit(f"cnnclf: error: {concise_parse_error(message)}")


def concise_parse_error(message: str) -> str:
    keys, expected, given = [], None, ""
    for line in (line.strip().removeprefix("- ") for line in message.splitlines()):
        if line.startswith('Parser key "') and expected is None:
            keys.append(line.split('"')[1])
        elif line.startswith("Expected a") and "NoneType" not in line and expected is None:
            expected = line
        elif line.startswith("Given value:"):
            given = line
    if expected is None:
        return message.strip().splitlines()[0]
    detail = f"{expected}. {given}" if given and "Got value" not in expected else expected
    return f"{'.'.join(keys)}: {detail}" if keys else detail


class CnnclfCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
        parser.add_lightning_class_args(NonFiniteLossGuard, "nonfinite_guard")
        parser.add_lightning_class_args(FitTimer, "fit_timer")
        parser.add_lightning_class_args(TestReport, "test_report")
        parser.add_lightning_class_args(PredictionCSV, "prediction_csv")
        # The layer table with input and output shapes per layer, like the report's tables.
        parser.add_lightning_class_args(ModelSummary, "model_summary")
        parser.set_defaults({"model_summary.max_depth": 3})
        for source, target in DATA_TO_MODEL.items():
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after fit, test the best checkpoint and write its report into the same run")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        # LightningCLI next reads the model's class and arguments from a given checkpoint file;
        # check first that it is safe to read and names one of cnnclf's architectures.
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        init_args = self.config[subcommand].get("model", {}).get("init_args") or {}
        for source, target in DATA_TO_MODEL.items():
            if init_args.get(target) is not None:
                raise ConfigError(f"model.{target} is decided by the data (its data.{source}), found "
                                  f"{init_args.get(target)} in the config; remove it, or use data that has it")
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            class_path = read_checkpoint(ckpt_path, mmap=True).get("hyper_parameters", {}).get("_class_path")
            if class_path is not None:
                checked_class(class_path, models, ImageClassifier, ckpt_path)

    def before_instantiate_classes(self) -> None:
        trainer = self.config[self.subcommand].trainer if self.subcommand else self.config.trainer
        if str(trainer.precision).startswith("bf16") and trains_on_cpu(trainer.accelerator) and not cpu_has_bf16():
            # Emulated bf16 made the report's ORL net 13x slower than fp32 on an AVX2 CPU: a recipe
            # that asks for bf16 to be fast must not become the slowest way to run.
            print(f"cnnclf: this CPU has no bf16 arithmetic (AVX-512 or AMX), where precision {trainer.precision} "
                  "runs several times slower than fp32: running in 32-true instead", file=sys.stderr)
            trainer.precision = "32-true"
        if trainer.enable_progress_bar is False and trainer.callbacks:
            # A preset's progress bar (there for its refresh rate) gives way to a run that asks for none.
            trainer.callbacks = [callback for callback in trainer.callbacks
                                 if not issubclass(pydoc.locate(callback.class_path), ProgressBar)]

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # the default; a user's own plugin stays
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        return trainer

    def before_fit(self) -> None:
        self._resolve_checkpoint()
        if not getattr(self.datamodule, "has_validation", True):
            self.trainer.limit_val_batches = 0  # val_split 0: no validation loop to set up (nor warn about)

    def after_fit(self) -> None:
        if self.config[self.subcommand].test_after_fit and not self.trainer.interrupted:
            checkpoint = self.trainer.checkpoint_callback
            # Without validation only the last checkpoint exists; a fast_dev_run saves none at all.
            if checkpoint is not None and checkpoint.best_model_path:
                ckpt_path = "best"
            elif checkpoint is not None and checkpoint.last_model_path:
                ckpt_path = "last"
            else:
                ckpt_path = None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)

    def before_validate(self) -> None:
        self._resolve_checkpoint()

    def before_test(self) -> None:
        self._resolve_checkpoint()

    def before_predict(self) -> None:
        self._resolve_checkpoint()

    def _resolve_checkpoint(self) -> None:
        arguments = self.config_init[self.subcommand]
        wanted = arguments.get("ckpt_path")
        if wanted in ("best", "last"):
            arguments["ckpt_path"] = str(find_checkpoint(Path(self.trainer.logger.root_dir), wanted))
        elif wanted is not None and not Path(wanted).is_file():
            raise ConfigError(f"--ckpt_path {wanted}: no such checkpoint file")
        if arguments.get("ckpt_path") is None and self.subcommand in ("test", "predict"):
            print(f"cnnclf {self.subcommand}: no --ckpt_path, so the model is untrained; "
                  "pass --ckpt_path best|last|FILE to evaluate a trained one", file=sys.stderr)


def trains_on_cpu(accelerator) -> bool:
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()
                                    and not torch.backends.mps.is_available())


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX-512 or AMX; on an AVX2-only CPU it emulates it)."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def find_checkpoint(runs_root: Path, which: str) -> Path:
    """``checkpoints/{which}.ckpt`` of the newest run under ``runs_root`` that saved one.

    A run without a validation split saves only ``last.ckpt``, which then also stands for ``best``.
    """
    lasts = sorted(runs_root.glob("*/checkpoints/last.ckpt"), key=lambda path: path.stat().st_mtime)
    if not lasts:
        raise ConfigError(
            f"--ckpt_path {which}: no checkpoint under {runs_root}/*/checkpoints; train with 'cnnclf fit' "
            "first, or pass a checkpoint file"
        )
    wanted = lasts[-1].with_name(f"{which}.ckpt")
    return wanted if wanted.is_file() else lasts[-1]


def cli_main(args: list[str] | None = None) -> CnnclfCLI:
    """Run the CLI on ``args`` (default: the command line); tests and notebooks pass a list.

    Returns the CLI, whose ``trainer``, ``model`` and ``datamodule`` hold the finished run.
    """
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on recent NVIDIA GPUs
    try:
        return CnnclfCLI(
            ImageClassifier,
            PickledImageDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=42,
            trainer_defaults=TRAINER_DEFAULTS,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_class=ConciseErrorParser,
            args=args,
        )
    except SIGTERMException:
        # Lightning ends a SIGTERM-ed fit as a success (exit 0); a scheduler must see it did not finish.
        print("cnnclf: stopped by SIGTERM; resume with --ckpt_path last", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except Exception as error:
        reason = user_error_in(error)
        if reason is None:
            raise
        sys.exit(f"cnnclf: error: {reason}")


def user_error_in(error: BaseException | None) -> CnnclfError | None:
    """The ``CnnclfError`` behind ``error``: jsonargparse wraps errors raised while instantiating."""
    while error is not None and not isinstance(error, CnnclfError):
        error = error.__cause__ or error.__context__
    return error


def main() -> None:
    """The ``cnnclf`` console script."""
    cli_main()
