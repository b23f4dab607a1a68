"""The GPU check: every shipped recipe's fit time, test accuracy and speed against a plain loop, eager and graphed.

For each recipe whose data is present (configs/*_fast.yaml, *_best.yaml, *_fixed.yaml stacked with
configs/presets/gpu.yaml, torch.compile off and on) and the report's own configs (mnist, orl,
cifar.yaml in fp32, cut at ``--max-time`` seconds), one ``cnnclf fit`` with its test, then a plain
PyTorch loop over the same device-resident data: the same network, optimizer, precision and batch
augmentation, whole epochs with a validation pass where the recipe has one, for as many steps as the
fit took (at most as long), and a bare ``L.Trainer.fit`` of the same network over the same data
module (like the plain loop, no schedule or Lookahead; no metrics, logging, checkpoints or other
callbacks), after a 3-step fit of the same recipe
that loads the CUDA kernels all three use; then, uncompiled, the same fit with ``--model.cuda_graphs
true`` (after its own 3-step fit; its epochs leave out the last partial batch). Speed is the plain
loop's seconds per epoch over cnnclf's (and over bare Lightning's, and the graphed fit's); all count
whole epochs from the first step, compiling and capturing included (bare Lightning runs uncompiled
rows only). Then ``cifar_best`` for ``--seeds`` seeds, as shipped or with each of ``--seed-variants``,
and with ``--airbench PATH`` airbench94's own script for as many runs (before the compiled rows, which
cost the most). Rows print as they finish; runs past ``--budget`` seconds are skipped and listed, and
a graphed fit or airbench run that is refused or fails is listed with its reason.

On the device, in one call: first, here in the project root (a checkout whose ``.git`` is a folder;
prepare.sh adds ``.device-carry/`` to ``.git/info/exclude``), run ``bash ../shared/gpu/prepare.sh``
(CIFAR and ORL, about 57 MiB) and put a copy of airbench94's script in ``.device-carry/airbench94.py``
(docs/gpu.md says from where), then

    run(command="bash .device-carry/setup.sh && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && "
                "python3 -m pytest -q tests/test_graphs.py; python3 bench/gpu_check.py --data data/seed "
                "--compile off --max-time 8 --seeds 3 --seed-variants '' '--model.cuda_graphs true' "
                "--airbench .device-carry/airbench94.py --budget 300",
        carry=[".device-carry"], timeout_s=560)

No run starts after ``--budget`` seconds; the one under way may take a minute more (a compiled row).

``--dry-run`` runs the same code on the CPU on tiny generated data in the report's format (one
short epoch per run, compile off; the graphed fits are refused there), as tests/test_bench.py does.
"""

import argparse
import contextlib
import io
import logging
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

from cnnclf.callbacks import FitTimer
from cnnclf.cli import cli_main
from cnnclf.data import CIFARDataModule
from cnnclf.data.augment import random_hflip, random_translate
from cnnclf.data.convert import read_pickled_dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DATA_FILES = {"mnist": "MNIST", "orl": "ORL", "cifar": "CIFAR"}
REPORT_CONFIGS = ["mnist", "orl", "cifar"]  # fp32, the report's settings, cut by --max-time
DRY_RUN_ARGS = ["--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2"]
GRAPHED = ["--model.cuda_graphs", "true"]
# Loads airbench94's script as a module (its own __main__, 25 runs, stays unrun) and runs its main: a warm-up
# run on shuffled labels, as the script itself offers, then one run per seed.
AIRBENCH_DRIVER = ("import importlib.util, sys; "
                   "spec = importlib.util.spec_from_file_location('airbench', sys.argv[1]); "
                   "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
                   "[module.main(run) for run in ['warmup', *range(int(sys.argv[2]))]]")


@dataclass
class Outcome:
    fit_seconds: float
    epochs: float  # steps / steps per epoch: a run cut by max_time ends mid-epoch
    test_accuracy: float

    @property
    def seconds_per_epoch(self) -> float:
        return self.fit_seconds / self.epochs


def recipes(data: Path) -> list[str]:
    names = sorted(path.stem for pattern in ("*_fast.yaml", "*_best.yaml", "*_fixed.yaml")
                   for path in CONFIGS.glob(pattern))
    return [name for name in names if data_file(data, name).is_file()]


def data_file(data: Path, config: str) -> Path:
    return data / DATA_FILES[config.split("_")[0]]


def fit(config: str, data: Path, runs: Path, compile: bool, dry_run: bool, extra: list[str]) -> tuple[Outcome, object]:
    args = ["fit", "--config", str(CONFIGS / f"{config}.yaml"), "--data.path", str(data_file(data, config)),
            "--model.compile", str(compile).lower(), "--trainer.enable_progress_bar", "false",
            "--test_after_fit", "true", "--trainer.default_root_dir", str(runs),
            "--trainer.logger.init_args.save_dir", str(runs), *extra]
    if config not in REPORT_CONFIGS and not dry_run:
        args[3:3] = ["--config", str(CONFIGS / "presets/gpu.yaml")]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli = cli_main(args + (DRY_RUN_ARGS if dry_run else []))
    timer = next(callback for callback in cli.trainer.callbacks if isinstance(callback, FitTimer))
    outcome = Outcome(timer.seconds, cli.trainer.global_step / cli.trainer.num_training_batches,
                      cli.trainer.callback_metrics["test/acc"].item())
    return outcome, cli


def fresh_network(fitted):
    """A new, untrained network of the fitted one's class and options, channels-last if it was. The
    schedule is left out: it needs a trainer to count its steps, and costs nothing per step."""
    hparams = {key: value for key, value in fitted.hparams.items() if not key.startswith("_")}
    return type(fitted)(**{**hparams, "lr_schedule": "constant"})


def warmed_up_fit(config: str, data: Path, runs: Path, compile: bool, dry_run: bool,
                  extra: list[str]) -> tuple[Outcome, object]:
    """``fit``, after a 3-step fit of the same recipe. CUDA loads each kernel on its first use: unwarmed,
    the fit (measured first) would pay for every kernel of its network alone. The warm-up is uncompiled,
    so a compiled fit compiles afresh."""
    fit(config, data, runs, False, dry_run, [*extra, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"])
    return fit(config, data, runs, compile, dry_run, extra)


def plain_loop(cli, steps: int, seconds: float) -> float:
    """Seconds per epoch of a hand-written loop doing the fit's work: ``steps`` steps or ``seconds``."""
    data, trainer = cli.datamodule, cli.trainer
    device = trainer.strategy.root_device  # the fitted model itself is back on the CPU after the run
    model = fresh_network(cli.model).to(device)
    model.compile_network()
    optimizer = model.configure_optimizers()
    images, targets = (tensor.to(device) for tensor in data.data.train)
    val_images, val_targets = (tensor.to(device) for tensor in data.data.val)
    batch, eval_batch = data.batch_size, data.eval_batch_size
    steps_per_epoch = trainer.num_training_batches
    bf16 = str(trainer.precision).startswith("bf16")
    done = 0
    synchronize(device)
    start = time.perf_counter()
    while done < steps and time.perf_counter() - start < seconds:
        model.train()
        order = torch.randperm(len(targets), device=device)
        for first in range(0, min(len(targets), steps_per_epoch * batch), batch):
            index = order[first : first + batch]
            x = images[index]
            if data.translate:
                x = random_translate(x, data.translate, data.translate_padding)
            if data.hflip:
                x = random_hflip(x)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model.criterion(model(x), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            correct = sum((model.evaluation_logits(val_images[i : i + eval_batch]).argmax(1)
                           == val_targets[i : i + eval_batch]).sum() for i in range(0, len(val_targets), eval_batch))
        float(correct)  # a hand-written loop reads its epoch's figures: a wait for the device
    synchronize(device)
    return (time.perf_counter() - start) / (done / steps_per_epoch)


class BareModule(L.LightningModule):
    """A fitted recipe's network trained by Lightning alone: its loss and optimizer, nothing logged."""

    def __init__(self, network: L.LightningModule) -> None:
        super().__init__()
        self.network = network

    def training_step(self, batch, batch_index):
        images, targets = batch
        return self.network.criterion(self.network(images), targets)

    def validation_step(self, batch, batch_index):
        images, targets = batch
        return (self.network.evaluation_logits(images).argmax(1) == targets).sum()

    def configure_optimizers(self):
        return self.network.configure_optimizers()


def bare_lightning(cli, runs: Path) -> float:
    """Seconds per epoch of ``L.Trainer.fit`` alone, for as many steps as the fit took, on its data module."""
    trainer, clock = cli.trainer, FitTimer()
    bare = L.Trainer(accelerator=trainer.strategy.root_device.type, devices=1, precision=trainer.precision,
                     max_steps=trainer.global_step, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     callbacks=[clock], default_root_dir=runs)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        bare.fit(BareModule(fresh_network(cli.model)), datamodule=cli.datamodule)
    return clock.seconds / (bare.global_step / bare.num_training_batches)


def airbench(script: Path, cifar: Path, runs: int, folder: Path) -> list[tuple[float, float]]:
    """(test accuracy, seconds) of ``runs`` runs of airbench94's own ``script`` on the same CIFAR pickle, in a
    process of its own (the script sets cudnn.benchmark for its whole process). The seconds are the script's
    own measure: its training epochs, whitening and final test-time-augmented evaluation, by CUDA events."""
    splits = read_pickled_dataset(cifar)
    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):  # where and how the script keeps the data it would otherwise download
        torch.save({"images": torch.from_numpy(np.ascontiguousarray(splits[name].images)),
                    "labels": torch.from_numpy(np.ascontiguousarray(splits[name].labels)),
                    "classes": list(CIFARDataModule.CLASS_NAMES)}, folder / "cifar10" / f"{name}.pt")
    done = subprocess.run([sys.executable, "-c", AIRBENCH_DRIVER, str(script.resolve()), str(runs)], cwd=folder,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{script} exited with {done.returncode}: {(done.stderr.strip() or '?').splitlines()[-1]}")
    # Each run's last table row: | run | eval | ... | tta_val_acc | total_time_seconds |
    rows = [[field.strip() for field in line.strip().strip("|").split("|")] for line in done.stdout.splitlines()
            if line.startswith("|")]
    finals = [(float(row[-2]), float(row[-1])) for row in rows if len(row) > 2 and row[1] == "eval"]
    return finals[1:]  # the first is the warm-up's


def attempt(failures: list[str], what: str, work, *args):
    """``work(*args)``, or None with its one-line reason added to ``failures``: a graphed fit that is refused (on
    a CPU) or fails, or airbench's script, must not cost a device call its other rows."""
    try:
        return work(*args)
    except (Exception, SystemExit) as error:
        reason = str(error).strip().splitlines()
        failures.append(f"{what}: {reason[-1] if reason else type(error).__name__}")
        return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def write_tiny_data(folder: Path) -> Path:
    """Report-format pickles small enough for a CPU: MNIST (int64 28x28), ORL (112x92x3, labels 1..40), CIFAR."""
    rng = np.random.default_rng(0)
    shapes = {"MNIST": ((28, 28), list(range(10)), np.int64), "ORL": ((112, 92, 3), list(range(1, 41)), np.uint8),
              "CIFAR": ((32, 32, 3), list(range(10)), np.uint8)}
    for name, (shape, labels, dtype) in shapes.items():
        def records(count: int, labels=labels, shape=shape, dtype=dtype) -> list[dict]:
            return [{"image": rng.integers(0, 256, shape).astype(dtype), "label": labels[index % len(labels)]}
                    for index in range(count)]
        with (folder / name).open("wb") as stream:
            pickle.dump({"train": records(120), "test": records(40)}, stream, protocol=4)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "seed")
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--max-time", type=int, default=15, help="seconds of training for the report's configs")
    parser.add_argument("--seeds", type=int, default=3, help="cifar_best runs, seeds 0, 1, ...")
    parser.add_argument("--seed-variants", nargs="+", default=[""], metavar="OPTIONS",
                        help='cifar_best is run for every seed with each of these option strings ("" is the '
                             'recipe as shipped), e.g. "--data.hflip alternate"')
    parser.add_argument("--budget", type=float, default=420, help="seconds; later rows are skipped")
    parser.add_argument("--only", nargs="+", help="these configs only (names such as cifar_best, orl)")
    parser.add_argument("--fit-options", default="", metavar="OPTIONS",
                        help='added to every table row\'s fit, e.g. "--last_checkpoint.every_n_epochs 1000"')
    parser.add_argument("--airbench", type=Path, metavar="PATH",
                        help="airbench94's own script (a copy, never committed): run --seeds times beside cifar_best, "
                             "on the same CIFAR data")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny generated data, one short epoch per run")
    args = parser.parse_args(argv)
    for name in ("lightning.pytorch", "lightning.fabric"):  # the table only, not each run's summary and seed
        logging.getLogger(name).setLevel(logging.WARNING)
    started = time.perf_counter()
    temporary = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    data = write_tiny_data(temporary) if args.dry_run else args.data
    compiles = ["off"] if args.dry_run else args.compile
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.dry_run else "CPU (dry run)"
    print(f"device: {device}; torch {torch.__version__}; data: {data}\n")
    print("| run | compile | epochs | fit s | test acc | cnnclf s/epoch | graphed s/epoch | graphed test acc | "
          "bare s/epoch | plain s/epoch | bare vs plain | speed vs plain | graphed vs plain |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    options = args.fit_options.split()
    report_rows = [(name, "off", ["--trainer.max_time", f"00:00:00:{args.max_time:02d}", *options])
                   for name in REPORT_CONFIGS if data_file(data, name).is_file()]
    # Compiled runs last: each compiles twice (cnnclf, plain loop), and the budget may not reach them.
    first = [(name, "off", options) for name in recipes(data) if "off" in compiles] + report_rows
    compiled = [(name, "on", options) for name in recipes(data) if "on" in compiles]
    if args.only:
        first, compiled = ([row for row in rows if row[0] in args.only] for rows in (first, compiled))
    skipped: list[str] = []
    failures: list[str] = []

    def within_budget(what: str) -> bool:
        if time.perf_counter() - started > args.budget:
            skipped.append(what)
            return False
        return True

    def table_row(name: str, compile: str, extra: list[str]) -> None:
        runs = temporary / "runs"
        outcome, cli = warmed_up_fit(name, data, runs, compile == "on", args.dry_run, extra)
        plain = plain_loop(cli, cli.trainer.global_step, outcome.fit_seconds)
        bare = bare_lightning(cli, runs) if compile == "off" else float("nan")  # bare runs uncompiled
        # Graphs and compile are refused together. A graphed epoch leaves out its last partial batch.
        graphed = attempt(failures, f"{name} graphed", warmed_up_fit, name, data, runs, False, args.dry_run,
                          [*extra, *GRAPHED]) if compile == "off" else None
        shutil.rmtree(runs, ignore_errors=True)
        graph_cells = ("- | -", "-")
        if graphed:
            graphed_epoch = graphed[0].seconds_per_epoch
            graph_cells = (f"{graphed_epoch:.3f} | {graphed[0].test_accuracy:.2%}", f"{plain / graphed_epoch:.2f}x")
        print(f"| {name} | {compile} | {outcome.epochs:.1f} | {outcome.fit_seconds:.2f} | "
              f"{outcome.test_accuracy:.2%} | {outcome.seconds_per_epoch:.3f} | {graph_cells[0]} | {bare:.3f} | "
              f"{plain:.3f} | {plain / bare:.2f}x | {plain / outcome.seconds_per_epoch:.2f}x | {graph_cells[1]} |",
              flush=True)

    for name, compile, extra in first:
        if within_budget(f"{name} (compile {compile})"):
            table_row(name, compile, extra)
    seeded: dict[str, list[Outcome]] = {f"cifar_best {variant}".strip(): [] for variant in args.seed_variants}
    if data_file(data, "cifar_best").is_file():
        for seed in range(args.seeds):
            for variant in args.seed_variants:
                what = f"cifar_best {variant}".strip()
                if within_budget(f"{what}, seed {seed}"):
                    fitted = attempt(failures, f"{what}, seed {seed}", fit, "cifar_best", data, temporary / "runs",
                                     False, args.dry_run, ["--seed_everything", str(seed), *variant.split()])
                    seeded[what] += [fitted[0]] if fitted else []
                    shutil.rmtree(temporary / "runs", ignore_errors=True)
    if args.airbench and data_file(data, "cifar").is_file() and within_budget("airbench94"):
        runs = attempt(failures, str(args.airbench), airbench, args.airbench, data_file(data, "cifar"), args.seeds,
                       temporary / "airbench")
        seeded[f"airbench94's own script ({args.airbench.name})"] = [
            Outcome(seconds, 1, accuracy) for accuracy, seconds in runs or []]
    for name, compile, extra in compiled:
        if within_budget(f"{name} (compile {compile})"):
            table_row(name, compile, extra)
    if any(seeded.values()):
        print("\n| cifar_best, gpu preset, compile off | runs | mean test acc | accuracies | mean fit s |")
        print("| --- | --- | --- | --- | --- |")
    for label, outcomes in seeded.items():
        if outcomes:
            accuracies = [outcome.test_accuracy for outcome in outcomes]
            print(f"| {label} | {len(outcomes)} | {statistics.mean(accuracies):.2%} | "
                  f"{', '.join(f'{accuracy:.2%}' for accuracy in accuracies)} | "
                  f"{statistics.mean(outcome.fit_seconds for outcome in outcomes):.2f} |")
    shutil.rmtree(temporary, ignore_errors=True)
    if failures:
        print("\nNot run:\n" + "\n".join(f"- {failure}" for failure in failures))
    print(f"\n{time.perf_counter() - started:.0f} s in all" + (f"; skipped for time: {', '.join(skipped)}"
                                                              if skipped else ""))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
