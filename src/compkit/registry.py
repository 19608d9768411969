"""The backbone registry: each backbone's name, smallest input side, channels and keras.applications names.

Pure data, so that the config layer can check a backbone's name and input size without importing the model
builders (backbones.py) or Keras; backbones.py adds the layers of compkit's own CNNs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    """A feature extractor's fixed facts; backbones.py builds it from them.

    ``channels`` is what the body expects (grayscale is repeated to 3 for keras.applications), None: the image's
    channels as they are; ``rescales_itself`` is True when the body maps 0-255 pixels to its own range.
    ``constructor`` and ``family`` name the keras.applications function and module (whose ``preprocess_input`` gives
    the input range of pretrained weights); both are "" for compkit's own CNNs.
    """

    name: str
    min_size: int
    channels: int | None
    rescales_itself: bool
    constructor: str = ""
    family: str = ""


def _application(name: str, min_size: int, rescales_itself: bool, constructor: str, family: str) -> BackboneSpec:
    """A keras.applications backbone; ``min_size`` is the smallest side its constructor accepts."""
    return BackboneSpec(name, min_size, 3, rescales_itself, constructor, family)


BACKBONES: dict[str, BackboneSpec] = {
    b.name: b
    for b in [
        BackboneSpec("cnn_small", 8, None, False),
        BackboneSpec("resnet_small", 8, None, False),
        BackboneSpec("airbench", 8, None, False),  # Jordan (2024)'s layout: each block's first conv pooled at once
        _application("resnet50", 32, False, "ResNet50", "resnet"),
        _application("densenet121", 32, False, "DenseNet121", "densenet"),
        _application("efficientnetb0", 32, True, "EfficientNetB0", "efficientnet"),
        _application("xception", 71, False, "Xception", "xception"),
        _application("inceptionv3", 75, False, "InceptionV3", "inception_v3"),
        # include_preprocessing (the default) puts their own rescaling inside the model
        _application("efficientnetv2b0", 32, True, "EfficientNetV2B0", "efficientnet_v2"),
        _application("convnexttiny", 32, True, "ConvNeXtTiny", "convnext"),
        _application("resnet50v2", 32, False, "ResNet50V2", "resnet_v2"),
        _application("mobilenetv3small", 32, True, "MobileNetV3Small", "mobilenet_v3"),
    ]
}

# compkit's own CNNs (width, depth, pooling, whiten and dirac apply to them only), for the config's error messages
OWN_CNNS = ", ".join(name for name, spec in BACKBONES.items() if not spec.constructor)
