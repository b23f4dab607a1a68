"""``cnnclf fit|validate|test|predict|configs``: LightningCLI with the data deciding the model's shape.

The data module's ``num_classes``, ``image_shape``, class names and channel statistics are
linked into the model at instantiation, so they are never configured twice. ``--ckpt_path``
also takes ``best`` or ``last``; test, validate, predict and a resumed fit write into the run that made the
checkpoint (``cnnclf.checkpoints`` holds how checkpoints are found, read, written and resumed).
"""

import json
import signal
import sys

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cnnclf import models
from cnnclf.argv import COMMANDS, ConciseErrorParser, prepared_arguments, user_error_in
from cnnclf.callbacks import FitTimer, LayerTable, NonFiniteLossGuard
from cnnclf.checkpoints import (
    UNNAMED_EXPERIMENT,
    ResumeState,
    check_fits,
    checked_class,
    read_checkpoint,
    resolve_checkpoint,
)
from cnnclf.curves import CurvesCSV
from cnnclf.data import PickledImageDataModule
from cnnclf.errors import CheckpointError, ConfigError, one_line
from cnnclf.hardware import fit_to_this_machine
from cnnclf.models import ImageClassifier
from cnnclf.models.graphs import check_graphed_fit
from cnnclf.models.optimization import check_schedule_has_an_end
from cnnclf.noise import progress_bar_for_this_output, silence_lightning_noise
from cnnclf.summary import PredictionCSV, TestSummary

# Data module properties, read into the model's same-named arguments: the first read loads and checks the file.
FROM_THE_DATA = ("num_classes", "image_shape", "class_names", "input_mean", "input_std")

TRAINER_DEFAULTS = {
    "default_root_dir": "runs",
    "plugins": {"class_path": "cnnclf.checkpoints.SafeCheckpointIO"},  # weights-only loads, atomic saves
    "enable_model_summary": False,  # the layer table is cnnclf's own (--model_summary.max_depth)
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {
        "save_dir": "runs", "name": UNNAMED_EXPERIMENT, "log_graph": True, "default_hp_metric": False}},
}


class CnnclfCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # weights_only: every checkpoint loads with weights_only=True whatever it says, so the option is not offered.
        return {name: {*skipped, "weights_only"} for name, skipped in LightningCLI.subcommands().items()}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # best.ckpt by val/acc, and last.ckpt every epoch (a run without validation keeps only last.ckpt).
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/acc", "checkpoint.mode": "max", "checkpoint.filename": "best",
                             "checkpoint.auto_insert_metric_name": False})
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults({"last_checkpoint.filename": "last", "last_checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(ResumeState, "resume_state")
        parser.add_lightning_class_args(NonFiniteLossGuard, "nonfinite_guard")
        parser.add_lightning_class_args(FitTimer, "fit_timer")
        parser.add_lightning_class_args(TestSummary, "test_summary")
        parser.add_lightning_class_args(PredictionCSV, "prediction_csv")
        parser.add_lightning_class_args(LayerTable, "model_summary")
        parser.add_lightning_class_args(CurvesCSV, "curves_csv")
        for name in FROM_THE_DATA:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after fit, test the best checkpoint and write its test summary into the same run")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        # Before LightningCLI reads the checkpoint's model, before anything is created: no folder for a failed command.
        subcommand = self.config.subcommand
        config = self.config[subcommand]
        model_arguments = config.get("model", {}).get("init_args") or {}
        for name in FROM_THE_DATA:  # linked from the data module, never a config's
            if (found := model_arguments.get(name)) is not None:
                raise ConfigError(f"model.{name} is decided by the data (its data.{name}), found {found} in the "
                                  "config; remove it, or use data that has it")
        typed = [arg.partition("=")[0].removeprefix("--model.").removeprefix("init_args.")
                 for arg in (sys.argv[1:] if args is None else args) if arg.startswith("--model.")]
        # LightningCLI gives a checkpoint's model options precedence over the command line's
        self.typed_model_options = {name: model_arguments[name] for name in typed if name in model_arguments}
        if config.get("ckpt_path") is not None:
            if resolve_checkpoint(config, subcommand):
                self.save_config_kwargs["config_filename"] = f"{subcommand}_config.yaml"  # the run's config stays
            class_path = read_checkpoint(config.ckpt_path).get("hyper_parameters", {}).get("_class_path")
            if class_path is not None:
                checked_class(class_path, models, ImageClassifier, config.ckpt_path)
            if (config.data.class_path.endswith((".ImageFilesDataModule", ".ImageFolderDataModule"))
                    and config.data.init_args.checkpoint is None):
                config.data.init_args.checkpoint = config.ckpt_path

    def before_instantiate_classes(self) -> None:
        model = self.config[self.subcommand].model  # the checkpoint's class and options, where it has any
        for name, value in self.typed_model_options.items():
            if name not in model.init_args:
                raise ConfigError(f"--model.{name}: the checkpoint's {model.class_path.rpartition('.')[2]} has no "
                                  "such option")
            saved = model.init_args[name]
            if saved != value and self.subcommand == "fit":
                raise ConfigError(f"--model.{name} {json.dumps(value)}: a resumed fit goes on with the checkpoint's "
                                  f"model, optimizer and schedule ({name}: {json.dumps(saved)}); start a new run, "
                                  "without --ckpt_path, to change it")
            if saved != value:
                print(f"cnnclf: --model.{name} {json.dumps(value)} replaces the checkpoint's {json.dumps(saved)}",
                      file=sys.stderr)
                model.init_args[name] = value
        trainer = self.config[self.subcommand].trainer
        self.fallback = fit_to_this_machine(trainer)
        progress_bar_for_this_output(trainer)

    def before_fit(self) -> None:
        # On the built trainer (fast_dev_run has set its limits), before a run folder exists.
        check_graphed_fit(self.trainer, self.model)
        check_schedule_has_an_end(self.model.hparams.lr_schedule, self.trainer)
        for limit in ("max_epochs", "max_steps"):
            if getattr(self.trainer, limit) == 0:
                raise ConfigError(f"--trainer.{limit} 0: nothing would be trained; give at least 1, or evaluate a "
                                  "checkpoint with `cnnclf test` and the same --config, --ckpt_path best|last|FILE")
        self.before_running()
        if not self.datamodule.has_validation:
            self.trainer.limit_val_batches = 0  # val_split 0: no validation loop to set up (nor warn about)
            ranked = [callback for callback in self.trainer.checkpoint_callbacks if callback.monitor is not None]
            for callback in ranked:  # nothing to rank by: last.ckpt stands for the best
                self.trainer.callbacks.remove(callback)

    def after_fit(self) -> None:
        if self.config[self.subcommand].test_after_fit and not self.trainer.interrupted:
            # The best, or last.ckpt without validation; a fast_dev_run saves none at all.
            best = [callback.best_model_path for callback in self.trainer.checkpoint_callbacks]
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=next(filter(None, best), None))

    def before_validate(self) -> None:
        if not self.datamodule.has_validation:
            raise ConfigError("validate needs a validation split, and this data has none (val_split 0): "
                              "set --data.val_split, or evaluate with 'cnnclf test'")
        self.before_running()

    def before_running(self) -> None:
        """Refuses a checkpoint that cannot be restored into the model, before the command writes into a run."""
        if self.fallback and self.trainer.is_global_zero:  # said once, by a command under way, not by one that fails
            print(self.fallback, file=sys.stderr)
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if ckpt_path is not None:
            checkpoint = read_checkpoint(ckpt_path)
            if "pytorch-lightning_version" not in checkpoint:
                raise CheckpointError(f"{ckpt_path}: not saved by Lightning (it has no 'pytorch-lightning_version'); "
                                      "test, predict and resume take a checkpoint written by 'cnnclf fit'")
            check_fits(checkpoint, self.model)
        elif self.subcommand != "fit":
            print(f"cnnclf {self.subcommand}: no --ckpt_path, so the model is untrained; "
                  "pass --ckpt_path best|last|FILE to evaluate a trained one", file=sys.stderr)

    before_test = before_predict = before_running


def cli_main(args: list[str] | None = None) -> CnnclfCLI | None:
    """Run the CLI on ``args`` (default: the command line; tests and notebooks pass a list). Returns the CLI,
    whose ``trainer``, ``model`` and ``datamodule`` hold the finished run."""
    from_command_line = args is None
    args = list(sys.argv[1:] if from_command_line else args)
    if args[:1] and args[0] in COMMANDS:
        return COMMANDS[args[0]][0](args[1:])
    silence_lightning_noise(evaluating=args[:1] != ["fit"])
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on recent NVIDIA GPUs
    try:
        args = prepared_arguments(args)
        if from_command_line:  # LightningCLI then reads it: its usage and error lines name the command
            sys.argv[1:], args = args, None
        return CnnclfCLI(ImageClassifier, PickledImageDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         seed_everything_default=42, trainer_defaults=TRAINER_DEFAULTS, auto_configure_optimizers=False,
                         save_config_kwargs={"overwrite": True}, parser_class=ConciseErrorParser, args=args)
    except SIGTERMException:
        # Lightning ends a SIGTERM-ed fit as a success (exit 0); a scheduler must see it did not finish.
        print("cnnclf: stopped by SIGTERM; resume with --ckpt_path last", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except Exception as error:
        reason = user_error_in(error)
        if reason is None:
            raise
        sys.exit(f"cnnclf: error: {one_line(reason)}")


def main() -> None:
    """The ``cnnclf`` console script."""
    try:
        cli_main()
    finally:  # Lightning closes only NCCL's process group; gloo's threads (DDP on CPUs) can abort the exit
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
