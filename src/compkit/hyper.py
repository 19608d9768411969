"""One backbone's hyperparameters (:class:`Hyper`, its :class:`Augment`) and the base of every config table.

Its own module so that what builds and trains models (backbones.py, fitting.py, finetune.py) needs only this,
not the whole competition config, and the config layer stays free of the model builders.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from compkit.errors import ConfigError


class Strict(BaseModel):
    """The base of every config table: unknown keys, loose types and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)  # every number finite


def describe(error: ValidationError, source: str) -> str:
    """A pydantic validation error as one line: ``source``, the key, what is wrong, the value and the fix."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {key!r}; remove it or fix its spelling"
    message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
    value = first.get("input")
    got = "" if isinstance(value, dict) else f" (got {value!r})"  # a model validator's input is the whole table
    return f"{source}: {key}: {message}{got}; fix it in the config or with --set"


class Augment(Strict):
    """Training-time augmentation: Keras preprocessing layers mapped over the tf.data batches.

    The geometric ones (shift, rotation, zoom, shear, flip, elastic) are also the test-time augmentation
    (``tta``); erasing, mixup and cutmix act in training only.
    """

    shift: float = Field(0.1, ge=0, lt=0.5)  # fraction of height and width
    rotation: float = Field(10.0, ge=0, le=180)  # degrees
    zoom: float = Field(0.0, ge=0, lt=1)  # fraction
    shear: float = Field(0.0, ge=0, lt=1)  # shear factor, keras.layers.RandomShear
    interpolation: Literal["bilinear", "nearest"] = "bilinear"  # of the geometric transforms and the resize; nearest keeps pixel values
    elastic: float = Field(0.0, ge=0, le=1)  # distortion strength of keras.layers.RandomElasticTransform, 0: off
    erasing: float = Field(0.0, ge=0, le=1)  # probability of random erasing (Zhong et al., 2020)
    mixup: float = Field(0.0, ge=0)  # Beta(alpha, alpha) of mixup (Zhang et al., 2018); 0: off
    cutmix: float = Field(0.0, ge=0, le=1)  # CutMix (Yun et al., 2019): each batch alpha ~ U(0, cutmix), ratio ~ Beta(alpha, alpha); 0: off
    # horizontal mirror of half the images (and of half of each TTA view's): garments and photos, never digits or letters
    flip: bool = False
    # random-resized crop (Szegedy et al. 2015's Inception crop, torchvision's RandomResizedCrop): a box of U(crop, 1) of the
    # image's area, aspect ratio log-uniform in 3/4-4/3, resampled to the image size; training only, on the device only
    # (a cache at 256 px with input_size 224 trains on crops without re-decoding). 0: off; ImageNet recipes use 0.08
    crop: float = Field(0.0, ge=0, lt=1)


class Hyper(Strict):
    """Hyperparameters of one backbone's training; ``[backbones.<name>]`` may override any of them."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "nadam", "adamw", "sgd"] = "adam"
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["constant", "plateau", "cosine"] = "plateau"
    warmup_epochs: int = Field(0, ge=0)  # cosine: a linear warm-up from learning_rate / 25 first (one-cycle's start)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    patience: int = Field(8, ge=1)  # epochs without val_loss improvement before early stopping
    # each_epoch: val_loss after every epoch (early stopping, plateau schedule, pruning, the best epoch kept);
    # last_epoch: only after each phase's last, when a cosine run to its end keeps its last epoch anyway (saves about
    # a tenth of an epoch's work at Fashion-MNIST's 45,000 fit and 15,000 validation rows)
    validation: Literal["each_epoch", "last_epoch"] = "each_epoch"
    input_size: int | None = Field(None, ge=8)  # square side fed to the backbone; None: image size
    width: float = Field(1.0, gt=0)  # filter-count multiplier of cnn_small, resnet_small and airbench
    # conv layers per block of cnn_small and airbench, residual blocks per stage of resnet_small: one for all three, or three
    # (e.g. [1, 2, 2]: after a whitening layer the first block needs less)
    depth: int | list[int] = 2
    # compkit's own CNNs: avg (global average of the feature maps) or columns (each column averaged over the
    # height, the columns kept left to right: what a sequence's per-position heads need, as SVHN's)
    pooling: Literal["avg", "columns"] = "avg"
    masks: list[int] = []  # pixel thresholds t, each adds a binary channel (pixel > t): e.g. DACON's letter mask
    embed: list[str] = []  # extra columns fed to the head through an embedding (e.g. DACON's letter)
    # airbench's initialisations (Jordan, 2024), compkit's own CNNs only: a frozen first convolution whitening the
    # training images' whiten x whiten patches (0: off), and identity (Dirac) initial convolutions
    whiten: int = Field(0, ge=0, le=5)
    dirac: bool = False
    ema: float = Field(0.0, ge=0, lt=1)  # momentum of an exponential moving average of the weights; 0: off
    tta: int = Field(1, ge=1)  # predictions averaged per image: the image, then tta - 1 augmented views
    # MiB tf.data's autotuned buffers (prefetch, parallel maps) may hold; TF's default is half the machine's RAM,
    # too much beside several 224-px fold processes. Not a model setting (fitting.bounded).
    pipeline_ram_mb: int = Field(1024, ge=1)
    weights: str = ""  # "": from scratch; "imagenet" (keras.applications); or a .weights.h5 / .h5 / .keras file
    freeze_epochs: int = Field(0, ge=0)  # with weights: epochs training the head only, backbone frozen (BatchNorm in inference mode)
    unfreeze_layers: int = Field(0, ge=0)  # with weights: the top layers of the backbone fine-tuned afterwards; 0: all
    backbone_lr_scale: float = Field(1.0, gt=0, le=1)  # with weights: the backbone's learning rate / the head's while fine-tuning
    finetune_batchnorm: bool = False  # with weights: BatchNorm learns while fine-tuning (the new data's statistics); false: inference mode
    augment: Augment = Augment()

    @field_validator("depth")
    @classmethod
    def _depth_per_block(cls, depth: int | list[int]) -> int | list[int]:
        counts = depth if isinstance(depth, list) else [depth]
        if isinstance(depth, list) and len(counts) != 3 or min(counts) < 1:
            raise ValueError("give a count >= 1 for every block, or three counts, one a block (e.g. [1, 2, 2])")
        return depth

    @model_validator(mode="after")
    def _warmup_fits(self) -> Hyper:
        if self.lr_schedule == "cosine" and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} must be below epochs {self.epochs}: lower it or raise epochs")
        if self.validation == "last_epoch" and self.patience < self.epochs:
            raise ValueError(f"validation 'last_epoch' cannot early-stop (patience {self.patience} < epochs {self.epochs}): "
                             "raise patience to epochs, or set validation = 'each_epoch'")
        if self.validation == "last_epoch" and self.lr_schedule == "plateau":
            raise ValueError("validation 'last_epoch' cannot reduce the learning rate on a plateau of val_loss: use "
                             "lr_schedule 'cosine' or 'constant', or set validation = 'each_epoch'")
        return self

    def with_params(self, params: dict[str, Any]) -> Hyper:
        """A copy with ``params`` applied; keys are field names or ``augment.<field>`` (as Optuna names them).

        Raises:
            ConfigError: a key is not a hyperparameter, or a value is out of range.
        """
        tree = self.model_dump()
        for key, value in params.items():
            section, _, field = key.rpartition(".")
            target = tree[section] if section else tree
            if section not in ("", "augment") or field not in target:
                raise ConfigError(f"parameter {key!r} is not a hyperparameter; use one of {sorted(HYPER_KEYS)}")
            target[field] = value
        try:
            return Hyper.model_validate(tree, strict=False)
        except ValidationError as exc:
            raise ConfigError(describe(exc, "tuned parameters")) from exc


def _optional(model: type[BaseModel], name: str, doc: str) -> type[Strict]:
    """A :class:`Strict` model with ``model``'s fields, each optional (default None) with its own bounds."""
    fields = {}
    for key, info in model.model_fields.items():
        optional = FieldInfo.merge_field_infos(info, default=None)
        optional.annotation = info.annotation | None
        fields[key] = (optional.annotation, optional)
    return create_model(name, __base__=Strict, __doc__=doc, __module__=__name__, **fields)


HyperOverride = _optional(Hyper, "HyperOverride", "A partial :class:`Hyper`: only the keys given replace the ``[train]`` values.")

HYPER_KEYS = {*(k for k in Hyper.model_fields if k != "augment"), *(f"augment.{k}" for k in Augment.model_fields)}
