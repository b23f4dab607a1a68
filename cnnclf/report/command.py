"""``cnnclf report RUN|SWEEP|CKPT|CONFIG [...] --output DIR``: the write-up of runs, as ``DIR/report.md`` (PNGs
beside it) and ``DIR/report.html`` (one self-contained file).

A RUN is a run folder, a CKPT a checkpoint inside one, a SWEEP the folder ``cnnclf-sweep`` wrote, and a
CONFIG (a shipped config's name or a file) stands for its newest finished run under ``runs/``. Several
inputs are compared side by side, with the exact McNemar test on the test images they share.
"""

import argparse
import re
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

from cnnclf.errors import CnnclfError, ConfigError
from cnnclf.report.document import Block, Heading, Table, Text, anchor, write
from cnnclf.report.facts import Run, newest_run_of, open_run
from cnnclf.report.sections import NOT_RECORDED, run_sections
from cnnclf.shipped import shipped_config
from cnnclf.stats import accuracy_interval, mcnemar

# The report cnnclf grew from: each dataset's test accuracy, as correct images of the test split.
ORIGINAL = {"MNISTDataModule": ("MNIST", 8863, 10000, "ReportMNISTNet, 1000 epochs"),
            "ORLDataModule": ("ORL", 36, 40, "ReportORLNet, 400 epochs"),
            "CIFARDataModule": ("CIFAR-10", 6987, 10000, "ReportCIFARNet, 1000 epochs")}


def resolve(given: str) -> Path:
    """The run folder, checkpoint or sweep folder ``given`` names."""
    path = Path(given)
    if path.exists():
        return path
    config = shipped_config(given) if not given.endswith((".yaml", ".yml")) else None
    if config is None:
        raise ConfigError(f"{given}: no such run folder, checkpoint, sweep folder or config (`cnnclf configs` lists "
                          "the shipped ones)")
    return newest_run_of(config)


def accuracy(summary: dict) -> str:
    """The test accuracy as ``summary.json`` holds it, with its count and interval."""
    if not summary:
        return NOT_RECORDED
    low, high = summary.get("accuracy_ci95") or (None, None)
    count = f"{summary['correct']}/{summary['images']}" if "correct" in summary else f"{summary['images']} images"
    return f"{summary['accuracy']:.2%} ({count}" + (f"; 95% CI {100 * low:.2f}-{100 * high:.2f}%)" if low is not None
                                                   else ")")


def data_class(run: Run) -> str:
    return run.config["data"]["class_path"].rsplit(".", 1)[-1]


def comparison(runs: list[Run]) -> list[Block]:
    rows = [[run.label, data_class(run), accuracy(run.summary),
             f"{run.summary['macro_f1']:.4f}" if "macro_f1" in run.summary else NOT_RECORDED,
             str(run.fit.get("epochs", NOT_RECORDED)), f"{run.fit['fit_seconds']:.1f}" if run.fit else NOT_RECORDED]
            for run in runs]
    blocks = [Heading("Comparison", 2), Table(["run", "data", "test accuracy", "macro F1", "epochs", "fit s"], rows)]
    pairs = []
    for a, b in combinations(runs, 2):
        right = [_correct(run) for run in (a, b)]
        if any(r is None for r in right) or len(right[0][0]) != len(right[1][0]) or (right[0][0] != right[1][0]).any():
            continue  # different test images: no pairing
        only_a, only_b, p = mcnemar(right[0][1], right[1][1])
        verdict = ("no evidence that they differ at the 5% level" if p >= 0.05 else
                   f"{a.label if only_a > only_b else b.label} is better")
        pairs.append([a.label, b.label, str(only_a), str(only_b), f"{p:.4g}", verdict])
    if pairs:
        blocks += [Text("Paired on the same test images (`test/per_image.csv`): the images only A or only B gets "
                        "right, and the exact McNemar test's two-sided p-value."),
                   Table(["A", "B", "only A right", "only B right", "p", "reading"], pairs)]
    else:
        blocks.append(Text("Paired tests: none (no two runs have per-image test predictions of the same images)."))
    return blocks


def _correct(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    """Each test image's true label and whether the run got it right, from ``test/per_image.csv``."""
    path = run.folder / "test" / "per_image.csv"
    if not path.is_file():
        return None
    rows = np.loadtxt(path, delimiter=",", skiprows=1, dtype=str, ndmin=2)
    return rows[:, 1], rows[:, 1] == rows[:, 2]


def against_the_original(runs: list[Run]) -> list[Block]:
    rows = []
    for run in runs:
        if data_class(run) in ORIGINAL:
            name, correct, total, how = ORIGINAL[data_class(run)]
            low, high = accuracy_interval(correct, total)
            rows.append([name, f"{correct / total:.2%} ({correct}/{total}; 95% CI {100 * low:.2f}-{100 * high:.2f}%)",
                         how, accuracy(run.summary), run.label])
    return [Heading("Beside the original report", 2),
            Text("The report cnnclf grew from gave one test accuracy per dataset; its 95% intervals here are exact "
                 "(Clopper-Pearson) on its test split's size."),
            Table(["data", "the report", "its setup", "this report", "run"], rows)]


def report(inputs: list[str], output: Path, original: bool = False) -> tuple[Path, Path]:
    runs = [open_run(resolve(given)) for given in inputs]
    output.mkdir(parents=True, exist_ok=True)
    title = "cnnclf report: " + ", ".join(run.label for run in runs)
    top = (against_the_original(runs) if original else []) + (comparison(runs) if len(runs) > 1 else [])
    body = []
    for number, run in enumerate(runs, start=1):
        body += [Heading(f"Run {number}: {run.label}", 2), Text(f"`{run.folder}`")]
        body += run_sections(run, output / (f"{number}-" + re.sub(r"[^\w.-]+", "-", run.label)))
    contents = [block.text for block in top + body if isinstance(block, Heading) and block.level == 2]
    return write([Heading(title, 1), Text(" · ".join(f"[{text}](#{anchor(text)})" for text in contents)), *top, *body],
                 output, title)


def main(args: list[str]) -> None:
    """``cnnclf report``."""
    parser = argparse.ArgumentParser(prog="cnnclf report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="RUN|SWEEP|CKPT|CONFIG")
    parser.add_argument("--output", required=True, type=Path, help="folder for report.md, report.html and figures")
    parser.add_argument("--original", action="store_true",
                        help="set each MNIST, ORL and CIFAR result beside the original report's (88.63%%, 90.0%%, 69.87%%)")
    options = parser.parse_args(args)
    try:
        markdown, page = report(options.inputs, options.output, options.original)
    except CnnclfError as error:
        sys.exit(f"cnnclf: error: {error}")
    print(f"Wrote {markdown} and {page}")
