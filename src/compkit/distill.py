"""Knowledge distillation (`make distill`, after `make ensemble`): the selected blend taught to one student model.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network": for each fold k, a model of
``distill.backbone`` (default: the first of ``train.backbones``) trains on the rows outside fold k against their labels
and the blend's probabilities softened at ``distill.temperature`` (weight ``distill.alpha`` on the soft term;
:func:`compkit.heads.distill_loss`), early-stops on fold k's labels and predicts fold k, the holdout and test as
`make train` does. Its folds land in ``runs/<c>/student-<backbone>/fold<k>/`` (:func:`compkit.train.train_fold`).

Honest out of fold: the teacher's probability of each row is the blend's OOF prediction of that row (the ensemble's
``oof.csv``), made by fold models that never saw it and blended by weights fitted on the other folds; fold k's
student learns from rows outside fold k only, and is scored on fold k. (The teacher's models of the other folds did
train on fold k's rows, as every stacked model's inputs do: a second-order effect, not a label of fold k.)

Each student fold records the ensemble's ``oof.csv`` digest and ``distill.*``; a student made from another blend or
other settings is refused as stale. The summary table sets the student beside the blend: OOF, public and private
(on the solution file when the competition ships one, else on the holdout), and images per second at inference (every
fold model, seed and TTA view, from each fold's ``predict_seconds_per_image``): what the one model buys in a code
competition with a time limit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compkit import console, executors, tasks, train
from compkit.artifacts import Layout
from compkit.config import Config, Paths
from compkit.data import Images, has_test, load_labels, load_test, load_train
from compkit.errors import CompkitError
from compkit.formats import load_solution, submission_format
from compkit.lineage import config_changes, config_digest, folds_digest, resolved_config, stale_reason
from compkit.tasks import Task
from compkit.tracking import tracked


def student_backbone(config: Config) -> str:
    """The student's backbone: ``distill.backbone``, or the first of ``train.backbones``."""
    return config.distill.backbone or config.train.backbones[0]


def check_students(config: Config, paths: Paths, teacher: str) -> None:
    """Refuse a finished student fold made from another config, other fold files, another teacher (the ensemble's
    ``oof.csv`` sha256 ``teacher``) or other ``distill.*`` settings.

    Raises:
        CompkitError: names the fold's fold.json, what changed, and how to start over.
    """
    layout, backbone = Layout(config, paths), student_backbone(config)
    name, hyper = layout.runs.student(backbone), train.tuned_hyper(config, paths, backbone)
    clean = f"delete {paths.runs / name} and rerun `make distill COMPETITION={config.competition.name}`"
    settings = {"backbone": backbone, **config.distill.model_dump(exclude={"backbone"})}
    for fold in range(config.folds.n_splits):
        if not layout.runs.is_done(name, fold):
            continue
        record = layout.runs.read(name, fold)
        lineage = record.get("lineage", {})
        expected = {"config": config_digest(config, hyper), "folds": folds_digest(paths)}
        reason = stale_reason(lineage, expected, clean, config_changes(record.get("config", {}), resolved_config(config, hyper)))
        if not reason and lineage.get("teacher") != teacher:
            reason = f"the blend it learnt from (the ensemble's oof.csv) changed since it was made; {clean}"
        if not reason and record.get("distilled") != settings:
            reason = f"distill.* was {record.get('distilled')} when it was made, now {settings}; {clean}"
        if reason:
            raise CompkitError(f"{layout.runs.record(name, fold)}: {reason}")


def leaderboard_rows(config: Config, paths: Paths, train_rows: Images) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """The rows a submission is scored on: the prediction file holding them (``test.csv`` when the competition ships a
    solution file, else ``holdout.csv``), their (N,) ids, (N,) truth and (N,) ``Usage`` (Public or Private);
    ``train_rows`` is train.csv's labels (:func:`compkit.data.load_labels`), the holdout's truth."""
    comp = config.competition
    fmt = submission_format(paths.data, comp)
    solution = load_solution(paths.data, comp, fmt)
    if solution is not None:
        return "test.csv", solution[fmt.id_column].to_numpy(), np.asarray(solution["label"].tolist()), solution["Usage"].to_numpy()
    holdout = Layout(config, paths).folds.read()[1]
    ids = holdout[comp.id_key].to_numpy()
    return "holdout.csv", ids, _labels_of(train_rows, ids), holdout["Usage"].to_numpy()


def _labels_of(train_rows: Images, ids: np.ndarray) -> np.ndarray:
    """The (N,) labels of train.csv's rows ``ids``, in that order."""
    return train_rows.labels[pd.Series(np.arange(len(train_rows.ids)), index=train_rows.ids).loc[ids].to_numpy()]


def local_scores(task: Task, train_rows: Images, board: tuple, oof: tuple, scored: tuple, post: dict | None) -> dict[str, float]:
    """The competition's metric of one model or blend: ``oof`` and ``scored`` are ((N,) ids, (N, D) predictions), its
    OOF rows (truth from ``train_rows``) and the rows of ``board`` (:func:`leaderboard_rows`), decided with ``post``.
    Returns ``oof``, ``public`` and ``private``."""
    _, ids, truth, usage = board
    pred = scored[1][pd.Series(np.arange(len(scored[0])), index=scored[0]).loc[ids].to_numpy()]
    out = {"oof": task.score(_labels_of(train_rows, oof[0]), oof[1], task.decide(oof[1], post))}
    for part in ("Public", "Private"):
        rows = usage == part
        out[part.lower()] = task.score(truth[rows], pred[rows], task.decide(pred[rows], post))
    return out


def images_per_second(layout: Layout, names: list[str]) -> float | None:
    """Test images per second of the fold models of ``names`` (runs' names) together: 1 / the sum of their folds'
    ``predict_seconds_per_image``; None when a fold does not record it."""
    seconds = [layout.runs.read(n, k).get("predict_seconds_per_image") for n in names for k in range(layout.config.folds.n_splits)]
    return None if None in seconds or not sum(seconds) else round(1 / sum(seconds), 1)


def comparison(config: Config, paths: Paths, record: dict, name: str) -> pd.DataFrame:
    """The student (runs' ``name``) beside the selected blend of ensemble.json ``record``: one row each, with the
    metric's ``oof``, ``public`` and ``private`` (:func:`local_scores`) and ``images_per_s`` (:func:`images_per_second`)."""
    layout, task, train_rows = Layout(config, paths), tasks.for_config(config), load_labels(paths.data, config.competition)
    board = leaderboard_rows(config, paths, train_rows)
    weights = record["blends"][record["selected"]].get("weights") or dict.fromkeys(record["backbones"], 1.0)
    blend = {"model": f"blend ({record['selected']})", **local_scores(
        task, train_rows, board, layout.ensemble.read_proba(record, "oof.csv"), layout.ensemble.read_proba(record, board[0]),
        record.get("post")), "images_per_s": images_per_second(layout, [b for b, w in weights.items() if w > 0])}
    student = {"model": name, **local_scores(task, train_rows, board, layout.runs.load_oof(name)[:2],
                                             layout.runs.load_fold_mean(name, board[0]), None),
               "images_per_s": images_per_second(layout, [name])}
    return pd.DataFrame([blend, student])


def run(config: Config, paths: Paths) -> None:
    """Stage entry point: train the student's unfinished folds, then print it beside the blend and a summary line.

    Raises:
        CompkitError: a task without a distillation rule, class weights, no (or a stale) ensemble set, a stale student
            fold, a failed fold.
    """
    task, layout = tasks.for_config(config), Layout(config, paths)
    task.require_distill()
    if config.train.class_weight != "none":  # Keras weighs a row by its target's argmax: a soft target has no one class
        raise CompkitError(f"train.class_weight = {config.train.class_weight!r}: a student learns soft targets, which carry "
                           "no class to weight; set train.class_weight = 'none' for `make distill`")
    record = layout.ensemble.read()  # verified against the fold files, the backbones' folds and its own digests
    if "oof.csv" not in record["files"]:
        raise CompkitError(f"{layout.ensemble.record}: no oof.csv; rerun `make ensemble COMPETITION={config.competition.name}`")
    teacher, backbone = record["files"]["oof.csv"], student_backbone(config)
    name = layout.runs.student(backbone)
    check_students(config, paths, teacher)
    executor = executors.make(config, config.train.executor)
    load_train(paths.data, config.competition, paths.cache)  # the pixel cache, built once here rather than by each fold
    if has_test(paths.data, config.competition):
        load_test(paths.data, config.competition, paths.cache)
    console.info(f"distill: {backbone} learns the {record['selected']} blend of {', '.join(record['backbones'])} "
                 f"(temperature {config.distill.temperature:g}, alpha {config.distill.alpha:g})")
    jobs = [(name, k) for k in range(config.folds.n_splits)]
    trained, skipped = train.train_units(layout, executor, jobs, lambda _, fold: train.fold_unit(layout, executor, backbone, fold, student=True))
    check_students(config, paths, teacher)  # folds another process finished must be from this teacher too
    table = comparison(config, paths, record, name)
    metric = task.scorer.name
    console.table(table, title=f"{config.competition.name}: the student beside the blend ({metric}; images/s at inference)")
    with tracked(config, paths, "distill", f"distill-{backbone}", {"distill": config.distill.model_dump()}) as tracker:
        tracker.table("distill", table)
        tracker.summarize({f"student_{k}": v for k, v in table.iloc[1].items() if k != "model"})
    blend, student = table.iloc[0], table.iloc[1]
    speed = (f"; {student['images_per_s'] / blend['images_per_s']:.1f}x the blend's images/s"
             if student["images_per_s"] and blend["images_per_s"] else "")
    console.summary(f"distill: {name}, {trained} folds trained, {skipped} skipped; OOF {metric} {student['oof']:.4f} "
                    f"(blend {blend['oof']:.4f}), private {student['private']:.4f} (blend {blend['private']:.4f}){speed} "
                    f"-> {paths.runs / name}")
