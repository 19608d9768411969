"""The multi-head task's Keras parts (:class:`compkit.tasks.Multihead`): the loss and the progress metric on its one
concatenated output, the heads' softmax outputs side by side ((B, sum K_h) float32, head h in columns
``offsets[h]:offsets[h + 1]``), against targets of the same shape (the heads' one-hot rows, mixed by MixUp / CutMix).

Both are Keras-serialisable (registered under ``compkit``, their configuration plain numbers), so a compiled
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
