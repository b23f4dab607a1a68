"""Training throughput of the report's three networks, three ways, side by side in one run:

  (a) report loop: the report's way: a Python list of records indexed sample by sample,
      ``np.array`` + ``torch.FloatTensor`` per batch, HWC->CHW per batch, its layer order (ReLU
      before max-pool), plain SGD step (its per-epoch weight histograms are left out, which only
      flatters it);
  (b) plain PyTorch: the same model over in-memory uint8 tensors, batches by index slicing;
  (c) ``cnnclf fit`` through LightningCLI with the dataset's report config (same model, batch
      size and optimizer), logging and progress bar on as a user has them.

(b) and (c) run in fp32 and with the preset of ``--preset``: ``channels_last`` in fp32
(configs/presets/channels_last.yaml), or ``bf16``, which adds bf16 autocast (configs/presets/bf16.yaml), the
default on a CPU with bf16 arithmetic (AVX-512, AMX). The runs
alternate a, b, c, a, b, c, ... ``--repeats`` times; each times ``--batches`` training steps
after ``--warmup`` steps, and the table reports medians. Seconds per epoch are the median
step time times the batches in the report's epoch (the whole training split).

    python bench/throughput.py [--data data/seed] [--datasets mnist cifar orl] [--repeats 3]

Build the pickles first with ``make seed-data``.
"""

import argparse
import contextlib
import io
import math
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from machine import machine_description

from cnnclf.cli import cli_main
from cnnclf.data import CIFARDataModule, MNISTDataModule, ORLDataModule, load_pickle
from cnnclf.hardware import cpu_has_bf16
from cnnclf.models import ReportCIFARNet, ReportMNISTNet, ReportORLNet

ROOT = Path(__file__).resolve().parents[1]

SETUPS = {  # the report's networks, batch sizes and inputs
    "mnist": dict(file="MNIST", config="mnist.yaml", net=ReportMNISTNet, data=MNISTDataModule, batch=1000,
                  data_args={}),
    "orl": dict(file="ORL", config="orl.yaml", net=ReportORLNet, data=ORLDataModule, batch=100,
                data_args={"resize": [92, 92]}),
    "cifar": dict(file="CIFAR", config="cifar.yaml", net=ReportCIFARNet, data=CIFARDataModule, batch=1000,
                  data_args={}),
}


def make_model(setup: dict, data, channels_last: bool = False) -> torch.nn.Module:
    return setup["net"](data.num_classes, data.image_shape, final_relu=True, channels_last=channels_last)


def in_report_layer_order(model: torch.nn.Module) -> torch.nn.Module:
    """The report's code applies each ReLU before its max-pool; cnnclf's classes pool first (the
    same values and gradients, tested in tests/test_models.py). (a) runs the report's order."""
    layers = list(model.net[0])
    for index in range(len(layers) - 1):
        if isinstance(layers[index], torch.nn.MaxPool2d) and isinstance(layers[index + 1], torch.nn.ReLU):
            layers[index], layers[index + 1] = layers[index + 1], layers[index]
    model.net[0] = torch.nn.Sequential(*layers)
    return model


def report_loop(setup: dict, data, records: list[dict], steps: int) -> list[float]:
    """(a): per-sample list indexing and tensor building per batch, as the report's code did."""
    model = in_report_layer_order(make_model(setup, data)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    batch, times = setup["batch"], []
    order = np.random.permutation(len(records))
    for step in range(steps):
        start = time.perf_counter()
        index = order[(step * batch) % len(records):][:batch]
        x = torch.FloatTensor(np.array([records[i]["image"] for i in index]))
        y = torch.LongTensor(np.array([records[i]["label"] for i in index]))
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def plain_loop(setup: dict, data, steps: int, preset: str | None) -> list[float]:
    """(b): in-memory tensors, index slices, the same model and optimizer; no framework."""
    model = make_model(setup, data, channels_last=preset is not None).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, targets = data.data.train
    batch, times = setup["batch"], []
    order = torch.randperm(len(targets))
    for step in range(steps):
        start = time.perf_counter()
        index = order[(step * batch) % len(targets):][:batch]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=preset == "bf16"):
            loss = F.cross_entropy(model(images[index]), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def cnnclf_fit(setup: dict, path: Path, steps: int, preset: str | None, runs: Path) -> list[float]:
    """(c): the real CLI path; a callback records each step's end. Short epochs (ORL has 4) repeat,
    and what Lightning does between epochs, such as saving last.ckpt, is timed too."""
    args = ["fit", "--config", str(ROOT / "configs" / setup["config"]), "--data.path", str(path),
            "--trainer.max_epochs", "-1", "--trainer.max_steps", str(steps),
            "--trainer.limit_val_batches", "0", "--trainer.logger.init_args.save_dir", str(runs),
            "--trainer.default_root_dir", str(runs), "--trainer.callbacks+=step_timer.StepTimer"]
    if preset:
        args += ["--config", str(ROOT / f"configs/presets/{preset}.yaml")]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli = cli_main(args)
    timer = next(callback for callback in cli.trainer.callbacks if type(callback).__name__ == "StepTimer")
    # From the end of one step to the end of the next: Lightning's own work between steps counts.
    return list(np.diff(timer.ends))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "seed")
    parser.add_argument("--datasets", nargs="+", default=["mnist", "cifar", "orl"], choices=list(SETUPS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=12, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per run")
    parser.add_argument("--preset", choices=["channels_last", "bf16"],
                        default="bf16" if cpu_has_bf16() else "channels_last",
                        help="the preset of the fast runs (default: bf16 where the CPU has bf16 arithmetic)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"machine: {machine_description()}, torch threads: {torch.get_num_threads()}")
    print(f"command: python bench/throughput.py --datasets {' '.join(args.datasets)} --repeats {args.repeats} "
          f"--batches {args.batches} --warmup {args.warmup} --preset {args.preset}\n")
    print("| network | batch | way | s/epoch | images/s | c/b | c/a |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.datasets:
        setup = SETUPS[name]
        path = args.data / setup["file"]
        data = setup["data"](str(path), val_split=0, normalize=False, **setup["data_args"])
        records = load_pickle(path)["train"]
        if name == "orl":  # the report resized ORL to 92x92; done once, untimed, so (a) is not charged for it
            images = torch.from_numpy(np.stack([r["image"] for r in records])).permute(0, 3, 1, 2).float()
            resized = F.interpolate(images, size=(92, 92), mode="bilinear", antialias=True).permute(0, 2, 3, 1)
            records = [{"image": image.numpy(), "label": record["label"] - 1}
                       for image, record in zip(resized, records, strict=True)]
        total = args.warmup + args.batches
        ways = {
            "a report loop, fp32": partial(report_loop, setup, data, records, total),
            "b plain PyTorch, fp32": partial(plain_loop, setup, data, total, None),
            "c cnnclf fit, fp32": partial(cnnclf_fit, setup, path, total, None, args.runs),
            f"b plain PyTorch, {args.preset}": partial(plain_loop, setup, data, total, args.preset),
            f"c cnnclf fit, {args.preset}": partial(cnnclf_fit, setup, path, total, args.preset, args.runs),
        }
        step_times: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.repeats):
            for way, run in ways.items():
                step_times[way].append(statistics.median(run()[args.warmup:]))
        batches_per_epoch = math.ceil(len(data.data.train[1]) / setup["batch"])
        median = {way: statistics.median(times) for way, times in step_times.items()}
        for way, step in median.items():
            paired = {"c cnnclf fit, fp32": ("b plain PyTorch, fp32", "a report loop, fp32"),
                      f"c cnnclf fit, {args.preset}": (f"b plain PyTorch, {args.preset}",
                                                        "a report loop, fp32")}.get(way)
            ratios = (f"{median[paired[0]] / step:.2f} | {median[paired[1]] / step:.2f}" if paired else " | ")
            print(f"| {setup['net'].__name__} | {setup['batch']} | {way} | {step * batches_per_epoch:.2f} | "
                  f"{setup['batch'] / step:,.0f} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
