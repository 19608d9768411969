"""Stage 3: blend the backbones' probabilities: soft voting (equal and OOF-fitted weights) and hard voting.

Reads each backbone's fold files (``runs/<competition>/<backbone>/fold<k>/``): OOF predictions are
concatenated over folds, holdout and test predictions averaged over the fold models. Weights are
fitted on OOF only. Every fold must have been made from the current fold files, and each backbone's
folds from one config: stale or mixed fold artefacts are refused. Writes ``runs/<competition>/ensemble/``:
``ensemble.json`` (per-backbone and per-blend scores, weights, the selected blend, and its lineage:
the fold-file digest, a digest per backbone of its folds' lineages, and the digest and count of the
OOF ids the weights were fitted on) and the selected blend's ``oof.csv``,
``holdout.csv`` and, with a test file, ``test.csv``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from compkit import console
from compkit.config import Config, Paths
from compkit.data import has_test, load_train
from compkit.errors import CompkitError
from compkit.io import read_json, write_json, write_proba
from compkit.lineage import clean_hint, digest, folds_digest, ids_digest
from compkit.metrics import best, score_table
from compkit.tracking import tracked
from compkit.train import fold_dir, load_fold_mean, load_oof

BLENDS = ("equal", "fitted", "hard")


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


def _stack(parts: list[tuple[np.ndarray, np.ndarray]], what: str) -> tuple[np.ndarray, np.ndarray]:
    ids = parts[0][0]
    for other, _ in parts[1:]:
        if not np.array_equal(ids, other):
            raise CompkitError(f"{what}: the backbones predicted different ids; rerun `make train` after `make folds`")
    return ids, np.stack([p for _, p in parts])


def input_lineage(config: Config, paths: Paths) -> dict:
    """The digest of each backbone's fold lineages, after checking the folds are current and unmixed.

    Raises:
        CompkitError: a fold is missing, was made from other fold files than ``folds/`` holds now, or was
            made from another config than the backbone's fold 0; names its ``fold.json`` and how to clean.
    """
    current, inputs = folds_digest(paths), {}
    for backbone in config.train.backbones:
        lineages = []
        for k in range(config.folds.n_splits):
            path = fold_dir(paths, backbone, k) / "fold.json"
            lineage = read_json(path).get("lineage", {})
            if lineage.get("folds") != current:
                what = "other fold files (folds.csv, holdout.csv) than now"
            elif lineages and lineage.get("config") != lineages[0]["config"]:
                what = f"another config than {fold_dir(paths, backbone, 0) / 'fold.json'}"
            else:
                lineages.append(lineage)
                continue
            raise CompkitError(f"{path}: made from {what}; {clean_hint(config, paths, backbone)}")
        inputs[backbone] = digest(lineages)
    return inputs


def run(config: Config, paths: Paths) -> None:
    """Stage entry point: score each backbone and blend on OOF, write the selected blend's files."""
    comp, backbones = config.competition, config.train.backbones
    inputs = input_lineage(config, paths)
    train = load_train(paths.data, comp)
    label_of = pd.Series(train.labels, index=train.ids)
    oof_ids, oof = _stack([load_oof(config, paths, b) for b in backbones], "OOF")
    labels = label_of.loc[oof_ids].to_numpy()

    scores = {b: score_table(labels, p) for b, p in zip(backbones, oof)}
    weights = {"equal": np.full(len(backbones), 1 / len(backbones)), "fitted": fit_weights(oof, labels)}
    weights["hard"] = weights["equal"]
    blends = {
        name: {"weights": dict(zip(backbones, weights[name].round(6).tolist())), **score_table(labels, _blend(name, oof, weights[name]))}
        for name in BLENDS
    }
    if config.ensemble.select == "best":
        selected = best(comp.metric, {n: blends[n][comp.metric] for n in BLENDS})
    else:
        selected = config.ensemble.select

    out = paths.runs / "ensemble"
    sets = {"oof.csv": (oof_ids, oof), "holdout.csv": _stack([load_fold_mean(config, paths, b, "holdout.csv") for b in backbones], "holdout")}
    if has_test(paths.data, comp):
        sets["test.csv"] = _stack([load_fold_mean(config, paths, b, "test.csv") for b in backbones], "test")
    for name, (ids, probas) in sets.items():
        write_proba(out / name, comp.id_key, ids, _blend(selected, probas, weights[selected]), comp.classes)
    write_json(
        {"backbones": backbones, "scores": scores, "blends": blends, "selected": selected, "metric": comp.metric,
         "cv": blends[selected][comp.metric],
         "lineage": {"folds": folds_digest(paths), "inputs": inputs, "fit_ids": ids_digest(oof_ids), "n_fit": len(oof_ids)}},
        out / "ensemble.json",
    )

    rows = [{"model": b, "kind": "backbone", **scores[b]} for b in backbones]
    rows += [{"model": n, "kind": "blend", **{k: blends[n][k] for k in scores[backbones[0]]}} for n in BLENDS]
    table = pd.DataFrame(rows)
    console.table(table, title=f"OOF scores ({len(labels)} rows)")
    with tracked(config, paths, "ensemble", "ensemble") as tracker:
        tracker.summarize({"scores": scores, "blends": blends, "selected": selected, "cv": blends[selected][comp.metric]})
        tracker.table("oof_scores", table)
        predicted = _blend(selected, oof, weights[selected]).argmax(axis=1)
        tracker.confusion_matrix("oof_confusion_matrix", labels, predicted, [str(c) for c in comp.classes])
    best_single = best(comp.metric, {b: scores[b][comp.metric] for b in backbones})
    console.summary(
        f"ensemble: selected {selected} blend, OOF {comp.metric} {blends[selected][comp.metric]:.4f} "
        f"(best backbone {best_single} {scores[best_single][comp.metric]:.4f}); weights "
        + ", ".join(f"{b} {w:.3f}" for b, w in blends[selected]["weights"].items())
        + f" -> {out}"
    )
