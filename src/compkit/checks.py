"""Checks across config tables, run once the tables are valid each on its own: the loss, folds and blend settings
a task can use, pretrained weights, embedded columns, the tuning space, and known backbones with their minimum sizes.

Each raises :class:`~compkit.errors.ConfigError` naming the config's ``source`` and the key to fix.
"""

from __future__ import annotations

from pathlib import Path

from compkit.errors import ConfigError
from compkit.hyper import HYPER_KEYS
from compkit.registry import BACKBONES, OWN_CNNS
from compkit.schema import Config, MetricFile


CLASSIFICATION_LOSSES = {"auto", "crossentropy", "focal"}
REGRESSION_LOSSES = {"auto", "crossentropy", "mse", "huber"}
# tasks without a stacked blend: (the task as a message names it, what the other blends average)
STACKLESS = {"multilabel": ("multi-label", "the tags"), "multihead": ("multi-head", "each head's probabilities"),
             "sequence": ("sequence", "each head's probabilities")}


def check_task(config: Config, source: str) -> None:
    """The training, fold and blend settings that the competition's task can use."""
    comp, task = config.competition, config.competition.task
    numeric = task in ("regression", "ordinal")
    allowed = REGRESSION_LOSSES if numeric else CLASSIFICATION_LOSSES
    if config.train.loss not in allowed:
        raise ConfigError(f"{source}: train.loss = {config.train.loss!r} does not apply to task {task!r}; use one of {sorted(allowed)}")
    if task == "regression" and config.train.loss == "crossentropy" and comp.target_range is None:
        raise ConfigError(f"{source}: train.loss = 'crossentropy' on a regression scales the target to 0-1 and needs "
                          "competition.target_range = [low, high]; set it or use mse / huber")
    if task in ("regression", "multilabel", "multihead", "sequence") and config.train.class_weight != "none":
        raise ConfigError(f"{source}: train.class_weight = {config.train.class_weight!r} weighs one class per row; task "
                          f"{task!r} has none: remove it")
    if (numeric or task in ("multilabel", "multihead", "sequence")) and config.ensemble.select == "hard":
        raise ConfigError(f"{source}: ensemble.select = 'hard' (majority vote) needs one class per row to vote for; task "
                          f"{task!r} blends by averaging: use best, equal, fitted, caruana or stacked")
    if task in STACKLESS and config.ensemble.stacking:
        name, what = STACKLESS[task]
        raise ConfigError(f"{source}: ensemble.stacking has no {name} meta-model; remove it (equal, fitted and caruana "
                          f"blend {what})")
    if config.folds.group_column and config.folds.group_column not in comp.extra_columns:
        raise ConfigError(f"{source}: folds.group_column {config.folds.group_column!r} is not an extra column; "
                          f"add it to competition.extra_columns {comp.extra_columns}")
    if config.folds.group_column and task == "multilabel":
        raise ConfigError(f"{source}: folds.group_column with a multi-label target: grouped folds stratify one class per "
                          "row; remove group_column (the folds are iteratively stratified on every tag)")
    if comp.crop_to_object and comp.layout != "image_folder":
        raise ConfigError(f"{source}: competition.crop_to_object crops decoded photos, but layout is {comp.layout!r} (pixels "
                          "as they are); set layout = 'image_folder' or remove crop_to_object")
    if config.folds.group_column and config.folds.max_rows:
        raise ConfigError(f"{source}: folds.max_rows samples rows, not groups, so it would split folds.group_column's groups; "
                          "remove one of the two")
    if isinstance(comp.metric, MetricFile) and not Path(comp.metric.file).is_file():
        raise ConfigError(f"{source}: competition.metric.file {comp.metric.file!r}: not found; put the metric file there "
                          "(a path relative to the config folder)")


def check_augment_on(config: Config, source: str) -> None:
    """``train.augment_on = "device"`` only with transforms the device makes (elastic distortion is the pipeline's), and
    the random-resized crop (``augment.crop``, the device's only) never in the pipeline."""
    for backbone in config.train.backbones:
        aug, where = config.hyper(backbone).augment, config.train.augment_on
        if where == "device" and aug.elastic:
            raise ConfigError(f"{source}: backbone {backbone!r}: augment.elastic runs in the tf.data pipeline only, not with "
                              "train.augment_on = 'device'; set augment_on = 'pipeline' (or 'auto') or elastic = 0")
        if aug.crop and (where == "pipeline" or aug.elastic):
            raise ConfigError(f"{source}: backbone {backbone!r}: augment.crop runs on the device only, but "
                              f"{'augment.elastic' if aug.elastic else 'train.augment_on = ' + repr(where)} keeps the augmentation "
                              "in the tf.data pipeline; set augment_on = 'auto' (or 'device') and elastic = 0, or crop = 0")


def check_weights(config: Config, source: str) -> None:
    """Pretrained weights only where the competition allows them, ImageNet only for keras.applications backbones."""
    for backbone in config.train.backbones:
        hyper, key = config.hyper(backbone), f"backbones.{backbone}.weights"
        if hyper.weights and not config.competition.pretrained_allowed:
            raise ConfigError(
                f"{source}: {key} = {hyper.weights!r}, but competition.pretrained_allowed is false (the rules of "
                f"{config.competition.name} forbid pretrained weights); remove {key}, or set pretrained_allowed = true if the rules allow them"
            )
        if hyper.weights == "imagenet" and not BACKBONES[backbone].family:
            raise ConfigError(f"{source}: {key} = 'imagenet': {backbone} is compkit's own, with no ImageNet weights; give a weights file instead")
        if hyper.weights not in ("", "imagenet") and not hyper.weights.endswith((".h5", ".keras")):
            raise ConfigError(f"{source}: {key} = {hyper.weights!r}: expected 'imagenet' or a .weights.h5, .h5 or .keras file")
        if not hyper.weights and (hyper.freeze_epochs or hyper.unfreeze_layers or hyper.backbone_lr_scale != 1 or hyper.finetune_batchnorm):
            raise ConfigError(f"{source}: backbone {backbone!r}: freeze_epochs, unfreeze_layers, backbone_lr_scale and finetune_batchnorm "
                              f"need {key}; set it or remove them")
    if not config.competition.pretrained_allowed:
        for backbone in {*config.train.backbones, *config.tune.backbone_space}:
            if "weights" in config.tune.space_for(backbone):
                raise ConfigError(f"{source}: tune space key 'weights', but competition.pretrained_allowed is false; remove it")


def check_embed(config: Config, source: str) -> None:
    extras = config.competition.extra_columns
    for backbone in config.train.backbones:
        for column in config.hyper(backbone).embed:
            if column not in extras:
                raise ConfigError(f"{source}: embed column {column!r} is not an extra column; use one of {extras} or add it to competition.extra_columns")


def check_space(config: Config, source: str) -> None:
    for backbone in {*config.train.backbones, *config.tune.backbone_space}:
        for key in config.tune.space_for(backbone):
            if key not in HYPER_KEYS:
                raise ConfigError(f"{source}: tune space key {key!r} is not a hyperparameter; use one of {sorted(HYPER_KEYS)}")


def check_backbones(config: Config, source: str) -> None:
    known = sorted(BACKBONES)
    for name in [*config.train.backbones, *config.backbones, *config.tune.backbone_space, *filter(None, [config.distill.backbone])]:
        if name not in BACKBONES:
            raise ConfigError(f"{source}: unknown backbone {name!r}; choose from {known}")
    for name in config.train.backbones:
        if config.hyper(name).depth != 2 and BACKBONES[name].constructor:
            raise ConfigError(f"{source}: backbones.{name}.depth = {config.hyper(name).depth}: keras.applications backbones "
                              f"have their own depth; depth applies to {OWN_CNNS}")
        if (config.hyper(name).whiten or config.hyper(name).dirac) and BACKBONES[name].constructor:
            raise ConfigError(f"{source}: backbones.{name}: whiten and dirac initialise compkit's own CNNs only; "
                              f"set them under [backbones.<name>] of {OWN_CNNS}")
        if config.hyper(name).pooling != "avg" and BACKBONES[name].constructor:
            raise ConfigError(f"{source}: backbones.{name}.pooling = {config.hyper(name).pooling!r}: keras.applications "
                              f"backbones pool by their global average; use one of {OWN_CNNS}, or pooling = 'avg'")
        size = config.hyper(name).input_size or config.competition.image_shape[0]
        if size < BACKBONES[name].min_size:
            raise ConfigError(
                f"{source}: backbone {name!r} needs input_size >= {BACKBONES[name].min_size}, got {size}; "
                f"set backbones.{name}.input_size"
            )
