"""Time to accuracy: train recipes on the full real data and report test accuracy and time.

Each config runs as its own ``cnnclf fit`` process on the pickles in ``--data`` (``make
seed-data``), with its test after fit. The table gives the training time (Lightning's fit
loop: training and validation, from fit_time.json), the whole command's wall clock (imports,
loading and the test included), its peak resident memory, the epochs and the test accuracy of
the checkpoint tested.

    python bench/time_to_accuracy.py configs/mnist_fixed.yaml configs/orl_best.yaml [...]
        [--data data/seed] [--set KEY=VALUE ...]

The CIFAR pickle from ../shared/data is a JPEG re-encoding of CIFAR-10 (slightly lossy), so
accuracies on it run a little below published CIFAR-10 figures.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from machine import machine_description

ROOT = Path(__file__).resolve().parents[1]
FILES = {"MNISTDataModule": "MNIST", "ORLDataModule": "ORL", "CIFARDataModule": "CIFAR"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "seed")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "time-to-accuracy")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides, e.g. trainer.max_epochs=3")
    args = parser.parse_args()
    print(f"machine: {machine_description()}\n")
    print("| config | network | epochs | training s | command wall s | peak memory GB | test accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for config in args.configs:
        settings = yaml.safe_load(config.read_text())
        network = settings["model"]["class_path"].rsplit(".", 1)[1]
        data_file = FILES[settings["data"]["class_path"].rsplit(".", 1)[1]]
        version = f"{config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        command = [sys.executable, "-m", "cnnclf", "fit", "--config", str(config),
                   "--data.path", str(args.data / data_file), "--test_after_fit", "true",
                   "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(args.runs),
                   "--trainer.logger.init_args.version", version,
                   *[f"--{override}" for override in args.set]]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)  # this run's own resource use, peak memory included
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if process.returncode:
            sys.exit(f"{config}: cnnclf fit failed with exit status {process.returncode}")
        run = args.runs / settings["trainer"]["logger"]["init_args"]["name"] / version
        fit = json.loads((run / "fit_time.json").read_text())
        report = json.loads((run / "test" / "summary.json").read_text())
        peak_gb = usage.ru_maxrss * 1024 / 1e9  # Linux reports kilobytes
        print(f"| {config} | {network} | {fit['epochs']} | {fit['fit_seconds']:.0f} | {wall:.0f} | {peak_gb:.2f} | "
              f"{report['accuracy']:.2%} |", flush=True)


if __name__ == "__main__":
    main()
