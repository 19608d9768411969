"""Competition metrics on class probabilities (sklearn.metrics underneath), each with its direction."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss

# Whether a larger value is better: blends, Optuna's direction, the leaderboard and the report follow it.
GREATER_IS_BETTER = {"accuracy": True, "macro_f1": True, "log_loss": False}


def score_table(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and log loss of (N, K) probabilities against (N,) int class indices.

    Macro-F1 is scikit-learn's ``f1_score(average="macro")``: the mean over the classes present in
    the truth or the prediction, so a class absent from both does not count as F1 = 0. Log loss is
    sklearn's (natural log, probabilities clipped by sklearn); the K classes are ``0..K-1`` even when
    some are absent from ``labels``. Rows are renormalised first: float32 softmax rows sum to 1 only
    within ~1e-7, which sklearn warns about.
    """
    proba = proba / proba.sum(axis=1, keepdims=True)
    predicted = proba.argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        "log_loss": float(log_loss(labels, proba, labels=np.arange(proba.shape[1]))),
    }


def score(metric: str, labels: np.ndarray, proba: np.ndarray) -> float:
    """The competition's ``metric`` (a key of :data:`GREATER_IS_BETTER`)."""
    return score_table(labels, proba)[metric]


def sign(metric: str) -> int:
    """+1 where a larger ``metric`` is better, -1 where a smaller one is: ``sign * value`` is "higher is better"."""
    return 1 if GREATER_IS_BETTER[metric] else -1


def direction(metric: str) -> str:
    """Optuna's study direction for ``metric``: ``"maximize"`` or ``"minimize"``."""
    return "maximize" if GREATER_IS_BETTER[metric] else "minimize"


def best(metric: str, values: dict[str, float]) -> str:
    """The key of ``values`` with the best ``metric`` value; ties go to the first key."""
    return max(values, key=lambda k: sign(metric) * values[k])


def gain(metric: str, new: float, old: float) -> float:
    """How much better ``new`` is than ``old`` in ``metric``: positive when better (a drop for log loss)."""
    return sign(metric) * (new - old)


def label(metric: str) -> str:
    """``metric`` with its direction, for tables and figure axes: ``"log_loss (lower is better)"``."""
    return f"{metric} ({'higher' if GREATER_IS_BETTER[metric] else 'lower'} is better)"
