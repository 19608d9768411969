"""Stage 2: out-of-fold (OOF) models, one per backbone x fold.

For fold k a model trains on the other folds, early-stops on fold k and predicts fold k (OOF),
the holdout and, when the competition's test file exists, test. Each fold's artefacts land in
``runs/<competition>/<backbone>/fold<k>/``::

    model.keras    the weights restored from the best epoch (lowest val_loss); with ``train.seeds`` = n > 1
                   also model-seed1.keras .. model-seed<n-1>.keras, one per extra seed
    history.csv    epoch, loss, accuracy, val_loss, val_accuracy, learning_rate, seed
    oof.csv        id, p_<class>...  for fold k's rows (the mean over seeds, each with ``tta`` views)
    holdout.csv    id, p_<class>...  for every holdout row
    test.csv       id, p_<class>...  for every test row (only with a test file)
    fold.json      scores, epochs, seconds, peak memory, hyperparameters, lineage; written last:
                   its presence marks the fold done

A finished fold is skipped on rerun, so a crash loses at most the fold in progress. Its lineage
(digests of the config parts and fold files it was made from, and of the ids it was fit on and
validated on; see lineage.py) must match the current ones, else the run stops instead of mixing
stale folds with new ones. A fold in progress is claimed by a lock file (``fold<k>/.lock``,
holding the pid), so two `make train` at once share the folds, and a killed run's locks are
taken over. Each fold runs in a fresh process by default (``train.process_per_fold``), which
keeps memory flat fold after fold.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compkit import console
from compkit.augment import predict_tta
from compkit.config import Config, Hyper, Paths
from compkit.data import Images, check_test_ids, load_test, load_train
from compkit.errors import CompkitError
from compkit.folds import check_folds, load_folds
from compkit.io import atomic_path, claim, lock_owner, read_json, read_proba, release, write_csv, write_json, write_proba
from compkit.lineage import clean_hint, config_digest, folds_digest, ids_digest, read_lineage, stale_reason
from compkit.metrics import score_table
from compkit.process import in_fresh_process
from compkit.pseudo import load_pseudo
from compkit.tracking import tracked


def fold_dir(paths: Paths, backbone: str, fold: int) -> Path:
    """``runs/<competition>/<backbone>/fold<fold>/``."""
    return paths.runs / backbone / f"fold{fold}"


def is_done(paths: Paths, backbone: str, fold: int) -> bool:
    """True when the fold's last artefact, ``fold.json``, exists."""
    return (fold_dir(paths, backbone, fold) / "fold.json").is_file()


def lock_path(paths: Paths, backbone: str, fold: int) -> Path:
    """``fold<k>/.lock``: exists while a process trains the fold; holds that process's pid."""
    return fold_dir(paths, backbone, fold) / ".lock"


def no_decay_variables(model) -> list:
    """The trainable variables weight decay leaves alone: the 1-D ones (biases, BatchNorm gamma and beta).

    timm's rule (``param_groups_weight_decay``: no decay for ``ndim <= 1``), after Loshchilov & Hutter,
    "Decoupled Weight Decay Regularization" (ICLR 2019), which decays weights, not shifts and scales.
    """
    return [v for v in model.trainable_variables if len(v.shape) <= 1]


def _optimizer(hyper: Hyper, steps_per_epoch: int):
    import keras

    lr = hyper.learning_rate
    if hyper.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=hyper.epochs * steps_per_epoch)
    wd = hyper.weight_decay or None
    ema = {"use_ema": hyper.ema > 0, "ema_momentum": hyper.ema or 0.99}
    if hyper.optimizer == "adam":
        return keras.optimizers.Adam(lr, weight_decay=wd, **ema)
    if hyper.optimizer == "nadam":
        return keras.optimizers.Nadam(lr, weight_decay=wd, **ema)
    if hyper.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=hyper.weight_decay, **ema)
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=wd, **ema)


def model_inputs(split: Images, rows: np.ndarray, hyper: Hyper) -> dict[str, np.ndarray]:
    """The model's inputs for ``rows`` of ``split``: ``"image"`` (n, H, W, C) float32 0-255 and each embedded column (n,) str."""
    inputs = {"image": split.images[rows].astype(np.float32)}
    for column in hyper.embed:
        inputs[column] = split.extras[column].astype(str).to_numpy()[rows]
    return inputs


def vocabularies(train: Images, hyper: Hyper) -> dict[str, list[str]]:
    """The sorted train values of each embedded column (test-only values fall in the out-of-vocabulary slot)."""
    return {column: sorted(train.extras[column].astype(str).unique()) for column in hyper.embed}


def _dataset(inputs: dict[str, np.ndarray], onehot: np.ndarray, hyper: Hyper, seed: int):
    """The training pipeline: cached, shuffled, batched, augmented by a parallel map, prefetched.

    Yields (inputs dict, (B, K) float32 one-hot) batches; the augmentation is :func:`compkit.augment.training`.
    """
    import tensorflow as tf

    from compkit.augment import training

    ds = tf.data.Dataset.from_tensor_slices((inputs, onehot)).cache()
    ds = ds.shuffle(len(onehot), seed=seed, reshuffle_each_iteration=True).batch(hyper.batch_size)
    transform = training(hyper.augment, seed)
    if transform:
        ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _epoch_logger(label: str, epochs: int):
    import keras

    class EpochLogger(keras.callbacks.Callback):
        """One progress line per epoch: losses, accuracies, learning rate, seconds."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            console.info(
                f"{label} epoch {epoch + 1}/{epochs}  loss {logs.get('loss', np.nan):.4f} "
                f"acc {logs.get('accuracy', np.nan):.4f}  val_loss {logs.get('val_loss', np.nan):.4f} "
                f"val_acc {logs.get('val_accuracy', np.nan):.4f}  lr {lr:.2e}  {time.perf_counter() - self.start:.1f}s"
            )
            logs["learning_rate"] = lr

    return EpochLogger()


@dataclass(frozen=True)
class FoldData:
    """The rows of one fold: ``fit`` trains, ``val`` early-stops and is predicted OOF, ``held`` is the holdout.

    ``fit``, ``val`` and ``held`` are (n,) int row indices into ``train``; ``onehot`` is (N, K) float32.
    ``pseudo`` are (p,) int row indices into ``test`` trained on too, with (p,) int class indices
    ``pseudo_labels`` (see pseudo.py; empty without ``pseudo.csv``).
    """

    train: Images
    test: Images | None
    fit: np.ndarray
    val: np.ndarray
    held: np.ndarray
    onehot: np.ndarray
    pseudo: np.ndarray
    pseudo_labels: np.ndarray

    def fit_set(self, hyper: Hyper) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The training rows' model inputs and (n + p, K) float32 one-hot labels: ``fit`` then ``pseudo``."""
        inputs, onehot = model_inputs(self.train, self.fit, hyper), self.onehot[self.fit]
        if len(self.pseudo) == 0:
            return inputs, onehot
        extra = model_inputs(self.test, self.pseudo, hyper)
        inputs = {key: np.concatenate([inputs[key], extra[key]]) for key in inputs}
        return inputs, np.concatenate([onehot, np.eye(onehot.shape[1], dtype=np.float32)[self.pseudo_labels]])


def fold_data(config: Config, paths: Paths, fold: int) -> FoldData:
    """Read train, test and the fold files, and split train's rows (and pseudo-labelled test rows) for ``fold``."""
    comp = config.competition
    train, test = load_train(paths.data, comp), load_test(paths.data, comp)
    folds, holdout = load_folds(config, paths)
    check_folds(folds, holdout, train.ids, config, paths)
    if test is not None:
        check_test_ids(train, test, paths.data, comp)
    fold_of = dict(zip(folds[comp.id_key], folds["fold"]))
    row_fold = np.array([fold_of.get(i, -1) for i in train.ids])
    pseudo, pseudo_labels = load_pseudo(config, paths, train, test, fold)
    return FoldData(
        train=train,
        test=test,
        pseudo=pseudo,
        pseudo_labels=pseudo_labels,
        fit=np.flatnonzero((row_fold >= 0) & (row_fold != fold)),
        val=np.flatnonzero(row_fold == fold),
        held=np.flatnonzero(np.isin(train.ids, holdout[comp.id_key].to_numpy())),
        onehot=np.eye(len(comp.classes), dtype=np.float32)[train.labels],
    )


def _loss(config: Config, hyper: Hyper):
    """Cross-entropy, or focal loss (Lin et al., 2017, gamma 2) for imbalanced classes; both with label smoothing."""
    import keras

    if config.train.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(label_smoothing=hyper.label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=hyper.label_smoothing)


def _class_weight(config: Config, data: FoldData) -> dict[int, float] | None:
    """``balanced`` class weights of the fitted rows (sklearn: n / (k * count)), or None."""
    if config.train.class_weight == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    labels = data.train.labels[data.fit]
    classes = np.arange(len(config.competition.classes))
    return dict(enumerate(compute_class_weight("balanced", classes=classes, y=labels).tolist()))


def _strategy():
    """MirroredStrategy over several GPUs, else the default (one GPU or the CPU)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def fit(config: Config, hyper: Hyper, backbone: str, data: FoldData, seed: int, label: str, callbacks: list = ()):
    """Build, compile and fit ``backbone`` on ``data.fit``, early-stopping on ``data.val``.

    ``seed`` seeds the shuffling of the training rows; ``label`` prefixes the per-epoch progress lines;
    ``callbacks`` are added to early stopping (e.g. Optuna's pruning callback).

    Returns:
        (model with the best epoch's weights, history DataFrame with one row per epoch:
        epoch, loss, accuracy, val_loss, val_accuracy, learning_rate).
    """
    import keras
    import tensorflow as tf

    from compkit.backbones import build_model

    comp = config.competition
    if config.train.mixed_precision and tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    with _strategy().scope():
        model = build_model(backbone, comp.image_shape, len(comp.classes), hyper, vocabularies(data.train, hyper))
        optimizer = _optimizer(hyper, int(np.ceil((len(data.fit) + len(data.pseudo)) / hyper.batch_size)))
        optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))  # before the optimizer is built
        model.compile(
            optimizer=optimizer,
            loss=_loss(config, hyper),
            metrics=["accuracy"],
        )
    callbacks = [
        _epoch_logger(label, hyper.epochs),
        # validate, early-stop and keep the best epoch on the averaged weights
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if hyper.ema else []),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=hyper.patience, restore_best_weights=True),
        *callbacks,
    ]
    if hyper.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, hyper.patience // 3))
        )
    history = model.fit(
        _dataset(*data.fit_set(hyper), hyper, seed),
        validation_data=(model_inputs(data.train, data.val, hyper), data.onehot[data.val]),
        epochs=hyper.epochs,
        callbacks=callbacks,
        class_weight=_class_weight(config, data),
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=0,
    )
    hist = pd.DataFrame(history.history)
    hist.insert(0, "epoch", np.arange(1, len(hist) + 1))
    return model, hist


def best_params_path(paths: Paths, backbone: str) -> Path:
    """``runs/<competition>/best/<backbone>.json``: the best Optuna trial of ``backbone`` (see tune.py)."""
    return paths.runs / "best" / f"{backbone}.json"


def tuned_hyper(config: Config, paths: Paths, backbone: str) -> Hyper:
    """``config.hyper(backbone)`` with the best tuned parameters on top, unless ``train.use_tuned`` is false."""
    path = best_params_path(paths, backbone)
    if not (config.train.use_tuned and path.is_file()):
        return config.hyper(backbone)
    return config.hyper(backbone).with_params(read_json(path)["params"])


def train_fold(config: Config, paths: Paths, backbone: str, fold: int) -> dict:
    """Train ``backbone`` on every fold but ``fold``; write the fold's artefacts (module docstring).

    Returns:
        The contents of ``fold.json``: ``oof_accuracy``, ``oof_macro_f1``, ``oof_log_loss``, ``epochs``, ``best_epoch``,
        ``seconds``, ``peak_rss_mb`` (this process's peak resident memory), ``hyper``, and ``lineage``:
        ``config`` and ``folds`` digests (:mod:`compkit.lineage`), ``fit_ids`` / ``val_ids`` (digests of
        the sorted ids the model was fit on / early-stopped on and predicted OOF) and their counts.
    """
    import keras
    import tensorflow as tf

    comp = config.competition
    hyper = tuned_hyper(config, paths, backbone)
    start = time.perf_counter()
    seed = config.train.seed + fold
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    lineage = {"config": config_digest(config, hyper), "folds": folds_digest(paths)}
    data = fold_data(config, paths, fold)
    label = f"[{backbone} fold {fold + 1}/{config.folds.n_splits}]"
    extra = {"backbone": backbone, "fold": fold, "hyper": hyper.model_dump()}
    with tracked(config, paths, "train", f"{backbone}-fold{fold}", extra) as tracker:
        out, train, seeds = fold_dir(paths, backbone, fold), data.train, config.train.seeds
        sets = {"oof.csv": (train, data.val), "holdout.csv": (train, data.held)}
        if data.test is not None:
            sets["test.csv"] = (data.test, np.arange(len(data.test.ids)))
        probas = {name: np.zeros((len(rows), len(comp.classes)), np.float32) for name, (_, rows) in sets.items()}
        inputs = {name: model_inputs(split, rows, hyper) for name, (split, rows) in sets.items()}  # once, for every seed
        histories = []
        for s in range(seeds):  # seed averaging: each model's probabilities weigh 1 / seeds
            model_seed = seed + 1000 * s
            keras.utils.set_random_seed(model_seed)
            model, hist = fit(config, hyper, backbone, data, model_seed,
                              label if seeds == 1 else f"{label[:-1]} seed {s + 1}/{seeds}]", tracker.keras_callback())
            with atomic_path(out / ("model.keras" if s == 0 else f"model-seed{s}.keras")) as tmp:
                model.save(tmp)
            histories.append(hist.assign(seed=s))
            for name, (_, rows) in sets.items():
                if len(rows):  # no holdout when the competition ships its test labels
                    probas[name] += predict_tta(model, inputs[name], hyper.augment, hyper.tta, model_seed) / seeds
        hist = pd.concat(histories, ignore_index=True)
        write_csv(hist, out / "history.csv")
        for name, (split, rows) in sets.items():
            write_proba(out / name, comp.id_key, split.ids[rows], probas[name], comp.classes)
        scores = score_table(train.labels[data.val], probas["oof.csv"])
        result = {
            "backbone": backbone,
            "fold": fold,
            **{f"oof_{k}": v for k, v in scores.items()},
            "epochs": len(hist),  # over all seeds
            "best_epoch": int(histories[0]["val_loss"].idxmin()) + 1,  # the first seed's
            "seeds": seeds,
            "seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "hyper": hyper.model_dump(),
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
        tracker.summarize({k: v for k, v in result.items() if k not in ("hyper", "lineage")})
        write_json(result, out / "fold.json")
    return result


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def load_oof(config: Config, paths: Paths, backbone: str) -> tuple[np.ndarray, np.ndarray]:
    """All folds' OOF predictions of ``backbone``: (N,) ids sorted ascending and (N, K) probabilities."""
    comp = config.competition
    parts = [
        read_proba(fold_dir(paths, backbone, k) / "oof.csv", comp.id_key, comp.classes)
        for k in range(config.folds.n_splits)
    ]
    ids = np.concatenate([p[0] for p in parts])
    order = np.argsort(ids, kind="stable")
    return ids[order], np.concatenate([p[1] for p in parts])[order]


def load_fold_mean(config: Config, paths: Paths, backbone: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Fold models' mean prediction of ``name`` (``holdout.csv`` or ``test.csv``): (N,) ids, (N, K) probabilities."""
    comp = config.competition
    parts = [
        read_proba(fold_dir(paths, backbone, k) / name, comp.id_key, comp.classes)
        for k in range(config.folds.n_splits)
    ]
    for k, (ids, _) in enumerate(parts[1:], start=1):
        if not np.array_equal(ids, parts[0][0]):
            raise CompkitError(f"{fold_dir(paths, backbone, k) / name}: ids differ from fold 0's; rerun `make train`")
    return parts[0][0], np.mean([p[1] for p in parts], axis=0)


def check_done_folds(config: Config, paths: Paths) -> None:
    """Refuse to go on when a finished fold was made from another config or other fold files than now.

    Raises:
        CompkitError: names the fold's ``fold.json``, what changed, and how to clean.
    """
    folds = folds_digest(paths)
    for backbone in config.train.backbones:
        expected = {"config": config_digest(config, tuned_hyper(config, paths, backbone)), "folds": folds}
        for fold in range(config.folds.n_splits):
            path = fold_dir(paths, backbone, fold) / "fold.json"
            reason = path.is_file() and stale_reason(read_lineage(path), expected, clean_hint(config, paths, backbone))
            if reason:
                raise CompkitError(f"{path}: {reason}")


def _train_claimed(config: Config, paths: Paths, backbone: str, fold: int) -> dict:
    """Train a fold this process holds the lock of, after deleting a killed run's half-written files."""
    for tmp in fold_dir(paths, backbone, fold).glob(".tmp-*"):
        tmp.unlink(missing_ok=True)
    if config.train.process_per_fold:
        return in_fresh_process(f"{backbone} fold {fold}", train_fold, config, paths, backbone, fold)
    return train_fold(config, paths, backbone, fold)


def run(config: Config, paths: Paths) -> None:
    """Stage entry point: train every unfinished backbone x fold, then print each backbone's OOF score.

    Folds locked by another live process are left to it; this run waits until they are done (or takes
    them over if that process dies), so every fold is trained once and the summary covers all of them.

    Raises:
        CompkitError: missing or stale fold files, a finished fold made from another config, a fold that failed.
    """
    folds, holdout = load_folds(config, paths)  # fail fast, before any process starts
    check_folds(folds, holdout, load_train(paths.data, config.competition).ids, config, paths)
    check_done_folds(config, paths)
    start, trained, skipped = time.perf_counter(), 0, 0
    pending = [(b, k) for b in config.train.backbones for k in range(config.folds.n_splits)]
    waiting: set = set()
    while pending:
        for backbone, fold in list(pending):
            label = f"[{backbone} fold {fold + 1}/{config.folds.n_splits}]"
            lock = lock_path(paths, backbone, fold)
            if not is_done(paths, backbone, fold) and not claim(lock):
                if (backbone, fold) not in waiting:
                    console.info(f"{label} being trained by process {lock_owner(lock)}, left to it")
                    waiting.add((backbone, fold))
                continue
            pending.remove((backbone, fold))
            try:
                if is_done(paths, backbone, fold):  # checked again: another process may have just finished it
                    skipped += 1
                    console.info(f"{label} done {'by another process' if (backbone, fold) in waiting else 'earlier'}, skipped")
                    continue
                result = _train_claimed(config, paths, backbone, fold)
            finally:
                release(lock)
            trained += 1
            console.info(
                f"{label} OOF accuracy {result['oof_accuracy']:.4f} macro-F1 {result['oof_macro_f1']:.4f} "
                f"log loss {result['oof_log_loss']:.4f} "
                f"({result['epochs']} epochs, best {result['best_epoch']}, {result['seconds']:.0f}s)"
            )
        if pending:
            time.sleep(1)
    check_done_folds(config, paths)  # folds another process finished must be from this config too
    scores, metric = [], config.competition.metric
    for backbone in config.train.backbones:
        folds = [read_json(fold_dir(paths, backbone, k) / "fold.json") for k in range(config.folds.n_splits)]
        scores.append(f"{backbone} {np.mean([f[f'oof_{metric}'] for f in folds]):.4f}")
    console.summary(
        f"train: {len(config.train.backbones)} backbones x {config.folds.n_splits} folds "
        f"({trained} trained, {skipped} skipped) in {time.perf_counter() - start:.0f}s; "
        f"mean fold OOF {metric}: {', '.join(scores)}"
    )
