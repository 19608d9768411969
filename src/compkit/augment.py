"""Augmentation as Keras preprocessing layers mapped over tf.data batches, and test-time augmentation (TTA).

Augmenting in the input pipeline (``Dataset.map`` with parallel calls) rather than inside the model keeps
the saved model a plain inference model and lets TTA reuse the very same geometric transforms.
Pixels stay 0-255 here; the model rescales them. Every layer here computes in float32 whatever the global
dtype policy (``train.precision``): under ``mixed_float16`` the layers would otherwise take float16 and
CutMix, elastic distortion and MixUp fail (float16 ranges, float16 x float32 products), and 0-255 pixels
would lose precision; the model's own first layer casts to its compute dtype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import keras

    from compkit.config import Augment

FLOAT32 = {"dtype": "float32"}  # the augmentation layers' dtype policy, whatever the global one (module docstring)


def geometric(aug: Augment, seed: int) -> keras.Sequential | None:
    """Random shift, rotation, zoom, shear and elastic distortion, filled with 0 (the background); None when all are off.

    Bilinear interpolation blurs the strokes (a pixel of 200 next to 0 becomes ~100), so a model trained on
    such views sees sharper images at test time than in training; TTA or ``interpolation = "nearest"`` closes that gap.

    Input and output: (B, H, W, C) float32 pixels 0-255.
    """
    import keras
    from keras import layers

    steps, how = [], aug.interpolation
    if aug.shift:
        steps.append(layers.RandomTranslation(aug.shift, aug.shift, fill_mode="constant", interpolation=how, seed=seed, **FLOAT32))
    if aug.rotation:
        steps.append(layers.RandomRotation(aug.rotation / 360, fill_mode="constant", interpolation=how, seed=seed + 1, **FLOAT32))
    if aug.zoom:
        steps.append(layers.RandomZoom(aug.zoom, fill_mode="constant", interpolation=how, seed=seed + 2, **FLOAT32))
    if aug.shear:
        steps.append(layers.RandomShear(aug.shear, aug.shear, fill_mode="constant", interpolation=how, seed=seed + 3, **FLOAT32))
    if aug.elastic:
        steps.append(layers.RandomElasticTransform(factor=aug.elastic, fill_mode="constant", interpolation=how, seed=seed + 4, **FLOAT32))
    return keras.Sequential(steps) if steps else None


def training(aug: Augment, seed: int) -> Callable | None:
    """The training batch transform ``(inputs, onehot) -> (inputs, onehot)`` for ``Dataset.map``; None when off.

    ``inputs`` is a dict whose ``"image"`` entry is (B, H, W, C) float32 0-255 (other entries, the
    embedded columns, pass through: mixup and cutmix keep each row's own); ``onehot`` is (B, K) float32.
    Order: geometric transforms, random erasing, then mixup and cutmix on image and label together.
    """
    from keras import layers

    shape = geometric(aug, seed)
    erase = layers.RandomErasing(factor=aug.erasing, value_range=(0, 255), seed=seed + 5, **FLOAT32) if aug.erasing else None
    mixers = [layers.MixUp(alpha=aug.mixup, seed=seed + 6, **FLOAT32)] if aug.mixup else []
    mixers += [layers.CutMix(factor=aug.cutmix, seed=seed + 7, **FLOAT32)] if aug.cutmix else []
    if not (shape or erase or mixers):
        return None

    def transform(inputs: dict, onehot):
        image = inputs["image"]
        if shape:
            image = shape(image, training=True)
        if erase:
            image = erase(image, training=True)
        for mix in mixers:
            mixed = mix({"images": image, "labels": onehot}, training=True)
            image, onehot = mixed["images"], mixed["labels"]
        return {**inputs, "image": image}, onehot

    return transform


def predict_tta(model: keras.Model, inputs, aug: Augment, n: int, seed: int, batch_size: int | None = None):
    """Mean of ``model``'s probabilities over the images and ``n - 1`` geometrically augmented views of them.

    Args:
        inputs: the model's inputs: a dict whose ``"image"`` is (N, H, W, C) float32 pixels 0-255, or a
            ``tf.data.Dataset`` of such dicts in batches (:func:`compkit.fitting.stream`), read batch by batch.
        aug: the training augmentation; its geometric part makes the views (without one, ``n`` is ignored).
        n: views per image, the original included (1: no TTA).
        batch_size: rows per batch of a dict ``inputs``, required for one (a dataset comes batched). The views are
            drawn batch by batch, so the same rows in other batches get other views: pass the training batch size, as
            :func:`compkit.fitting.stream` batches, to reproduce `make train`'s predictions.

    Returns:
        (N, K) float32 probabilities.

    Raises:
        ValueError: a dict ``inputs`` without ``batch_size``.
    """
    import numpy as np
    import tensorflow as tf

    if isinstance(inputs, dict):
        if batch_size is None:
            raise ValueError("predict_tta: pass batch_size with a dict of arrays (the training batch size reproduces train's views)")
        inputs = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)
    proba = model.predict(inputs, verbose=0)
    shape = geometric(aug, seed) if n > 1 else None
    if shape is None:
        return proba
    for _ in range(n - 1):  # view by view, batch by batch: memory O(batch)
        proba = proba + np.concatenate([
            np.asarray(model.predict_on_batch({**batch, "image": shape(batch["image"], training=True)})) for batch in inputs
        ])
    return proba / n
