"""Competition metrics on class probabilities (sklearn.metrics underneath)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss

# Whether a larger value is better: blends, Optuna's direction and the leaderboard order follow it.
GREATER_IS_BETTER = {"accuracy": True, "macro_f1": True, "log_loss": False}


def score_table(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and log loss of (N, K) probabilities against (N,) int class indices.

    Log loss is sklearn's (natural log, probabilities clipped by sklearn); the K classes are
    ``0..K-1`` even when some are absent from ``labels``. Rows are renormalised first: float32
    softmax rows sum to 1 only within ~1e-7, which sklearn warns about.
    """
    proba = proba / proba.sum(axis=1, keepdims=True)
    predicted = proba.argmax(axis=1)
    classes = np.arange(proba.shape[1])
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)),
        "log_loss": float(log_loss(labels, proba, labels=classes)),
    }


def score(metric: str, labels: np.ndarray, proba: np.ndarray) -> float:
    """The competition's ``metric`` (a key of :data:`GREATER_IS_BETTER`)."""
    return score_table(labels, proba)[metric]


def best(metric: str, values: dict[str, float]) -> str:
    """The key of ``values`` with the best ``metric`` value; ties go to the first key."""
    sign = 1 if GREATER_IS_BETTER[metric] else -1
    return max(values, key=lambda k: sign * values[k])
