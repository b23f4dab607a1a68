"""``cnnclf report``: every section, figure and number of a tiny run's and a tiny sweep's report is there and is
the run's own (its summary.json, metrics.csv, config.yaml, checkpoint and data file)."""

import base64
import csv
import hashlib
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import beta

from cnnclf.cli import cli_main
from cnnclf.stats import accuracy_text

SECTIONS = ["Dataset", "Model", "Setup", "Training", "Evaluation", "Provenance"]


def report(inputs: list, output: Path, *options: str) -> tuple[str, str]:
    cli_main(["report", *map(str, inputs), "--output", str(output), *options])
    return (output / "report.md").read_text(), (output / "report.html").read_text()


def tables(markdown: str) -> list[list[list[str]]]:
    """Every Markdown table: its rows of cells, header first, the --- line left out."""
    found, current = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("| "):
            cells = [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            if set(cells) != {"---"}:
                current.append(cells)
        elif current:
            found, current = [*found, current], []
    return found


def table_after(markdown: str, header: list[str]) -> list[list[str]]:
    return next(table[1:] for table in tables(markdown) if table[0] == header)


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.headings, self.images, self.tag = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tag = tag
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        if self.tag in ("h1", "h2", "h3"):
            self.headings.append(data)
        self.tag = None


def check_figures(markdown: str, page: str, folder: Path) -> list[Path]:
    """Every figure the Markdown links is a PNG beside it, and the HTML embeds the same bytes in the same order."""
    linked = [folder / link for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)]
    parsed = Page()
    parsed.feed(page)
    assert [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in parsed.images] == [
        path.read_bytes() for path in linked]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in linked)
    assert parsed.headings == re.findall(r"^#+ (.+)$", markdown, flags=re.M)
    return linked


def percent_interval(low: float, high: float) -> str:
    return f"95% CI {100 * low:.2f}-{100 * high:.2f}%"


def check_run(markdown: str, run: Path, label: str) -> None:
    """The sections of one run, in the report's order, with the run's own numbers."""
    markdown = re.search(rf"^## Run \d+: {re.escape(label)}\n(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S)[1]
    headings = re.findall(r"^### (\w+): (.+)$", markdown, flags=re.M)
    assert [name for name, of in headings if of == label] == SECTIONS
    summary = json.loads((run / "test" / "summary.json").read_text())
    low, high = summary["accuracy_ci95"]
    assert (f"Test accuracy: {summary['accuracy']:.2%} ({summary['correct']}/{summary['images']}; "
            f"{percent_interval(low, high)})") in markdown
    f1_low, f1_high = summary["macro_f1_ci95"]
    assert f"Macro F1: {summary['macro_f1']:.4f} (95% CI {f1_low:.4f}-{f1_high:.4f}" in markdown
    assert f"Never predicted: {', '.join(summary['never_predicted']) or 'none'}." in markdown
    per_class = table_after(markdown, ["class", "precision", "recall", "F1", "support"])
    names = summary["class_names"]
    assert [row[0] for row in per_class] == [*names, "macro avg", "weighted avg"]
    for row in per_class:
        scores = summary["per_class"][row[0]]
        assert [float(cell) for cell in row[1:]] == pytest.approx(
            [scores["precision"], scores["recall"], scores["f1-score"], scores["support"]], abs=5e-5)
    counts = table_after(markdown, ["true \\ predicted", *names])
    assert [[int(cell) for cell in row[1:]] for row in counts] == summary["confusion_matrix"]
    pairs = table_after(markdown, ["true", "predicted", "images"]) if summary["most_confused"] else []
    assert pairs == [[p["true"], p["predicted"], str(p["count"])] for p in summary["most_confused"]]
    losses = table_after(markdown, ["true", "predicted", "confidence", "loss"])
    assert [(row[0], row[1], float(row[3])) for row in losses] == [
        (item["true"], item["predicted"], pytest.approx(item["loss"], abs=5e-5)) for item in summary["top_losses"]]

    # Training: each epoch's figures as metrics.csv holds them, and the fit time of fit_time.json
    fit = json.loads((run / "fit_time.json").read_text())
    assert f"Fit time: {fit['fit_seconds']:.1f} s for {fit['epochs']} epochs ({fit['steps']} steps)" in markdown
    with (run / "metrics.csv").open() as stream:
        logged = [row for row in csv.DictReader(stream) if row["name"] in ("val/acc", "train/epoch_loss")]
    epochs = table_after(markdown, next(table[0] for table in tables(markdown) if table[0][0] == "epoch"))
    header = next(table[0] for table in tables(markdown) if table[0][0] == "epoch")
    assert len(epochs) == fit["epochs"]
    for row in logged:
        cell = epochs[int(row["epoch"])][header.index(row["name"])]
        assert float(cell) == pytest.approx(float(row["value"]), rel=5e-4)

    # Setup: as config.yaml says
    config = yaml.safe_load((run / "config.yaml").read_text())
    setup = dict(table_after(markdown, ["config key", "value"]))
    assert setup["`model.lr`"] == json.dumps(config["model"]["init_args"]["lr"])
    assert setup["`model.optimizer`"] == config["model"]["init_args"]["optimizer"]
    assert setup["`data.batch_size`"] == str(config["data"]["init_args"]["batch_size"])
    assert setup["`trainer.max_epochs`"] == str(config["trainer"]["max_epochs"])
    assert setup["`seed_everything`"] == str(config["seed_everything"])

    # Model: the checkpoint's parameters, counted here from its tensors
    state = torch.load(run / "checkpoints" / Path(summary["checkpoint"]).name, weights_only=True)["state_dict"]
    total = sum(tensor.numel() for key, tensor in state.items() if key.startswith("net.") and "running_" not in key
                and "num_batches" not in key)
    totals = table_after(markdown, ["total parameters", "trainable", "non-trainable", "mult-adds (M)",
                                    "parameters size (MB)"])
    assert totals[0][0] == f"{total:,}"
    layers = table_after(markdown, ["layer", "type", "input shape", "output shape", "parameters", "mult-adds"])
    assert layers[0][0] == "net" and layers[0][3] == f"[1, {len(names)}]"


@pytest.fixture(scope="module")
def mnist_run(tiny_data, tmp_path_factory) -> Path:
    """One epoch of mnist_fixed on the tiny MNIST pickle: a run with a data file to hash."""
    folder = tmp_path_factory.mktemp("mnist")
    cli_main(["fit", "--config", "mnist_fixed", "--data.path", str(tiny_data["mnist"]), "--trainer.max_epochs", "2",
              "--trainer.enable_progress_bar", "false", "--model_summary.max_depth", "0",
              "--trainer.logger.init_args.save_dir", str(folder)])
    return folder / "mnist-fixed" / "version_0"


def test_a_runs_report_holds_every_section_figure_and_number_of_its_files(mnist_run, tiny_data, tmp_path):
    markdown, page = report([mnist_run], tmp_path / "out", "--original")
    check_run(markdown, mnist_run, "mnist-fixed/version_0")
    figures = check_figures(markdown, page, tmp_path / "out")
    assert [path.name for path in figures] == ["samples.png", "curves.png", "confusion_matrix.png",
                                               "confusion_matrix_normalized.png", "top_losses.png"]
    for name in ("confusion_matrix.png", "top_losses.png"):
        assert (tmp_path / "out" / "1-mnist-fixed-version_0" / name).read_bytes() == (
            mnist_run / "test" / name).read_bytes()
    digest = hashlib.sha256(tiny_data["mnist"].read_bytes()).hexdigest()
    assert f"Source: `{tiny_data['mnist'].resolve()}`; SHA-256 `{digest}`." in markdown
    validation = round(0.1 * 200)
    assert table_after(markdown, ["split", "images"]) == [["train", str(200 - validation)],
                                                          ["validation", str(validation)], ["test", "50"]]
    # The pickle cycles through the ten labels; the validation split keeps each class's share
    assert "Every class has 18 train, 2 validation, 5 test images. Classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9." in markdown
    assert "images of 1×28×28" in markdown
    # Beside the original report: its 8863 of 10,000 with the exact interval, worked out here from the beta quantiles
    original = table_after(markdown, ["data", "the report", "its setup", "this report", "run"])
    low, high = beta.ppf(0.025, 8863, 10000 - 8863 + 1), beta.ppf(0.975, 8863 + 1, 10000 - 8863)
    assert original[0][:2] == ["MNIST", f"88.63% (8863/10000; {percent_interval(low, high)})"]
    assert re.search(r"\| cnnclf \| \d", markdown) and "| GPU |" in markdown and "| written | 20" in markdown


def test_a_sweep_run_a_checkpoint_and_a_config_name_report_as_runs(digits_sweep, tmp_path, monkeypatch):
    adam, sgd = digits_sweep / "optimizer=adam", digits_sweep / "optimizer=sgd"
    markdown, page = report([adam, sgd / "checkpoints" / "best.ckpt"], tmp_path / "two")
    for run in (adam, sgd):
        check_run(markdown, run, run.name)
    assert "Source: `sklearn.datasets.load_digits`; SHA-256 `none: the data is built in (no file)`." in markdown
    check_figures(markdown, page, tmp_path / "two")
    # Several runs: one row each, and the paired test on the images they share, counted here from per_image.csv
    rows = table_after(markdown, ["run", "data", "test accuracy", "macro F1", "epochs", "fit s"])
    assert [row[0] for row in rows] == [adam.name, sgd.name]
    right = [np.loadtxt(run / "test" / "per_image.csv", delimiter=",", skiprows=1, dtype=str) for run in (adam, sgd)]
    right = [rows[:, 2] == rows[:, 3] for rows in right]  # index, source, true, predicted, ...
    paired = table_after(markdown, ["A", "B", "only A right", "only B right", "p", "reading"])
    assert paired[0][2:4] == [str(int((right[0] & ~right[1]).sum())), str(int((right[1] & ~right[0]).sum()))]
    # A config's name stands for its newest finished run
    shutil.copytree(adam, tmp_path / "runs" / "digits" / "version_3")
    monkeypatch.chdir(tmp_path)
    markdown, _ = report(["digits"], tmp_path / "one")
    check_run(markdown, tmp_path / "runs" / "digits" / "version_3", "optimizer=adam")


def test_what_a_run_did_not_record_shows_as_not_recorded(digits_sweep, tmp_path):
    run = shutil.copytree(digits_sweep / "optimizer=adam", tmp_path / "old")
    (run / "metrics.csv").unlink()
    shutil.rmtree(run / "test")
    markdown, page = report([run], tmp_path / "out")
    assert f"Curves: not recorded (no `metrics.csv` in {run})" in markdown
    assert "not recorded: no `test/summary.json`" in markdown
    assert [path.name for path in check_figures(markdown, page, tmp_path / "out")] == ["samples.png"]


def test_an_input_that_is_no_run_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match=f"cnnclf: error: {tmp_path}: not a run folder"):
        report([tmp_path], tmp_path / "out")
    with pytest.raises(SystemExit, match="nosuch: no such run folder, checkpoint, sweep folder or config"):
        report(["nosuch"], tmp_path / "out")


def test_a_sweeps_report_aggregates_its_runs_and_reports_the_best_chosen_on_validation(digits_sweep, tmp_path):
    from cnnclf.explore import read_run

    markdown, page = report([digits_sweep], tmp_path / "out")
    results = {name: read_run(digits_sweep / name) for name in ("optimizer=adam", "optimizer=sgd")}
    runs = table_after(markdown, ["run", "model.optimizer", "val accuracy", "test accuracy", "macro F1", "epochs",
                                  "fit s", "checkpoint"])
    assert [row[:4] for row in runs] == [
        [name, name.split("=")[1], f"{result.val_accuracy:.2%}",
         accuracy_text(result.summary["correct"], result.summary["images"])] for name, result in results.items()]
    # The sweep's own results.md has the same tables
    assert all(table in tables(markdown) for table in tables((digits_sweep / "results.md").read_text()))
    effects = table_after(markdown, ["option", "value", "runs", "test accuracy"])
    assert effects == [["model.optimizer", name.split("=")[1], "1", f"{result.test_accuracy:.2%}"]
                       for name, result in results.items()]
    best = max(results, key=lambda name: results[name].val_accuracy)
    assert f"Best: model.optimizer={best.split('=')[1]}, chosen on validation accuracy" in markdown
    check_run(markdown, digits_sweep / best, best)
    assert "sweep-out.png" in [path.name for path in check_figures(markdown, page, tmp_path / "out")]
