"""Stage 1b: an Optuna study per backbone, resumable, prunable, shareable between machines.

Each trial trains the backbone with suggested hyperparameters on the training part of the
validation folds named in ``tune.folds`` (never the holdout) and scores those folds; the
objective is their mean score in the competition's metric. Per-epoch ``val_accuracy`` (``val_loss``
for log loss) of the first fold is reported to the pruner (Median or Hyperband). The TPE sampler is seeded.

Storage: ``sqlite:///runs/<competition>/optuna.db`` by default, any RDB URL (``OPTUNA_STORAGE=
postgresql://...``, several machines as workers of one study), or an Optuna journal file
(a path ending in ``.log``). With an RDB storage each running trial sends a heartbeat; a trial
whose worker died is marked failed by the next run, and failed trials are run again (up to
``tune.max_retry`` times) before new ones. Finished trials are never re-run.

The first trial of a new study is the config's own hyperparameters (:func:`config_point`), so
the best trial is never worse than the untuned defaults on the scored folds. The best trial of
each backbone is exported to ``runs/<competition>/best/<backbone>.json``
(value, params, trial number, study name), which ``make train`` applies (``--no-tuned``: not).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import sqlalchemy
from filelock import FileLock
from optuna.trial import TrialState

from compkit import console, executors, tasks
from compkit.artifacts import Layout
from compkit.augment import predict_tta
from compkit.registry import BACKBONES
from compkit.config import Config, ParamSpec, Paths
from compkit.devices import augment_where, describe
from compkit.errors import CompkitError
from compkit.redact import mask
from compkit.tracking import tracked
from compkit.fitting import fit, fold_data, stream

# Heartbeats and fail_stale_trials are marked experimental, and have been stable since Optuna 2.9.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def storage_url(config: Config, paths: Paths) -> str:
    """``$OPTUNA_STORAGE``, else ``tune.storage``, else ``sqlite:///runs/<competition>/optuna.db``."""
    return os.environ.get("OPTUNA_STORAGE") or config.tune.storage or f"sqlite:///{(paths.runs / 'optuna.db').resolve()}"


def make_storage(config: Config, paths: Paths) -> optuna.storages.BaseStorage:
    """The study storage: a journal file for a ``.log`` path, else an RDB storage with heartbeats.

    SQLite waits up to 60 s for a lock, so several local workers can share one file.
    """
    url = storage_url(config, paths)
    if url.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=config.tune.heartbeat_interval,
                grace_period=config.tune.grace_period,
            )
        except ImportError as exc:  # SQLAlchemy imports a dialect's driver (MySQLdb, psycopg2) when the engine is made
            driver = getattr(exc.__cause__, "name", None) or "its driver"
            raise CompkitError(f"tune storage {mask(url)}: its database driver is not installed ({driver}); pip install the "
                               "package that provides it, or name an installed one in the URL (mysql+pymysql://...), or use a "
                               "sqlite:/// or .log storage") from None
        except sqlalchemy.exc.SQLAlchemyError as exc:
            # Workers started together race to create the schema of a new database: the loser retries.
            if attempt == 4:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                raise CompkitError(f"tune storage {mask(url)}: cannot open it ({type(exc).__name__}: {mask(reason)}); "
                                   "check the URL, the server and the credentials (OPTUNA_STORAGE or tune.storage)") from None
            time.sleep(1 + attempt)


def make_pruner(config: Config) -> optuna.pruners.BasePruner:
    """Median (after 2 finished trials and 1 epoch), Hyperband, or none, from ``tune.pruner``."""
    return {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.train.epochs),
        "none": optuna.pruners.NopPruner,
    }[config.tune.pruner]()


def study_name(config: Config, backbone: str) -> str:
    """``<competition>-<backbone>``: one study per backbone."""
    return f"{config.competition.name}-{backbone}"


# Optimizers whose trials train without weight decay: Keras 3 applies Adam(weight_decay=w) as AdamW's
# decoupled decay, so an adam trial with decay would repeat an adamw trial; adam samples none.
DECAY_FREE = ("adam", "nadam")


def trial_hyperparams(params: dict) -> dict:
    """A trial's parameters as trained: an ``adam``/``nadam`` trial gets ``weight_decay`` 0 (it samples none)."""
    if params.get("optimizer") in DECAY_FREE:
        return {**params, "weight_decay": 0.0}
    return params


def suggest(trial: optuna.Trial, space: dict[str, ParamSpec], min_size: int) -> dict:
    """Sample one value per dimension; ``input_size`` is bounded below by the backbone's ``min_size``.

    ``weight_decay`` is sampled only for optimizers outside :data:`DECAY_FREE` (adamw, sgd): the
    space then has no two points that train the same way.

    Raises:
        CompkitError: an ``input_size`` dimension leaves no size at or above ``min_size``.
    """
    params = {}
    for key, spec in space.items():
        if key == "weight_decay" and params.get("optimizer") in DECAY_FREE:
            continue
        choices, low = spec.choices, spec.low
        if key == "input_size":
            choices = [c for c in choices if c >= min_size] if choices else None
            low = max(low, min_size) if low is not None else None
            if choices == [] or (low is not None and low > spec.high):
                raise CompkitError(f"tune space input_size {spec} has no size >= {min_size}, the backbone's minimum")
        if choices is not None:
            params[key] = trial.suggest_categorical(key, choices)
        elif isinstance(low, int) and isinstance(spec.high, int):
            params[key] = trial.suggest_int(key, low, spec.high, log=spec.log)
        else:
            params[key] = trial.suggest_float(key, low, spec.high, log=spec.log)
    return params


def config_point(config: Config, backbone: str) -> dict:
    """The config's own hyperparameters as a point of the search space: the first trial of a new study.

    So the best trial is never worse than the untuned defaults on the tuned folds. Range values are
    clipped into the range (a weight decay of 0 becomes the range's low end); a value that is not
    among a dimension's choices is left for the sampler.
    """
    hyper = config.hyper(backbone).model_dump()
    point = {}
    for key, spec in config.tune.space_for(backbone).items():
        section, _, field = key.rpartition(".")
        value = (hyper[section] if section else hyper)[field]
        if spec.choices is not None:
            if value in spec.choices:
                point[key] = value
        elif value is not None:
            point[key] = type(spec.low)(min(max(value, spec.low), spec.high))
    if point.get("optimizer") in DECAY_FREE:
        point.pop("weight_decay", None)  # not a dimension of this optimizer's trials
    return point


def run_trial(config: Config, paths: Paths, backbone: str, name: str, trial_id: int) -> float:
    """Train and score one trial (runs in the trial's own process by default).

    The trial is reloaded from storage by id, so its per-epoch reports reach the study from here. Its user
    attribute ``compute`` records where it ran (:func:`compkit.devices.describe`) and its ``started`` and
    ``finished`` Unix times.

    Returns:
        The mean score of the ``tune.folds`` validation folds.

    Raises:
        optuna.TrialPruned: the pruner stopped the trial.
    """
    import keras
    from optuna_integration import KerasPruningCallback

    study = optuna.load_study(study_name=name, storage=make_storage(config, paths), pruner=make_pruner(config))
    trial = optuna.trial.Trial(study, trial_id)
    hyper, task = config.hyper(backbone).with_params(trial_hyperparams(trial.params)), tasks.for_config(config)
    extra = {"backbone": backbone, "study": name, "trial": trial.number, "params": trial.params, "hyper": hyper.model_dump()}
    with tracked(config, paths, "tune", f"{backbone}-trial{trial.number}", extra) as tracker:
        state, value, started = "FAIL", None, time.time()
        try:
            scores = []
            for i, fold in enumerate(config.tune.folds):
                seed = config.train.seed + fold
                keras.utils.set_random_seed(seed)
                data = fold_data(config, paths, fold)
                callbacks = tracker.keras_callback()
                monitor = task.prune_monitor()
                # the pruner sees the first fold's validated epochs: steps would restart with each fold
                if i == 0 and monitor and hyper.validation == "each_epoch":
                    callbacks.append(KerasPruningCallback(trial, monitor))
                label = f"[{backbone} trial {trial.number}, fold {fold + 1}/{config.folds.n_splits}]"
                model, _ = fit(config, hyper, backbone, data, seed, label, callbacks)
                views = predict_tta(model, stream(data.train, data.val, hyper), hyper.augment, hyper.tta, seed,
                                    where=augment_where(config.train.augment_on, hyper.augment))
                pred = task.from_model(views)
                scores.append(task.score(data.train.labels[data.val], pred))
            trial.set_user_attr("compute", {**describe(model), "started": started, "finished": time.time()})
            state, value = "COMPLETE", float(np.mean(scores))
            return value
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        finally:
            (frozen,) = [t for t in study.get_trials(deepcopy=False) if t.number == trial.number]
            tracker.summarize({"state": state, "value": value, "intermediate_values": {str(k): v for k, v in frozen.intermediate_values.items()}})


def _retry_failed(study: optuna.Study, max_retry: int) -> int:
    """Enqueue the parameters of each failed trial not yet retried, up to ``max_retry`` times per origin."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = 0
    for t in trials:
        if t.state != TrialState.FAIL or t.number in retried or not t.params:
            continue
        origin = t.user_attrs.get("retry_origin", t.number)
        attempts = sum(1 for u in trials if u.user_attrs.get("retry_origin") == origin)
        if attempts < max_retry:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "retry_origin": origin})
            queued += 1
    return queued


def trial_unit(config: Config, paths: Paths, backbone: str, name: str, trial: optuna.Trial) -> executors.Unit:
    """``trial`` as a unit of work: :func:`run_trial` reading the fold files, reaching the study through the storage
    URL (sent to a remote worker as ``OPTUNA_STORAGE``, whose own default would be a file in its temporary root)."""
    return executors.Unit(key=trial.number, what=f"{backbone} trial {trial.number}", fn=run_trial, config=config, paths=paths,
                          args=(backbone, name, trial._trial_id), inputs=Layout(config, paths).folds.every_file(),
                          env={"OPTUNA_STORAGE": storage_url(config, paths)})


def tune_backbone(config: Config, paths: Paths, backbone: str, worker: int = 0,
                  executor: executors.Executor | None = None) -> optuna.Study:
    """Run trials of ``backbone``'s study until ``tune.trials`` are finished (by any worker).

    ``worker`` offsets the sampler seed so that concurrent workers do not sample the same points. Trials are units of
    ``executor`` (default: the one ``tune.executor`` names, :mod:`compkit.executors`), as many at once as it has room
    for: one per GPU or ``train.workers`` on a CPU, each in its own process on its own slot, or as many Ray tasks
    as the cluster fits.
    """
    executor = executor or executors.make(config, config.tune.executor)
    storage, name, target = make_storage(config, paths), study_name(config, backbone), config.tune.trials
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction=tasks.for_config(config).scorer.direction,
        pruner=make_pruner(config),
        load_if_exists=True,
    )
    if isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)  # trials whose worker died: failed, then retried below
    requeued = _retry_failed(study, config.tune.max_retry)
    if worker == 0 and not study.trials:  # one worker seeds a new study, so two never run the same point
        study.enqueue_trial(config_point(config, backbone))
    # A fresh seed per resume and per worker: the seeded TPE would otherwise repeat its first samples.
    study.sampler = optuna.samplers.TPESampler(seed=config.tune.seed + len(study.trials) + 1000 * worker)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    console.info(f"[{backbone}] study {name}: {done}/{target} trials finished, {requeued} failed trial(s) queued again")

    def objective(trial: optuna.Trial) -> float:
        suggest(trial, config.tune.space_for(backbone), BACKBONES[backbone].min_size)
        start = time.perf_counter()
        value = executor.run(trial_unit(config, paths, backbone, name, trial))
        console.info(f"[{backbone}] trial {trial.number}: {tasks.for_config(config).scorer.name} {value:.4f} in {time.perf_counter() - start:.0f}s")
        return value

    if done < target:
        _serial_ask(study, storage_url(config, paths))
        stop = optuna.study.MaxTrialsCallback(target, states=(*FINISHED, TrialState.RUNNING))
        study.optimize(objective, n_trials=target - done, callbacks=[stop], n_jobs=executor.capacity())
    export_best(study, config, paths, backbone)
    return study


def _serial_ask(study: optuna.Study, url: str) -> None:
    """Make ``study.ask`` (which ``optimize`` calls from each of its ``n_jobs`` threads) one caller at a time.

    Popping a queued trial (the config's own point, a retried one) reads its WAITING state, then sets it RUNNING.
    SQLite has no ``SELECT ... FOR UPDATE`` and pysqlite begins its transaction only at the write, so two callers
    could both pop it and run one trial twice; the second then fails with "Cannot tell a COMPLETE trial" (seen with
    two slots, and with two worker processes on one file). Threads take a lock; on SQLite, processes also take an
    exclusive ``flock`` beside the database (``<db>.ask.lock``). PostgreSQL's row lock keeps processes apart, and a
    journal file orders its writes itself.
    """
    ask, lock = study.ask, threading.Lock()
    across = FileLock(f"{url.removeprefix('sqlite:///')}.ask.lock", thread_local=False) if url.startswith("sqlite:///") else nullcontext()

    def serial(*args, **kwargs):
        with lock, across:
            return ask(*args, **kwargs)

    study.ask = serial


def export_best(study: optuna.Study, config: Config, paths: Paths, backbone: str) -> None:
    """Write ``runs/<competition>/best/<backbone>.json`` when the study has a complete trial."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    best = study.best_trial
    Layout(config, paths).tuned.write(
        backbone,
        {"study": study.study_name, "trial": best.number, "value": best.value, "metric": tasks.for_config(config).scorer.name,
         "params": trial_hyperparams(best.params)},
    )


def run(config: Config, paths: Paths, worker: int = 0) -> None:
    """Stage entry point: tune every backbone of ``train.backbones`` in turn."""
    Layout(config, paths).folds.read()  # fail fast when `make folds` has not run or its files are not a pair
    executor = executors.make(config, config.tune.executor)
    executor.check_storage(storage_url(config, paths))  # a file the cluster's other machines cannot reach: before any trial
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own per-trial lines say it shorter
    start, lines = time.perf_counter(), []
    for backbone in config.train.backbones:
        study = tune_backbone(config, paths, backbone, worker, executor)
        counts = _counts(study)
        best = f"best {study.best_value:.4f}" if counts["complete"] else "no complete trial"
        lines.append(f"{backbone} {best} ({counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed)")
    console.summary(f"tune: {'; '.join(lines)} in {time.perf_counter() - start:.0f}s; storage {storage_url(config, paths)}")


def _counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
    return {s: states.count(s) for s in ("complete", "pruned", "fail", "running", "waiting")}


def status(config: Config, paths: Paths) -> None:
    """``make tune-status``: per backbone, trial counts, the best value and params, parameter importances."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(config, paths)
    rows = []
    for backbone in config.train.backbones:
        try:
            study = optuna.load_study(study_name=study_name(config, backbone), storage=storage)
        except KeyError:
            console.info(f"[{backbone}] no study yet: run `make tune`")
            continue
        counts = _counts(study)
        row = {"backbone": backbone, **counts}
        if counts["complete"]:
            row.update(best=study.best_value, trial=study.best_trial.number)
            console.info(f"[{backbone}] best params: {study.best_params}")
        if counts["complete"] >= 2:
            importance = optuna.importance.get_param_importances(study)
            console.info(f"[{backbone}] importance: " + ", ".join(f"{k} {v:.2f}" for k, v in importance.items()))
        rows.append(row)
    if rows:
        console.table(pd.DataFrame(rows).fillna(""), title=f"Optuna studies ({storage_url(config, paths)})")
    console.summary(f"tune-status: {len(rows)} of {len(config.train.backbones)} backbones have a study")
