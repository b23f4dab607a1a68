"""One run's part of a report, in the order of the report cnnclf grew from: dataset, model, setup, training,
evaluation, provenance. Each part reads only the run's files; what a run did not record shows as such."""

import hashlib
import importlib.metadata
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from cnnclf.callbacks import NetworkSummary
from cnnclf.curves import read_curve
from cnnclf.document import Block, Heading, Image, Table, Text
from cnnclf.errors import CheckpointError, CnnclfError
from cnnclf.explore import Run, load_datamodule, load_model
from cnnclf.report.figures import STYLES, curves, sample_grid
from cnnclf.stats import accuracy_text
from cnnclf.sweeps.spec import cli_value

NOT_RECORDED = "not recorded"
TEST_FIGURES = {"confusion_matrix.png": "Confusion matrix, counts",
                "confusion_matrix_normalized.png": "Confusion matrix, normalized by true class",
                "top_losses.png": "The highest-loss test images: true -> predicted (confidence)"}


def run_sections(run: Run, folder: Path) -> list[Block]:
    """The blocks of ``run``; its figures go into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    blocks = []
    for title, build in (("Dataset", dataset), ("Model", model), ("Setup", setup), ("Training", training),
                         ("Evaluation", evaluation), ("Provenance", provenance)):
        blocks.append(Heading(f"{title}: {run.name}", 3))
        try:
            blocks += build(run, folder)
        except Exception as error:  # one part of the run unreadable: the rest of the report still helps
            why = str(error) if isinstance(error, (CnnclfError, OSError)) else f"{type(error).__name__}: {error}"
            blocks.append(Text(f"{NOT_RECORDED}: {why}"))
    return blocks


def dataset(run: Run, folder: Path) -> list[Block]:
    if run.checkpoint is None:
        raise CheckpointError(f"{run.folder}: no checkpoint, so its data module cannot be rebuilt")
    module = load_datamodule(run.checkpoint)  # the run's data as its config reads it: split seed, resize, channels
    path, names = Path(module.path), module.class_names
    if path.is_file():
        with path.open("rb") as stream:
            source = f"Source: `{path.resolve()}`; SHA-256 `{hashlib.file_digest(stream, 'sha256').hexdigest()}`."
    elif path.is_dir():
        source = f"Source: `{path.resolve()}`, a folder of image files (no one file to hash)."
    else:
        source = f"Source: `{module.path}`; SHA-256 `none: the data is built in (no file)`."
    splits = {"train": module.data.train, "validation": module.data.val, "test": module.data.test}
    counts = {split: targets.bincount(minlength=len(names)).tolist() for split, (_, targets) in splits.items()}
    shape = "×".join(map(str, splits["train"][0].shape[1:]))
    blocks = [Text(source),
              Text(f"{len(names)} classes; images of {shape} (channels×height×width, as the model takes them)."),
              Table(["split", "images"], [[split, f"{len(targets):,}"] for split, (_, targets) in splits.items()])]
    if all(len(set(found)) == 1 for found in counts.values()):  # ORL's 40 people: one line, not 40 equal rows
        blocks.append(Text("Every class has " + ", ".join(f"{found[0]} {split}" for split, found in counts.items())
                           + f" images. Classes: {', '.join(names)}."))
    else:
        blocks.append(Table(["class", *splits], [[name, *(str(counts[split][index]) for split in splits)]
                                                 for index, name in enumerate(names)]))
    image = folder / "samples.png"
    sample_grid(*splits["train"], names, "training images").savefig(image, dpi=100)
    return [*blocks, Image(image, f"Training images of each class ({run.name})")]


def model(run: Run, folder: Path) -> list[Block]:
    summary = NetworkSummary(load_model(run.checkpoint), max_depth=3)
    mult_adds = [sum(counts.values()) // 2 for counts in summary.flop_counts.values()]
    rows = [[name, kind, _shape(inputs), _shape(outputs), f"{params:,}", f"{adds:,}"] for name, kind, inputs, outputs,
            params, adds in zip(summary.layer_names, summary.layer_types, summary.in_sizes, summary.out_sizes,
                                summary.param_nums, mult_adds, strict=True)]
    total, trainable = summary.total_parameters, summary.trainable_parameters
    return [Text(f"`{run.config['model']['class_path']}`, from `{run.checkpoint}`: Lightning's model summary on "
                 "one input image (mult-adds: half the FLOPs torch's FlopCounterMode counts)."),
            Table(["layer", "type", "input shape", "output shape", "parameters", "mult-adds"], rows),
            Table(["total parameters", "trainable", "non-trainable", "mult-adds (M)", "parameters size (MB)"],
                  [[f"{total:,}", f"{trainable:,}", f"{total - trainable:,}", f"{summary.total_flops / 2e6:.2f}",
                    f"{summary.model_size:.2f}"]])]


def _shape(size) -> str:
    return str(size) if isinstance(size, list) else "-"


def setup(run: Run, folder: Path) -> list[Block]:
    config, trainer = run.config, run.config.get("trainer") or {}
    rows = [("seed_everything", config.get("seed_everything"))]
    for section in ("model", "data"):
        rows.append((section, config[section]["class_path"]))
        rows += [(f"{section}.{key}", value) for key, value in (config[section].get("init_args") or {}).items()]
    rows += [("trainer.max_epochs", trainer.get("max_epochs")),
             ("trainer.max_steps", None if trainer.get("max_steps") == -1 else trainer.get("max_steps")),
             ("trainer.precision", trainer.get("precision") or "32-true (Lightning's default)"),
             ("trainer.callbacks", ", ".join(callback["class_path"] for callback in trainer.get("callbacks") or []))]
    return [Text(f"From `{run.folder / 'config.yaml'}`, the config the fit saved (a precision this machine lacks is "
                 "replaced there by the one it trained in):"),
            Table(["config key", "value"], [[f"`{key}`", cli_value(value)] for key, value in rows
                                            if value not in (None, "")])]


def training(run: Run, folder: Path) -> list[Block]:
    fit = run.fit
    if fit:
        resumed = f", resumed at epoch {fit['resumed_at_epoch']}" if fit.get("resumed_at_epoch") else ""
        timing = (f"Fit time: {fit['fit_seconds']:.1f} s for {fit['epochs']} epochs ({fit['steps']} steps){resumed}; "
                  "the training and validation loops, from `fit_time.json`.")
    else:
        timing = f"Fit time: {NOT_RECORDED} (no `fit_time.json`: the fit did not finish)."
    logged = {name: read_curve(run.folder, name) for name in STYLES}
    if not any(steps for steps, _ in logged.values()):
        return [Text(timing), Text(f"Curves: {NOT_RECORDED} (no `metrics.csv` in {run.folder})")]
    # Lightning logs an epoch's figures at its last step: epoch e (from 1) ends at step e * steps per epoch - 1.
    per_epoch = fit["steps"] / fit["epochs"] if fit.get("epochs") else None
    points = {name: ([(step + 1) / per_epoch if per_epoch else step for step in steps], values)
              for name, (steps, values) in logged.items()}
    image = folder / "curves.png"
    curves(points, "epochs trained" if per_epoch else "step", f"training curves ({run.name})").savefig(image, dpi=100)
    columns = [name for name in list(STYLES)[1:] if logged[name][0]]
    value = {name: dict(zip((round(x) for x in points[name][0]), points[name][1], strict=True)) for name in columns}
    epochs = sorted({epoch for name in columns for epoch in value[name]})
    shown = epochs if len(epochs) <= 20 else sorted({epochs[round(i * (len(epochs) - 1) / 19)] for i in range(20)})
    rows = [[str(epoch), *(f"{value[name][epoch]:.4g}" if epoch in value[name] else "" for name in columns)]
            for epoch in shown]
    every = "" if len(shown) == len(epochs) else f" ({len(shown)} of the {len(epochs)} epochs, evenly spaced)"
    return [Text(timing), Image(image, f"Loss, accuracy and learning rate per epoch, from metrics.csv ({run.name})"),
            Text(f"Per epoch, from `metrics.csv`{every}:"), Table(["epoch", *columns], rows)]


def evaluation(run: Run, folder: Path) -> list[Block]:
    summary = run.summary
    if not summary:
        return [Text(f"{NOT_RECORDED}: no `test/summary.json` (the run was not tested; `cnnclf test --ckpt_path "
                     "FILE` tests it)")]
    names, accuracy = summary["class_names"], accuracy_text(summary["correct"], summary["images"])
    f1_low, f1_high = summary["macro_f1_ci95"]
    never = summary["never_predicted"]
    blocks = [Text(f"Test accuracy: {accuracy}, checkpoint `{summary.get('checkpoint')}`."),
              Text(f"Macro F1: {summary['macro_f1']:.4f} (95% CI {f1_low:.4f}-{f1_high:.4f}, bootstrap over the test "
                   "images)."), Text(f"Never predicted: {', '.join(never) or 'none'}.")]
    per_class = summary["per_class"]
    rows = [[name, *(f"{per_class[name][key]:.4f}" for key in ("precision", "recall", "f1-score")),
             f"{per_class[name]['support']:.0f}"] for name in [*names, "macro avg", "weighted avg"]]
    blocks += [Text("scikit-learn's classification report, from `test/summary.json`:"),
               Table(["class", "precision", "recall", "F1", "support"], rows)]
    if len(names) <= 12:
        rows = [[name, *map(str, row)] for name, row in zip(names, summary["confusion_matrix"], strict=True)]
        blocks += [Text("Confusion matrix counts (rows: true class, columns: predicted):"),
                   Table(["true \\ predicted", *names], rows)]
    pairs = summary["most_confused"]
    blocks.append(Text("Most confused pairs:" if pairs else "Most confused pairs: none, every image is right."))
    if pairs:
        blocks.append(Table(["true", "predicted", "images"], [[p["true"], p["predicted"], str(p["count"])]
                                                             for p in pairs]))
    for name, caption in TEST_FIGURES.items():  # the PNGs `cnnclf test` wrote
        if (run.folder / "test" / name).is_file():
            blocks.append(Image(Path(shutil.copy(run.folder / "test" / name, folder)), f"{caption} ({run.name})"))
    blocks.append(Table(["true", "predicted", "confidence", "loss"], [
        [item["true"], item["predicted"], f"{item['confidence']:.2%}", f"{item['loss']:.4f}"]
        for item in summary["top_losses"]]))
    return blocks


def provenance(run: Run, folder: Path) -> list[Block]:
    marker = run.folder / "fit_time.json"
    trained = (datetime.fromtimestamp(marker.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
               if marker.is_file() else NOT_RECORDED)
    rows = [["run folder", f"`{run.folder.resolve()}`"], ["checkpoint", f"`{run.checkpoint}`"],
            ["training finished", trained]]
    if run.record.get("command"):
        rows.append(["the sweep trained it with", "`cnnclf " + " ".join(run.record["command"][2:]) + "`"])
    return [Text("The run, and the report command's environment:"), Table(["", "value"], rows + environment())]


def environment() -> list[list[str]]:
    """Versions, checkout, machine and date of the report command."""
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty",
                                 "--abbrev=40"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        commit = ""
    cpuinfo = Path("/proc/cpuinfo")
    cpus = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")] if cpuinfo.is_file() else []
    return [["cnnclf", importlib.metadata.version("cnnclf")], ["torch", torch.__version__],
            ["Lightning", importlib.metadata.version("lightning")], ["Python", platform.python_version()],
            ["cnnclf's git commit", commit or "none (not a git checkout)"],
            ["CPU", f"{cpus[0]}, {len(cpus)} cores" if cpus else platform.processor() or platform.machine()],
            ["GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"],
            ["written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")]]
