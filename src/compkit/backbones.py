"""Backbone registry and the model builder: image (+ mask channels) -> resize -> backbone (+ embedded columns) -> softmax.

Augmentation is not part of the model: it is mapped over the input pipeline (see augment.py).
Two small CNNs are made for 28x28 inputs, their widths scaled by ``Hyper.width``; the keras.applications backbones are built with
``weights=None`` (competition rules forbid pretrained weights) at or above their minimum input
size. Keras is imported inside the builders so that reading the registry stays cheap.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import keras

    from compkit.config import Hyper


@dataclass(frozen=True)
class Backbone:
    """A feature extractor: ``body(x, width)`` maps a (B, S, S, C) float tensor to pooled (B, F) features.

    ``width`` multiplies the filter counts of the small CNNs; keras.applications ignore it.

    ``channels`` is what the body expects (grayscale is repeated to 3 for keras.applications);
    ``rescales_itself`` is True when the body maps 0-255 pixels to its own range.
    """

    name: str
    min_size: int
    channels: int | None  # None: take the image's channels as they are
    rescales_itself: bool
    body: Callable[[keras.KerasTensor, float], keras.KerasTensor]


def _conv_bn(x, filters: int, strides: int = 1):
    from keras import layers

    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.Activation("relu")(x)


def _cnn_small(x, width: float):
    """VGG-style: three blocks of two 3x3 conv-BN-ReLU (32-64-128 filters x width), max-pooling between them, global average pool."""
    from keras import layers

    small, medium, large = (round(f * width) for f in (32, 64, 128))
    for filters in (small, medium):
        x = _conv_bn(_conv_bn(x, filters), filters)
        x = layers.MaxPooling2D()(x)
    x = _conv_bn(_conv_bn(x, large), large)
    return layers.GlobalAveragePooling2D()(x)


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


def _resnet_small(x, width: float):
    """A ResNet-18-like net for small images (He et al., 2016): 3 stages of 2 basic blocks, 32-64-128 filters x width."""
    from keras import layers

    x = _conv_bn(x, round(32 * width))
    for filters, strides in ((32, 1), (64, 2), (128, 2)):
        filters = round(filters * width)
        x = _residual_block(x, filters, strides)
        x = _residual_block(x, filters, 1)
    return layers.GlobalAveragePooling2D()(x)


def _application(constructor: str) -> Callable:
    def body(x, width: float):
        import keras

        model = getattr(keras.applications, constructor)(
            include_top=False, weights=None, input_shape=tuple(x.shape[1:]), pooling="avg"
        )
        return model(x)

    return body


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone("cnn_small", 8, None, False, _cnn_small),
        Backbone("resnet_small", 8, None, False, _resnet_small),
        Backbone("resnet50", 32, 3, False, _application("ResNet50")),
        Backbone("densenet121", 32, 3, False, _application("DenseNet121")),
        Backbone("efficientnetb0", 32, 3, True, _application("EfficientNetB0")),
        Backbone("xception", 71, 3, False, _application("Xception")),
        Backbone("inceptionv3", 75, 3, False, _application("InceptionV3")),
    ]
}


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
    backbone: str, image_shape: list[int], num_classes: int, hyper: Hyper, vocabularies: dict[str, list[str]] | None = None
) -> keras.Model:
    """The classifier for one backbone, read top to bottom.

    Args:
        backbone: a key of :data:`BACKBONES`.
        image_shape: (H, W, C) of the input images, pixels 0-255 (any numeric dtype).
        num_classes: size of the softmax output.
        hyper: ``masks`` (thresholds, one binary channel each: e.g. the DACON letter's strokes are the
            pixels > 4), ``input_size`` (square side the backbone sees; None keeps H x W), ``width``,
            ``embed`` (extra columns joined to the pooled features through an 8-d embedding each) and
            ``dropout`` before the classifier head.
        vocabularies: the values of each ``embed`` column (unseen values share one out-of-vocabulary slot).

    Returns:
        An uncompiled ``keras.Model`` with dict inputs ``"image"`` (B, H, W, C) and one (B,) string input per
        embedded column, mapping them to (B, num_classes) float32 probabilities.
    """
    import keras
    from keras import layers

    spec = BACKBONES[backbone]
    inputs = {"image": keras.Input(shape=tuple(image_shape), name="image")}
    x = _mask_layer()(hyper.masks)(inputs["image"]) if hyper.masks else inputs["image"]
    x = x if spec.rescales_itself else layers.Rescaling(1 / 255)(x)
    if hyper.input_size and hyper.input_size != image_shape[0]:
        x = layers.Resizing(hyper.input_size, hyper.input_size, interpolation=hyper.augment.interpolation)(x)
    if spec.channels and spec.channels != x.shape[-1]:
        x = layers.Concatenate()([x] * spec.channels) if x.shape[-1] == 1 else layers.Conv2D(spec.channels, 1)(x)
    features = [spec.body(x, hyper.width)]
    for column in hyper.embed:
        vocabulary = (vocabularies or {})[column]
        inputs[column] = keras.Input(shape=(), dtype="string", name=column)
        index = layers.StringLookup(vocabulary=vocabulary)(inputs[column])
        features.append(layers.Embedding(len(vocabulary) + 1, 8)(index))
    x = layers.Concatenate()(features) if len(features) > 1 else features[0]
    x = layers.Dropout(hyper.dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="proba")(x)
    return keras.Model(inputs, outputs, name=backbone)


def load_model(path: Path) -> keras.Model:
    """A saved ``model.keras`` (from :func:`build_model`), with compkit's custom layers registered first."""
    import keras

    _mask_layer()
    return keras.saving.load_model(path)
