"""The tasks' own Keras parts. The multi-head task's (:class:`compkit.tasks.Multihead`): the loss and the progress
metric on its one concatenated output, the heads' softmax outputs side by side ((B, sum K_h) float32, head h in columns
``offsets[h]:offsets[h + 1]``), against targets of the same shape (the heads' one-hot rows, mixed by MixUp / CutMix).
Knowledge distillation's loss (`make distill`, :func:`distill_loss`) on a softmax output.

All are Keras-serialisable (registered under ``compkit``, their configuration plain numbers), so a compiled
``model.keras`` saves; every reader loads models with ``compile=False`` and never needs them.
"""

from __future__ import annotations

import functools


def bounds(sizes: list[int]) -> list[tuple[int, int]]:
    """(start, end) columns of each head in the concatenated output, from the heads' class counts ``sizes``."""
    ends = [sum(sizes[:h + 1]) for h in range(len(sizes))]
    return [(end - size, end) for size, end in zip(sizes, ends)]


@functools.cache  # one class pair per process, registered once
def keras_parts():
    """``(HeadsLoss, HeadsAccuracy)``: the Keras classes, defined on first use (TensorFlow is imported here)."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="compkit")
    class HeadsLoss(keras.losses.Loss):
        """Per row: the sum over heads of ``weights[h]`` times head h's categorical cross-entropy (focal with
        ``focal``: Lin et al., 2017, gamma 2, Keras' alpha 0.25) on its columns, with ``label_smoothing``."""

        def __init__(self, sizes: list[int], weights: list[float], label_smoothing: float = 0.0, focal: bool = False,
                     name: str = "heads_crossentropy", **kwargs):
            super().__init__(name=name, **kwargs)
            self.sizes, self.weights = [int(s) for s in sizes], [float(w) for w in weights]
            self.label_smoothing, self.focal = float(label_smoothing), bool(focal)

        def call(self, y_true, y_pred):
            part = keras.losses.categorical_focal_crossentropy if self.focal else keras.losses.categorical_crossentropy
            losses = [weight * part(y_true[:, start:end], y_pred[:, start:end], label_smoothing=self.label_smoothing)
                      for weight, (start, end) in zip(self.weights, bounds(self.sizes))]
            return ops.sum(ops.stack(losses, axis=0), axis=0)

        def get_config(self):
            return {**super().get_config(), "sizes": self.sizes, "weights": self.weights,
                    "label_smoothing": self.label_smoothing, "focal": self.focal}

    @keras.saving.register_keras_serializable(package="compkit")
    class HeadsAccuracy(keras.metrics.Mean):
        """The mean over heads of each head's argmax being the target's (a mixed target: its larger share)."""

        def __init__(self, sizes: list[int], name: str = "accuracy", dtype=None):
            super().__init__(name=name, dtype=dtype)
            self.sizes = [int(s) for s in sizes]

        def update_state(self, y_true, y_pred, sample_weight=None):
            hits = [ops.cast(ops.argmax(y_true[:, start:end], axis=-1) == ops.argmax(y_pred[:, start:end], axis=-1), "float32")
                    for start, end in bounds(self.sizes)]
            return super().update_state(ops.mean(ops.stack(hits, axis=0), axis=0), sample_weight)

        def get_config(self):
            return {**super().get_config(), "sizes": self.sizes}

    return HeadsLoss, HeadsAccuracy


@functools.cache
def distill_loss():
    """``DistillLoss``, the Keras class (defined on first use): Hinton, Vinyals & Dean (2015), "Distilling the Knowledge
    in a Neural Network", on a (B, K) float32 softmax output p. Targets are (B, 2K): the labels' one-hot rows y, then
    the teacher's probabilities already softened, q_T = softmax(log q / T) (:meth:`compkit.tasks.Task.distill_targets`).
    Per row: ``alpha`` T^2 CE(q_T, softmax(log p / T)) + (1 - alpha) CE(y, p); the T^2 keeps the soft term's gradients
    at the hard term's scale as T changes (Hinton et al., section 2). A (B, K) target (validation rows) is scored by
    CE(y, p) alone, so val_loss and early stopping judge the labels, as without a teacher."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="compkit")
    class DistillLoss(keras.losses.Loss):
        def __init__(self, temperature: float, alpha: float, name: str = "distillation", **kwargs):
            super().__init__(name=name, **kwargs)
            self.temperature, self.alpha = float(temperature), float(alpha)

        def call(self, y_true, y_pred):
            width = y_pred.shape[-1]
            hard = keras.losses.categorical_crossentropy(y_true[:, :width], y_pred)
            if y_true.shape[-1] == width:
                return hard
            # softmax(z / T) from the softmax output: log p = z - logsumexp(z), and the shift cancels
            soft = ops.softmax(ops.log(ops.clip(y_pred, 1e-7, 1.0)) / self.temperature, axis=-1)
            teacher = keras.losses.categorical_crossentropy(y_true[:, width:], soft)
            return self.alpha * self.temperature ** 2 * teacher + (1 - self.alpha) * hard

        def get_config(self):
            return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha}

    return DistillLoss
