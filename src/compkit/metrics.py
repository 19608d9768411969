"""Competition metrics on class probabilities (sklearn.metrics underneath)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, log_loss


def score_table(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy and log loss of (N, K) probabilities against (N,) int class indices.

    Log loss is sklearn's (natural log, probabilities clipped by sklearn); the K classes are
    ``0..K-1`` even when some are absent from ``labels``. Rows are renormalised first: float32
    softmax rows sum to 1 only within ~1e-7, which sklearn warns about.
    """
    proba = proba / proba.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(accuracy_score(labels, proba.argmax(axis=1))),
        "log_loss": float(log_loss(labels, proba, labels=np.arange(proba.shape[1]))),
    }


def score(metric: str, labels: np.ndarray, proba: np.ndarray) -> float:
    """The competition's ``metric`` (a key of :func:`score_table`); raises KeyError for an unknown one."""
    return score_table(labels, proba)[metric]
