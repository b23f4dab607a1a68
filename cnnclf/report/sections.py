"""One run's part of a report, in the order of the report cnnclf grew from: dataset, model, setup, training,
evaluation, and where it all came from. Each part reads only the run's files; what a run did not record
shows as such."""

import shutil
from datetime import datetime, timezone
from pathlib import Path

from cnnclf.curves import read_curve
from cnnclf.report.document import Block, Code, Heading, Image, Table, Text
from cnnclf.report.facts import Run, environment, layer_table, read_dataset, readable
from cnnclf.report.figures import curves, sample_grid
from cnnclf.sweeps.spec import cli_value

NOT_RECORDED = "not recorded"

# (what, config section, key) in the order a reader looks for them
SETUP = [("architecture", "model", "class_path"), ("optimizer", "model", "optimizer"),
         ("learning rate (peak with onecycle)", "model", "lr"), ("schedule", "model", "lr_schedule"),
         ("momentum", "model", "momentum"), ("Nesterov", "model", "nesterov"),
         ("weight decay", "model", "weight_decay"), ("batch-norm lr scale", "model", "norm_lr_scale"),
         ("label smoothing", "model", "label_smoothing"), ("batch size", "data", "batch_size"),
         ("evaluation batch size", "data", "eval_batch_size"), ("epochs", "trainer", "max_epochs"),
         ("steps", "trainer", "max_steps"), ("seed", "", "seed_everything"), ("precision", "trainer", "precision"),
         ("validation split", "data", "val_split"), ("folds", "data", "folds"), ("fold", "data", "fold"),
         ("split seed", "data", "split_seed"), ("normalize input", "data", "normalize"),
         ("augmentation: translate (pixels)", "data", "translate"),
         ("augmentation: translate padding", "data", "translate_padding"),
         ("augmentation: horizontal flip", "data", "hflip"), ("test-time augmentation: mirror", "model", "tta_hflip"),
         ("test-time augmentation: shifts (pixels)", "model", "tta_translate"),
         ("callbacks", "trainer", "callbacks")]
NOT_ARCHITECTURE = {key for _, section, key in SETUP if section == "model"} | {
    "num_classes", "image_shape", "class_names", "input_mean", "input_std", "channels_last", "compile"}


def run_sections(run: Run, folder: Path, level: int = 3) -> list[Block]:
    """The blocks of ``run``; its figures go into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    blocks = []
    for title, build in (("Dataset", dataset), ("Model", model), ("Setup", setup), ("Training", training),
                         ("Evaluation", evaluation), ("Provenance", provenance)):
        blocks.append(Heading(f"{title}: {run.label}", level))
        try:
            blocks += build(run, folder)
        except Exception as error:  # one part of the run unreadable: the rest of the report still helps
            blocks.append(Text(f"{NOT_RECORDED}: {readable(error)}"))
    return blocks


def dataset(run: Run, folder: Path) -> list[Block]:
    data = read_dataset(run)
    names, splits = data.class_names, data.splits
    counts = {split: targets.bincount(minlength=len(names)).tolist() for split, (_, targets) in splits.items()}
    shape = "×".join(map(str, splits["train"][0].shape[1:]))
    blocks = [Text(f"Source: `{data.source}`; SHA-256 `{data.digest}`."),
              Text(f"{len(names)} classes; images of {shape} (channels×height×width, as the model takes them)."),
              Table(["split", "images"], [[split, f"{len(targets):,}"] for split, (_, targets) in splits.items()])]
    if all(len(set(found)) == 1 for found in counts.values()):  # ORL's 40 people: one line, not 40 equal rows
        blocks.append(Text("Every class has " + ", ".join(f"{found[0]} {split}" for split, found in counts.items())
                           + f" images. Classes: {', '.join(names)}."))
    else:
        blocks.append(Table(["class", *splits], [[name, *(str(counts[split][index]) for split in splits)]
                                                 for index, name in enumerate(names)]))
    path = folder / "samples.png"
    sample_grid(*splits["train"], names, "training images").savefig(path, dpi=100)
    return [*blocks, Image(path, f"Training images of each class ({run.label})")]


def model(run: Run, folder: Path) -> list[Block]:
    summary = layer_table(run.checkpoint)
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
    rows = []
    for what, section, key in SETUP:
        value = run.config.get(key) if not section else (
            run.config["model"].get(key) if key == "class_path" else run.setting(section, key))
        if key == "precision" and value is None:
            value = "32-true (Lightning's default)"
        elif key == "callbacks":
            value = ", ".join(callback["class_path"] for callback in value or []) or None
        elif key == "max_steps" and value == -1:
            value = None
        if value is not None:
            rows.append([what, cli_value(value), f"`{section + '.' if section else ''}{key}`"])
    architecture = {key: value for key, value in (run.config["model"].get("init_args") or {}).items()
                    if key not in NOT_ARCHITECTURE}
    if architecture:
        rows.insert(1, ["architecture options", ", ".join(f"{key}={cli_value(value)}"
                                                          for key, value in architecture.items()), "`model.init_args`"])
    return [Text(f"From `{run.folder / 'config.yaml'}`, the config the fit saved (a precision this machine "
                 "lacks is replaced there by the one it trained in)."), Table(["setting", "value", "config key"], rows)]


def training(run: Run, folder: Path) -> list[Block]:
    fit = run.fit
    if fit:
        resumed = f", resumed at epoch {fit['resumed_at_epoch']}" if fit.get("resumed_at_epoch") else ""
        timing = (f"Fit time: {fit['fit_seconds']:.1f} s for {fit['epochs']} epochs ({fit['steps']} steps){resumed}; "
                  "the training and validation loops, from `fit_time.json`.")
    else:
        timing = f"Fit time: {NOT_RECORDED} (no `fit_time.json`: the fit did not finish)."
    names = ["train/loss", "train/epoch_loss", "val/loss", "train/acc", "val/acc", "train/lr"]
    logged = {name: read_curve(run.folder, name) for name in names}
    if not any(steps for steps, _ in logged.values()):
        return [Text(timing), Text(f"Curves: {NOT_RECORDED} (no `metrics.csv` in {run.folder})")]
    # Lightning logs an epoch's figures at its last step: epoch e (from 1) ends at step e * steps per epoch - 1.
    per_epoch = fit["steps"] / fit["epochs"] if fit.get("epochs") else None
    points = {name: ([(step + 1) / per_epoch if per_epoch else step for step in steps], values)
              for name, (steps, values) in logged.items()}
    path = folder / "curves.png"
    curves(points, "epochs trained" if per_epoch else "step", f"training curves ({run.label})").savefig(path, dpi=100)
    columns = [name for name in names[1:] if logged[name][0]]
    epochs = sorted({round(x) for name in columns for x in points[name][0]})
    shown = epochs if len(epochs) <= 20 else sorted({epochs[round(i * (len(epochs) - 1) / 19)] for i in range(20)})
    value = {name: dict(zip((round(x) for x in points[name][0]), points[name][1], strict=True)) for name in columns}
    rows = [[str(epoch), *(f"{value[name][epoch]:.4g}" if epoch in value[name] else "" for name in columns)]
            for epoch in shown]
    every = "" if len(shown) == len(epochs) else f" ({len(shown)} of the {len(epochs)} epochs, evenly spaced)"
    return [Text(timing), Image(path, f"Loss, accuracy and learning rate per epoch, from metrics.csv ({run.label})"),
            Text(f"Per epoch, from `metrics.csv`{every}:"), Table(["epoch", *columns], rows)]


def evaluation(run: Run, folder: Path) -> list[Block]:
    summary = run.summary
    if not summary:
        return [Text(f"{NOT_RECORDED}: no `test/summary.json` (the run was not tested; `cnnclf test --ckpt_path "
                     "FILE` tests it)")]
    names, test = summary["class_names"], run.folder / "test"
    low, high = summary.get("accuracy_ci95") or (None, None)
    interval = f"; 95% CI {100 * low:.2f}-{100 * high:.2f}%" if low is not None else "; interval not recorded"
    count = f"{summary['correct']}/{summary['images']}" if "correct" in summary else f"{summary['images']} images"
    blocks = [Text(f"Test accuracy: {summary['accuracy']:.2%} ({count}{interval}), checkpoint "
                   f"`{summary.get('checkpoint')}`.")]
    if "macro_f1" in summary:
        f1_low, f1_high = summary["macro_f1_ci95"]
        blocks.append(Text(f"Macro F1: {summary['macro_f1']:.4f} (95% CI {f1_low:.4f}-{f1_high:.4f}, bootstrap over "
                           "the test images)."))
    never = summary.get("never_predicted")
    blocks.append(Text(f"Never predicted: {', '.join(never) or 'none'}." if never is not None
                       else f"Never predicted: {NOT_RECORDED}."))
    per_class = summary["per_class"]
    rows = [[name, *(f"{per_class[name][key]:.4f}" for key in ("precision", "recall", "f1-score")),
             f"{per_class[name]['support']:.0f}"] for name in [*names, "macro avg", "weighted avg"]]
    blocks += [Text("scikit-learn's classification report, from `test/summary.json`:"),
               Table(["class", "precision", "recall", "F1", "support"], rows)]
    for name, caption in (("confusion_matrix", "Confusion matrix, counts"),
                          ("confusion_matrix_normalized", "Confusion matrix, normalized by true class")):
        if (test / f"{name}.png").is_file():
            blocks.append(Image(Path(shutil.copy(test / f"{name}.png", folder)), f"{caption} ({run.label})"))
    if len(names) <= 12:
        matrix = summary["confusion_matrix"]
        blocks += [Text("Confusion matrix counts (rows: true class, columns: predicted):"),
                   Table(["true \\ predicted", *names], [[name, *map(str, row)] for name, row in zip(
                       names, matrix, strict=True)])]
    pairs = summary["most_confused"]
    blocks += [Text("Most confused pairs:" if pairs else "Most confused pairs: none, every image is right."),
               *([Table(["true", "predicted", "images"], [[p["true"], p["predicted"], str(p["count"])]
                                                         for p in pairs])] if pairs else [])]
    if (test / "top_losses.png").is_file():
        blocks.append(Image(Path(shutil.copy(test / "top_losses.png", folder)),
                            f"The highest-loss test images: true -> predicted (confidence) ({run.label})"))
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
    blocks = [Table(["", "this run"], rows), Text("The report command's environment:"),
              Table(["", "value"], [[key, value] for key, value in environment()])]
    if run.record.get("command"):
        blocks += [Text("The sweep trained it with:"), Code("cnnclf " + " ".join(run.record["command"][2:]))]
    return blocks
