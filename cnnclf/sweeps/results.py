"""A sweep's results table: one row per run, as CSV, Markdown and a bar chart of test accuracy.

Every figure is read back from what the run itself wrote (``test/summary.json``,
``fit_time.json``) and from the sweep's record of it (``sweep_run.json``), so the table can be
rebuilt at any time without training.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from cnnclf.csv_cells import safe_cell
from cnnclf.errors import ConfigError
from cnnclf.sweeps.spec import cli_value

RUN_RECORD = "sweep_run.json"
COLUMNS = ["status", "test_accuracy", "test_macro_f1", "epochs", "fit_seconds", "wall_seconds", "checkpoint",
           "error"]


@dataclass(frozen=True)
class RunResult:
    name: str
    overrides: dict[str, object]
    status: str  # "ok" or "failed"
    test_accuracy: float | None
    test_macro_f1: float | None
    epochs: int | None
    fit_seconds: float | None
    wall_seconds: float | None
    checkpoint: str
    error: str

    def row(self) -> dict[str, object]:
        return {"run": self.name, **{key: cli_value(value) for key, value in self.overrides.items()},
                **{column: "" if getattr(self, column) is None else getattr(self, column) for column in COLUMNS}}


def read_run(run_dir: Path) -> RunResult:
    """The result of a finished run from the files in its directory."""
    record = json.loads((run_dir / RUN_RECORD).read_text())
    report = _json_or_empty(run_dir / "test" / "summary.json")
    fit = _json_or_empty(run_dir / "fit_time.json")
    checkpoints = [run_dir / "checkpoints" / name for name in ("best.ckpt", "last.ckpt")]
    return RunResult(
        name=record["name"],
        overrides=record["overrides"],
        status=record["status"],
        test_accuracy=report.get("accuracy"),
        test_macro_f1=report.get("per_class", {}).get("macro avg", {}).get("f1-score"),
        epochs=fit.get("epochs"),
        fit_seconds=fit.get("fit_seconds"),
        wall_seconds=record.get("wall_seconds"),
        # Absolute, so the table's paths open from a notebook or any other working directory.
        checkpoint=str(next((path.resolve() for path in checkpoints if path.is_file()), "")),
        error=record.get("error", ""),
    )


def write_tables(results: list[RunResult], folder: Path, title: str) -> list[Path]:
    """``results.csv``, ``results.md`` and ``results.png`` in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [result.row() for result in results]
    header = list(dict.fromkeys(key for row in rows for key in row))
    csv_path, markdown_path, chart_path = (folder / f"results.{ext}" for ext in ("csv", "md", "png"))
    with csv_path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=header)
        writer.writeheader()
        writer.writerows({key: safe_cell(value) for key, value in row.items()} for row in rows)
    markdown_path.write_text(markdown_table(results, title))
    accuracy_chart(results, title).savefig(chart_path, dpi=120)
    return [csv_path, markdown_path, chart_path]


def markdown_table(results: list[RunResult], title: str) -> str:
    keys = list(dict.fromkeys(key for result in results for key in result.overrides))
    header = ["run", *keys, "test accuracy", "macro F1", "epochs", "fit s", "wall s", "checkpoint"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for result in results:
        if result.status == "ok":
            figures = [_percent(result.test_accuracy), _number(result.test_macro_f1, "{:.4f}"),
                       _number(result.epochs, "{}"), _number(result.fit_seconds, "{:.1f}"),
                       _number(result.wall_seconds, "{:.1f}"), f"`{result.checkpoint}`"]
        else:
            figures = [f"failed: {result.error}", "", "", "", _number(result.wall_seconds, "{:.1f}"), ""]
        values = [cli_value(result.overrides[key]) if key in result.overrides else "" for key in keys]
        lines.append("| " + " | ".join([result.name, *values, *figures]) + " |")
    return "\n".join(lines) + "\n"


def accuracy_chart(results: list[RunResult], title: str) -> Figure:
    """Horizontal bars of test accuracy, one per run in sweep order; failed runs show as empty rows."""
    names = [result.name for result in results]
    accuracies = [100 * (result.test_accuracy or 0.0) for result in results]
    figure = Figure(figsize=(8, 1.2 + 0.4 * len(results)), layout="constrained")
    axes = figure.add_subplot()
    bars = axes.barh(range(len(results)), accuracies, color="tab:blue")
    axes.bar_label(bars, labels=[_percent(result.test_accuracy) if result.status == "ok" else "failed"
                                 for result in results], padding=3, fontsize=8)
    axes.set_yticks(range(len(results)), names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 112)
    axes.set_xlabel("test accuracy (%)")
    axes.set_title(title)
    return figure


def load_results(folder: str | Path) -> list[dict[str, str]]:
    """The rows of a sweep's ``results.csv`` (for notebooks)."""
    path = Path(folder) / "results.csv"
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; run the sweep first (`make sweep`), or give the folder it wrote")
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def _json_or_empty(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def _number(value: object, form: str) -> str:
    return "" if value is None else form.format(value)
