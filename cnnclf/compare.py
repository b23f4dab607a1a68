"""``cnnclf compare A B``: two checkpoints or tested run folders paired on the same test images, with the exact
McNemar test of their difference (docs/report.md)."""

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnclf.errors import CheckpointError, DatasetError, one_line_errors
from cnnclf.explore import load_datamodule, load_model, predict_split, read_json
from cnnclf.models import class_names
from cnnclf.stats import accuracy_interval, accuracy_text, mcnemar


@dataclass(frozen=True)
class Tested:
    """One model's true and predicted label of each test image, in order."""

    source: str
    class_names: list[str]
    true: np.ndarray
    predicted: np.ndarray


def tested(path: str | Path, data: str | None = None) -> Tested:
    """The test predictions of a run folder (from its ``test/per_image.csv``) or of a checkpoint (predicted now)."""
    path = Path(path)
    if path.is_dir():
        per_image, summary = path / "test" / "per_image.csv", read_json(path / "test" / "summary.json")
        if not per_image.is_file() or not summary:
            raise CheckpointError(f"{path}: no test/per_image.csv and summary.json in this run folder; run "
                                  "`cnnclf test --ckpt_path FILE` on its checkpoint, or give the checkpoint itself")
        with per_image.open(newline="") as stream:
            rows = list(csv.DictReader(stream))
        return Tested(str(path), summary["class_names"], np.array([row["true"] for row in rows]),
                      np.array([row["predicted"] for row in rows]))
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    model = load_model(path)
    result = predict_split(model, *load_datamodule(path, **({"path": data} if data else {})).data.test)
    names = np.array(class_names(model.hparams))
    return Tested(str(path), names.tolist(), names[result.targets.numpy()], names[result.predicted.numpy()])


def comparison(a: Tested, b: Tested) -> dict:
    """Each model's accuracy and interval, the discordant images, the McNemar p-value and a sentence."""
    if a.class_names != b.class_names:
        raise CheckpointError(f"A ({a.source}) has classes {_short(a.class_names)}, B ({b.source}) has "
                              f"{_short(b.class_names)}: models of different data cannot be compared")
    if len(a.true) != len(b.true) or (a.true != b.true).any():
        raise DatasetError(f"A ({a.source}) and B ({b.source}) were tested on different images ({len(a.true)} and "
                           f"{len(b.true)}, labels in another order or not the same): compare on the same test split")
    a_right, b_right = a.predicted == a.true, b.predicted == b.true
    only_a, only_b, p = mcnemar(a_right, b_right)
    if p >= 0.05:
        verdict = f"No evidence that A and B differ at the 5% level (p = {p:.3g})."
    else:
        verdict = f"{'A' if only_a > only_b else 'B'} is better at the 5% level (p = {p:.3g})."
    return {"images": len(a.true), "a": _model(a, a_right), "b": _model(b, b_right), "only_a_right": only_a,
            "only_b_right": only_b, "both_right": int((a_right & b_right).sum()),
            "neither_right": int((~a_right & ~b_right).sum()), "mcnemar_p": p, "verdict": verdict}


def _model(model: Tested, right: np.ndarray) -> dict:
    correct = int(right.sum())
    return {"source": model.source, "correct": correct, "accuracy": correct / len(right),
            "accuracy_ci95": accuracy_interval(correct, len(right))}


def _short(names: list[str]) -> str:
    return f"{len(names)} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="cnnclf compare", description=__doc__)
    parser.add_argument("a", help="a checkpoint file or a tested run folder")
    parser.add_argument("b", help="the same for the other model")
    parser.add_argument("--data", help="the pickle to test checkpoints on (default: the one their run's config names)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    options = parser.parse_args(args)
    with one_line_errors("cnnclf"):
        result = comparison(tested(options.a, options.data), tested(options.b, options.data))
        if options.json:
            Path(options.json).write_text(json.dumps(result, indent=1))
    a, b, images = result["a"], result["b"], result["images"]
    print(f"A: {a['source']}\n   accuracy {accuracy_text(a['correct'], images)}\n"
          f"B: {b['source']}\n   accuracy {accuracy_text(b['correct'], images)}\n"
          f"on the same {images} test images: {result['only_a_right']} only A gets right, "
          f"{result['only_b_right']} only B, {result['both_right']} both, {result['neither_right']} neither\n"
          f"exact McNemar test (binomial on the {result['only_a_right'] + result['only_b_right']} images they "
          f"disagree on): p = {result['mcnemar_p']:.4g}\n{result['verdict']}")
