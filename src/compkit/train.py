"""Stage 2: out-of-fold (OOF) models, one per backbone x fold.

For fold k a model trains on the other folds, early-stops on fold k and predicts fold k (OOF),
the holdout and, when the competition's test file exists, test. Each fold's artefacts land in
``runs/<competition>/<backbone>/fold<k>/``::

    model.keras    the weights restored from the best epoch (lowest val_loss); with ``train.seeds`` = n > 1
                   also model-seed1.keras .. model-seed<n-1>.keras, one per extra seed
    history.csv    epoch, loss, accuracy, val_loss, val_accuracy, learning_rate, phase, seed
                   (phase: scratch, or head / fine-tune for pretrained weights; see finetune.py; the val_ columns
                   are empty for the epochs ``train.validation = "last_epoch"`` skips)
    oof.csv        id, <the task's columns: p_<class>... for multiclass>  for fold k's rows (the mean over seeds,
                   each with ``tta`` views; :attr:`compkit.tasks.Task.columns`)
    holdout.csv    the same for every holdout row
    test.csv       the same for every test row (only with a test file)
    fold.json      scores, epochs, seconds, prediction seconds per image, peak memory, hyperparameters, the resolved config (secrets masked),
                   lineage, and the sha256 of each
                   CSV above; written last: its presence marks the fold done (see compkit.artifacts)

A finished fold is skipped on rerun, so a crash loses at most the fold in progress. Its lineage
(digests of the config parts and fold files it was made from, and of the ids it was fit on and
validated on; see lineage.py) must match the current ones, else the run stops instead of mixing
stale folds with new ones. A fold in progress is claimed by a kernel lock on ``fold<k>/.lock``
(:func:`compkit.io.claim`), so two `make train` at once share the folds, and a killed run's folds
are free again the moment it dies. Each fold runs in a fresh process by default (``train.process_per_fold``), which
keeps memory flat fold after fold.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time

import numpy as np
import pandas as pd

from compkit import console, executors, fitting, tasks
from compkit.artifacts import Layout
from compkit.config import Config, Hyper, Paths
from compkit.data import load_labels, load_test, load_train
from compkit.devices import augment_where, describe
from compkit.errors import CompkitError
from compkit.fitting import fit, fold_data
from compkit.foldfiles import check_folds
from compkit.io import atomic_path, claim, release
from compkit.lineage import clean_hint, config_changes, config_digest, folds_digest, ids_digest, resolved_config, stale_reason
from compkit.tracking import tracked


def tuned_hyper(config: Config, paths: Paths, backbone: str) -> Hyper:
    """``config.hyper(backbone)`` with the best tuned parameters on top, unless ``train.use_tuned`` is false."""
    params = Layout(config, paths).tuned.read(backbone) if config.train.use_tuned else None
    return config.hyper(backbone) if params is None else config.hyper(backbone).with_params(params)


def train_fold(config: Config, paths: Paths, backbone: str, fold: int, executor: str = "local", student: bool = False) -> dict:
    """Train ``backbone`` on every fold but ``fold``; write the fold's artefacts (module docstring). A ``student``
    (`make distill`, distill.py) learns the selected blend's OOF probabilities too (:func:`compkit.fitting.fold_data`'s
    ``teacher``) and is written under ``runs/<c>/student-<backbone>/`` (:meth:`compkit.artifacts.runs.FoldRuns.student`).

    Returns:
        The contents of ``fold.json``: ``oof_<metric>`` for each of the task's metrics (multiclass: ``oof_accuracy``,
        ``oof_macro_f1``, ``oof_log_loss``; decisions with the default post-processing), ``epochs``, ``best_epoch``,
        ``seconds``, ``started`` and ``finished`` (Unix times), ``peak_rss_mb`` (this process's peak resident memory),
        ``predict_seconds_per_image`` (:func:`seconds_per_image`),
        ``compute`` (device, gpus, threads, precision, replicas: :func:`compkit.devices.describe`), ``where`` it ran
        (``executor``: local or ray, ``host``, ``pid``, ``device``: ``CPU`` or ``GPU <CUDA_VISIBLE_DEVICES>``), ``hyper``, and ``lineage``:
        ``config`` and ``folds`` digests (:mod:`compkit.lineage`), ``fit_ids`` / ``val_ids`` (digests of
        the sorted ids the model was fit on / early-stopped on and predicted OOF) and their counts; a student's
        ``backbone`` is its runs' name, and it records ``distilled`` (its backbone, ``distill.temperature`` and ``alpha``)
        and the ``teacher`` digest (the ensemble's oof.csv sha256) in its lineage.
    """
    import keras
    import tensorflow as tf

    task = tasks.for_config(config)
    hyper = tuned_hyper(config, paths, backbone)
    start, started = time.perf_counter(), time.time()
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    lineage, layout = {"config": config_digest(config, hyper), "folds": folds_digest(paths)}, Layout(config, paths)
    run_name, teacher = backbone, None
    if student:
        run_name, record = layout.runs.student(backbone), layout.ensemble.read()
        teacher, lineage["teacher"] = layout.ensemble.read_proba(record, "oof.csv"), record["files"]["oof.csv"]
    data = fold_data(config, paths, fold, teacher)
    label = f"[{run_name} fold {fold + 1}/{config.folds.n_splits}]"
    extra = {"backbone": run_name, "fold": fold, "hyper": hyper.model_dump()}
    with tracked(config, paths, "train", f"{run_name}-fold{fold}", extra) as tracker:
        train, seeds = data.train, config.train.seeds
        sets = {"oof.csv": (train, data.val), "holdout.csv": (train, data.held)}
        if data.test is not None:
            sets["test.csv"] = (data.test, np.arange(len(data.test.ids)))
        probas = {name: np.zeros((len(rows), task.width), np.float32) for name, (_, rows) in sets.items()}
        histories, augment_at = [], augment_where(config.train.augment_on, hyper.augment)
        timed = dict.fromkeys(sets, 0.0)  # prediction seconds per set, over the seeds
        for s in range(seeds):  # seed averaging: each model's probabilities weigh 1 / seeds
            model_seed = fitting.model_seed(config, fold, s)
            keras.utils.set_random_seed(model_seed)
            model, hist = fit(config, hyper, backbone, data, model_seed,
                              label if seeds == 1 else f"{label[:-1]} seed {s + 1}/{seeds}]", tracker.keras_callback())
            with atomic_path(layout.runs.model_path(run_name, fold, s)) as tmp:
                model.save(tmp)
            histories.append(hist.assign(seed=s))
            for name, (split, rows) in sets.items():
                if len(rows):  # no holdout when the competition ships its test labels
                    began = time.perf_counter()
                    probas[name] += fitting.predict_rows(model, split, rows, hyper, model_seed, task, augment_at) / seeds
                    timed[name] += time.perf_counter() - began
        hist = pd.concat(histories, ignore_index=True)
        scores = task.score_table(train.labels[data.val], probas["oof.csv"])
        result = {
            "backbone": run_name,
            **({"distilled": {"backbone": backbone, **config.distill.model_dump(exclude={"backbone"})}} if student else {}),
            "fold": fold,
            **{f"oof_{k}": v for k, v in scores.items()},
            "epochs": len(hist),  # over all seeds
            "best_epoch": best_epoch(histories[0]),  # the first seed's
            "seeds": seeds,
            "seconds": round(time.perf_counter() - start, 1),
            "started": round(started, 3),
            "finished": round(time.time(), 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "predict_seconds_per_image": seconds_per_image(timed, {n: len(rows) for n, (_, rows) in sets.items()}),
            "compute": describe(model),
            "where": where(executor, describe(model)),
            "hyper": hyper.model_dump(),
            "config": resolved_config(config, hyper),
            "lineage": {
                **lineage,
                "fit_ids": ids_digest(train.ids[data.fit]),
                "val_ids": ids_digest(train.ids[data.val]),
                "n_fit": len(data.fit),
                "pseudo_ids": ids_digest(data.test.ids[data.pseudo] if len(data.pseudo) else []),
                "n_pseudo": len(data.pseudo),
                "n_val": len(data.val),
            },
        }
        tracker.summarize({k: v for k, v in result.items() if k not in ("hyper", "config", "lineage")})
        result = layout.runs.write(run_name, fold, hist, {n: (split.ids[rows], probas[n]) for n, (split, rows) in sets.items()}, result)
    return result


def seconds_per_image(seconds: dict[str, float], rows: dict[str, int]) -> float:
    """Seconds to predict one image with every model of a fold (its seeds) and every TTA view: the prediction ``seconds``
    of the holdout and test sets over their ``rows`` (file name -> value). They are predicted after the OOF rows, whose
    time holds the model's graph tracing, so they time steady prediction as a code competition's hidden rows see it; the
    OOF set's time when there is neither. An inference budget sums it over a blend's folds (``ensemble.time_budget``)."""
    steady = [name for name in seconds if name != "oof.csv" and rows[name]] or ["oof.csv"]
    return round(sum(seconds[n] for n in steady) / max(sum(rows[n] for n in steady), 1), 7)


def where(executor: str, compute: dict) -> dict:
    """Where a fold ran, for ``fold.json``: ``executor``, ``host`` (name), ``pid``, ``device`` (``CPU`` or ``GPU <ids>``)."""
    return {"executor": executor, "host": socket.gethostname(), "pid": os.getpid(),
            "device": f"GPU {compute['device'] or 'all'}" if compute["gpus"] else "CPU"}


def best_epoch(history: pd.DataFrame) -> int:
    """The 1-based epoch whose weights were kept: the lowest val_loss of the last phase (early stopping restores it per
    phase; with ``validation = "last_epoch"`` the phase's last epoch, its only validated one)."""
    last = history[history["phase"] == history["phase"].iloc[-1]]
    return int(last.loc[last["val_loss"].idxmin(), "epoch"])


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def check_done_folds(config: Config, paths: Paths) -> None:
    """Refuse to go on when a finished fold was made from another config or other fold files than now.

    Raises:
        CompkitError: names the fold's ``fold.json``, what changed (each changed config key with its old and new
            value, when the fold records its config), and how to clean.
    """
    folds, layout = folds_digest(paths), Layout(config, paths)
    for backbone in config.train.backbones:
        hyper = tuned_hyper(config, paths, backbone)
        expected, current = {"config": config_digest(config, hyper), "folds": folds}, resolved_config(config, hyper)
        for fold in range(config.folds.n_splits):
            path = layout.runs.record(backbone, fold)
            record = layout.runs.read(backbone, fold) if path.is_file() else None
            reason = record and stale_reason(record.get("lineage", {}), expected, clean_hint(config, paths, backbone),
                                             config_changes(record.get("config", {}), current) if "config" in record else ())
            if reason:
                raise CompkitError(f"{path}: {reason}")


def _clear_half_written(layout: Layout, backbone: str, fold: int) -> None:
    """Delete a killed run's half-written files of a fold this process holds the lock of."""
    for tmp in layout.runs.dir(backbone, fold).glob(".tmp-*"):
        tmp.unlink(missing_ok=True)


def fold_unit(layout: Layout, executor: executors.Executor, backbone: str, fold: int, student: bool = False) -> executors.Unit:
    """Fold (``backbone``, ``fold``) as a unit of work, keyed by its runs' name and fold: :func:`train_fold` reading the
    fold files, the tuned parameters (and a ``student``'s teacher, the ensemble set), writing the fold's folder (landed by
    :meth:`compkit.artifacts.runs.FoldRuns.write_files` when it ran elsewhere)."""
    paths, name = layout.paths, layout.runs.student(backbone) if student else backbone
    teacher = (layout.ensemble.record, layout.ensemble.dir / "oof.csv") if student else ()
    return executors.Unit(
        key=(name, fold), what=f"{name} fold {fold}", fn=train_fold, config=layout.config, paths=paths,
        args=(backbone, fold, executor.name, student), inputs=(*layout.folds.every_file(), layout.tuned.path(backbone), *teacher),
        returns=layout.runs.dir(name, fold), land=lambda files: layout.runs.write_files(name, fold, files))


def train_units(layout: Layout, executor: executors.Executor, jobs: list[tuple[str, int]], unit) -> tuple[int, int]:
    """Train every unfinished fold of ``jobs`` ((runs' name, fold) pairs), ``unit(name, fold)`` making each
    :class:`compkit.executors.Unit`, as many at once as ``executor`` has room for; returns (trained, skipped) counts.

    Folds locked by another live process are left to it; this run waits until they are done (or takes
    them over if that process dies), so every fold is trained once. After a failed fold no new fold starts, the running
    ones finish, then it raises.

    Raises:
        CompkitError: a fold that failed (its own error).
    """
    n_splits, failure, trained, skipped = layout.config.folds.n_splits, None, 0, 0
    pending, waiting = list(jobs), set()
    try:
        while (pending and not failure) or executor.busy():
            for name, fold in list(pending):
                if failure or not executor.has_free():
                    break
                label = f"[{name} fold {fold + 1}/{n_splits}]"
                lock = layout.runs.lock(name, fold)
                if not layout.runs.is_done(name, fold) and not claim(lock):
                    if (name, fold) not in waiting:
                        console.info(f"{label} being trained by another process, left to it")
                        waiting.add((name, fold))
                    continue
                pending.remove((name, fold))
                if layout.runs.is_done(name, fold):  # checked again: another process may have just finished it
                    release(lock)
                    skipped += 1
                    console.info(f"{label} done {'by another process' if (name, fold) in waiting else 'earlier'}, skipped")
                    continue
                _clear_half_written(layout, name, fold)
                executor.submit(unit(name, fold))
            for (name, fold), result, error in executor.finished(timeout=1):
                release(layout.runs.lock(name, fold))
                if error is not None:
                    failure = failure or error
                    continue
                trained += 1
                oof = " ".join(f"{m} {result[f'oof_{m}']:.4f}" for m in tasks.for_config(layout.config).metric_names)
                console.info(f"[{name} fold {fold + 1}/{n_splits}] OOF {oof} "
                             f"({result['epochs']} epochs, best {result['best_epoch']}, {result['seconds']:.0f}s)")
            if pending and not failure and not executor.busy():
                time.sleep(1)  # every pending fold is another process's: wait for it
    finally:  # interrupted (Ctrl-C), or a fold failed: the running folds stop and their locks go
        running = executor.running_keys()
        executor.cancel()
        for name, fold in running:
            release(layout.runs.lock(name, fold))
    if failure:
        raise failure
    return trained, skipped


def run(config: Config, paths: Paths) -> None:
    """Stage entry point: train every unfinished backbone x fold, then print each backbone's OOF score.

    Folds are units of ``train.executor`` (:mod:`compkit.executors`): fresh local processes, as many at once as
    :func:`compkit.devices.slots` gives (one per GPU, or ``train.workers`` on a CPU), or Ray tasks (as many as the
    cluster fits, their files landed here); see :func:`train_units` for locks and failures.

    Raises:
        CompkitError: missing or stale fold files, a finished fold made from another config, a fold that failed.
    """
    layout = Layout(config, paths)
    folds, holdout = layout.folds.read()  # fail fast, before any process starts
    check_folds(folds, holdout, load_labels(paths.data, config.competition).ids, config, paths)
    check_done_folds(config, paths)
    executor = executors.make(config, config.train.executor)  # a missing or unreachable Ray fails here, before any write
    load_train(paths.data, config.competition, paths.cache)  # the pixel cache is built here (when `make folds` has not), once,
    load_test(paths.data, config.competition, paths.cache)  # not by each fold process
    start = time.perf_counter()
    jobs = [(b, k) for b in config.train.backbones for k in range(config.folds.n_splits)]
    trained, skipped = train_units(layout, executor, jobs, lambda backbone, fold: fold_unit(layout, executor, backbone, fold))
    check_done_folds(config, paths)  # folds another process finished must be from this config too
    scores, metric = [], tasks.for_config(config).scorer.name
    for backbone in config.train.backbones:
        folds = [layout.runs.read(backbone, k) for k in range(config.folds.n_splits)]
        scores.append(f"{backbone} {np.mean([f[f'oof_{metric}'] for f in folds]):.4f}")
    console.summary(
        f"train: {len(config.train.backbones)} backbones x {config.folds.n_splits} folds "
        f"({trained} trained, {skipped} skipped) in {time.perf_counter() - start:.0f}s; "
        f"mean fold OOF {metric}: {', '.join(scores)}"
    )
