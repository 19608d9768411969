"""Model fitting, shared by the train and tune stages: a fold's rows, the input pipeline, the optimiser,
the loss, and :func:`fit`. Not a stage: it writes nothing; train.py saves what it returns, tune.py scores it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from compkit import console, finetune, tasks
from compkit.artifacts import Layout
from compkit.config import Config, Hyper, Paths
from compkit.data import Images, check_test_ids, load_test, load_train
from compkit.errors import CompkitError, shown
from compkit.foldfiles import check_folds


def no_decay_variables(model) -> list:
    """The trainable variables weight decay leaves alone: the 1-D ones (biases, BatchNorm gamma and beta).

    timm's rule (``param_groups_weight_decay``: no decay for ``ndim <= 1``), after Loshchilov & Hutter,
    "Decoupled Weight Decay Regularization" (ICLR 2019), which decays weights, not shifts and scales.
    """
    return [v for v in model.trainable_variables if len(v.shape) <= 1]


def cosine_schedule(hyper: Hyper, steps_per_epoch: int):
    """Cosine decay to 0 over the epochs (Loshchilov & Hutter, SGDR, ICLR 2017), after ``warmup_epochs`` of linear warm-up.

    With a warm-up it is the one-cycle shape (Smith & Topin, "Super-Convergence", 2019; fastai's ``fit_one_cycle``):
    from ``learning_rate / 25`` (fastai's ``div_factor``) up to ``learning_rate``, then down to 0 by the last step.
    Keras' ``CosineDecay`` with ``warmup_target``; learning rates per optimizer step (float32). A fine-tuning phase
    shorter than the warm-up warms up for all but its last epoch.
    """
    import keras

    lr, warmup_epochs = hyper.learning_rate, min(hyper.warmup_epochs, hyper.epochs - 1)
    decay = (hyper.epochs - warmup_epochs) * steps_per_epoch
    if not warmup_epochs:
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=decay)
    return keras.optimizers.schedules.CosineDecay(lr / 25, decay_steps=decay, warmup_target=lr,
                                                  warmup_steps=warmup_epochs * steps_per_epoch)


def _optimizer(hyper: Hyper, steps_per_epoch: int):
    import keras

    lr = hyper.learning_rate
    if hyper.lr_schedule == "cosine":
        lr = cosine_schedule(hyper, steps_per_epoch)
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


ROW, SOURCE = "__row", "__source"  # a streamed element's row index and the index of its split (see :func:`stream_rows`)


def stream_rows(parts: list[tuple[Images, np.ndarray]], hyper: Hyper):
    """The per-row part of a streamed pipeline and its per-batch load map, for ``parts`` (split, (n,) rows) in order.

    Returns:
        (dict of (n,) arrays: :data:`SOURCE` (index into ``parts``), :data:`ROW` (index into that split's images)
        and each embedded column (str); ``load``: a batch of that dict -> the model's inputs, ``"image"`` (B, H, W, C)
        uint8 0-255 gathered from the splits' images (memory maps: :class:`compkit.cache.Gather`); no cast on the CPU:
        the model (its input is float32) or the augmentation casts, where it runs).
    """
    import tensorflow as tf

    from compkit.cache import Gather

    elements = {
        SOURCE: np.concatenate([np.full(len(rows), i, np.int32) for i, (_, rows) in enumerate(parts)]),
        ROW: np.concatenate([np.asarray(rows, np.int64) for _, rows in parts]),
        **{c: np.concatenate([split.extras[c].astype(str).to_numpy()[rows] for split, rows in parts]) for c in hyper.embed},
    }
    gather, shape = Gather([split.images for split, _ in parts]), parts[0][0].images.shape[1:]

    def load(batch: dict) -> dict:
        image = tf.numpy_function(gather, [batch[SOURCE], batch[ROW]], tf.uint8, stateful=False)
        image.set_shape((None, *shape))
        return {"image": image, **{c: batch[c] for c in hyper.embed}}

    return elements, load


def stream(split: Images, rows: np.ndarray, hyper: Hyper, targets: np.ndarray | None = None):
    """``rows`` of ``split`` as a tf.data pipeline of model-input batches (:func:`model_inputs`' dict, the image uint8), in order,
    read from its images by index per batch: resident memory O(batch), whatever the split's size.
    With ``targets`` ((n, D) float32, the rows' training targets: :meth:`compkit.tasks.Task.targets`) it yields
    (inputs, (B, D) targets) pairs.

    Batches have ``hyper.batch_size`` rows, for validation and prediction (OOF, holdout, test, TTA views) alike: a forward
    pass over a training-sized batch holds fewer activations than the training step that keeps them for the backward
    pass, so predicting never needs more memory than training did (at 224 px a batch of 256 did: issue 14).
    """
    import tensorflow as tf

    elements, load = stream_rows([(split, rows)], hyper)
    if targets is None:
        ds = tf.data.Dataset.from_tensor_slices(elements).batch(hyper.batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = tf.data.Dataset.from_tensor_slices((elements, targets)).batch(hyper.batch_size)
        ds = ds.map(lambda x, y: (load(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return bounded(ds.prefetch(tf.data.AUTOTUNE), hyper)


def model_seed(config: Config, fold: int, seed: int = 0) -> int:
    """The random seed of fold ``fold``'s model number ``seed`` (of ``train.seeds``): its initialisation, data order
    and TTA views: ``train.seed + fold + 1000 * seed``."""
    return config.train.seed + fold + 1000 * seed


def predict_rows(model, split: Images, rows: np.ndarray, hyper: Hyper, seed: int, task: tasks.Task, where: str) -> np.ndarray:
    """``model``'s (n, D) predictions (``task.from_model``) of ``rows`` of ``split``: the mean over ``hyper.tta`` views
    (:func:`compkit.augment.predict_tta`, views drawn from ``seed``, augmentation ``where``: ``"pipeline"`` or
    ``"device"``), streamed in ``hyper.batch_size`` batches (:func:`stream`). `make train` writes a fold's OOF,
    holdout and test predictions with it, `compkit predict` a fold model's test predictions: the same views."""
    from compkit.augment import predict_tta

    return task.from_model(predict_tta(model, stream(split, rows, hyper), hyper.augment, hyper.tta, seed, where=where))


def bounded(ds, hyper: Hyper):
    """``ds`` with tf.data's autotuning held to ``hyper.pipeline_ram_mb`` MiB of buffers (``AutotuneOptions.ram_budget``;
    TF's default: half the machine's RAM) and parallel maps starting from one call in flight (``initial_parallelism``,
    TF's default 16: 16 batches in flight before autotuning has measured anything, which at 224 px is 0.6 GB of float32
    images at batch 64 and 2.4 GB at batch 256; TF's docs advise 1 for memory-sensitive pipelines).
    Autotuning still raises parallelism and prefetch within the budget; the batches themselves are unchanged."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.ram_budget = hyper.pipeline_ram_mb * 2**20
    options.autotune.initial_parallelism = 1
    return ds.with_options(options)


def training_set(data: FoldData, hyper: Hyper, seed: int, where: str = "pipeline"):
    """:func:`_dataset` over the fold's training rows (``fit`` then ``pseudo``), streamed from the splits' images."""
    parts, targets = data.fit_rows()
    elements, load = stream_rows(parts, hyper)
    return _dataset(elements, targets, hyper, seed, load, where)


def vocabularies(train: Images, hyper: Hyper) -> dict[str, list[str]]:
    """The sorted train values of each embedded column (test-only values fall in the out-of-vocabulary slot)."""
    return {column: sorted(train.extras[column].astype(str).unique()) for column in hyper.embed}


def _dataset(inputs: dict[str, np.ndarray], targets: np.ndarray, hyper: Hyper, seed: int, load=None, where: str = "pipeline"):
    """The training pipeline: shuffled (per epoch), batched, loaded, augmented or given its augmentation's parameters
    by a parallel map, prefetched.

    ``inputs`` are (n, ...) arrays per row: the model's inputs themselves, or the row indices a ``load`` map
    (:func:`stream`'s) turns into them per batch. Nothing is cached: the rows are on disk or in memory already.
    Yields (inputs dict, (B, D) float32 targets) batches. ``where`` (:func:`compkit.devices.augment_where`):
    ``"pipeline"`` augments here (:func:`compkit.augment.training`: float32 images); ``"device"`` leaves the images as
    gathered (uint8) and adds each batch's transform parameters (:func:`compkit.augment.with_params`, drawn from a
    per-batch seed of ``Dataset.random``, new each epoch) for the training step to apply.
    """
    import tensorflow as tf

    from compkit.augment import on_device, training, with_params

    ds = tf.data.Dataset.from_tensor_slices((inputs, targets))
    ds = ds.shuffle(len(targets), seed=seed, reshuffle_each_iteration=True).batch(hyper.batch_size)
    if load is not None:
        ds = ds.map(lambda x, y: (load(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    if where == "device" and on_device(hyper.augment):
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        size = tuple(ds.element_spec[0]["image"].shape[1:3])
        ds = tf.data.Dataset.zip((ds, seeds)).map(with_params(hyper.augment, size), num_parallel_calls=tf.data.AUTOTUNE)
    transform = training(hyper.augment, seed) if where == "pipeline" else None
    if transform:
        ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return bounded(ds.prefetch(tf.data.AUTOTUNE), hyper)


def _epoch_logger(label: str, epochs: int, phase: str = finetune.SCRATCH, metric: str = "accuracy"):
    """The progress-line callback; ``metric`` is the task's logged Keras metric (:attr:`compkit.tasks.Task.epoch_metric`)."""
    import keras

    short = "acc" if metric == "accuracy" else metric

    class EpochLogger(keras.callbacks.Callback):
        """One progress line per epoch: losses, accuracies, learning rate, seconds; adds learning rate and phase to the logs."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            scores = (f"val_loss {logs['val_loss']:.4f} val_{short} {logs.get('val_' + metric, np.nan):.4f}"
                      if "val_loss" in logs else "not validated")
            for key in [k for k in logs if not k.startswith("val_")]:  # an epoch validation = last_epoch skips:
                logs.setdefault(f"val_{key}", np.nan)  # NaN columns, so history.csv keeps one row per epoch
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            console.info(
                f"{label} epoch {epoch + 1}/{epochs}  loss {logs.get('loss', np.nan):.4f} "
                f"{short} {logs.get(metric, np.nan):.4f}  {scores}  lr {lr:.2e}  {time.perf_counter() - self.start:.1f}s"
                + ("" if phase == finetune.SCRATCH else f"  {phase}")
            )
            logs["learning_rate"] = lr
            logs["phase"] = phase  # history.csv and W&B (epoch/phase) tell the head-only and fine-tuned epochs apart

    return EpochLogger()


@dataclass(frozen=True)
class FoldData:
    """The rows of one fold: ``fit`` trains, ``val`` early-stops and is predicted OOF, ``held`` is the holdout.

    ``fit``, ``val`` and ``held`` are (n,) int row indices into ``train``; ``targets`` is (N, D) float32, the training
    targets of every train row (:meth:`compkit.tasks.Task.targets`: one-hot rows for a multiclass task).
    ``pseudo`` are (p,) int row indices into ``test`` trained on too, with (p,) ``pseudo_targets`` ((p, D) float32;
    see pseudo.py; empty without ``pseudo.csv``). ``soft`` is None, or for a distilled student (distill.py) the (N, 2D)
    float32 targets of every train row, labels and the teacher's softened probabilities
    (:meth:`compkit.tasks.Task.distill_targets`; the teacher's half NaN on every row but ``fit``'s, so no other row's
    teacher value is there to learn from): the fitted rows learn from them, pseudo-labelled rows from their label
    twice; validation keeps ``targets``.
    """

    train: Images
    test: Images | None
    fit: np.ndarray
    val: np.ndarray
    held: np.ndarray
    targets: np.ndarray
    pseudo: np.ndarray
    pseudo_targets: np.ndarray
    soft: np.ndarray | None = None

    def _fit_targets(self) -> np.ndarray:
        """(n + p, D) float32 targets of ``fit`` then ``pseudo`` ((n + p, 2D) for a student)."""
        if self.soft is None:
            return np.concatenate([self.targets[self.fit], self.pseudo_targets])
        return np.concatenate([self.soft[self.fit], np.tile(self.pseudo_targets, 2)])

    def fit_rows(self) -> tuple[list[tuple[Images, np.ndarray]], np.ndarray]:
        """The training rows as (split, rows) parts, ``fit`` then ``pseudo``, and their float32 targets."""
        return [(self.train, self.fit), *([(self.test, self.pseudo)] if len(self.pseudo) else [])], self._fit_targets()

    def fit_set(self, hyper: Hyper) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The training rows' model inputs and float32 targets: ``fit`` then ``pseudo``."""
        inputs = model_inputs(self.train, self.fit, hyper)
        if len(self.pseudo):
            extra = model_inputs(self.test, self.pseudo, hyper)
            inputs = {key: np.concatenate([inputs[key], extra[key]]) for key in inputs}
        return inputs, self._fit_targets()


def fold_data(config: Config, paths: Paths, fold: int, teacher: tuple[np.ndarray, np.ndarray] | None = None) -> FoldData:
    """Read train, test and the fold files, and split train's rows (and pseudo-labelled test rows) for ``fold``; with
    ``teacher`` ((M,) ids, (M, D) probabilities: the selected blend's OOF predictions) the student's ``soft`` targets.

    Raises:
        CompkitError: bad fold files or test ids; a fitted row has no teacher prediction.
    """
    comp = config.competition
    layout = Layout(config, paths)
    train, test = load_train(paths.data, comp, paths.cache), load_test(paths.data, comp, paths.cache)  # memory maps of the cache
    folds, holdout = layout.folds.read()
    check_folds(folds, holdout, train.ids, config, paths)
    if test is not None:
        check_test_ids(train, test, paths.data, comp)
    fold_of = dict(zip(folds[comp.id_key], folds["fold"]))
    row_fold = np.array([fold_of.get(i, -1) for i in train.ids])
    pseudo, pseudo_labels = layout.folds.read_pseudo(train, test, fold)
    task, fit_rows = tasks.for_config(config), np.flatnonzero((row_fold >= 0) & (row_fold != fold))
    return FoldData(
        train=train,
        test=test,
        pseudo=pseudo,
        pseudo_targets=task.targets(pseudo_labels),
        fit=fit_rows,
        val=np.flatnonzero(row_fold == fold),
        held=np.flatnonzero(pd.Series(train.ids).isin(holdout[comp.id_key]).to_numpy()),  # hashed, not np.isin's O(n * m)
        targets=task.targets(train.labels),
        soft=None if teacher is None else _soft_targets(config, paths, train, fit_rows, teacher),
    )


def _soft_targets(config: Config, paths: Paths, train: Images, fit_rows: np.ndarray, teacher: tuple) -> np.ndarray:
    """(N, 2D) float32 student targets of train's rows (:attr:`FoldData.soft`), from the teacher's (ids, predictions)."""
    ids, pred = teacher
    row = pd.Series(np.arange(len(ids)), index=ids).reindex(train.ids).to_numpy()
    missing = fit_rows[np.isnan(row[fit_rows])]
    if len(missing):
        raise CompkitError(f"{Layout(config, paths).ensemble.dir / 'oof.csv'}: no teacher prediction of train id "
                           f"{shown(train.ids[missing[0]])} ({len(missing)} fitted rows); rerun `make ensemble` on the current folds")
    full = np.full((len(train.ids), pred.shape[1]), np.nan)  # rows outside the fitted ones keep no teacher value
    full[fit_rows] = pred[row[fit_rows].astype(np.int64)]
    return tasks.for_config(config).distill_targets(train.labels, full, config.distill.temperature)


def fit(config: Config, hyper: Hyper, backbone: str, data: FoldData, seed: int, label: str, callbacks: list = ()):
    """Build, compile and fit ``backbone`` on ``data.fit``, early-stopping on ``data.val``.

    ``seed`` seeds the shuffling of the training rows; ``label`` prefixes the per-epoch progress lines;
    ``callbacks`` are added to early stopping (e.g. Optuna's pruning callback). A student (``data.soft``) learns
    through the task's distillation loss (``distill.temperature``, ``distill.alpha``) instead of ``train.loss``. The model is built under
    ``train.precision``'s dtype policy and ``train.strategy`` (:mod:`compkit.devices`); the augmentation runs where
    ``train.augment_on`` says (:func:`compkit.devices.augment_where`: on the device, the model is fitted through
    :func:`compkit.augment.device_trainer`), computes in float32, and the softmax output is float32.

    With pretrained weights the epochs are split into phases (head, then fine-tune: see finetune.py), each its
    own ``model.fit`` with fresh callbacks.

    Returns:
        (model with the best epoch's weights (of the last phase), history DataFrame with one row per epoch:
        epoch (1-based), loss, accuracy, val_loss, val_accuracy, learning_rate, phase).
    """
    import keras

    from compkit import devices
    from compkit.augment import device_trainer, on_device
    from compkit.backbones import build_model
    from compkit.initialisation import whitening_sample

    comp, task = config.competition, tasks.for_config(config)
    keras.mixed_precision.set_global_policy(devices.precision(config.train.precision))
    strategy, where = devices.strategy(config.train.strategy), devices.augment_where(config.train.augment_on, hyper.augment)
    with strategy.scope():
        model = build_model(backbone, comp.image_shape, task.head, hyper, vocabularies(data.train, hyper),
                            whitening_sample(data.train.images, data.fit, hyper.whiten) if hyper.whiten else None)
        trainer = device_trainer(model, hyper.augment) if where == "device" and on_device(hyper.augment) else model
    steps = int(np.ceil((len(data.fit) + len(data.pseudo)) / hyper.batch_size))
    dataset = training_set(data, hyper, seed, where)
    validation = stream(data.train, data.val, hyper, data.targets[data.val])
    histories = []
    for phase in finetune.phases(hyper):  # one phase from scratch; head, then fine-tune, with pretrained weights
        finetune.set_phase(model, hyper, phase)
        with strategy.scope():
            optimizer = _optimizer(hyper.model_copy(update={"epochs": phase.epochs}), steps)  # a cosine schedule spans its phase
            optimizer = finetune.phase_optimizer(optimizer, model, hyper, phase)
            optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))  # before the optimizer is built
            # loss: the task's (train.loss), with label smoothing where it applies (focal: Lin et al., 2017, gamma 2)
            loss = task.loss(hyper.label_smoothing) if data.soft is None else task.distill_loss(config.distill.temperature, config.distill.alpha)
            trainer.compile(optimizer=optimizer, loss=loss, metrics=task.keras_metrics(),
                            run_eagerly=config.train.run_eagerly)
        history = trainer.fit(
            dataset,
            validation_data=validation,
            validation_freq=1 if hyper.validation == "each_epoch" else [phase.end],
            initial_epoch=phase.start,
            epochs=phase.end,
            callbacks=_phase_callbacks(hyper, label, phase, callbacks, task.epoch_metric),
            class_weight=task.class_weight(config.train.class_weight, data.train.labels[data.fit]),
            shuffle=False,  # the tf.data pipeline shuffles
            verbose=0,
        )
        frame = pd.DataFrame(history.history)
        frame.insert(0, "epoch", np.asarray(history.epoch) + 1)  # a phase stopped early leaves a gap before the next
        histories.append(frame)
    return model, pd.concat(histories, ignore_index=True)


def _phase_callbacks(hyper: Hyper, label: str, phase, extra: list, metric: str) -> list:
    """Fresh callbacks for one phase: progress line, EMA swap, early stopping, plateau schedule, then ``extra``.

    Early stopping keeps the best epoch of each phase, so the final weights are the fine-tune phase's best.
    """
    import keras

    callbacks = [
        _epoch_logger(label, hyper.epochs, phase.name, metric),
        # validate, early-stop and keep the best epoch on the averaged weights
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if hyper.ema else []),
        # with validation = last_epoch the phase's last epoch is its only validated one, so its weights are kept as they are
        *([keras.callbacks.EarlyStopping(monitor="val_loss", patience=hyper.patience, restore_best_weights=True)]
          if hyper.validation == "each_epoch" else []),
        *extra,
    ]
    if hyper.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, hyper.patience // 3))
        )
    return callbacks
