"""``cnnclf report RUN|SWEEP|CKPT|CONFIG [...] --output DIR``: the write-up of runs, as ``DIR/report.md`` (PNGs
beside it) and ``DIR/report.html`` (one self-contained file).

A RUN is a run folder, a CKPT a checkpoint inside one, a SWEEP the folder ``cnnclf-sweep`` wrote, and a
CONFIG (a shipped config's name or a file) stands for its newest finished run under ``runs/``. Several
inputs are compared side by side, with the exact McNemar test on the test images they share.
"""

import argparse
import re
import shutil
import sys
from itertools import combinations
from pathlib import Path

from cnnclf.compare import comparison as compare
from cnnclf.compare import tested
from cnnclf.errors import CnnclfError, ConfigError
from cnnclf.report.document import Block, Heading, Image, Table, Text, anchor, write
from cnnclf.report.facts import Run, newest_run_of, open_run, read_json
from cnnclf.report.sections import NOT_RECORDED, run_sections
from cnnclf.shipped import shipped_config
from cnnclf.stats import accuracy_interval, spread
from cnnclf.sweeps.results import choose_best, group_runs, load_results, read_run
from cnnclf.sweeps.spec import REPEATS, cli_value

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
        try:
            result = compare(tested(a.folder), tested(b.folder))
        except CnnclfError:  # untested, or other test images: no pairing
            continue
        pairs.append([a.label, b.label, str(result["only_a_right"]), str(result["only_b_right"]),
                      f"{result['mcnemar_p']:.4g}", result["verdict"]])
    if pairs:
        blocks += [Text("Paired on the same test images (`cnnclf compare` on `test/per_image.csv`): the images only A "
                        "or only B gets right, and the exact McNemar test's two-sided p-value."),
                   Table(["A", "B", "only A right", "only B right", "p", "reading"], pairs)]
    else:
        blocks.append(Text("Paired tests: none (no two runs have per-image test predictions of the same images)."))
    return blocks


def sweep_blocks(folder: Path, output: Path) -> tuple[list[Block], Run | None]:
    """A sweep's tables (runs, settings aggregated over seeds and folds, each option's effect) and its best run,
    chosen on validation when the runs have a validation split."""
    results = [read_run(folder / row["run"]) for row in load_results(folder)]
    groups = group_runs(results)
    blocks = [Heading(f"Sweep: {folder.name}", 2), Text(f"`{folder}`: {len(results)} runs, {len(groups)} settings.")]
    blocks.append(Table(["setting", "n", "val accuracy", "test accuracy", "test range", "macro F1", "fit s"], [
        [group.name, str(len(group.runs)), _spread(figures["val_accuracy"], "{:.2%}"),
         _spread(figures["test_accuracy"], "{:.2%}"),
         f"{figures['test_accuracy']['min']:.2%}-{figures['test_accuracy']['max']:.2%}",
         _spread(figures["test_macro_f1"], "{:.4f}"), _spread(figures["fit_seconds"], "{:.1f}")]
        for group in groups for figures in [group.figures()]]))
    blocks += [Text("Mean ± standard deviation over the runs of each setting (seeds, folds); every run:"),
               Table(["run", "status", "val accuracy", "test accuracy", "epochs"], [
                   [result.name, result.status, _percent(result.val_accuracy),
                    accuracy(read_json(folder / result.name / "test" / "summary.json")), str(result.epochs or "")]
                   for result in results])]
    if (folder / "results.png").is_file():
        blocks.append(Image(Path(shutil.copy(folder / "results.png", output / f"sweep-{folder.name}.png")),
                            f"Test accuracy of each run (sweep {folder.name})"))
    finished = [result for result in results if result.status == "ok" and result.test_accuracy is not None]
    keys = dict.fromkeys(key for result in finished for key in result.overrides if key not in REPEATS)
    rows = [[key, cli_value(value), str(len(found)), _spread(spread(found), "{:.2%}")] for key in keys
            for value in dict.fromkeys(result.overrides.get(key) for result in finished)
            for found in [[result.test_accuracy for result in finished if result.overrides.get(key) == value]]]
    blocks += [Heading(f"Effect of each swept option: {folder.name}", 3),
               Text("Mean ± standard deviation of the test accuracy of every finished run with that value, over "
                    "the other options."), Table(["option", "value", "runs", "test accuracy"], rows)]
    best_group, why = choose_best(groups)
    blocks += [Heading(f"Best run: {folder.name}", 3), Text(why[0].upper() + why[1:] + ".")]
    if best_group is None:
        return blocks, None
    best, why = choose_best(best_group.runs)
    blocks.append(Text(f"Its run shown below: {best.name} ({why.partition(', ')[2]})."))
    return blocks, open_run(folder / best.name)


def _spread(figures: dict | None, form: str) -> str:
    if not figures:
        return NOT_RECORDED
    return form.format(figures["mean"]) + (f" ± {form.format(figures['std'])}" if figures["n"] > 1 else "")


def _percent(value: float | None) -> str:
    return NOT_RECORDED if value is None else f"{value:.2%}"


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
    output.mkdir(parents=True, exist_ok=True)
    runs, sweeps = [], []
    for given in inputs:
        path = resolve(given)
        if path.is_dir() and (path / "results.csv").is_file():
            blocks, best = sweep_blocks(path, output)
            sweeps += blocks
            runs += [best] if best else []
        else:
            runs.append(open_run(path))
    title = "cnnclf report: " + ", ".join([*(block.text.removeprefix("Sweep: ") for block in sweeps
                                             if isinstance(block, Heading) and block.text.startswith("Sweep: ")),
                                           *(run.label for run in runs)])
    top = (against_the_original(runs) if original else []) + sweeps + (comparison(runs) if len(runs) > 1 else [])
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
    parser.add_argument("--output", type=Path, default=Path("report"),
                        help="folder for report.md, report.html and figures (default: report)")
    parser.add_argument("--original", action="store_true",
                        help="set each MNIST, ORL and CIFAR result beside the original report's "
                        "(88.63%%, 90.0%%, 69.87%%)")
    parser.add_argument("--dry-run", action="store_true", help="print the run or sweep each input stands for; write "
                        "nothing (fails if one has none)")
    options = parser.parse_args(args)
    try:
        if options.dry_run:
            return print("\n".join(f"{given}: {resolve(given)}" for given in options.inputs))
        markdown, page = report(options.inputs, options.output, options.original)
    except CnnclfError as error:
        sys.exit(f"cnnclf: error: {error}")
    print(f"Wrote {markdown} and {page}")
