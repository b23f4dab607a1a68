"""Figures a reader can check: exact intervals on accuracy, a seeded bootstrap on macro F1, the exact McNemar test
between two models on the same images, and the spread of repeated runs."""

import numpy as np
from scipy.stats import binomtest

LEVEL = 0.95  # every interval cnnclf prints


def accuracy_interval(correct: int, total: int) -> tuple[float, float]:
    """The exact (Clopper-Pearson) 95% interval of a proportion ``correct / total``."""
    interval = binomtest(int(correct), int(total)).proportion_ci(LEVEL, method="exact")
    return float(interval.low), float(interval.high)


def accuracy_text(correct: int, total: int) -> str:
    """``97.33% (438/450; 95% CI 95.39-98.61%)``."""
    low, high = accuracy_interval(correct, total)
    return f"{correct / total:.2%} ({correct}/{total}; 95% CI {100 * low:.2f}-{100 * high:.2f}%)"


def macro_f1(confusions: np.ndarray) -> np.ndarray:
    """Macro F1 of each (..., K, K) confusion matrix (rows: targets) over the classes that occur as a target or a
    prediction, as scikit-learn averages it; vectorized, for the bootstrap's thousands of matrices."""
    hits = np.diagonal(confusions, axis1=-2, axis2=-1)
    occurrences = confusions.sum(-1) + confusions.sum(-2)
    f1 = np.divide(2 * hits, occurrences, out=np.zeros(hits.shape), where=occurrences > 0)
    return f1.sum(-1) / (occurrences > 0).sum(-1)


def macro_f1_interval(targets: np.ndarray, predicted: np.ndarray, num_classes: int, resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float]:
    """The seeded 95% percentile-bootstrap interval of macro F1 over the test images."""
    cells = np.asarray(targets) * num_classes + np.asarray(predicted)
    rng, figures = np.random.default_rng(seed), []
    for start in range(0, resamples, 250):  # 250 resamples at a time bound the memory on 10,000 images
        count = min(250, resamples - start)
        drawn = cells[rng.integers(0, len(cells), (count, len(cells)))]
        offsets = np.arange(count)[:, None] * num_classes**2  # one confusion matrix per resample, in one bincount
        matrices = np.bincount((drawn + offsets).ravel(), minlength=count * num_classes**2)
        figures.append(macro_f1(matrices.reshape(count, num_classes, num_classes)))
    low, high = np.quantile(np.concatenate(figures), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


def mcnemar(a_right: np.ndarray, b_right: np.ndarray) -> tuple[int, int, float]:
    """The images only A gets right, only B gets right, and the exact McNemar test's two-sided p-value (the
    binomial test of the discordant images against an even split)."""
    only_a = int(np.sum(a_right & ~b_right))
    only_b = int(np.sum(b_right & ~a_right))
    return only_a, only_b, float(binomtest(only_a, only_a + only_b).pvalue) if only_a + only_b else 1.0


def spread(values: list[float]) -> dict[str, float]:
    """n, mean, sample standard deviation (0 for one value), min and max."""
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"n": len(values), "mean": float(values.mean()), "std": std, "min": float(values.min()),
            "max": float(values.max())}
