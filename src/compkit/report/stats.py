"""The report's statistics on plain arrays: bootstrap intervals and leaderboard shake-up in any metric,
the correlation and fold spread of OOF predictions (unit-tested on their own)."""

from __future__ import annotations

import numpy as np

from compkit.metrics import score

N_BOOT = 10_000  # bootstrap resamples


def bootstrap_interval(correct, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """Percentile-bootstrap interval of an accuracy.

    Source: Efron & Tibshirani, *An Introduction to the Bootstrap* (Chapman & Hall, 1993), ch. 13,
    the percentile interval: resample the N rows with replacement ``n_boot`` times, score each
    resample, and take the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the scores.
    For 0/1 rows the number of correct rows in a resample is exactly Binomial(N, p̂), p̂ the
    observed accuracy, so the resamples are drawn as binomial counts (no N x n_boot index matrix).

    Args:
        correct: (N,) bool or 0/1, N >= 1: whether each row's prediction is right.
        level: coverage of the interval, in (0, 1).
        n_boot: number of resamples.
        seed: seed of ``np.random.default_rng``; the same seed gives the same interval.

    Returns:
        ``(point, low, high)`` floats: the observed accuracy and the interval's bounds
        (``low <= point <= high``).
    """
    correct = np.asarray(correct, dtype=bool).ravel()
    if correct.size == 0:
        raise ValueError("bootstrap_interval: no rows")
    point = float(correct.mean())
    scores = np.random.default_rng(seed).binomial(correct.size, point, size=n_boot) / correct.size
    low, high = np.quantile(scores, [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)


def flip_probability(correct_a, correct_b, n_public: int, n_private: int, n_boot: int = N_BOOT, seed: int = 0) -> float:
    """Probability that submissions a and b are ordered one way on public and the other on private.

    The "shake-up" of a leaderboard, by the bootstrap of Efron & Tibshirani (*An Introduction to
    the Bootstrap*, 1993): the N holdout rows, on which both submissions were scored, stand for
    the population. Each resample draws a public part of ``n_public`` rows and, independently, a
    private part of ``n_private`` rows, with replacement, and scores a and b on the same rows
    (paired). A flip: a - b has one sign on public and the other on private. A tie on either part
    counts as half a flip (a leaderboard orders ties arbitrarily), so two submissions that are right
    equally often score 0.5 in expectation, and two with the same rows right score exactly 0.5.
    Each row is one of three kinds (only a right, only b right, both or neither), so a part's
    resample is drawn as a Multinomial count of the three kinds.

    Args:
        correct_a, correct_b: (N,) bool or 0/1, the same rows in the same order, N >= 1.
        n_public, n_private: sizes of the two parts of the leaderboard (>= 1).
        n_boot: number of resamples; seed: seed of ``np.random.default_rng``.

    Returns:
        A float in [0, 1].
    """
    a, b = np.asarray(correct_a, dtype=bool).ravel(), np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"flip_probability: need two equal, non-empty row sets, got {a.size} and {b.size}")
    only_a, only_b = np.count_nonzero(a & ~b) / a.size, np.count_nonzero(~a & b) / a.size
    pvals = np.array([only_a, only_b, max(0.0, 1.0 - only_a - only_b)])
    rng = np.random.default_rng(seed)
    signs = []
    for n in (n_public, n_private):
        counts = rng.multinomial(n, pvals / pvals.sum(), size=n_boot)
        signs.append(np.sign(counts[:, 0] - counts[:, 1]))
    public, private = signs
    flips = np.where((public == 0) | (private == 0), 0.5, (public != private).astype(float))
    return float(flips.mean())


BOOT_CHUNK = 500  # resamples drawn at once: a (BOOT_CHUNK, N) count matrix


def resampled_scores(metric: str, labels: np.ndarray, proba: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``metric`` of each bootstrap resample given as row multiplicities, without materialising the resamples.

    Args:
        metric: a key of :data:`compkit.metrics.GREATER_IS_BETTER`.
        labels: (N,) int true classes; proba: (N, K) probabilities (rows renormalised to sum to 1).
        counts: (B, N) int, how often each row is drawn in each of B resamples.

    Returns:
        (B,) float64, equal to ``metrics.score`` on each resample's rows: accuracy and log loss are
        count-weighted means of per-row values (log loss with sklearn's clipping at float64 eps);
        macro-F1 is sklearn's, averaged over the classes present in the resample's truth or prediction; any other
        metric (ROC AUC) is ``metrics.score`` on each resample's rows, materialised (slower, never a stand-in).
    """
    proba = proba / proba.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    n = counts.sum(axis=1)
    if metric == "log_loss":
        eps = np.finfo(np.float64).eps
        return counts @ -np.log(np.clip(proba[rows, labels], eps, 1 - eps)) / n
    predicted = proba.argmax(axis=1)
    if metric == "accuracy":
        return counts @ (predicted == labels) / n
    if metric != "macro_f1":
        return np.array([score(metric, labels[np.repeat(rows, c)], proba[np.repeat(rows, c)]) for c in counts])
    k = proba.shape[1]
    truth, pred = np.eye(k)[labels], np.eye(k)[predicted]
    tp, support = counts @ (truth * pred), counts @ truth + counts @ pred
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(support > 0, 2 * tp / support, np.nan)
    return np.nanmean(f1, axis=1)


def _counts(rng: np.random.Generator, n_rows: int, n_draws: int, n_boot: int):
    """Chunks of (b, n_rows) multiplicities of ``n_draws`` rows drawn with replacement, ``n_boot`` resamples in all."""
    for start in range(0, n_boot, BOOT_CHUNK):
        yield rng.multinomial(n_draws, np.full(n_rows, 1 / n_rows), size=min(BOOT_CHUNK, n_boot - start))


def metric_interval(metric: str, labels: np.ndarray, proba: np.ndarray, level: float = 0.95, n_boot: int = N_BOOT,
                    seed: int = 0) -> tuple[float, float, float]:
    """Percentile-bootstrap interval of ``metric`` on (N,) labels and (N, K) probabilities, N >= 1.

    Accuracy is :func:`bootstrap_interval` of the rows' correctness; the other metrics resample
    the rows (Efron & Tibshirani 1993, ch. 13) and score each resample by :func:`resampled_scores`.

    Returns:
        ``(point, low, high)``: ``metrics.score`` on all rows and the interval's bounds.
    """
    if metric == "accuracy":
        return bootstrap_interval(proba.argmax(axis=1) == labels, level, n_boot, seed)
    rng = np.random.default_rng(seed)
    scores = np.concatenate([resampled_scores(metric, labels, proba, c) for c in _counts(rng, len(labels), len(labels), n_boot)])
    low, high = np.quantile(scores, [(1 - level) / 2, (1 + level) / 2])
    return score(metric, labels, proba), float(low), float(high)


def metric_flip_probability(metric: str, labels: np.ndarray, proba_a: np.ndarray, proba_b: np.ndarray, n_public: int,
                            n_private: int, n_boot: int = N_BOOT, seed: int = 0) -> float:
    """:func:`flip_probability` in ``metric``: a and b are scored on the same resampled public and private rows.

    Accuracy is :func:`flip_probability` of the rows' correctness; for the other metrics each part
    resamples ``n_public`` (``n_private``) of the N holdout rows with replacement, and a flip is a
    better score for a on one part and for b on the other, in ``metric``'s direction; ties count one half.

    Args:
        labels: (N,) int; proba_a, proba_b: (N, K) probabilities of a and b on the same rows.

    Returns:
        A float in [0, 1].
    """
    if metric == "accuracy":
        return flip_probability(proba_a.argmax(axis=1) == labels, proba_b.argmax(axis=1) == labels, n_public, n_private, n_boot, seed)
    rng = np.random.default_rng(seed)
    signs = []
    for n in (n_public, n_private):
        diffs = [resampled_scores(metric, labels, proba_a, c) - resampled_scores(metric, labels, proba_b, c)
                 for c in _counts(rng, len(labels), n, n_boot)]
        signs.append(np.sign(np.concatenate(diffs)))
    public, private = signs
    flips = np.where((public == 0) | (private == 0), 0.5, (public != private).astype(float))
    return float(flips.mean())


def true_class_correlation(probas: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pearson correlation, between models, of the probability each model gives the true class.

    Args:
        probas: (M, N, K) float probabilities of M models on the same N rows.
        labels: (N,) int true class indices.

    Returns:
        (M, M) float64; 1 on the diagonal, NaN for a model whose true-class probability is constant.
        Low values mark models that err on different rows: those add diversity to a blend.
    """
    p_true = probas[:, np.arange(len(labels)), labels]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.atleast_2d(np.corrcoef(p_true))
    np.fill_diagonal(corr, 1.0)
    return corr


def fold_spread(correct: np.ndarray, fold: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Accuracy per fold and its spread: (mean, std, (n_folds,) accuracies in fold order).

    ``correct`` (N,) bool and ``fold`` (N,) int per OOF row; std is the population std (ddof=0),
    as ``sklearn.model_selection.cross_val_score(...).std()`` is usually reported.
    """
    per_fold = np.array([correct[fold == k].mean() for k in np.unique(fold)])
    return float(per_fold.mean()), float(per_fold.std()), per_fold
