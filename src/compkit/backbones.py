"""The model builder: image (+ mask channels) -> resize -> backbone (+ embedded columns) -> softmax.

Augmentation is not part of the model: it is mapped over the input pipeline (see augment.py).
Three small CNNs are made for 28x28 inputs, their widths scaled by ``Hyper.width``; the keras.applications backbones are built
at or above their minimum input size, from scratch or, where ``competition.pretrained_allowed``, from ``Hyper.weights``
(ImageNet through Keras, or a local file). Every backbone is one nested model named ``"backbone"``, so its weights can
be frozen, saved and taken from a saved classifier as a whole. The backbones' facts (names, minimum sizes, channels)
are in registry.py; Keras is imported inside the builders.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from compkit.errors import CompkitError
from compkit.initialisation import dirac, fit_whitening
from compkit.registry import BACKBONES, OWN_CNNS, BackboneSpec

if TYPE_CHECKING:
    import keras

    from compkit.hyper import Hyper


def _conv_bn(x, filters: int, strides: int = 1):
    from keras import layers

    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.Activation("relu")(x)


def _per_block(depth: int | list[int]) -> list[int]:
    """``depth`` for each of the three blocks (stages): one int for all, or a list of three (timm's ``depths``)."""
    return [depth] * 3 if isinstance(depth, int) else list(depth)


def _cnn_small(x, width: float, depth: int | list[int] = 2):
    """VGG-style: three blocks of ``depth`` 3x3 conv-BN-ReLU (32-64-128 filters x width), max-pooling between them."""
    from keras import layers

    for i, (filters, convs) in enumerate(zip((round(f * width) for f in (32, 64, 128)), _per_block(depth))):
        x = layers.MaxPooling2D()(x) if i else x
        for _ in range(convs):
            x = _conv_bn(x, filters)
    return x


def _airbench(x, width: float, depth: int | list[int] = 2):
    """airbench's layout (Jordan, 2024, ``CifarNet``): three blocks of 64-256-256 filters x width whose first conv runs
    at the block's input resolution and is max-pooled at once, so the block's other ``depth`` - 1 convs run at half
    of it (cnn_small pools before the block: its first block runs both convs at full resolution). ReLU in place of
    airbench's GELU (cheaper on a CPU)."""
    from keras import layers

    for filters, convs in zip((round(f * width) for f in (64, 256, 256)), _per_block(depth)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Activation("relu")(layers.BatchNormalization(momentum=0.9)(x))
        for _ in range(convs - 1):
            x = _conv_bn(x, filters)
    return x


def _residual_block(x, filters: int, strides: int):
    from keras import layers

    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False)(x)
        shortcut = layers.BatchNormalization(momentum=0.9)(shortcut)
    y = _conv_bn(x, filters, strides)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization(momentum=0.9)(y)
    return layers.Activation("relu")(layers.Add()([shortcut, y]))


def _resnet_small(x, width: float, depth: int | list[int] = 2):
    """A ResNet-18-like net for small images (He et al., 2016): 3 stages of ``depth`` basic blocks, 32-64-128 filters x
    width; the wide-ResNet family's axes (Zagoruyko & Komodakis, 2016, WRN-d-k: stages of (d - 4) / 6 blocks, k x the
    filters) are ``depth`` and ``width``."""
    x = _conv_bn(x, round(32 * width))
    for (filters, strides), blocks in zip(((32, 1), (64, 2), (128, 2)), _per_block(depth)):
        filters = round(filters * width)
        x = _residual_block(x, filters, strides)
        for _ in range(blocks - 1):
            x = _residual_block(x, filters, 1)
    return x


def _pooled(x, pooling: str):
    """(B, h, w, F) feature maps -> features: ``avg`` (B, F), their global average; ``columns`` (B, w * F), each
    column's average over the height, the columns kept left to right (where a symbol of a sequence is: SVHN's
    classifier keeps the positions too, Goodfellow et al., 2013)."""
    from keras import layers

    if pooling == "avg":
        return layers.GlobalAveragePooling2D()(x)
    return layers.Flatten()(layers.AveragePooling2D(pool_size=(x.shape[1], 1))(x))


# compkit's own CNNs: (B, H, W, C) float tensor, width, depth -> (B, h, w, F) feature maps; the others are keras.applications
_BODIES: dict[str, Callable[[keras.KerasTensor, float, int | list[int]], keras.KerasTensor]] = {
    "cnn_small": _cnn_small, "resnet_small": _resnet_small, "airbench": _airbench,
}


def _weights_help(backbone: str, file_name: str) -> str:
    """Where to put the ImageNet weights file Keras downloads, for a machine without internet."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return (f"download {file_name} once where there is internet and put it in {home}/, or set "
            f"backbones.{backbone}.weights = \"<path to the file>\"")


def _imagenet(spec: BackboneSpec, input_shape: tuple[int, ...]) -> keras.Model:
    """keras.applications' ImageNet model, through Keras' download cache (``~/.keras/models``).

    Raises:
        CompkitError: the file is neither cached nor downloadable (offline); says where to put it.
    """
    import keras

    try:
        return getattr(keras.applications, spec.constructor)(include_top=False, weights="imagenet", input_shape=input_shape, pooling="avg")
    except Exception as exc:  # Keras raises a bare Exception for a failed download
        url = re.search(r"https?://\S+?\.h5", str(exc))
        if url is None:
            raise
        file_name = url.group(0).rsplit("/", 1)[-1]
        raise CompkitError(f"backbone {spec.name}: weights = 'imagenet' could not be downloaded ({url.group(0)}); "
                           f"{_weights_help(spec.name, file_name)}") from None


def _from_keras_file(path: Path, backbone: keras.Model) -> None:
    """Copy the ``backbone`` part of a classifier saved by compkit (``model.keras``) into ``backbone``.

    Raises:
        CompkitError: the file holds no compkit backbone, or one of another shape.
    """
    try:
        saved = load_model(path, compile=False)
    except ValueError as exc:  # Keras' safe_mode refuses a Lambda layer (arbitrary code); a file from another Keras
        reason = str(exc).strip().splitlines()[0][:200]
        raise CompkitError(f"{path}: Keras cannot load it safely ({reason}); give a model.keras written by compkit's train "
                           "(no Lambda layers), or a .weights.h5 file") from None
    try:
        source = saved.get_layer("backbone")
    except ValueError:
        raise CompkitError(f"{path}: no 'backbone' model inside; give a model.keras written by compkit's train, or a .weights.h5 file") from None
    try:
        backbone.set_weights(source.get_weights())
    except ValueError as exc:
        raise CompkitError(f"{path}: its backbone does not fit {backbone.name!r} ({str(exc).splitlines()[0]}); "
                           "use weights of the same backbone and width") from None


def build_backbone(name: str, input_shape: tuple[int, ...], width: float, weights: str = "", pooling: str = "avg",
                   depth: int | list[int] = 2) -> keras.Model:
    """Backbone ``name`` as a model named ``"backbone"``: (B, *input_shape) float -> pooled (B, F) features.

    Args:
        name: a key of :data:`BACKBONES`.
        input_shape: (S, S, C) of what the backbone sees (after resizing and channel repetition).
        width: filter-count multiplier of the small CNNs.
        depth: conv-BN-ReLU layers per block of ``cnn_small``, residual blocks per stage of ``resnet_small``: one
            for all three, or a list of three (first block first).
        pooling: how compkit's own CNNs pool their feature maps (:func:`_pooled`); keras.applications average.
        weights: "" (random initialisation), "imagenet" (keras.applications, downloaded once into
            ``~/.keras/models``), a ``.weights.h5`` / ``.h5`` file of this backbone (Keras ``save_weights``, or the
            no-top file Keras downloads), or a compkit ``model.keras`` whose ``backbone`` part is taken.

    Raises:
        CompkitError: a weights file that is missing or does not fit; ImageNet weights offline and not cached.
    """
    import keras

    spec = BACKBONES[name]
    path = Path(weights).expanduser() if weights not in ("", "imagenet") else None
    if path is not None and not path.is_file():
        raise CompkitError(f"backbones.{name}.weights: {path} not found; give the path of a .weights.h5 or .keras file")
    if weights == "imagenet":
        model = _imagenet(spec, input_shape)
    elif spec.constructor:
        model = getattr(keras.applications, spec.constructor)(include_top=False, weights=None, input_shape=input_shape, pooling="avg")
    else:
        x = keras.Input(shape=input_shape)
        model = keras.Model(x, _pooled(_BODIES[name](x, width, depth), pooling))
    model.name = "backbone"  # after construction: some keras.applications look their settings up by their own name
    if path is not None and path.suffix == ".keras":
        _from_keras_file(path, model)
    elif path is not None:
        _load_weights(model, path, name)
    return model


def _load_weights(model: keras.Model, path: Path, name: str) -> None:
    """``model.load_weights(path)``, refusing a file that lacks some of the model's layers (Keras only warns of those)."""
    fix = "use a file saved from the same backbone and width"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except (ValueError, OSError) as exc:
            raise CompkitError(f"{path}: not weights of {name} ({str(exc).splitlines()[0].rstrip(':')}); {fix}") from None
    skipped = [w for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise CompkitError(f"{path}: not weights of {name} ({len(skipped)} parts of it are missing from the file); {fix}")


@functools.cache  # one class per process: Keras registers it by name for loading saved models
def _preprocess_layer():
    import keras

    @keras.saving.register_keras_serializable(package="compkit")
    class PretrainedInput(keras.layers.Layer):
        """(B, S, S, 3) RGB pixels 0-255 -> ``keras.applications.<family>.preprocess_input``: the range the weights were trained on."""

        def __init__(self, family: str, **kwargs):
            super().__init__(**kwargs)
            self.family = family

        def call(self, x):
            return getattr(keras.applications, self.family).preprocess_input(x)

        def get_config(self):
            return {**super().get_config(), "family": self.family}

    return PretrainedInput


@functools.cache  # one class per process: Keras registers it by name for loading saved models
def _mask_layer():
    import keras

    @keras.saving.register_keras_serializable(package="compkit")
    class ThresholdMasks(keras.layers.Layer):
        """(B, H, W, C) pixels 0-255 -> the same with one binary channel (pixel > t) of the first channel per threshold."""

        def __init__(self, thresholds: list[int], **kwargs):
            super().__init__(**kwargs)
            self.thresholds = list(thresholds)

        def call(self, x):
            ops = keras.ops
            masks = [ops.cast(x[..., :1] > t, x.dtype) * 255.0 for t in self.thresholds]
            return ops.concatenate([x, *masks], axis=-1)

        def compute_output_shape(self, input_shape):
            return (*input_shape[:-1], input_shape[-1] + len(self.thresholds))

        def get_config(self):
            return {**super().get_config(), "thresholds": self.thresholds}

    return ThresholdMasks


def build_model(
    backbone: str, image_shape: list[int], head: int | Callable, hyper: Hyper, vocabularies: dict[str, list[str]] | None = None,
    sample: np.ndarray | None = None,
) -> keras.Model:
    """The classifier for one backbone, read top to bottom.

    Args:
        backbone: a key of :data:`BACKBONES`.
        image_shape: (H, W, C) of the input images, pixels 0-255 (any numeric dtype).
        head: the output layer: a task's :meth:`compkit.tasks.Task.head` (called on the pooled features), or an int K
            for a K-class softmax (``proba``).
        hyper: ``masks`` (thresholds, one binary channel each: e.g. the DACON letter's strokes are the
            pixels > 4), ``input_size`` (square side the backbone sees; None keeps H x W), ``width``,
            ``embed`` (extra columns joined to the pooled features through an 8-d embedding each),
            ``dropout`` before the classifier head, and ``weights`` (see :func:`build_backbone`): a pretrained
            keras.applications backbone sees its family's ``preprocess_input`` of 0-255 RGB (gray repeated to 3 channels).
        vocabularies: the values of each ``embed`` column (unseen values share one out-of-vocabulary slot).
        sample: (n, H, W, C) uint8 training images the ``whiten`` layer is fitted to (with ``hyper.whiten``: a frozen
            ``whiten`` x ``whiten`` convolution and a ReLU before the backbone, :func:`compkit.initialisation.whitening_kernel`); with
            ``hyper.dirac``, the backbone's convolutions start as identities (:func:`compkit.initialisation.dirac`).

    Raises:
        CompkitError: ``hyper.whiten`` or ``hyper.dirac`` with a keras.applications backbone, ``dirac`` with
            ``weights``, or ``whiten`` without a sample.

    Returns:
        An uncompiled ``keras.Model`` with dict inputs ``"image"`` (B, H, W, C) and one (B,) string input per
        embedded column, mapping them to the head's (B, D) float32 outputs.
    """
    import keras
    from keras import layers

    spec = BACKBONES[backbone]
    if (hyper.whiten or hyper.dirac) and spec.constructor:
        raise CompkitError(f"backbones.{backbone}: whiten and dirac initialise compkit's own CNNs only; "
                           f"set them under [backbones.<name>] of {OWN_CNNS}")
    if hyper.dirac and hyper.weights:
        raise CompkitError(f"backbones.{backbone}: dirac initialises a backbone trained from scratch, not one loaded "
                           f"from weights {hyper.weights!r}; drop one of them")
    if hyper.whiten and sample is None:
        raise CompkitError("train.whiten: no training images to fit the whitening layer to; pass sample=")
    pretrained_input = bool(hyper.weights and spec.family)  # the family's preprocess_input, after the channels are RGB
    inputs = {"image": keras.Input(shape=tuple(image_shape), name="image")}
    x = _mask_layer()(hyper.masks)(inputs["image"]) if hyper.masks else inputs["image"]
    x = x if spec.rescales_itself or pretrained_input else layers.Rescaling(1 / 255)(x)
    if hyper.input_size and hyper.input_size != image_shape[0]:
        x = layers.Resizing(hyper.input_size, hyper.input_size, interpolation=hyper.augment.interpolation)(x)
    if spec.channels and spec.channels != x.shape[-1]:
        x = layers.Concatenate()([x] * spec.channels) if x.shape[-1] == 1 else layers.Conv2D(spec.channels, 1)(x)
    x = _preprocess_layer()(spec.family)(x) if pretrained_input else x
    if hyper.whiten:
        channels = 2 * hyper.whiten**2 * x.shape[-1]
        x = layers.Conv2D(channels, hyper.whiten, padding="same", use_bias=False, trainable=False, name="whiten")(x)
        x = layers.Activation("relu")(x)
    body = build_backbone(backbone, tuple(x.shape[1:]), hyper.width, hyper.weights, hyper.pooling, hyper.depth)
    if hyper.dirac:
        dirac(body)
    features = [body(x)]
    for column in hyper.embed:
        vocabulary = (vocabularies or {})[column]
        inputs[column] = keras.Input(shape=(), dtype="string", name=column)
        index = layers.StringLookup(vocabulary=vocabulary)(inputs[column])
        features.append(layers.Embedding(len(vocabulary) + 1, 8)(index))
    x = layers.Concatenate()(features) if len(features) > 1 else features[0]
    x = layers.Dropout(hyper.dropout)(x)
    if isinstance(head, int):
        outputs = layers.Dense(head, activation="softmax", dtype="float32", name="proba")(x)
    else:
        outputs = head(x)
    model = keras.Model(inputs, outputs, name=backbone)
    if hyper.whiten:
        fit_whitening(model, sample, hyper.whiten)
    return model


def load_model(path: Path, compile: bool = True) -> keras.Model:
    """A saved ``model.keras`` (from :func:`build_model`), with compkit's custom layers and optimizers registered first."""
    import keras

    from compkit.finetune import register

    _mask_layer(), _preprocess_layer(), register()
    return keras.saving.load_model(path, compile=compile)
