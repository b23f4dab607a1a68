"""``cnnclf report RUN|SWEEP|CKPT|CONFIG [...] --output DIR``: the write-up of runs, as ``DIR/report.md`` (PNGs
beside it) and ``DIR/report.html`` (one self-contained file). docs/report.md says what each input stands for."""

import argparse
import re
import shutil
from itertools import combinations
from pathlib import Path

import yaml

from cnnclf.checkpoints import find_checkpoint
from cnnclf.compare import comparison as compare
from cnnclf.compare import tested
from cnnclf.document import Block, Heading, Image, Table, Text, anchor, html_page, markdown
from cnnclf.errors import CnnclfError, ConfigError, one_line_errors
from cnnclf.explore import Run, read_run
from cnnclf.report.sections import NOT_RECORDED, run_sections
from cnnclf.shipped import shipped_config
from cnnclf.stats import accuracy_text
from cnnclf.sweeps.results import choose_best, group_runs, load_results, result_blocks, test_cells

# The report cnnclf grew from: each dataset's test accuracy, as correct images of the test split.
ORIGINAL = {"MNISTDataModule": ("MNIST", 8863, 10000, "ReportMNISTNet, 1000 epochs"),
            "ORLDataModule": ("ORL", 36, 40, "ReportORLNet, 400 epochs"),
            "CIFARDataModule": ("CIFAR-10", 6987, 10000, "ReportCIFARNet, 1000 epochs")}


def resolve(given: str) -> Path:
    """The run folder, checkpoint or sweep folder ``given`` names; a config stands for its newest finished run."""
    path = Path(given)
    if path.exists():
        return path
    config = shipped_config(given) if not given.endswith((".yaml", ".yml")) else None
    if config is None:
        raise ConfigError(f"{given}: no such run folder, checkpoint, sweep folder or config (`cnnclf configs` lists "
                          "the shipped ones)")
    logger = (yaml.safe_load(config.read_text()).get("trainer") or {}).get("logger") or {}
    name = (logger.get("init_args") or {}).get("name")
    if not name:
        raise ConfigError(f"{config}: names no experiment (trainer.logger.init_args.name), so it has no runs to find")
    return find_checkpoint(Path("runs") / name, "best")[0].parents[1]


def data_class(run: Run) -> str:
    return run.config["data"]["class_path"].rsplit(".", 1)[-1]


def comparison(runs: list[Run]) -> list[Block]:
    rows = [[run.name, data_class(run), *(text or NOT_RECORDED for text in test_cells(run))] for run in runs]
    blocks = [Heading("Comparison", 2), Table(["run", "data", "test accuracy", "macro F1", "epochs", "fit s"], rows)]
    pairs = []
    for a, b in combinations(runs, 2):
        try:
            result = compare(tested(a.folder), tested(b.folder))
        except CnnclfError:  # untested, or other test images: no pairing
            continue
        pairs.append([a.name, b.name, str(result["only_a_right"]), str(result["only_b_right"]),
                      f"{result['mcnemar_p']:.4g}", result["verdict"]])
    if not pairs:
        return [*blocks, Text("Paired tests: none (no two runs have per-image test predictions of the same images).")]
    return [*blocks, Text("Paired on the same test images (`cnnclf compare` on `test/per_image.csv`): the images only "
                          "A or only B gets right, and the exact McNemar test's two-sided p-value."),
            Table(["A", "B", "only A right", "only B right", "p", "reading"], pairs)]


def sweep_blocks(folder: Path, output: Path) -> tuple[list[Block], Run | None]:
    """A sweep's tables, as its results.md has them, and its best run (chosen on validation where it can be)."""
    results = [read_run(folder / row["run"]) for row in load_results(folder)]
    groups = group_runs(results)
    blocks = [Heading(f"Sweep: {folder.name}", 2), Text(f"`{folder}`: {len(results)} runs, {len(groups)} settings."),
              *result_blocks(results, 3)]
    if (folder / "results.png").is_file():
        blocks.append(Image(Path(shutil.copy(folder / "results.png", output / f"sweep-{folder.name}.png")),
                            f"Test accuracy of each run (sweep {folder.name})"))
    best_group = choose_best(groups)[0]
    if best_group is None:
        return blocks, None
    best, why = choose_best(best_group.runs)
    return [*blocks, Text(f"Its run shown below: {best.name} ({why.partition(', ')[2]}).")], best


def against_the_original(runs: list[Run]) -> list[Block]:
    rows = []
    for run in runs:
        if data_class(run) in ORIGINAL:
            name, correct, total, how = ORIGINAL[data_class(run)]
            rows.append([name, accuracy_text(correct, total), how, test_cells(run)[0] or NOT_RECORDED, run.name])
    return [Heading("Beside the original report", 2),
            Text("The report cnnclf grew from gave one test accuracy per dataset; its 95% intervals here are exact "
                 "(Clopper-Pearson) on its test split's size."),
            Table(["data", "the report", "its setup", "this report", "run"], rows)]


def report(inputs: list[str], output: Path, original: bool = False) -> tuple[Path, Path]:
    output.mkdir(parents=True, exist_ok=True)
    names, runs, sweeps = [], [], []
    for given in inputs:
        path = resolve(given)
        if (path / "results.csv").is_file():
            blocks, best = sweep_blocks(path, output)
            names.append(path.name)
            sweeps += blocks
            runs += [best] if best else []
            continue
        run = read_run(path)
        if not run.config:
            raise ConfigError(f"{path}: not a run folder, a checkpoint inside one, a sweep folder or a config with a "
                              "finished run (a run folder holds the config.yaml that 'cnnclf fit' saves)")
        names.append(run.name)
        runs.append(run)
    title = "cnnclf report: " + ", ".join(names)
    top = (against_the_original(runs) if original else []) + sweeps + (comparison(runs) if len(runs) > 1 else [])
    body = []
    for number, run in enumerate(runs, start=1):
        body += [Heading(f"Run {number}: {run.name}", 2), Text(f"`{run.folder}`")]
        body += run_sections(run, output / (f"{number}-" + re.sub(r"[^\w.-]+", "-", run.name)))
    contents = [block.text for block in top + body if isinstance(block, Heading) and block.level == 2]
    blocks = [Heading(title, 1), Text(" · ".join(f"[{text}](#{anchor(text)})" for text in contents)), *top, *body]
    paths = output / "report.md", output / "report.html"
    paths[0].write_text(markdown(blocks, output))
    paths[1].write_text(html_page(blocks, title))
    return paths


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="cnnclf report", description=__doc__)
    parser.add_argument("inputs", nargs="+", metavar="RUN|SWEEP|CKPT|CONFIG", help="a run folder, a checkpoint in "
                        "one, a sweep folder, or a config (its newest finished run under runs/)")
    parser.add_argument("--output", type=Path, default=Path("report"),
                        help="folder for report.md, report.html and figures (default: report)")
    parser.add_argument("--original", action="store_true",
                        help="set each MNIST, ORL and CIFAR result beside the original report's "
                        "(88.63%%, 90.0%%, 69.87%%)")
    parser.add_argument("--dry-run", action="store_true", help="print the run or sweep each input stands for; write "
                        "nothing (fails if one has none)")
    options = parser.parse_args(args)
    with one_line_errors("cnnclf"):
        if options.dry_run:
            return print("\n".join(f"{given}: {resolve(given)}" for given in options.inputs))
        markdown_path, page = report(options.inputs, options.output, options.original)
    print(f"Wrote {markdown_path} and {page}")
