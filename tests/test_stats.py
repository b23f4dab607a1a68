"""Intervals, the McNemar test and the spread of repeats, against independent computations; the test summary
that prints them; and ``cnnclf compare`` on real checkpoints and run folders."""

import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta, binom
from sklearn.metrics import f1_score

from cnnclf.cli import cli_main
from cnnclf.stats import accuracy_interval, accuracy_text, macro_f1, macro_f1_interval, mcnemar, spread
from tests.conftest import report_records, write_report_pickle
from tests.test_cli import CONFIGS, run


@pytest.mark.parametrize(("correct", "total"), [(438, 450), (40, 40), (0, 12), (36, 40), (9950, 10000)])
def test_accuracy_interval_is_clopper_pearson(correct, total):
    # Clopper-Pearson from the beta distribution's quantiles, not through binomtest.
    low = beta.ppf(0.025, correct, total - correct + 1) if correct else 0.0
    high = beta.ppf(0.975, correct + 1, total - correct) if correct < total else 1.0
    assert accuracy_interval(correct, total) == pytest.approx((low, high), abs=1e-9)


def test_accuracy_text_reads_as_the_issue_wrote_it():
    assert accuracy_text(438, 450) == "97.33% (438/450; 95% CI 95.39-98.61%)"
    # ORL's "100%": 40 of 40 faces; the lower bound solves p**40 = 0.025.
    assert accuracy_text(40, 40) == f"100.00% (40/40; 95% CI {100 * 0.025 ** (1 / 40):.2f}-100.00%)"


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_images():
    a = np.array([1, 1, 0, 0, 1, 1, 1], bool)
    b = np.array([0, 0, 0, 1, 1, 1, 1], bool)
    assert mcnemar(a, b) == (2, 1, 1.0)  # 3 discordant, split 2:1: as even as 3 can be
    only_a = np.ones(10, bool)
    assert mcnemar(only_a, ~only_a) == (10, 0, pytest.approx(2 * 0.5**10))
    rng = np.random.default_rng(0)
    a, b = rng.random(500) < 0.9, rng.random(500) < 0.85
    only_a, only_b, p = mcnemar(a, b)
    assert (only_a, only_b) == ((a & ~b).sum(), (b & ~a).sum())
    assert p == pytest.approx(min(1.0, 2 * binom.cdf(min(only_a, only_b), only_a + only_b, 0.5)))
    assert mcnemar(a, a) == (0, 0, 1.0)


def test_macro_f1_and_its_bootstrap_interval_match_scikit_learn():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 5, 300)
    predicted = np.where(rng.random(300) < 0.7, true, rng.integers(0, 5, 300))
    matrix = np.zeros((6, 6), int)  # class 5 never occurs: left out of the average, as scikit-learn leaves it
    np.add.at(matrix, (true, predicted), 1)
    assert macro_f1(matrix) == pytest.approx(f1_score(true, predicted, average="macro"))
    low, high = macro_f1_interval(true, predicted, 6)
    assert macro_f1_interval(true, predicted, 6) == (low, high)  # seeded
    assert low < f1_score(true, predicted, average="macro") < high
    # A plain bootstrap through scikit-learn, with other draws, lands on nearly the same interval.
    draws = np.random.default_rng(7).integers(0, 300, (400, 300))
    naive = np.quantile([f1_score(true[index], predicted[index], average="macro") for index in draws], [0.025, 0.975])
    assert (low, high) == pytest.approx(tuple(naive), abs=0.015)


def test_spread_is_mean_and_sample_standard_deviation():
    values = [0.975, 1.0, 0.95, 1.0, 0.975]
    assert spread(values) == pytest.approx({"n": 5, "mean": statistics.mean(values), "std": statistics.stdev(values),
                                            "min": 0.95, "max": 1.0})
    assert spread([0.5])["std"] == 0.0


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory) -> list[Path]:
    """Two tested digits runs, one epoch of Adam and one of SGD at a tiny rate: different predictions."""
    runs = tmp_path_factory.mktemp("runs")
    return [Path(run("fit", CONFIGS / "digits.yaml", runs, "--trainer.max_epochs", "1", *extra).trainer.log_dir)
            for extra in ([], ["--model.optimizer", "sgd", "--model.lr", "0.0005"])]


def test_test_summary_gives_intervals_per_image_predictions_and_both_confusion_matrices(digits_runs):
    folder = digits_runs[0] / "test"
    summary = json.loads((folder / "summary.json").read_text())
    matrix = np.array(summary["confusion_matrix"])
    correct, images = int(np.trace(matrix)), int(matrix.sum())
    assert (summary["correct"], summary["images"]) == (correct, images)
    assert summary["accuracy_ci95"] == pytest.approx([beta.ppf(0.025, correct, images - correct + 1),
                                                      beta.ppf(0.975, correct + 1, images - correct)])
    low, high = summary["macro_f1_ci95"]
    assert low < summary["macro_f1"] < high
    assert summary["macro_f1"] == pytest.approx(summary["per_class"]["macro avg"]["f1-score"])
    text = (folder / "summary.txt").read_text()
    assert f"accuracy: {accuracy_text(correct, images)}\n" in text and "never predicted: " in text
    rows = (folder / "per_image.csv").read_text().splitlines()
    assert rows[0] == "index,source,true,predicted,confidence,loss" and len(rows) == images + 1
    pairs = np.zeros_like(matrix)
    for row in rows[1:]:
        index, source, true, predicted, _, _ = row.split(",")
        assert source == index  # a pickle's test image is named by its row
        pairs[int(true), int(predicted)] += 1
    assert (pairs == matrix).all()
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png"):
        assert (folder / name).stat().st_size > 10_000


def test_a_class_the_model_never_predicts_is_named(tmp_path, capsys):
    digits = list(range(10))
    train = [record for record in report_records(200, (28, 28), digits) if record["label"] != 4]
    data = write_report_pickle(tmp_path / "MNIST", train, report_records(50, (28, 28), digits, seed=1))
    fitted = run("fit", CONFIGS / "mnist_fixed.yaml", tmp_path / "runs", "--data.path", str(data),
                 "--trainer.max_epochs", "2", "--trainer.precision", "32-true", "--test_after_fit", "true")
    summary = json.loads((Path(fitted.trainer.log_dir) / "test" / "summary.json").read_text())
    matrix = np.array(summary["confusion_matrix"])
    expected = [str(label) for label in digits if matrix[:, label].sum() == 0]
    assert "4" in expected and summary["never_predicted"] == expected
    assert f"never predicted: {', '.join(expected)}\n" in capsys.readouterr().out


def test_compare_pairs_two_runs_on_the_same_images(digits_runs, tmp_path, capsys):
    a, b = digits_runs
    cli_main(["compare", str(a), str(b / "checkpoints" / "best.ckpt"), "--json", str(tmp_path / "c.json")])
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "c.json").read_text())
    right = [np.array([line.split(",")[2] == line.split(",")[3] for line in
                       (run_dir / "test" / "per_image.csv").read_text().splitlines()[1:]]) for run_dir in (a, b)]
    only_a, only_b = int((right[0] & ~right[1]).sum()), int((right[1] & ~right[0]).sum())
    assert (result["only_a_right"], result["only_b_right"]) == (only_a, only_b) and only_a + only_b > 0
    assert result["mcnemar_p"] == pytest.approx(min(1.0, 2 * binom.cdf(min(only_a, only_b), only_a + only_b, 0.5)))
    assert f"accuracy {accuracy_text(int(right[0].sum()), len(right[0]))}" in printed
    assert f"{only_a} only A gets right, {only_b} only B" in printed
    assert printed.rstrip().endswith(result["verdict"])
    assert ("is better at the 5% level" in result["verdict"]) == (result["mcnemar_p"] < 0.05)


def test_compare_refuses_models_of_other_data_in_one_line(digits_runs, tiny_data, tmp_path, capsys):
    cifar = run("fit", CONFIGS / "cifar_fixed.yaml", tmp_path, "--data.path", str(tiny_data["cifar"]),
                "--trainer.max_epochs", "1", "--trainer.precision", "32-true", "--test_after_fit", "false")
    mnist = run("fit", CONFIGS / "mnist_fixed.yaml", tmp_path, "--data.path", str(tiny_data["mnist"]),
                "--trainer.max_epochs", "1", "--trainer.precision", "32-true")
    digits = digits_runs[0] / "checkpoints" / "best.ckpt"
    cases = [(f"{cifar.trainer.log_dir}/checkpoints/last.ckpt", "models of different data cannot be compared"),
             (Path(mnist.trainer.log_dir), "were tested on different images \\(450 and 50")]
    for other, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["compare", str(digits), str(other)])
        assert str(exit_info.value.code).startswith("cnnclf: error: ") and "\n" not in str(exit_info.value.code)
        assert re.search(message, str(exit_info.value.code))
