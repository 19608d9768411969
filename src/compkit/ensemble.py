"""Stage 3: blend the backbones' predictions: soft voting (equal, OOF-fitted and Caruana-selected weights),
hard voting and, with ``ensemble.stacking``, a stacked meta-model (algorithms: blends.py; which of them apply, and
the post-processing, are the task's: tasks.py).

Reads each backbone's fold files (``runs/<competition>/<backbone>/fold<k>/``): OOF predictions are
concatenated over folds, holdout and test predictions averaged over the fold models. Weights are
fitted on OOF only. Every fold must have been made from the current fold files, and each backbone's
folds from one config: stale or mixed fold artefacts are refused. Every blend is scored out of fold
over the competition's folds (``folds.csv``): a fitted blend (weights, Caruana, stacked) is fitted on
the other folds' OOF rows for each fold's, and refitted on all OOF rows for holdout and test. Writes ``runs/<competition>/ensemble/``:
``ensemble.json`` (per-backbone and per-blend scores, each decided by post-processing cross-fitted over the folds,
weights, the selected blend, ``apply``: it refitted on all OOF rows as data (weights, the hard vote, or the stacked
meta-model's coefficients; :meth:`compkit.tasks.Task.apply_blend`), ``post``: its post-processing refitted on all OOF rows (a binary threshold, ordinal cut
points; {} for none), ``inference``: the hidden test rows, ``ensemble.time_budget`` and each backbone's prediction seconds
per image (every blend's ``predict_hours`` projects them; Caruana and the choice keep within the budget), and its lineage:
the fold-file digest, a digest per backbone of its folds' lineages, and the digest and count of the
OOF ids the weights were fitted on; the stacked blend, having no weight per backbone, has no ``weights``;
and ``files``, the sha256 of each file below) and the selected blend's ``oof.csv``,
``holdout.csv`` and, with a test file, ``test.csv``. The set is committed as a whole (compkit.artifacts):
a kill leaves the old set or the new one, and readers check each file against ensemble.json.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from compkit import console, tasks
from compkit.artifacts import Layout
from compkit.blends import caruana_weights, cross_fitted_oof, equal_weights
from compkit.config import Config, Ensemble, Paths
from compkit.data import has_test, load_labels
from compkit.errors import CompkitError, shown
from compkit.lineage import folds_digest, ids_digest
from compkit.metrics import Scorer
from compkit.tasks import Task
from compkit.tracking import tracked


def oof_folds(config: Config, paths: Paths, oof_ids: np.ndarray) -> np.ndarray:
    """(N,) int64 fold of each of the (N,) OOF ids, from ``folds.csv``.

    Raises:
        CompkitError: an OOF id is in no fold of folds.csv; names the file and the fix.
    """
    folds, _ = Layout(config, paths).folds.read()
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


def inference_costs(layout: Layout, backbones: list[str]) -> np.ndarray | None:
    """(M,) seconds to predict one test image with every fold model (seeds, TTA views) of each backbone: the sum of its
    folds' ``predict_seconds_per_image`` (fold.json; :func:`compkit.train.seconds_per_image`). None when a fold does not
    record it (trained by an older compkit)."""
    per = [[layout.runs.read(b, k).get("predict_seconds_per_image") for k in range(layout.config.folds.n_splits)] for b in backbones]
    return None if any(v is None for row in per for v in row) else np.array([sum(row) for row in per], dtype=np.float64)


def inference_plan(config: Config, layout: Layout, test_rows: int | None) -> tuple[np.ndarray | None, int | None, float]:
    """What an inference budget needs: the backbones' (M,) costs (:func:`inference_costs`), the hidden test rows
    (``competition.hidden_test_rows``, else ``test_rows``, the local test set's) and the budget in seconds per image
    (``ensemble.time_budget`` hours x 3600 / rows; inf without one).

    Raises:
        CompkitError: a budget is set but a fold records no prediction time (retrain it), the hidden size is unknown,
            or no backbone fits the budget alone; each names the key or file and the fix.
    """
    backbones, hours = config.train.backbones, config.ensemble.time_budget
    costs, rows = inference_costs(layout, backbones), config.competition.hidden_test_rows or test_rows
    if hours is None:
        return costs, rows, np.inf
    name = config.competition.name
    if costs is None:
        raise CompkitError(f"{layout.runs.record(backbones[0], 0).parent.parent}: a fold.json records no "
                           f"predict_seconds_per_image (an older compkit trained it); `make clean COMPETITION={name}` and "
                           "retrain, or remove ensemble.time_budget")
    if not rows:
        raise CompkitError(f"ensemble.time_budget: no test file in {layout.paths.data} to size the hidden test set; set "
                           "competition.hidden_test_rows")
    budget = hours * 3600 / rows
    if costs.min() > budget:
        fastest = backbones[int(costs.argmin())]
        raise CompkitError(f"ensemble.time_budget {hours:g} h: the fastest backbone, {fastest}, alone projects "
                           f"{costs.min() * rows / 3600:.2f} h on {rows} hidden test rows; raise the budget, or train "
                           "with fewer folds, seeds or TTA views")
    return costs, rows, budget


def blend_all(task: Task, oof: np.ndarray, labels: np.ndarray, fold: np.ndarray, spec: Ensemble,
              costs: np.ndarray | None = None, budget: float = np.inf) -> tuple[dict, dict, dict]:
    """Every blend the task uses (:attr:`compkit.tasks.Task.blend_names`, then ``stacked`` with ``ensemble.stacking``)
    of (M, N, D) OOF predictions with (N,) truth and (N,) folds; Caruana's selection within ``budget`` seconds per
    image of the (M,) ``costs`` (:func:`compkit.blends.caruana_weights`).

    Returns:
        ``applied``: name -> the blend refitted on all OOF rows, as data for :meth:`compkit.tasks.Task.apply_blend`
        (``{"weights": [...]}``, ``{"vote": "hard"}`` or ``{"meta": ...}``; ensemble.json's ``apply``);
        ``oof_blend``: name -> (N, D) out-of-fold blend (fitted on the other folds, see blends.py);
        ``weights``: name -> (M,) weights refitted on all rows, for the weighted blends and ``hard`` (equal).
    """
    fits = {"equal": equal_weights, "fitted": task.fit_weights,
            "caruana": partial(caruana_weights, key=task.caruana_key, iterations=spec.caruana_iterations,
                               cost=costs, budget=budget)}
    weights = {name: fit(oof, labels) for name, fit in fits.items()}
    oof_blend = {name: cross_fitted_oof(fit, oof, labels, fold) for name, fit in fits.items()}
    applied = {name: {"weights": weights[name].tolist()} for name in fits}
    if "hard" in task.blend_names:
        weights["hard"], oof_blend["hard"], applied["hard"] = weights["equal"], task.hard_vote(oof), {"vote": "hard"}
    if spec.stacking:
        oof_blend["stacked"], meta = task.stack(oof, labels, fold, spec.stacking_c)
        applied["stacked"] = {"meta": meta}
    order = [*task.blend_names, *(["stacked"] if spec.stacking else [])]
    return {n: applied[n] for n in order}, {n: oof_blend[n] for n in order}, weights


def _hours(hours: dict[str, float], name: str) -> dict[str, float]:
    """The table's ``predict_hours`` cell of ``name``, when the hours are known."""
    return {"predict_hours": hours[name]} if hours else {}


def scored(task: Task, truth: np.ndarray, pred: np.ndarray, fold: np.ndarray) -> dict[str, float]:
    """The task's score table of (N, D) OOF predictions, decided by post-processing cross-fitted over the folds
    (:meth:`compkit.tasks.Task.cross_fit_decide`): a fitted threshold or cut points never see the rows they decide."""
    return task.score_table(truth, pred, task.cross_fit_decide(truth, pred, fold))


def projected_hours(weights: dict[str, np.ndarray], names: list[str], costs: np.ndarray | None, rows: int | None) -> dict[str, float]:
    """Each blend's projected hours to predict ``rows`` hidden test images: the costs of the backbones it uses (a weight
    above 0; every backbone for the stacked meta-model) summed, x rows / 3600. {} when costs or rows are unknown."""
    if costs is None or not rows:
        return {}
    used = {name: weights[name] > 0 if name in weights else np.ones(len(costs), bool) for name in names}
    return {name: round(float(costs[used[name]].sum()) * rows / 3600, 4) for name in names}


def choose(metric: Scorer, blends: dict[str, dict], hours: dict[str, float], spec: Ensemble) -> str:
    """The blend to submit: ``ensemble.select``, or with ``best`` the best-scoring blend whose projected hours fit
    ``ensemble.time_budget`` (all blends without one).

    Raises:
        CompkitError: the selected blend's projected hours exceed the budget; names both and the fix.
    """
    fits = [n for n in blends if spec.time_budget is None or hours[n] <= spec.time_budget]
    if spec.select == "best":
        return metric.best({n: blends[n][metric.name] for n in fits})  # Caruana always fits: it was built within budget
    if spec.select not in fits:
        raise CompkitError(f"ensemble.select = {spec.select!r}: that blend projects {hours[spec.select]:.2f} h, over "
                           f"ensemble.time_budget {spec.time_budget:g} h; select \"best\" or \"caruana\", or raise the budget")
    return spec.select


def run(config: Config, paths: Paths) -> None:
    """Stage entry point: score each backbone and blend on OOF, write the selected blend's files."""
    comp, backbones, spec, layout = config.competition, config.train.backbones, config.ensemble, Layout(config, paths)
    task, metric = tasks.for_config(config), tasks.for_config(config).scorer
    layout.folds.read()  # the fold files are a verified pair
    inputs = layout.runs.inputs(backbones)
    train = load_labels(paths.data, comp)
    oof_ids, oof = _stack([layout.runs.load_oof(b)[:2] for b in backbones], "OOF")
    labels = train.labels[pd.Series(np.arange(len(train.ids)), index=train.ids).loc[oof_ids].to_numpy()]  # 1-D or tags
    fold = oof_folds(config, paths, oof_ids)

    sets = {"holdout.csv": _stack([layout.runs.load_fold_mean(b, "holdout.csv") for b in backbones], "holdout")}
    if has_test(paths.data, comp):
        sets["test.csv"] = _stack([layout.runs.load_fold_mean(b, "test.csv") for b in backbones], "test")
    costs, rows, budget = inference_plan(config, layout, len(sets["test.csv"][0]) if "test.csv" in sets else None)

    scores = {b: scored(task, labels, p, fold) for b, p in zip(backbones, oof)}
    applied, oof_blend, weights = blend_all(task, oof, labels, fold, spec, costs, budget)
    blends = {name: scored(task, labels, pred, fold) for name, pred in oof_blend.items()}
    for name in weights:
        blends[name]["weights"] = dict(zip(backbones, weights[name].round(6).tolist()))
    hours = projected_hours(weights, list(blends), costs, rows)
    for name, value in hours.items():
        blends[name]["predict_hours"] = value
    selected = choose(metric, blends, hours, spec)
    post = task.fit_post(labels, oof_blend[selected])  # refitted on all OOF rows, for holdout and test

    out = layout.ensemble.dir
    inference = {} if costs is None else {"hidden_rows": rows, "time_budget": spec.time_budget,
                                          "seconds_per_image": dict(zip(backbones, costs.round(7).tolist()))}
    layout.ensemble.write(
        {"backbones": backbones, "scores": scores, "blends": blends, "selected": selected, "metric": metric.name,
         "task": task.kind, "post": post, "apply": applied[selected], "cv": blends[selected][metric.name],
         "inference": inference,
         "lineage": {"folds": folds_digest(paths), "inputs": inputs, "fit_ids": ids_digest(oof_ids), "n_fit": len(oof_ids)}},
        {"oof.csv": (oof_ids, oof_blend[selected]),
         **{name: (ids, task.apply_blend(applied[selected], probas)) for name, (ids, probas) in sets.items()}},
    )

    alone = projected_hours({b: np.eye(len(backbones))[m] for m, b in enumerate(backbones)}, backbones, costs, rows)
    lines = [{"model": b, "kind": "backbone", **scores[b], **_hours(alone, b)} for b in backbones]
    lines += [{"model": n, "kind": "blend", **{k: blends[n][k] for k in task.metric_names}, **_hours(hours, n)} for n in blends]
    table = pd.DataFrame(lines)
    console.table(table, title=f"OOF scores ({len(labels)} rows)" + (f"; predict_hours on {rows} hidden test rows" if hours else ""))
    with tracked(config, paths, "ensemble", "ensemble") as tracker:
        tracker.summarize({"scores": scores, "blends": blends, "selected": selected, "cv": blends[selected][metric.name]})
        tracker.table("oof_scores", table)
        if task.figure == "confusion":  # one class (or grade) per row
            predicted = task.cross_fit_decide(labels, oof_blend[selected], fold)
            tracker.confusion_matrix("oof_confusion_matrix", labels, predicted, [str(c) for c in task.classes])
    best_single = metric.best({b: scores[b][metric.name] for b in backbones})
    if selected == "stacked":
        how = f"logistic regression on the OOF probabilities, C {spec.stacking_c:g}"
    else:
        how = "weights " + ", ".join(f"{b} {w:.3f}" for b, w in blends[selected]["weights"].items())
    budget = f" of ensemble.time_budget {spec.time_budget:g} h" if spec.time_budget else ""
    timing = f"; predicts {rows} hidden test rows in {hours[selected]:.2f} h{budget}" if hours else ""
    console.summary(
        f"ensemble: selected {selected} blend, OOF {metric.name} {blends[selected][metric.name]:.4f} "
        f"(best backbone {best_single} {scores[best_single][metric.name]:.4f}); {how}{timing}"
        f"{'; post-processing ' + str(post) if post else ''} -> {out}"
    )
