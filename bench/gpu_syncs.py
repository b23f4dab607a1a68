"""Where ``cnnclf fit`` makes the CPU wait for the GPU: every synchronizing call, counted by call site.

A call that reads a value back from the GPU (``.item()``, ``bool(tensor)``, ``torch.bincount`` sizing its
output, ...) stops the CPU from queueing the next step's kernels while the GPU works; on a small network
such waits can cost as much as the step itself. torch reports each one under
``torch.cuda.set_sync_debug_mode("warn")``; this script runs a short fit of a recipe (and its test) that
way and prints each place the waits came from, with how often, beside the number of training steps:
a count near the step count is a wait every step.

    python3 bench/gpu_syncs.py cifar_best --data data/seed --epochs 2 [more cnnclf fit options]

The recipe runs as configured (Lightning picks the GPU; no preset is stacked). On a machine without
a GPU it runs on the CPU and finds nothing, which is how tests/test_bench.py checks that it runs.
"""

import argparse
import collections
import contextlib
import io
import sys
import traceback
import warnings
from pathlib import Path

import torch

from cnnclf.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
OURS = ("cnnclf", "lightning", "torchmetrics")  # the frames that say who asked for the value


def call_site(stack: list[traceback.FrameSummary]) -> str:
    """The innermost three frames in cnnclf, Lightning or torchmetrics code, innermost last."""
    frames = [frame for frame in stack if any(f"/{name}/" in frame.filename for name in OURS)]
    return " <- ".join(f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno} {frame.name}"
                       for frame in reversed(frames[-3:]))


def count_syncs(args: list[str]) -> tuple[collections.Counter, object]:
    sites: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchronizing" in str(message):
            sites[call_site(traceback.extract_stack())] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                cli = cli_main(args)
        finally:
            if torch.cuda.is_available():
                torch.cuda.set_sync_debug_mode("default")
    return sites, cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a recipe in configs/, e.g. cifar_best")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "seed")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/gpu_syncs"))
    args, cnnclf_options = parser.parse_known_args(argv)  # the rest go to cnnclf fit
    dataset = {"mnist": "MNIST", "orl": "ORL", "cifar": "CIFAR"}[args.config.split("_")[0]]
    sites, cli = count_syncs(["fit", "--config", str(ROOT / f"configs/{args.config}.yaml"),
                              "--data.path", str(args.data / dataset), "--trainer.max_epochs", str(args.epochs),
                              "--trainer.enable_progress_bar", "false", "--test_after_fit", "true",
                              "--trainer.logger.init_args.save_dir", str(args.runs), *cnnclf_options])
    print(f"{args.config}: {cli.trainer.global_step} training steps, {sum(sites.values())} waits for the GPU")
    print("| waits | where (innermost first) |\n| --- | --- |")
    for site, count in sites.most_common():
        print(f"| {count} | {site} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
