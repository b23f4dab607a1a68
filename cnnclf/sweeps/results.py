"""A sweep's results, rebuilt from its run folders at any time: ``results.csv`` (a row per run), ``groups.csv`` (a
row per setting: the runs that differ only by seed or fold), ``results.md`` and ``results.png`` (docs/sweeps.md)."""

import csv
import textwrap
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from cnnclf.csv_cells import safe_cell
from cnnclf.document import Block, Heading, Table, Text, markdown
from cnnclf.errors import ConfigError
from cnnclf.explore import Run
from cnnclf.stats import accuracy_text, spread
from cnnclf.sweeps.spec import REPEATS, cli_value

COLUMNS = ["status", "val_accuracy", "test_accuracy", "test_accuracy_low", "test_accuracy_high", "test_macro_f1",
           "epochs", "fit_seconds", "wall_seconds", "checkpoint", "error"]
FIGURES = {"val_accuracy": "{:.2%}", "test_accuracy": "{:.2%}", "test_macro_f1": "{:.4f}", "fit_seconds": "{:.1f}"}


def run_row(run: Run) -> dict[str, object]:
    low, high = run.summary.get("accuracy_ci95") or (None, None)
    values = [run.status, run.val_accuracy, run.test_accuracy, low, high, run.test_macro_f1, run.epochs,
              run.fit_seconds, run.record.get("wall_seconds"), str(run.checkpoint or ""), run.record.get("error")]
    return {"run": run.name, **{key: cli_value(value) for key, value in run.overrides.items()},
            **{column: "" if value is None else value for column, value in zip(COLUMNS, values, strict=True)}}


@dataclass(frozen=True)
class Group:
    """The finished runs of one setting, which differ only by seed or fold."""

    name: str
    setting: dict[str, object]
    runs: list[Run]

    def figures(self) -> dict[str, dict[str, float] | None]:
        """n, mean, std, min, max of each figure over the runs; ``None`` where a run lacks it."""
        values = {figure: [getattr(run, figure) for run in self.runs] for figure in FIGURES}
        return {figure: None if None in found else spread(found) for figure, found in values.items()}

    def row(self) -> dict[str, object]:
        statistics = {f"{figure}_{name}": value for figure, figures in self.figures().items()
                      for name, value in (figures or {}).items() if name != "n"}
        return {"setting": self.name, **{key: cli_value(value) for key, value in self.setting.items()},
                "n": len(self.runs), **statistics}

    # what choose_best ranks, as it ranks runs
    val_accuracy = property(lambda self: (self.figures()["val_accuracy"] or {}).get("mean"))
    test_accuracy = property(lambda self: self.figures()["test_accuracy"]["mean"])


def group_runs(results: list[Run]) -> list[Group]:
    """The finished runs grouped by their overrides other than the seed and the fold, in sweep order."""
    groups: dict[str, Group] = {}
    for result in results:
        if result.status == "ok" and result.test_accuracy is not None:
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


def spread_text(figures: dict[str, float] | None, form: str) -> str:
    """``92.00 ± 2.00 (90.00-94.00)%`` over several values, ``92.00%`` for one; ``form`` formats one value."""
    if not figures:
        return ""
    if figures["n"] == 1:
        return form.format(figures["mean"])
    # a percent form: each number scaled by 100, one % at the end
    scale, form = (100, form.replace("%", "f")) if form.endswith("%}") else (1, form)
    mean, std, low, high = (form.format(scale * figures[key]) for key in ("mean", "std", "min", "max"))
    return f"{mean} ± {std} ({low}-{high})" + ("%" if scale == 100 else "")


def cell(value: object, form: str = "{}") -> str:
    return "" if value is None else form.format(value)


def test_cells(run: Run) -> list[str]:
    """Test accuracy (its count and exact interval), macro F1, epochs and fit seconds; "" for what the run lacks."""
    accuracy = accuracy_text(run.summary["correct"], run.summary["images"]) if run.summary else ""
    return [accuracy, cell(run.test_macro_f1, "{:.4f}"), cell(run.epochs), cell(run.fit_seconds, "{:.1f}")]


def result_blocks(results: list[Run], level: int) -> list[Block]:
    """Every run; each setting over its seeds and folds; each swept option's effect; the best setting."""
    keys = list(dict.fromkeys(key for result in results for key in result.overrides))
    rows = []
    for result in results:
        if result.status == "ok":
            figures = [cell(result.val_accuracy, "{:.2%}"), *test_cells(result), f"`{result.checkpoint}`"]
        else:
            figures = [f"failed: {result.record.get('error')}", "", "", "", "", ""]
        values = [cli_value(result.overrides[key]) if key in result.overrides else "" for key in keys]
        rows.append([result.name, *values, *figures])
    blocks = [Table(["run", *keys, "val accuracy", "test accuracy", "macro F1", "epochs", "fit s", "checkpoint"], rows)]
    groups = group_runs(results)
    if any(len(group.runs) > 1 for group in groups):
        rows = [[group.name, str(len(group.runs)),
                 *(spread_text(group.figures()[figure], form) for figure, form in FIGURES.items())] for group in groups]
        blocks += [Heading("Over seeds and folds (mean ± std, min-max)", level),
                   Table(["setting", "n", "val accuracy", "test accuracy", "macro F1", "fit s"], rows)]
    finished = [run for group in groups for run in group.runs]
    effects = []
    for key in (key for key in keys if key not in REPEATS):
        found: dict[str, list[float]] = {}  # by the value as the table shows it: a list value is no dict key
        for run in finished:
            found.setdefault(cli_value(run.overrides.get(key)), []).append(run.test_accuracy)
        effects += [[key, value, str(len(runs)), spread_text(spread(runs), "{:.2%}")] for value, runs in found.items()]
    if effects:
        blocks += [Heading("Effect of each swept option", level),
                   Text("The test accuracy of the finished runs with each value, over the other options:"),
                   Table(["option", "value", "runs", "test accuracy"], effects)]
    why = choose_best(groups)[1]
    return [*blocks, Text(why[0].upper() + why[1:] + ".")]


def write_tables(results: list[Run], folder: Path, title: str) -> list[Path]:
    """``results.csv``, ``groups.csv``, ``results.md`` and ``results.png`` in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in ("results.csv", "groups.csv", "results.md", "results.png")]
    _write_csv(paths[0], [run_row(result) for result in results])
    _write_csv(paths[1], [group.row() for group in group_runs(results)])
    paths[2].write_text(markdown([Heading(title, 1), *result_blocks(results, 2)], folder))
    accuracy_chart(results, title).savefig(paths[3], dpi=120)
    return paths


def accuracy_chart(results: list[Run], title: str) -> Figure:
    """Mean test accuracy per setting, the std over its seeds and folds as error bars, each run a dot; the best
    setting (as ``choose_best`` chooses it) in orange."""
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
    labels = [f"{mean:.2f}%" + (f" ± {error:.2f} (n={len(group.runs)})" if len(group.runs) > 1 else "")
              for mean, error, group in zip(means, errors, groups, strict=True)]
    axes.bar_label(bars, labels=labels, padding=8, fontsize=8)
    axes.set_yticks(range(len(groups)), [group.name for group in groups], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 118)
    failed = sum(result.status != "ok" for result in results)
    axes.set_xlabel("test accuracy (%): mean ± std over seeds and folds, dots: runs"
                    + (f"; {failed} failed run(s) not shown" if failed else ""))
    axes.set_title(f"{title}\n{textwrap.fill(why, 100)} (orange)", fontsize=9)
    return figure


def load_results(folder: str | Path) -> list[dict[str, str]]:
    path = Path(folder) / "results.csv"
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; run the sweep first (`make sweep`), or give the folder it wrote")
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows({key: safe_cell(value) for key, value in row.items()} for row in rows)
