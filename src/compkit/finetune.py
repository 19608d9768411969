"""Fine-tuning a pretrained backbone in phases, the recipe of the Keras transfer-learning guide.

With ``Hyper.weights`` set, training runs in up to two phases that share the ``epochs`` budget:

``head``       ``freeze_epochs`` epochs: the backbone is frozen (``trainable = False``, which in Keras 3 also runs
               its BatchNormalization layers in inference mode, their moving statistics untouched); only the new
               head learns.
``fine-tune``  the remaining epochs: the backbone is unfrozen (all of it, or its top ``unfreeze_layers`` layers),
               its BatchNormalization layers stay frozen in inference mode (unless ``finetune_batchnorm``: then
               those unfrozen learn the new data's statistics), and it learns at ``backbone_lr_scale`` x the
               head's learning rate.

Without weights there is one phase, ``scratch``: everything trains from the start, as before.
Sources: F. Chollet, "Transfer learning & fine-tuning", keras.io/guides/transfer_learning (freeze, train the
head, unfreeze with a low learning rate, keep BatchNorm in inference mode); "Image classification via fine-tuning
with EfficientNet", keras.io/examples/vision/image_classification_efficientnet_fine_tuning (unfreeze the top
layers, BatchNorm left frozen); discriminative learning rates: Howard & Ruder, ULMFiT, 2018.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

    from compkit.config import Hyper

HEAD, FINE_TUNE, SCRATCH = "head", "fine-tune", "scratch"


@dataclass(frozen=True)
class Phase:
    """One ``model.fit`` call: ``name`` (head, fine-tune or scratch), epochs ``start`` (0-based) to ``start + epochs``."""

    name: str
    start: int
    epochs: int

    @property
    def end(self) -> int:
        """The epoch after this phase's last, the ``epochs`` argument of ``model.fit``."""
        return self.start + self.epochs


def phases(hyper: Hyper) -> list[Phase]:
    """The phases of one training run: ``[scratch]`` without weights, else ``[head, fine-tune]`` minus empty ones."""
    if not hyper.weights:
        return [Phase(SCRATCH, 0, hyper.epochs)]
    head = min(hyper.freeze_epochs, hyper.epochs)
    parts = [Phase(HEAD, 0, head), Phase(FINE_TUNE, head, hyper.epochs - head)]
    return [p for p in parts if p.epochs > 0]


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested ``"backbone"`` model of a classifier from :func:`compkit.backbones.build_model`."""
    return model.get_layer("backbone")


def set_phase(model: keras.Model, hyper: Hyper, phase: Phase) -> None:
    """Freeze or unfreeze the backbone of ``model`` for ``phase`` (compile afterwards: Keras reads ``trainable`` then)."""
    import keras

    backbone = backbone_of(model)
    backbone.trainable = phase.name != HEAD
    if phase.name != FINE_TUNE:
        return
    layers = backbone.layers
    top = {id(layer) for layer in layers[len(layers) - hyper.unfreeze_layers if hyper.unfreeze_layers else 0:]}
    for layer in layers:  # each one set, whatever an earlier phase left
        batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = id(layer) in top and (hyper.finetune_batchnorm or not batchnorm)


def phase_optimizer(optimizer: keras.optimizers.Optimizer, model: keras.Model, hyper: Hyper, phase: Phase):
    """``optimizer``, or in the fine-tune phase with ``backbone_lr_scale`` < 1 the same optimizer whose updates of the
    backbone's variables use ``backbone_lr_scale`` x its learning rate (the head keeps the full rate).

    Decoupled weight decay (AdamW) still uses the full rate for every variable.
    """
    if phase.name != FINE_TUNE or hyper.backbone_lr_scale == 1:
        return optimizer
    paths = [v.path for v in backbone_of(model).trainable_variables]
    scaled = _scaled_class(type(optimizer))
    return scaled.from_config({**optimizer.get_config(), "backbone_lr_scale": hyper.backbone_lr_scale, "backbone_paths": paths})


@functools.cache  # one class per optimizer and process: Keras registers it by name for loading saved models
def _scaled_class(base: type) -> type:
    import keras

    @keras.saving.register_keras_serializable(package="compkit", name=f"BackboneScaled{base.__name__}")
    class BackboneScaled(base):
        """``base`` with the learning rate of the variables in ``backbone_paths`` multiplied by ``backbone_lr_scale``."""

        def __init__(self, backbone_lr_scale: float = 1.0, backbone_paths: list[str] = (), **kwargs):
            super().__init__(**kwargs)
            self.backbone_lr_scale = backbone_lr_scale
            self.backbone_paths = list(backbone_paths)
            self._scaled_paths = set(self.backbone_paths)

        def update_step(self, gradient, variable, learning_rate):
            # the backend may hand over its own variable: find the Keras one, whose path names its layer
            path = self._trainable_variables[self._get_variable_index(variable)].path
            if path in self._scaled_paths:
                learning_rate = keras.ops.multiply(learning_rate, self.backbone_lr_scale)
            return super().update_step(gradient, variable, learning_rate)

        def get_config(self):
            return {**super().get_config(), "backbone_lr_scale": self.backbone_lr_scale, "backbone_paths": self.backbone_paths}

    BackboneScaled.__name__ = BackboneScaled.__qualname__ = f"BackboneScaled{base.__name__}"
    return BackboneScaled


def register() -> None:
    """Register the scaled optimizers compkit may have saved with a model, so that ``load_model`` finds them."""
    import keras

    for base in (keras.optimizers.Adam, keras.optimizers.Nadam, keras.optimizers.AdamW, keras.optimizers.SGD):
        _scaled_class(base)
