"""Stage 3: blend the backbones' probabilities: soft voting (equal and OOF-fitted weights), hard voting and,
with ``ensemble.stacking``, a stacked logistic-regression meta-model.

Reads each backbone's fold files (``runs/<competition>/<backbone>/fold<k>/``): OOF predictions are
concatenated over folds, holdout and test predictions averaged over the fold models. Weights are
fitted on OOF only. Every fold must have been made from the current fold files, and each backbone's
folds from one config: stale or mixed fold artefacts are refused. The stacked blend is scored on
its own out-of-fold predictions over the competition's folds (``folds.csv``), and refitted on all OOF
rows for holdout and test. Writes ``runs/<competition>/ensemble/``:
``ensemble.json`` (per-backbone and per-blend scores, weights, the selected blend, its lineage:
the fold-file digest, a digest per backbone of its folds' lineages, and the digest and count of the
OOF ids the weights were fitted on; the stacked blend, having no weight per backbone, has no ``weights``;
and ``files``, the sha256 of each file below) and the selected blend's ``oof.csv``,
``holdout.csv`` and, with a test file, ``test.csv``. The set is committed as a whole (artifacts.py):
a kill leaves the old set or the new one, and readers check each file against ensemble.json.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit, cross_val_predict

from compkit import console
from compkit.artifacts import Layout
from compkit.config import Config, Paths
from compkit.data import has_test, load_train
from compkit.errors import CompkitError, shown
from compkit.lineage import folds_digest, ids_digest
from compkit.metrics import best, score_table
from compkit.tracking import tracked

BLENDS = ("equal", "fitted", "hard")  # always made; "stacked" joins them with ensemble.stacking


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


def fit_weights(probas: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Soft-voting weights on the simplex that minimise the blend's log loss on OOF.

    The recipe of the Kaggle Ensembling Guide (MLWave, 2015): ``scipy.optimize.minimize`` with
    SLSQP, bounds [0, 1] and sum(w) = 1, started from equal weights; the equal weights are kept
    if the optimiser does not improve on them.

    Args:
        probas: (M, N, K) OOF probabilities of M models; labels: (N,) int class indices.

    Returns:
        (M,) float64 weights, non-negative, summing to 1.
    """
    m = probas.shape[0]
    p_true = np.clip(probas[:, np.arange(len(labels)), labels], 1e-15, 1)  # (M, N)

    def loss(w):
        return -np.mean(np.log(np.clip(w @ p_true, 1e-15, None)))

    def grad(w):
        return -np.mean(p_true / np.clip(w @ p_true, 1e-15, None), axis=1)

    equal = np.full(m, 1 / m)
    result = minimize(
        loss, equal, jac=grad, method="SLSQP", bounds=[(0, 1)] * m,
        constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
    )
    weights = np.clip(result.x, 0, None)
    weights /= weights.sum()
    return weights if loss(weights) <= loss(equal) else equal


def _blend(name: str, probas: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return hard_vote(probas) if name == "hard" else soft_vote(probas, weights)


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


def fit_meta_model(probas: np.ndarray, labels: np.ndarray, c: float) -> Callable[[np.ndarray], np.ndarray]:
    """The meta-model refitted on all N OOF rows ((M, N, K) ``probas``, (N,) int ``labels``), as a function
    from (M, N', K) probabilities (the backbones' fold-mean holdout or test predictions) to (N', K) float64."""
    model = meta_model(c).fit(meta_features(probas), labels)
    return lambda new: _all_classes(model.predict_proba(meta_features(new)), model.classes_, probas.shape[2])


def oof_folds(config: Config, paths: Paths, oof_ids: np.ndarray) -> np.ndarray:
    """(N,) int64 fold of each of the (N,) OOF ids, from ``folds.csv``.

    Raises:
        CompkitError: an OOF id is in no fold of folds.csv; names the file and the fix.
    """
    folds, _ = Layout(config, paths).read_folds()
    fold = pd.Series(folds["fold"].to_numpy(), index=folds[config.competition.id_key].to_numpy()).reindex(oof_ids)
    missing = oof_ids[fold.isna().to_numpy()]
    if len(missing):
        name = config.competition.name
        raise CompkitError(
            f"{paths.folds / 'folds.csv'}: OOF id {shown(missing[0])} is in no fold ({len(missing)} such ids); "
            f"`make folds COMPETITION={name}` then `make train COMPETITION={name}`"
        )
    return fold.to_numpy(dtype=np.int64)


def _stack(parts: list[tuple[np.ndarray, np.ndarray]], what: str) -> tuple[np.ndarray, np.ndarray]:
    ids = parts[0][0]
    for other, _ in parts[1:]:
        if not np.array_equal(ids, other):
            raise CompkitError(f"{what}: the backbones predicted different ids; rerun `make train` after `make folds`")
    return ids, np.stack([p for _, p in parts])


def run(config: Config, paths: Paths) -> None:
    """Stage entry point: score each backbone and blend on OOF, write the selected blend's files."""
    comp, backbones, spec, layout = config.competition, config.train.backbones, config.ensemble, Layout(config, paths)
    layout.read_folds()  # the fold files are a verified pair
    inputs = layout.fold_inputs(backbones)
    train = load_train(paths.data, comp)
    label_of = pd.Series(train.labels, index=train.ids)
    oof_ids, oof = _stack([layout.load_oof(b)[:2] for b in backbones], "OOF")
    labels = label_of.loc[oof_ids].to_numpy()

    scores = {b: score_table(labels, p) for b, p in zip(backbones, oof)}
    weights = {"equal": np.full(len(backbones), 1 / len(backbones)), "fitted": fit_weights(oof, labels)}
    weights["hard"] = weights["equal"]
    combine = {name: partial(_blend, name, weights=weights[name]) for name in BLENDS}  # (M, N, K) -> (N, K)
    oof_blend = {name: combine[name](oof) for name in BLENDS}
    if spec.stacking:
        combine["stacked"] = fit_meta_model(oof, labels, spec.stacking_c)
        oof_blend["stacked"] = stacked_oof(oof, labels, oof_folds(config, paths, oof_ids), spec.stacking_c)
    blends = {name: score_table(labels, proba) for name, proba in oof_blend.items()}
    for name in BLENDS:
        blends[name]["weights"] = dict(zip(backbones, weights[name].round(6).tolist()))
    if spec.select == "best":
        selected = best(comp.metric, {n: blends[n][comp.metric] for n in blends})
    else:
        selected = spec.select

    out = layout.ensemble_dir
    sets = {"holdout.csv": _stack([layout.load_fold_mean(b, "holdout.csv") for b in backbones], "holdout")}
    if has_test(paths.data, comp):
        sets["test.csv"] = _stack([layout.load_fold_mean(b, "test.csv") for b in backbones], "test")
    layout.write_ensemble(
        {"backbones": backbones, "scores": scores, "blends": blends, "selected": selected, "metric": comp.metric,
         "cv": blends[selected][comp.metric],
         "lineage": {"folds": folds_digest(paths), "inputs": inputs, "fit_ids": ids_digest(oof_ids), "n_fit": len(oof_ids)}},
        {"oof.csv": (oof_ids, oof_blend[selected]),
         **{name: (ids, combine[selected](probas)) for name, (ids, probas) in sets.items()}},
    )

    rows = [{"model": b, "kind": "backbone", **scores[b]} for b in backbones]
    rows += [{"model": n, "kind": "blend", **{k: blends[n][k] for k in scores[backbones[0]]}} for n in blends]
    table = pd.DataFrame(rows)
    console.table(table, title=f"OOF scores ({len(labels)} rows)")
    with tracked(config, paths, "ensemble", "ensemble") as tracker:
        tracker.summarize({"scores": scores, "blends": blends, "selected": selected, "cv": blends[selected][comp.metric]})
        tracker.table("oof_scores", table)
        predicted = oof_blend[selected].argmax(axis=1)
        tracker.confusion_matrix("oof_confusion_matrix", labels, predicted, [str(c) for c in comp.classes])
    best_single = best(comp.metric, {b: scores[b][comp.metric] for b in backbones})
    if selected == "stacked":
        how = f"logistic regression on the OOF probabilities, C {spec.stacking_c:g}"
    else:
        how = "weights " + ", ".join(f"{b} {w:.3f}" for b, w in blends[selected]["weights"].items())
    console.summary(
        f"ensemble: selected {selected} blend, OOF {comp.metric} {blends[selected][comp.metric]:.4f} "
        f"(best backbone {best_single} {scores[best_single][comp.metric]:.4f}); {how} -> {out}"
    )
