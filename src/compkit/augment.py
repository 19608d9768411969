"""Augmentation and test-time augmentation (TTA), in one of two places (``train.augment_on``, :func:`compkit.devices.augment_where`).

- **pipeline**: Keras preprocessing layers mapped over the tf.data batches on the CPU (:func:`training`,
  :func:`geometric`), in parallel calls beside the training step.
- **device**: the CPU only gathers uint8 rows and draws each batch's transform parameters (:func:`draw`: a few numbers
  per image); the cast to float32, the warp, erasing, MixUp and CutMix run inside the training step on the batch already
  on the accelerator (:func:`apply`, :func:`device_trainer`), and so do the TTA views (:func:`predict_tta`).

Either way the saved model is a plain inference model. Pixels stay 0-255 here; the model rescales them. Every
transform computes in float32 whatever the global dtype policy (``train.precision``): under ``mixed_float16`` Keras'
layers would otherwise take float16 and CutMix, elastic distortion and MixUp fail (float16 ranges, float16 x float32
products), and 0-255 pixels would lose precision; the model's own first layer casts to its compute dtype.

Over 400 lines: the pipeline and device forms of each transform are one recipe, kept side by side so they change together.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import keras

    from compkit.config import Augment

FLOAT32 = {"dtype": "float32"}  # the augmentation layers' dtype policy, whatever the global one (module docstring)


def geometric(aug: Augment, seed: int) -> keras.Sequential | None:
    """Random shift, rotation, zoom, shear, horizontal flip and elastic distortion, filled with 0 (the background); None
    when all are off.

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
    if aug.flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed + 8, **FLOAT32))
    if aug.elastic:
        steps.append(layers.RandomElasticTransform(factor=aug.elastic, fill_mode="constant", interpolation=how, seed=seed + 4, **FLOAT32))
    return keras.Sequential(steps) if steps else None


def training(aug: Augment, seed: int) -> Callable | None:
    """The training batch transform ``(inputs, onehot) -> (inputs, onehot)`` for ``Dataset.map``; None when off.

    ``inputs`` is a dict whose ``"image"`` entry is (B, H, W, C) pixels 0-255 (uint8 as gathered, cast to float32 here;
    other entries, the embedded columns, pass through: mixup and cutmix keep each row's own); ``onehot`` is (B, K) float32.
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
        import tensorflow as tf

        image = tf.cast(inputs["image"], tf.float32)
        if shape:
            image = shape(image, training=True)
        if erase:
            image = erase(image, training=True)
        for mix in mixers:
            mixed = mix({"images": image, "labels": onehot}, training=True)
            image, onehot = mixed["images"], mixed["labels"]
        return {**inputs, "image": image}, onehot

    return transform


def predict_tta(model: keras.Model, inputs, aug: Augment, n: int, seed: int, batch_size: int | None = None,
                where: str = "pipeline"):
    """Mean of ``model``'s probabilities over the images and ``n - 1`` geometrically augmented views of them.

    Args:
        inputs: the model's inputs: a dict whose ``"image"`` is (N, H, W, C) pixels 0-255 (uint8 or float32), or a
            ``tf.data.Dataset`` of such dicts in batches (:func:`compkit.fitting.stream`), read batch by batch.
        aug: the training augmentation; its geometric part makes the views (without one, ``n`` is ignored).
        n: views per image, the original included (1: no TTA).
        batch_size: rows per batch of a dict ``inputs``, required for one (a dataset comes batched). The views are
            drawn batch by batch, so the same rows in other batches get other views: pass the training batch size, as
            :func:`compkit.fitting.stream` batches, to reproduce `make train`'s predictions.
        where: ``"pipeline"``: the views by Keras' layers (:func:`geometric`); ``"device"``: by :func:`warp` inside one
            ``tf.function`` with the model's forward pass (:func:`_device_views`), as the model was trained.

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
    view = _pipeline_views(model, aug, seed) if where == "pipeline" else _device_views(model, aug) if warps(aug, crop=False) else None
    if n == 1 or view is None:
        return proba
    for v in range(1, n):  # view by view, batch by batch: memory O(batch)
        proba = proba + np.concatenate([np.asarray(view(batch, tf.constant([seed, v * 2**20 + i], tf.int64)))
                                        for i, batch in enumerate(inputs)])
    return proba / n


def _pipeline_views(model: keras.Model, aug: Augment, seed: int):
    """``(batch, seed) -> (B, K)`` probabilities of one view by Keras' layers (:func:`geometric`, drawing from their own
    seed generators: the batch seed is not used); None without a geometric transform."""
    import tensorflow as tf

    shape = geometric(aug, seed)
    if shape is None:
        return None
    return lambda batch, _: model.predict_on_batch({**batch, "image": shape(tf.cast(batch["image"], tf.float32), training=True)})


def _device_views(model: keras.Model, aug: Augment):
    """``(batch, seed) -> (B, K)`` probabilities of one geometric view of ``batch``: the warp (:func:`draw_warp`,
    :func:`warp`) and the forward pass in one ``tf.function``, run where the model runs. ``seed``: (2,) int64, the view's
    and batch's own."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def view(batch, seed):
        image = tf.cast(batch["image"], tf.float32)
        maps = draw_warp(aug, tf.shape(image)[0], tuple(image.shape[1:3]), seed, crop=False)
        return model({**batch, "image": warp(image, maps, aug.interpolation)}, training=False)

    return view


# ---- On the device (``train.augment_on = "device"``) -------------------------------------------------------------
# The CPU draws each batch's transform parameters (a few numbers per image: :func:`draw`, a map in the tf.data
# pipeline) and the device applies them to the uint8 batch inside the training step (:func:`apply`). Plain TensorFlow
# ops, float32 whatever the dtype policy, no ImageProjectiveTransform and no Gamma sampling on the device (TTA views draw
# stateless uniform numbers there): the step stays XLA-compilable (Keras' preprocessing layers are not: their transform
# kernel and their Beta sampling have no XLA kernel).

PARAMS = "__augment"  # the inputs' key of a batch's transform parameters (a dict of (B, ...) tensors)
# random erasing's area fraction (Keras RandomErasing's default scale) and aspect ratio range (Zhong et al. 2020)
ERASE_AREA, ERASE_RATIO = (0.02, 0.33), (0.3, 1 / 0.3)


def warps(aug: Augment, crop: bool = True) -> bool:
    """True when ``aug`` has a geometric transform :func:`warp` makes: shift, rotation, zoom, shear, flip, and with
    ``crop`` (in training; TTA views are never cropped) the random-resized crop."""
    return bool(aug.shift or aug.rotation or aug.zoom or aug.shear or aug.flip or (crop and aug.crop))


def on_device(aug: Augment) -> bool:
    """True when ``aug`` has a transform :func:`apply` makes (all but elastic, which stays in the pipeline)."""
    return bool(warps(aug) or aug.erasing or aug.mixup or aug.cutmix)


def _uniform(seed, shape, low, high):
    import tensorflow as tf

    return tf.random.stateless_uniform(shape, seed, low, high, dtype=tf.float32)


def _beta(seed, n: int, alpha):
    """(n,) float32 draws of Beta(alpha, alpha) (X / (X + Y), X, Y ~ Gamma(alpha)); 0.5 where both underflow to 0."""
    import tensorflow as tf

    s = tf.random.experimental.stateless_split(seed, 2)
    x, y = tf.random.stateless_gamma([n], s[0], alpha, dtype=tf.float32), tf.random.stateless_gamma([n], s[1], alpha, dtype=tf.float32)
    return tf.where(x + y > 0, x / tf.maximum(x + y, 1e-30), 0.5)


def draw_warp(aug: Augment, n, size: tuple[int, int], seed, crop: bool = True):
    """(n, 6) float32 affine maps, output pixel -> source pixel: ``src_x = m0 x + m1 y + m2``, ``src_y = m3 x + m4 y + m5``.

    About the image centre: a shift of U(-shift, shift) x the side (pixels), a rotation of U(-rotation, rotation)
    degrees, a zoom scaling the source coordinates by 1 + U(-zoom, zoom) (> 1: the content shrinks), a shear of
    U(-shear, shear) per axis, as Keras' RandomTranslation, RandomRotation, RandomZoom and RandomShear draw them;
    with ``aug.flip``, half the maps read the mirrored output (``x -> W - 1 - x``: RandomFlip's horizontal mirror);
    then, with ``crop`` and ``aug.crop``, the random-resized crop (:func:`draw_crop`) the warped image is read from;
    composed into one map, so one resampling instead of one per transform. ``size``: (H, W) pixels.
    """
    import tensorflow as tf

    h, w = size
    s = tf.random.experimental.stateless_split(seed, 6)
    tx, ty = _uniform(s[0], [n], -aug.shift, aug.shift) * w, _uniform(s[1], [n], -aug.shift, aug.shift) * h
    angle = _uniform(s[2], [n], -aug.rotation, aug.rotation) * (math.pi / 180)
    scale = 1 + _uniform(s[3], [n], -aug.zoom, aug.zoom)
    shx, shy = _uniform(s[4], [n], -aug.shear, aug.shear), _uniform(s[5], [n], -aug.shear, aug.shear)
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    m0, m1, m3, m4 = cos - sin * shy, cos * shx - sin, sin + cos * shy, sin * shx + cos  # scale x R(angle) x [[1, shx], [shy, 1]]
    if aug.flip:  # a mirror about the centre column is its x coefficients negated (the offsets below follow)
        sign = 1 - 2 * tf.cast(_uniform(tf.random.experimental.stateless_fold_in(seed, 7), [n], 0, 1) < 0.5, tf.float32)
        m0, m3 = m0 * sign, m3 * sign
    cx, cy = (w - 1) / 2, (h - 1) / 2
    maps = tf.stack([m0, m1, cx - m0 * cx - m1 * cy - tx, m3, m4, cy - m3 * cx - m4 * cy - ty], axis=1)
    if not (crop and aug.crop):
        return maps
    (ax, bx, ay, by) = tf.unstack(draw_crop(aug.crop, n, size, tf.random.experimental.stateless_fold_in(seed, 6)), axis=1)  # src = a * p + b after the warp
    return tf.stack([ax * maps[:, 0], ax * maps[:, 1], ax * maps[:, 2] + bx, ay * maps[:, 3], ay * maps[:, 4], ay * maps[:, 5] + by], axis=1)


CROP_RATIO = (3 / 4, 4 / 3)  # the random-resized crop's aspect ratio range (Szegedy et al. 2015; torchvision's default)


def draw_crop(low: float, n, size: tuple[int, int], seed):
    """(n, 4) float32 ``a_x, b_x, a_y, b_y``: the random-resized crop as the map output pixel -> source pixel
    ``src = a p + b`` per axis. The box has U(``low``, 1) of the image's area and an aspect ratio (width / height)
    log-uniform in :data:`CROP_RATIO`, its sides clipped to the image's, at a uniform place; its pixels are stretched
    over the whole output (pixel centres: ``a = box side / side``, ``b = x0 + a / 2 - 1/2``). ``size``: (H, W) pixels.
    """
    import tensorflow as tf

    h, w = size
    s = tf.random.experimental.stateless_split(seed, 4)
    area = _uniform(s[0], [n], low, 1.0)
    ratio = tf.exp(_uniform(s[1], [n], math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
    ax, ay = tf.minimum(tf.sqrt(area * ratio), 1.0), tf.minimum(tf.sqrt(area / ratio), 1.0)  # box side / image side
    x0, y0 = _uniform(s[2], [n], 0, 1) * (1 - ax) * w, _uniform(s[3], [n], 0, 1) * (1 - ay) * h
    return tf.stack([ax, x0 + ax / 2 - 0.5, ay, y0 + ay / 2 - 0.5], axis=1)


def _draw_box(seed, n, size: tuple[int, int], box_h, box_w):
    """(n, 4) float32 boxes y0, x0, y1, x1 of (n,) sides ``box_h`` x ``box_w`` pixels at uniform places, whole pixels."""
    import tensorflow as tf

    h, w = size
    s = tf.random.experimental.stateless_split(seed, 2)
    y0 = tf.round(_uniform(s[0], [n], 0, 1) * (h - box_h))
    x0 = tf.round(_uniform(s[1], [n], 0, 1) * (w - box_w))
    return tf.stack([y0, x0, y0 + tf.round(box_h), x0 + tf.round(box_w)], axis=1)


def draw(aug: Augment, n, size: tuple[int, int], seed) -> dict:
    """One batch's transform parameters, drawn on the CPU from ``seed`` ((2,) int: stateless, so the same seed gives
    the same batch whatever tf.data's parallelism).

    Args:
        n: rows of the batch (a scalar tensor: the last batch is short).
        size: (H, W) pixels of the images.

    Returns:
        A dict of what ``aug`` turns on: ``warp`` (n, 6) float32 (:func:`draw_warp`); ``erase`` (n, 4) float32 boxes
        y0, x0, y1, x1 (empty where not erased; with probability ``erasing``, area U(0.02, 0.33) of the image,
        aspect ratio log-uniform in (0.3, 3.3)); ``mixup_perm`` (n,) int32 partner rows, ``mixup_weight`` (n,) float32
        ~ Beta(mixup, mixup); ``cutmix_perm`` (n,) int32, ``cutmix_box`` (n, 4) float32, the partner's patch: its
        side ratio sqrt(1 - lambda), lambda ~ Beta(a, a), a ~ U(0, cutmix) per batch (Yun et al. 2019; Keras' CutMix).
    """
    import tensorflow as tf

    h, w = size
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 10)
    params = {}
    if warps(aug):
        params["warp"] = draw_warp(aug, n, size, s[0])
    if aug.erasing:
        area = _uniform(s[1], [n], *ERASE_AREA) * (h * w)
        ratio = tf.exp(_uniform(s[2], [n], math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])))
        on = tf.cast(_uniform(s[3], [n], 0, 1) < aug.erasing, tf.float32)
        box_h, box_w = tf.minimum(tf.sqrt(area * ratio), h) * on, tf.minimum(tf.sqrt(area / ratio), w) * on
        params["erase"] = _draw_box(s[4], n, size, box_h, box_w)
    if aug.mixup:
        params["mixup_perm"] = tf.argsort(_uniform(s[5], [n], 0, 1))
        params["mixup_weight"] = _beta(s[6], n, aug.mixup)
    if aug.cutmix:
        alpha = tf.maximum(_uniform(s[7], [], 0, aug.cutmix), 1e-3)
        side = tf.sqrt(1 - _beta(s[8], n, alpha))
        params["cutmix_perm"] = tf.argsort(_uniform(s[9], [n], 0, 1))
        params["cutmix_box"] = _draw_box(tf.random.experimental.stateless_fold_in(s[9], 1), n, size, side * h, side * w)
    return params


def _sample(images, x, y):
    """``images`` (B, H, W, C) float32 at whole-pixel coordinates ``x``, ``y`` (B, H, W) float32; 0 outside the image."""
    import tensorflow as tf

    _, h, w, c = images.shape
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    index = tf.cast(tf.clip_by_value(y, 0, h - 1) * w + tf.clip_by_value(x, 0, w - 1), tf.int32)
    flat = tf.reshape(images, (-1, h * w, c))
    picked = tf.reshape(tf.gather(flat, tf.reshape(index, (-1, h * w)), batch_dims=1), tf.shape(images))
    return picked * tf.cast(inside, tf.float32)[..., None]


def warp(images, maps, interpolation: str = "bilinear"):
    """``images`` (B, H, W, C) float32 resampled through ``maps`` ((B, 6) float32, :func:`draw_warp`), filled with 0.

    Bilinear: the four neighbours of each source point, weighted; nearest: the closest one (keeps pixel values).
    Gathers only (no ImageProjectiveTransform): XLA compiles it.
    """
    import tensorflow as tf

    _, h, w, _ = images.shape
    ys, xs = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32), indexing="ij")
    m = maps[:, :, None, None]
    sx, sy = m[:, 0] * xs + m[:, 1] * ys + m[:, 2], m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    if interpolation == "nearest":
        return _sample(images, tf.round(sx), tf.round(sy))
    x0, y0 = tf.floor(sx), tf.floor(sy)
    ax, ay = (sx - x0)[..., None], (sy - y0)[..., None]
    top = _sample(images, x0, y0) * (1 - ax) + _sample(images, x0 + 1, y0) * ax
    bottom = _sample(images, x0, y0 + 1) * (1 - ax) + _sample(images, x0 + 1, y0 + 1) * ax
    return top * (1 - ay) + bottom * ay


def box_mask(boxes, size: tuple[int, int]):
    """(B, H, W, 1) float32: 1 inside each (B, 4) box y0, x0, y1, x1 (whole pixels, end excluded), else 0."""
    import tensorflow as tf

    h, w = size
    ys, xs = tf.range(h, dtype=tf.float32)[None, :, None], tf.range(w, dtype=tf.float32)[None, None, :]
    b = boxes[:, :, None, None]
    inside = (ys >= b[:, 0]) & (ys < b[:, 2]) & (xs >= b[:, 1]) & (xs < b[:, 3])
    return tf.cast(inside, tf.float32)[..., None]


def apply(inputs: dict, targets, aug: Augment):
    """The training batch transform on the device: ``inputs["image"]`` (B, H, W, C) uint8 (or float) pixels 0-255 cast to
    float32, then warped, erased (to 0), mixed up and cut-mixed by ``inputs[PARAMS]`` (:func:`draw`), in that order.

    Returns:
        (inputs without :data:`PARAMS`, ``"image"`` (B, H, W, C) float32 0-255; (B, D) float32 targets, mixed as the
        images: CutMix weighs the partner's targets by the pasted area / (H x W)). Float32 whatever the dtype policy.
    """
    import tensorflow as tf

    params = inputs[PARAMS]
    image, targets = tf.cast(inputs["image"], tf.float32), tf.cast(targets, tf.float32)
    size = tuple(image.shape[1:3])
    if "warp" in params:
        image = warp(image, params["warp"], aug.interpolation)
    if "erase" in params:
        image = image * (1 - box_mask(params["erase"], size))
    if "mixup_perm" in params:
        weight, perm = params["mixup_weight"], params["mixup_perm"]
        image = image * weight[:, None, None, None] + tf.gather(image, perm) * (1 - weight[:, None, None, None])
        targets = targets * weight[:, None] + tf.gather(targets, perm) * (1 - weight[:, None])
    if "cutmix_perm" in params:
        mask, perm = box_mask(params["cutmix_box"], size), params["cutmix_perm"]
        image = image * (1 - mask) + tf.gather(image, perm) * mask
        area = tf.reduce_mean(mask, axis=(1, 2, 3))[:, None]
        targets = targets * (1 - area) + tf.gather(targets, perm) * area
    return {**{k: v for k, v in inputs.items() if k != PARAMS}, "image": image}, targets


@functools.cache  # one class per process
def _trainer_class():
    import keras

    class DeviceAugmented(keras.Model):
        """Trains ``net`` on batches augmented inside its training step (:func:`apply`); evaluates and predicts as ``net``.

        Only for fitting: ``net`` (the plain inference model) is what is saved, so no augmentation is in the file.
        """

        def __init__(self, net: keras.Model, aug: Augment):
            super().__init__(name=f"{net.name}_augmented")
            self.net, self.aug = net, aug

        def call(self, inputs, training=False):
            return self.net({k: v for k, v in inputs.items() if k != PARAMS}, training=training)

        def train_step(self, data):
            x, y, weight = keras.utils.unpack_x_y_sample_weight(data)
            x, y = apply(x, y, self.aug)
            return super().train_step((x, y) if weight is None else (x, y, weight))

    return DeviceAugmented


def device_trainer(net: keras.Model, aug: Augment) -> keras.Model:
    """The model to compile and fit when ``aug`` runs on the device: ``net`` wrapped (:func:`_trainer_class`), sharing its
    variables; fitting it fits ``net``. Build it in the distribution strategy's scope, as ``net``."""
    return _trainer_class()(net, aug)


def with_params(aug: Augment, size: tuple[int, int]):
    """The tf.data map ``((inputs, targets), seed) -> (inputs + {PARAMS: draw(...)}, targets)`` of a device-augmented
    pipeline; ``seed`` is (2,) int64, a batch's own (``tf.data.Dataset.random``, new each epoch)."""
    import tensorflow as tf

    def add(batch, seed):
        inputs, targets = batch
        return {**inputs, PARAMS: draw(aug, tf.shape(targets)[0], size, seed)}, targets

    return add
