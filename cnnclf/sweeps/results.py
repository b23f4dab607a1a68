"""A sweep's results: one row per run, the runs that repeat one setting (seeds, folds) aggregated into
n, mean, std, min and max, and the best chosen on validation; as CSV, Markdown and a chart.

Every figure is read back from what the run itself wrote (``test/summary.json``, ``metrics.csv``,
``fit_time.json``) and from the sweep's record of it (``sweep_run.json``), so the tables can be
rebuilt at any time without training.
"""

import csv
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from cnnclf.curves import read_curve
from cnnclf.errors import ConfigError
from cnnclf.stats import spread
from cnnclf.sweeps.spec import REPEATS, cli_value

RUN_RECORD = "sweep_run.json"
COLUMNS = ["status", "val_accuracy", "test_accuracy", "test_accuracy_low", "test_accuracy_high", "test_macro_f1",
           "epochs", "fit_seconds", "wall_seconds", "checkpoint", "error"]
FIGURES = ["val_accuracy", "test_accuracy", "test_macro_f1", "fit_seconds"]  # aggregated over repeats
FORMS = ["{:.2f}%", "{:.2f}%", "{:.4f}", "{:.1f}"]


@dataclass(frozen=True)
class RunResult:
    name: str
    overrides: dict[str, object]
    status: str  # "ok" or "failed"
    val_accuracy: float | None  # the best epoch's: the tested checkpoint is the best by val/acc
    test_accuracy: float | None
    test_accuracy_low: float | None  # its exact 95% interval
    test_accuracy_high: float | None
    test_macro_f1: float | None
    epochs: int | None
    fit_seconds: float | None
    wall_seconds: float | None
    checkpoint: str
    error: str

    def row(self) -> dict[str, object]:
        return {"run": self.name, **{key: cli_value(value) for key, value in self.overrides.items()},
                **{column: "" if getattr(self, column) is None else getattr(self, column) for column in COLUMNS}}


@dataclass(frozen=True)
class Group:
    """The finished runs of one setting, which differ only by seed or fold."""

    name: str
    setting: dict[str, object]
    runs: list[RunResult]

    def figures(self) -> dict[str, dict[str, float] | None]:
        """n, mean, std, min, max of each figure over the runs; ``None`` where a run lacks it."""
        values = {figure: [getattr(run, figure) for run in self.runs] for figure in FIGURES}
        return {figure: None if None in found else spread(found) for figure, found in values.items()}

    def row(self) -> dict[str, object]:
        statistics = {f"{figure}_{name}": value for figure, figures in self.figures().items()
                      for name, value in (figures or {}).items() if name != "n"}
        return {"setting": self.name, **{key: cli_value(value) for key, value in self.setting.items()},
                "n": len(self.runs), **statistics}

    @property
    def val_accuracy(self) -> float | None:
        return (self.figures()["val_accuracy"] or {}).get("mean")

    @property
    def test_accuracy(self) -> float:
        return self.figures()["test_accuracy"]["mean"]


def read_run(run_dir: Path) -> RunResult:
    """The result of a finished run from the files in its directory."""
    record = json.loads((run_dir / RUN_RECORD).read_text())
    report = _json_or_empty(run_dir / "test" / "summary.json")
    fit = _json_or_empty(run_dir / "fit_time.json")
    checkpoints = [run_dir / "checkpoints" / name for name in ("best.ckpt", "last.ckpt")]
    validation = read_curve(run_dir, "val/acc")[1]
    low, high = report.get("accuracy_ci95") or (None, None)
    return RunResult(
        name=record["name"],
        overrides=record["overrides"],
        status=record["status"],
        val_accuracy=max(validation) if validation else None,
        test_accuracy=report.get("accuracy"),
        test_accuracy_low=low,
        test_accuracy_high=high,
        test_macro_f1=report.get("macro_f1", report.get("per_class", {}).get("macro avg", {}).get("f1-score")),
        epochs=fit.get("epochs"),
        fit_seconds=fit.get("fit_seconds"),
        wall_seconds=record.get("wall_seconds"),
        # Absolute, so the table's paths open from a notebook or any other working directory.
        checkpoint=str(next((path.resolve() for path in checkpoints if path.is_file()), "")),
        error=record.get("error", ""),
    )


def group_runs(results: list[RunResult]) -> list[Group]:
    """The finished runs grouped by their overrides other than the seed and the fold, in sweep order."""
    groups: dict[str, Group] = {}
    for result in results:
        if result.status != "ok" or result.test_accuracy is None:
            continue
        setting = {key: value for key, value in result.overrides.items() if key not in REPEATS}
        name = ",".join(f"{key}={cli_value(value)}" for key, value in setting.items()) or "base"
        groups.setdefault(name, Group(name, setting, [])).runs.append(result)
    return list(groups.values())


def choose_best(candidates: list) -> tuple[object | None, str]:
    """The best run or group by validation accuracy when every one has it, else by test accuracy; and a
    sentence saying which split chose it."""
    candidates = [candidate for candidate in candidates if candidate.test_accuracy is not None]
    if not candidates:
        return None, "no run finished"
    if all(candidate.val_accuracy is not None for candidate in candidates):
        best = max(candidates, key=lambda candidate: candidate.val_accuracy)
        return best, (f"best: {best.name}, chosen on validation accuracy ({best.val_accuracy:.2%}); its test accuracy "
                      f"{best.test_accuracy:.2%} played no part in the choice")
    best = max(candidates, key=lambda candidate: candidate.test_accuracy)
    return best, (f"best: {best.name}, chosen on the test split (the runs have no validation split), so its test "
                  f"accuracy {best.test_accuracy:.2%} is an optimistic estimate")


def write_tables(results: list[RunResult], folder: Path, title: str) -> list[Path]:
    """``results.csv`` (one row per run), ``groups.csv`` (one per setting), ``results.md`` and ``results.png``
    in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    groups = group_runs(results)
    paths = [folder / name for name in ("results.csv", "groups.csv", "results.md", "results.png")]
    _write_csv(paths[0], [result.row() for result in results])
    _write_csv(paths[1], [group.row() for group in groups])
    paths[2].write_text(markdown_table(results, title))
    accuracy_chart(results, title).savefig(paths[3], dpi=120)
    return paths


def markdown_table(results: list[RunResult], title: str) -> str:
    keys = list(dict.fromkeys(key for result in results for key in result.overrides))
    header = ["run", *keys, "val accuracy", "test accuracy (95% CI)", "macro F1", "epochs", "fit s", "wall s",
              "checkpoint"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for result in results:
        if result.status == "ok":
            interval = ("" if result.test_accuracy_low is None else
                        f" ({100 * result.test_accuracy_low:.2f}-{100 * result.test_accuracy_high:.2f}%)")
            figures = [_percent(result.val_accuracy), _percent(result.test_accuracy) + interval,
                       _number(result.test_macro_f1, "{:.4f}"), _number(result.epochs, "{}"),
                       _number(result.fit_seconds, "{:.1f}"), _number(result.wall_seconds, "{:.1f}"),
                       f"`{result.checkpoint}`"]
        else:
            figures = [f"failed: {result.error}", "", "", "", "", _number(result.wall_seconds, "{:.1f}"), ""]
        values = [cli_value(result.overrides[key]) if key in result.overrides else "" for key in keys]
        lines.append("| " + " | ".join([result.name, *values, *figures]) + " |")
    groups = group_runs(results)
    if any(len(group.runs) > 1 for group in groups):
        lines += ["", "## Over seeds and folds (mean ± std, min-max)", "",
                  "| setting | n | val accuracy | test accuracy | macro F1 | fit s |", "|" + " --- |" * 6]
        for group in groups:
            figures = group.figures()
            lines.append(f"| {group.name} | {len(group.runs)} | " + " | ".join(
                _spread(figures[figure], form) for figure, form in zip(FIGURES, FORMS, strict=True)) + " |")
    best, why = choose_best(groups if any(len(group.runs) > 1 for group in groups) else
                            [result for result in results if result.status == "ok"])
    return "\n".join([*lines, "", why[0].upper() + why[1:] + "."]) + "\n"


def accuracy_chart(results: list[RunResult], title: str) -> Figure:
    """Horizontal bars of mean test accuracy per setting with the std over its seeds and folds as error bars
    and each run as a dot; the best setting (chosen as ``choose_best`` says) in orange."""
    groups = group_runs(results)
    best, why = choose_best(groups)
    figure = Figure(figsize=(8, 1.6 + 0.4 * max(len(groups), 1)), layout="constrained")
    axes = figure.add_subplot()
    means = [100 * group.test_accuracy for group in groups]
    errors = [100 * group.figures()["test_accuracy"]["std"] for group in groups]
    bars = axes.barh(range(len(groups)), means, xerr=errors, capsize=3,
                     color=["tab:orange" if group is best else "tab:blue" for group in groups])
    for row, group in enumerate(groups):
        axes.plot([100 * run.test_accuracy for run in group.runs], [row] * len(group.runs), "k.", markersize=4)
    axes.bar_label(bars, labels=[f"{mean:.2f}%" + (f" ± {error:.2f} (n={len(group.runs)})" if len(group.runs) > 1
                                                    else "") for mean, error, group in zip(means, errors, groups,
                                                                                           strict=True)],
                   padding=8, fontsize=8)
    axes.set_yticks(range(len(groups)), [group.name for group in groups], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 118)
    failed = sum(result.status != "ok" for result in results)
    axes.set_xlabel("test accuracy (%): mean ± std over seeds and folds, dots: runs"
                    + (f"; {failed} failed run(s) not shown" if failed else ""))
    axes.set_title(f"{title}\n{textwrap.fill(why, 100)} (orange)", fontsize=9)
    return figure


def load_results(folder: str | Path) -> list[dict[str, str]]:
    """The rows of a sweep's ``results.csv`` (for notebooks)."""
    path = Path(folder) / "results.csv"
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; run the sweep first (`make sweep`), or give the folder it wrote")
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)


def _json_or_empty(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _spread(figures: dict[str, float] | None, form: str) -> str:
    if figures is None:
        return ""
    scale, form = (100, form[:-1]) if form.endswith("%") else (1, form)
    mean, std, low, high = (form.format(scale * figures[key]) for key in ("mean", "std", "min", "max"))
    return f"{mean} ± {std} ({low}-{high})" + ("%" if scale == 100 else "")


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def _number(value: object, form: str) -> str:
    return "" if value is None else form.format(value)
