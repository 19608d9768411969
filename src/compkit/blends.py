"""Blend algorithms on out-of-fold (OOF) predictions: soft voting with equal, fitted or Caruana weights,
hard voting, and a stacked meta-model (logistic regression on class probabilities, ridge on values).
Which of them a competition uses, and on what, is its task's (:mod:`compkit.tasks`).

Every blend is scored on the same footing, out of fold: a blend that is fitted (weights, the
meta-model) is fitted on the other folds' OOF rows and applied to this fold's, over the competition's
own folds (``sklearn.model_selection.PredefinedSplit``), so no OOF row is predicted by a blend that saw
its label. For the holdout and test the blend is refitted on all OOF rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, softmax
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import PredefinedSplit, cross_val_predict

# (M, N, K) OOF probabilities, (N,) labels -> (M,) weights on the simplex
WeightFit = Callable[[np.ndarray, np.ndarray], np.ndarray]


def soft_vote(probas: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of (M, N, K) probabilities with (M,) weights summing to 1: (N, K)."""
    return np.tensordot(weights, probas, axes=1)


def hard_vote(probas: np.ndarray) -> np.ndarray:
    """Majority vote of the M models' argmax classes, as (N, K) vote shares.

    Ties are broken by the equal-weight soft vote: it is added with weight 1e-3 before
    normalising, so each row still sums to 1 and its argmax is the (tie-broken) majority class.
    """
    m, _, k = probas.shape
    votes = np.eye(k)[probas.argmax(axis=2)].sum(axis=0)
    return (votes + 1e-3 * probas.mean(axis=0)) / (m + 1e-3)


def on_simplex(loss: Callable[[np.ndarray], float], grad: Callable[[np.ndarray], np.ndarray], m: int) -> np.ndarray:
    """(M,) weights on the simplex minimising ``loss`` (with gradient ``grad``), started from equal weights.

    The recipe of the Kaggle Ensembling Guide (MLWave, 2015): ``scipy.optimize.minimize`` with SLSQP, bounds [0, 1]
    and sum(w) = 1; the equal weights are kept if the optimiser does not improve on them.
    """
    equal = np.full(m, 1 / m)
    result = minimize(
        loss, equal, jac=grad, method="SLSQP", bounds=[(0, 1)] * m,
        constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
    )
    weights = np.clip(result.x, 0, None)
    weights /= weights.sum()
    return weights if loss(weights) <= loss(equal) else equal


def fit_weights(probas: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Soft-voting weights on the simplex that minimise the blend's log loss on OOF (:func:`on_simplex`).

    Args:
        probas: (M, N, K) OOF probabilities of M models; labels: (N,) int class indices.

    Returns:
        (M,) float64 weights, non-negative, summing to 1.
    """
    return _likelihood_weights(np.clip(probas[:, np.arange(len(labels)), labels], 1e-15, 1))  # (M, N)


def _likelihood_weights(p_true: np.ndarray) -> np.ndarray:
    """(M,) simplex weights minimising the mean negative log of ``w @ p_true``: (M, R) each model's probability of
    the truth per scored cell (a row's class, or a row and tag)."""

    def loss(w):
        return -np.mean(np.log(np.clip(w @ p_true, 1e-15, None)))

    def grad(w):
        return -np.mean(p_true / np.clip(w @ p_true, 1e-15, None), axis=1)

    return on_simplex(loss, grad, len(p_true))


def fit_weights_lsq(preds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Soft-voting weights on the simplex that minimise the blend's mean squared error on OOF (a regression's
    fitted blend; :func:`on_simplex`).

    Args:
        preds: (M, N, 1) OOF predictions of M models; values: (N,) float targets.

    Returns:
        (M,) float64 weights, non-negative, summing to 1.
    """
    x = preds[:, :, 0]

    def loss(w):
        return np.mean((w @ x - values) ** 2)

    def grad(w):
        return 2 * x @ (w @ x - values) / len(values)

    return on_simplex(loss, grad, preds.shape[0])


def fit_weights_bce(preds: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Soft-voting weights on the simplex that minimise the blend's mean binary cross-entropy over every row and tag
    (a multi-label fitted blend; :func:`on_simplex`).

    Args:
        preds: (M, N, T) OOF tag probabilities of M models; truth: (N, T) 0/1 tags.

    Returns:
        (M,) float64 weights, non-negative, summing to 1.
    """
    return _likelihood_weights(np.clip(np.where(truth[None] == 1, preds, 1 - preds), 1e-15, 1).reshape(len(preds), -1))


def fit_weights_heads(preds: np.ndarray, truth: np.ndarray, starts: list[int]) -> np.ndarray:
    """Soft-voting weights on the simplex that minimise the sum of the heads' log losses (a multi-head fitted blend:
    every head's rows' negative log probability of the truth, averaged; :func:`on_simplex`).

    Args:
        preds: (M, N, sum K_h) OOF probabilities of M models, the heads side by side; truth: (N, H) int class indices;
            starts: (H,) the first column of each head in ``preds``.

    Returns:
        (M,) float64 weights, non-negative, summing to 1.
    """
    rows = np.arange(len(truth))
    p_true = np.concatenate([preds[:, rows, start + truth[:, h]] for h, start in enumerate(starts)], axis=1)  # (M, N * H)
    return _likelihood_weights(np.clip(p_true, 1e-15, 1))


def meta_features(probas: np.ndarray) -> np.ndarray:
    """The meta-model's features: (M, N, K) probabilities as (N, M*K) float64, backbone m in columns m*K..m*K+K-1.

    Raw probabilities, not clipped log-probabilities: on the README's cpu-preset runs at C = 1 they
    gave the higher stacked OOF accuracy (DACON 0.786 vs 0.768, Fashion-MNIST 0.892 vs 0.885; log loss
    0.730 vs 0.757 and 0.331 vs 0.321), and lbfgs converges on them in tens of iterations, not hundreds.
    """
    m, n, k = probas.shape
    return probas.transpose(1, 0, 2).reshape(n, m * k).astype(np.float64)


def meta_model(c: float) -> LogisticRegression:
    """The stacking meta-model: logistic regression (multinomial for K > 2, lbfgs) with L2 strength 1 / ``c``."""
    return LogisticRegression(C=c, max_iter=1000)


def _all_classes(proba: np.ndarray, present: np.ndarray, k: int) -> np.ndarray:
    """(N, K) probabilities from the (N, len(present)) columns of the classes ``present``; absent classes get 0."""
    full = np.zeros((len(proba), k))
    full[:, present] = proba
    return full


def stacked_oof(probas: np.ndarray, labels: np.ndarray, fold: np.ndarray, c: float) -> np.ndarray:
    """Out-of-fold predictions of the meta-model: fold k's rows come from a meta-model fitted on the other folds.

    Stacked generalisation (Wolpert 1992): a level-1 model learns to combine the level-0 models'
    out-of-sample predictions, here the backbones' OOF probabilities. Fitted and scored on the same
    rows it would look better than it is, so it is cross-validated on the competition's own folds with
    ``cross_val_predict(..., method="predict_proba")``, the call sklearn's StackingClassifier makes for
    its base models' out-of-fold features: no row is predicted by a meta-model that saw its label.

    Args:
        probas: (M, N, K) OOF probabilities of M backbones; labels: (N,) int class indices;
        fold: (N,) int fold of each row, from folds.csv; c: the meta-model's C.

    Returns:
        (N, K) float64 probabilities.
    """
    proba = cross_val_predict(meta_model(c), meta_features(probas), labels, cv=PredefinedSplit(fold), method="predict_proba")
    return _all_classes(proba, np.unique(labels), probas.shape[2])


def fit_meta_model(probas: np.ndarray, labels: np.ndarray, c: float) -> dict:
    """The meta-model refitted on all N OOF rows ((M, N, K) ``probas``, (N,) int ``labels``), as reviewable data for
    ensemble.json (no pickle): ``coef`` (K', M*K) (K' = 1 for two classes, else the classes present), ``intercept``
    (K',) and ``classes`` (K',) or (2,), the int class indices its columns stand for; :func:`meta_model_proba` applies it."""
    model = meta_model(c).fit(meta_features(probas), labels)
    return {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist(), "classes": model.classes_.tolist()}


def meta_model_proba(meta: dict, probas: np.ndarray) -> np.ndarray:
    """The fitted meta-model ``meta`` (:func:`fit_meta_model`) on (M, N', K) probabilities (the backbones' fold-mean
    holdout or test predictions): (N', K) float64, as sklearn's ``predict_proba`` computes it (softmax of the
    decision function, or its sigmoid for two classes); classes it never saw get 0."""
    z = meta_features(probas) @ np.asarray(meta["coef"]).T + np.asarray(meta["intercept"])
    proba = np.hstack([1 - expit(z), expit(z)]) if z.shape[1] == 1 else softmax(z, axis=1)
    return _all_classes(proba, np.asarray(meta["classes"]), probas.shape[2])


def ridge_oof(preds: np.ndarray, values: np.ndarray, fold: np.ndarray, c: float) -> np.ndarray:
    """Out-of-fold predictions of a ridge meta-model (L2 strength 1 / ``c``) on the backbones' (M, N, 1) OOF
    predictions, cross-fitted as :func:`stacked_oof`: the regression's stacked blend. Returns (N, 1) float64."""
    return cross_val_predict(Ridge(alpha=1 / c), meta_features(preds), values, cv=PredefinedSplit(fold))[:, None]


def fit_ridge(preds: np.ndarray, values: np.ndarray, c: float) -> dict:
    """The ridge meta-model refitted on all OOF rows ((M, N, 1) ``preds``, (N,) ``values``), as data for ensemble.json:
    ``coef`` (M,) and ``intercept`` (a float); :func:`ridge_predict` applies it."""
    model = Ridge(alpha=1 / c).fit(meta_features(preds), values)
    return {"coef": model.coef_.tolist(), "intercept": float(model.intercept_)}


def ridge_predict(meta: dict, preds: np.ndarray) -> np.ndarray:
    """The fitted ridge ``meta`` (:func:`fit_ridge`) on (M, N', 1) predictions: (N', 1) float64."""
    return (meta_features(preds) @ np.asarray(meta["coef"]) + meta["intercept"])[:, None]


def equal_weights(probas: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(M,) weights 1 / M for (M, N, K) ``probas``; ``labels`` are unused (the signature of a :data:`WeightFit`)."""
    return np.full(probas.shape[0], 1 / probas.shape[0])


def caruana_weights(probas: np.ndarray, labels: np.ndarray, key: Callable[[np.ndarray, np.ndarray], tuple],
                    iterations: int, cost: np.ndarray | None = None, budget: float = np.inf) -> np.ndarray:
    """Ensemble selection: greedy forward selection of models, with replacement, on the competition metric.

    Caruana, Niculescu-Mizil, Crew & Ksikes, "Ensemble Selection from Libraries of Models", ICML 2004
    (the blend AutoGluon uses by default): start from the empty ensemble; ``iterations`` times, add
    the model (any model, again if it helps: with replacement) whose addition gives the soft-voting
    average the best ``key``; keep the best ensemble seen along the way. A model's weight is the
    share of the kept ensemble's picks it has. ``key(labels, blend)`` is a tuple, larger is better: the task's
    metric, then a tie-break (:meth:`compkit.tasks.Task.caruana_key`: ties in accuracy go to the lower log loss);
    equal keys go to the first model. Under an inference budget a pick may only add a model while the summed ``cost``
    of the distinct models picked stays within ``budget`` (a model already picked adds nothing: its predictions are
    made once, whatever its weight); the first pick is the best model that fits alone.

    Args:
        probas: (M, N, D) OOF predictions of M models; labels: (N,) truth.
        key: the objective; iterations: picks, >= 1.
        cost: (M,) each model's inference cost (seconds per test image, all folds and TTA views), or None: no budget;
        budget: the most the picked models' costs may sum to, in ``cost``'s unit; at least one model must fit alone.

    Returns:
        (M,) float64 weights, multiples of 1 / (picks kept), summing to 1; a model never picked gets 0.
    """
    m = probas.shape[0]
    total, counts = np.zeros(probas.shape[1:]), np.zeros(m, dtype=np.int64)
    best_key, best_counts = None, None
    cost = np.zeros(m) if cost is None else np.asarray(cost, dtype=np.float64)
    for n in range(1, iterations + 1):
        fits = [j for j in range(m) if counts[j] or cost[counts > 0].sum() + cost[j] <= budget]
        keys = {j: key(labels, (total + probas[j]) / n) for j in fits}
        pick = max(fits, key=lambda j: keys[j])  # max keeps the first of equal keys
        total += probas[pick]
        counts[pick] += 1
        if best_key is None or keys[pick] > best_key:
            best_key, best_counts = keys[pick], counts.copy()
    return best_counts / best_counts.sum()


def cross_fitted_oof(fit: WeightFit, probas: np.ndarray, labels: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold soft vote: fold k's rows blended with weights ``fit`` on the other folds' rows only.

    The same cross-fitting as :func:`stacked_oof` (``PredefinedSplit`` over the competition's folds),
    so a fitted blend's OOF score is comparable with the equal-weight and stacked ones: fitted and
    scored on the same rows, weights fitted by log loss beat equal weights by construction.

    Args:
        fit: the weight fit, e.g. :func:`fit_weights`; probas: (M, N, K) OOF probabilities;
        labels: (N,) int class indices; fold: (N,) int fold of each row, from folds.csv.

    Returns:
        (N, K) float64 probabilities.
    """
    out = np.zeros(probas.shape[1:])
    for fit_rows, rows in PredefinedSplit(fold).split():
        out[rows] = soft_vote(probas[:, rows], fit(probas[:, fit_rows], labels[fit_rows]))
    return out
