"""Backbone registry and the model builder: input -> augmentation -> resize -> backbone -> softmax.

Two small CNNs are made for 28x28 inputs; the keras.applications backbones are built with
``weights=None`` (competition rules forbid pretrained weights) at or above their minimum input
size. Keras is imported inside the builders so that reading the registry stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import keras

    from compkit.config import Hyper


@dataclass(frozen=True)
class Backbone:
    """A feature extractor: ``body(x)`` maps a (B, S, S, C) float tensor to pooled (B, F) features.

    ``channels`` is what the body expects (grayscale is repeated to 3 for keras.applications);
    ``rescales_itself`` is True when the body maps 0-255 pixels to its own range.
    """

    name: str
    min_size: int
    channels: int | None  # None: take the image's channels as they are
    rescales_itself: bool
    body: Callable[[keras.KerasTensor], keras.KerasTensor]


def _conv_bn(x, filters: int, strides: int = 1):
    from keras import layers

    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.Activation("relu")(x)


def _cnn_small(x):
    """VGG-style: three blocks of two 3x3 conv-BN-ReLU, max-pooling between them, global average pool."""
    from keras import layers

    for filters in (32, 64):
        x = _conv_bn(_conv_bn(x, filters), filters)
        x = layers.MaxPooling2D()(x)
    x = _conv_bn(_conv_bn(x, 128), 128)
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


def _resnet_small(x):
    """A ResNet-18-like net for small images (He et al., 2016): 3 stages of 2 basic blocks, 32-64-128 filters."""
    from keras import layers

    x = _conv_bn(x, 32)
    for filters, strides in ((32, 1), (64, 2), (128, 2)):
        x = _residual_block(x, filters, strides)
        x = _residual_block(x, filters, 1)
    return layers.GlobalAveragePooling2D()(x)


def _application(constructor: str) -> Callable:
    def body(x):
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


def build_model(backbone: str, image_shape: list[int], num_classes: int, hyper: Hyper) -> keras.Model:
    """The classifier for one backbone, read top to bottom.

    Args:
        backbone: a key of :data:`BACKBONES`.
        image_shape: (H, W, C) of the input images, pixels 0-255 (any numeric dtype).
        num_classes: size of the softmax output.
        hyper: augmentation strengths, ``input_size`` (square side the backbone sees; None keeps
            H x W) and ``dropout`` before the classifier head.

    Returns:
        An uncompiled ``keras.Model`` mapping (B, H, W, C) pixels to (B, num_classes) float32
        probabilities. Augmentation layers act only in training.
    """
    import keras
    from keras import layers

    spec = BACKBONES[backbone]
    inputs = keras.Input(shape=tuple(image_shape), name="image")
    x = inputs if spec.rescales_itself else layers.Rescaling(1 / 255)(inputs)
    aug = hyper.augment
    if aug.shift:
        x = layers.RandomTranslation(aug.shift, aug.shift, fill_mode="constant")(x)
    if aug.rotation:
        x = layers.RandomRotation(aug.rotation / 360, fill_mode="constant")(x)
    if aug.zoom:
        x = layers.RandomZoom(aug.zoom, fill_mode="constant")(x)
    if hyper.input_size and hyper.input_size != image_shape[0]:
        x = layers.Resizing(hyper.input_size, hyper.input_size)(x)
    if spec.channels and spec.channels != image_shape[2]:
        x = layers.Concatenate()([x] * spec.channels)  # grayscale -> RGB
    x = spec.body(x)
    x = layers.Dropout(hyper.dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="proba")(x)
    return keras.Model(inputs, outputs, name=backbone)
