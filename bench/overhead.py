"""What cnnclf adds to a training run, on a network whose own compute is negligible.

The demo's ``ReportMNISTNet`` on the bundled 8x8 digits (batch 64, Adam with a per-step cosine
schedule, a validation pass each epoch), trained three ways over the same in-memory tensors:

  plain:  a hand-written PyTorch loop (index slices, the validation accuracy read once per epoch);
  plain, default Adam: the same with torch's default Adam step (the others take the fused one, as
          cnnclf does on the CPU and CUDA), to show what that choice is worth;
  bare:   ``L.Trainer.fit`` with no metrics, logging, checkpoints, model summary or progress bar;
  cnnclf: ``cnnclf fit --config configs/digits.yaml`` through ``cli_main``, with everything a user
          gets: TensorBoard curves and graph, accuracy and F1, best and last checkpoints every
          epoch, the non-finite loss guard, resumable state. Only the progress bar is off, as in
          ``make demo``.

Each run is timed over whole epochs, from the first training step to the end of the last epoch,
so epoch ends, validation, checkpoint writes and logging count (start-up and Lightning's sanity
check do not). The three alternate ``--repeats`` times; the table gives each way's median and range
and its speed relative to the plain loop within the same round (plain seconds / its seconds), in
wall time and in the process's CPU time over the same span. On a machine shared with other work
the CPU time is the steadier figure; it leaves out waiting for the disk (the checkpoints' fsync).

    python bench/overhead.py [--epochs 20] [--repeats 5]

With ``--where`` it also runs ``cnnclf fit`` ``--repeats`` more times alone and prints the wall time
spent inside its main parts (median over the runs), each part timed around one public method.
"""

import argparse
import contextlib
import functools
import io
import logging
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loops.evaluation_loop import _EvaluationLoop
from machine import machine_description

from cnnclf.callbacks import FitTimer, NonFiniteLossGuard
from cnnclf.cli import cli_main
from cnnclf.data import DigitsDataModule
from cnnclf.models import ImageClassifier, ReportMNISTNet
from cnnclf.models.metrics import AccuracyAndF1

ROOT = Path(__file__).resolve().parents[1]
LR = 0.002  # configs/digits.yaml's Adam learning rate


def digits() -> DigitsDataModule:
    data = DigitsDataModule(batch_size=64)
    data.setup("fit")
    return data


def network(data: DigitsDataModule) -> ReportMNISTNet:
    return ReportMNISTNet(data.num_classes, data.image_shape, input_mean=data.input_mean, input_std=data.input_std)


def plain_loop(data: DigitsDataModule, epochs: int, fused: bool | None = True) -> tuple[float, float]:
    model = network(data)
    (images, targets), (val_images, val_targets) = data.data.train, data.data.val
    batch, steps_per_epoch = data.batch_size, -(-len(targets) // data.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=fused)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(targets))
        for first in range(0, len(targets), batch):
            index = order[first : first + batch]
            loss = F.cross_entropy(model(images[index]), targets[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(val_images[i : i + batch]).argmax(1) == val_targets[i : i + batch]).sum()
                          for i in range(0, len(val_targets), batch))
        float(correct)  # what a hand-written loop prints each epoch
    return time.perf_counter() - start, time.process_time() - cpu_start


class BareModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, steps: int) -> None:
        super().__init__()
        self.model, self.steps = model, steps

    def training_step(self, batch, batch_index):
        images, targets = batch
        return F.cross_entropy(self.model(images), targets)

    def validation_step(self, batch, batch_index):
        images, targets = batch
        return (self.model(images).argmax(1) == targets).sum()

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=LR, fused=True)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def bare_lightning(data: DigitsDataModule, epochs: int, runs: Path) -> tuple[float, float]:
    steps = epochs * -(-len(data.data.train[1]) // data.batch_size)
    clock = FitTimer()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
                        default_root_dir=runs)
    trainer.fit(BareModule(network(data), steps), datamodule=data)
    return clock.seconds, clock.cpu_seconds


def cnnclf_fit(epochs: int, runs: Path) -> tuple[float, float]:
    cli = cli_main(["fit", "--config", str(ROOT / "configs/digits.yaml"), "--trainer.max_epochs", str(epochs),
                    "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
                    "--test_after_fit", "false", "--trainer.default_root_dir", str(runs),
                    "--trainer.logger.init_args.save_dir", str(runs)])
    clock = next(callback for callback in cli.trainer.callbacks if isinstance(callback, FitTimer))
    return clock.seconds, clock.cpu_seconds


# The parts of a cnnclf fit timed by --where: (label, class, method). Nested parts count in both.
PARTS = [
    ("training steps (forward, loss, counting the train figures)", ImageClassifier, "training_step"),
    ("validation loops (all of it, with the checkpoint saved as one ends)", _EvaluationLoop, "run"),
    ("counting the figures: confusion matrices (train and validation)", AccuracyAndF1, "update"),
    ("checkpoint saves (build, serialize, fsync, rename)", L.Trainer, "save_checkpoint"),
    ("self.log calls (Lightning's bookkeeping per call)", L.LightningModule, "log"),
    ("TensorBoard: writing the scalars", TensorBoardLogger, "log_metrics"),
    ("TensorBoard: flushing after each write", TensorBoardLogger, "save"),
    ("epoch figures from the confusion matrices", AccuracyAndF1, "counted_figures"),
    ("non-finite loss guard", NonFiniteLossGuard, "on_train_batch_end"),
]


def where_the_time_goes(epochs: int, repeats: int, runs: Path) -> None:
    spent: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        seconds: dict[str, float] = defaultdict(float)
        originals = [(owner, name, getattr(owner, name)) for _, owner, name in PARTS]
        for (label, owner, name), (_, _, original) in zip(PARTS, originals, strict=True):
            setattr(owner, name, _timed(original, label, seconds))
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                seconds["whole fit (first step to end of last epoch)"] = cnnclf_fit(epochs, runs)[0]
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)
        for label in [label for label, _, _ in PARTS] + ["whole fit (first step to end of last epoch)"]:
            spent[label].append(seconds[label])
    print(f"\nWhere cnnclf fit's time goes (`--where`, median of {repeats} runs, wall ms per run):\n")
    print("| part | ms per run | ms per epoch |")
    print("| --- | --- | --- |")
    for label, values in spent.items():
        median = 1000 * statistics.median(values)
        print(f"| {label} | {median:.0f} | {median / epochs:.1f} |")


def _timed(method, label: str, seconds: dict[str, float]):
    @functools.wraps(method)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - start
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (1 keeps the figures steadier on a machine busy with other work)")
    parser.add_argument("--where", action="store_true", help="also print where cnnclf fit's time goes")
    args = parser.parse_args()
    for name in ("lightning.pytorch", "lightning.fabric"):  # the tables only, not each run's summary and seed
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    data = digits()
    steps = args.epochs * -(-len(data.data.train[1]) // data.batch_size)
    seconds: dict[str, list[tuple[float, float]]] = {"plain": [], "plain, default Adam": [], "bare": [], "cnnclf": []}
    with tempfile.TemporaryDirectory() as runs:
        for _ in range(args.repeats):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                seconds["plain"].append(plain_loop(data, args.epochs))
                seconds["plain, default Adam"].append(plain_loop(data, args.epochs, fused=None))
                seconds["bare"].append(bare_lightning(digits(), args.epochs, Path(runs)))
                seconds["cnnclf"].append(cnnclf_fit(args.epochs, Path(runs)))
    print(f"machine: {machine_description()}, torch threads: {torch.get_num_threads()}")
    print(f"command: python bench/overhead.py --epochs {args.epochs} --repeats {args.repeats} --threads {args.threads} "
          f"({steps} training steps per run)\n")
    print("| way | s per run, median (range) | ms per step | speed vs plain, median (range) "
          "| CPU s per run | CPU speed vs plain |")
    print("| --- | --- | --- | --- | --- | --- |")
    for way, runs_of_way in seconds.items():
        cells = []
        for clock in (0, 1):
            times = [run[clock] for run in runs_of_way]
            ratios = [plain[clock] / own[clock] for plain, own in zip(seconds["plain"], runs_of_way, strict=True)]
            cells += [f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})",
                      f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"]
        wall, wall_ratio, cpu, cpu_ratio = cells
        wall_per_step = 1000 * statistics.median(run[0] for run in runs_of_way) / steps
        print(f"| {way} | {wall} | {wall_per_step:.2f} | {wall_ratio} | {cpu} | {cpu_ratio} |")
    if args.where:
        with tempfile.TemporaryDirectory() as runs:
            where_the_time_goes(args.epochs, args.repeats, Path(runs))


if __name__ == "__main__":
    main()
