"""Competition configuration: one TOML per competition, a compute preset, command-line overrides.

A run's configuration is resolved in this order, later layers winning key by key:
the defaults of the models below, ``configs/<competition>.toml``,
``configs/presets/<preset>.toml``, the competition's own ``[presets.<preset>]`` tables, then
``--set section.key=value`` overrides.
Every key is validated; an unknown key or a wrong type raises :class:`ConfigError`
naming the key.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compkit.errors import CompkitError
from compkit.metrics import TASKS, problem


class ConfigError(CompkitError):
    """A configuration file or override that is missing, malformed, or names a bad key/value."""


NAME_MAX = 100  # characters of a competition or submission name; file systems allow 255 bytes per name
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot name a folder or file of its own (``folds/<name>``, a submission), or None when it can.

    A safe name is 1-100 characters of letters, digits, ``.``, ``_``, ``-``, starting with a letter or a digit:
    no path separator, no ``..``, not absolute, not hidden, not an option.
    """
    if not value:
        return "it is empty"
    if len(value) > NAME_MAX:
        return f"it has {len(value)} characters; use at most {NAME_MAX}"
    if not _SAFE_NAME.fullmatch(value):
        return "it is not a plain file name (use letters, digits, '.', '_', '-'; start with a letter or digit)"
    return None


def check_name(value: str, what: str) -> str:
    """``value`` when it is a safe name (see :func:`name_problem`).

    Raises:
        ConfigError: names ``what`` (e.g. ``--name``), the value and why it is refused.
    """
    problem = name_problem(value)
    if problem:
        raise ConfigError(f"{what} {value[:NAME_MAX]!r}{'...' if len(value) > NAME_MAX else ''}: {problem}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MetricFile(_Strict):
    """The competition's own metric code: a Python file defining Kaggle's
    ``score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str) -> float``.

    ``file`` is relative to the config's folder (``configs/``); ``probabilities``: the submission frames it is given
    hold probabilities (binary: P(positive) in the target column; multiclass: one column per class), else labels.
    """

    file: str = Field(min_length=1)
    greater_is_better: bool
    probabilities: bool = False


class Competition(_Strict):
    """What the competition ships and how it is scored.

    Layouts: ``pixel_csv`` (one row per image: id, target, extras, flattened pixels; DACON, Kaggle
    digit-recognizer with ``id_column = ""``) and ``image_folder`` (image files in ``train_images``
    and ``test_images``, labels in ``train_file`` keyed by file name in ``id_column``).
    """

    name: str
    url: str = ""
    layout: Literal["pixel_csv", "image_folder"] = "pixel_csv"
    train_file: str = "train.csv"
    test_file: str = "test.csv"  # pixel_csv only
    train_images: str = "train"  # image_folder only: folder of the labelled images
    test_images: str = "test"  # image_folder only: folder of the test images, ids are their file names
    sample_submission: str = "sample_submission.csv"
    solution_file: str = "solution.csv"  # test labels + Usage (Public/Private); when present, scored on it
    id_column: str = "id"  # "": ids are the 1-based row numbers of each file (Kaggle digit-recognizer)
    target_column: str
    # multiclass | binary (classes = [negative, positive]) | regression (no classes) | ordinal (classes: the grades in order)
    task: Literal[TASKS] = "multiclass"
    classes: list[int] | list[str] | None = Field(None, min_length=2)
    target_range: list[float] | None = Field(None, min_length=2, max_length=2)  # regression: [low, high], clips what is submitted
    extra_columns: list[str] = []
    image_shape: list[int] = Field(min_length=3, max_length=3)
    pixel_prefix: str = ""
    pixel_start: int = Field(0, ge=0)  # number of the first pixel column: pixel0.. or pixel1..
    metric: str | MetricFile = "accuracy"  # a name of compkit.metrics.SCORERS the task can use, or { file = ..., greater_is_better = ... }
    submission_columns: list[str] | None = Field(None, min_length=2)  # None: the sample submission's header decides
    builder: Literal["", "fashion_mnist"] = ""  # `make data` can build this competition's files
    platform: Literal["local", "kaggle", "dacon"] = "local"  # where submissions go (see platform.py)
    slug: str = ""  # Kaggle's competition name, as in kaggle.com/competitions/<slug>; "" -> name
    pretrained_allowed: bool = False  # the rules allow pretrained weights (backbones.<name>.weights); DACON: false

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        problem = name_problem(value)  # the name becomes folds/<name>, runs/<name>, submissions/<name>
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, value: list) -> list:
        seen = set()
        for i, item in enumerate(value):
            if str(item) in seen:  # labels are matched as text: 1 and "1" would be one class
                raise ValueError(f"class {item!r} (item {i + 1}) is listed twice; list each class once")
            seen.add(str(item))
        return value

    @property
    def pixel_columns(self) -> list[str]:
        """Names of the flattened, row-major pixel columns: ``<prefix><start>`` .. ``<prefix><start + H*W*C - 1>``."""
        height, width, channels = self.image_shape
        return [f"{self.pixel_prefix}{i}" for i in range(self.pixel_start, self.pixel_start + height * width * channels)]

    @property
    def id_key(self) -> str:
        """The id column of compkit's own files (folds, predictions): ``id_column``, or the submission's id column."""
        return self.id_column or self.submission_columns[0]

    @model_validator(mode="after")
    def _task_fits(self) -> Competition:
        if self.task == "regression" and self.classes is not None:
            raise ValueError('task = "regression" has no classes; remove classes (set target_range to clip the values)')
        if self.task != "regression" and self.classes is None:
            raise ValueError(f"task = {self.task!r} needs classes (ordinal: the grades in order)")
        if self.task == "binary" and len(self.classes) != 2:
            raise ValueError(f"task = 'binary' needs exactly 2 classes [negative, positive], got {len(self.classes)}")
        if self.target_range is not None and not self.target_range[0] < self.target_range[1]:
            raise ValueError(f"target_range {self.target_range}: give [low, high] with low < high")
        why = isinstance(self.metric, str) and problem(self.metric, self.task)
        if why:
            raise ValueError(why)
        return self

    @model_validator(mode="after")
    def _row_number_ids_need_columns(self) -> Competition:
        if not self.id_column and self.submission_columns is None:
            raise ValueError('id_column = "" (row-number ids) needs submission_columns, whose first is the id column')
        return self


class Folds(_Strict):
    """Cross-validation scheme and the local public/private holdout."""

    n_splits: int = Field(5, ge=2)
    stratify: list[str] | None = Field(None, min_length=1)  # columns; None: the task's own strata of the target
    group_column: str = ""  # an extra column whose groups (e.g. a patient) stay whole: StratifiedGroupKFold
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    public_share: float = Field(0.5, gt=0, lt=1)
    max_rows: int | None = Field(None, ge=2)  # stratified subsample of the CV rows, to bound compute
    seed: int = 42


class Augment(_Strict):
    """Training-time augmentation: Keras preprocessing layers mapped over the tf.data batches.

    The geometric ones (shift, rotation, zoom, shear, elastic) are also the test-time augmentation
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


class Hyper(_Strict):
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
    input_size: int | None = Field(None, ge=8)  # square side fed to the backbone; None: image size
    width: float = Field(1.0, gt=0)  # filter-count multiplier of cnn_small and resnet_small
    masks: list[int] = []  # pixel thresholds t, each adds a binary channel (pixel > t): e.g. DACON's letter mask
    embed: list[str] = []  # extra columns fed to the head through an embedding (e.g. DACON's letter)
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

    @model_validator(mode="after")
    def _warmup_fits(self) -> Hyper:
        if self.lr_schedule == "cosine" and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} must be below epochs {self.epochs}: lower it or raise epochs")
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
            raise ConfigError(_describe(exc, "tuned parameters")) from exc


class HyperOverride(_Strict):
    """A partial :class:`Hyper`: only the keys given replace the ``[train]`` values."""

    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    optimizer: Literal["adam", "nadam", "adamw", "sgd"] | None = None
    learning_rate: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    lr_schedule: Literal["constant", "plateau", "cosine"] | None = None
    warmup_epochs: int | None = Field(None, ge=0)
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    dropout: float | None = Field(None, ge=0, lt=1)
    patience: int | None = Field(None, ge=1)
    input_size: int | None = Field(None, ge=8)
    width: float | None = Field(None, gt=0)
    masks: list[int] | None = None
    embed: list[str] | None = None
    ema: float | None = Field(None, ge=0, lt=1)
    tta: int | None = Field(None, ge=1)
    pipeline_ram_mb: int | None = Field(None, ge=1)
    weights: str | None = None
    freeze_epochs: int | None = Field(None, ge=0)
    unfreeze_layers: int | None = Field(None, ge=0)
    backbone_lr_scale: float | None = Field(None, gt=0, le=1)
    finetune_batchnorm: bool | None = None
    augment: Augment | None = None


HYPER_KEYS = {*(k for k in Hyper.model_fields if k != "augment"), *(f"augment.{k}" for k in Augment.model_fields)}


class Train(Hyper):
    """Which backbones to train and how the compute is set up."""

    backbones: list[str] = Field(["cnn_small"], min_length=1)
    seed: int = 42
    use_tuned: bool = True  # apply runs/<competition>/best/<backbone>.json when `make tune` wrote it
    # Compute (devices.py): dtype policy; auto = mixed_float16 on a GPU (compute capability >= 7), else float32.
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    # Where augmentation and TTA views are computed (augment.py): "device" inside the training step on the batch the CPU
    # only gathered (uint8); "pipeline" in the tf.data map on the CPU; auto = device with a GPU, else pipeline (faster
    # on a CPU, measured: docs/benchmarks.md). augment.elastic runs in the pipeline only.
    augment_on: Literal["auto", "device", "pipeline"] = "auto"
    strategy: Literal["per_device", "mirrored"] = "per_device"  # a fold process per GPU, or one MirroredStrategy over all
    devices: list[int] = []  # GPU ids as nvidia-smi numbers them (DEVICES=0,2); []: every GPU TensorFlow sees
    workers: int = Field(1, ge=1)  # without a GPU: fold/trial processes at once, the cores split between them
    process_per_fold: bool = True  # a fresh process per fold keeps memory flat across folds
    class_weight: Literal["none", "balanced"] = "none"  # balanced: n / (k * count), sklearn's formula
    # auto: crossentropy (classification), mse (regression, ordinal); focal: Lin et al. 2017, gamma 2 (classification);
    # huber (regression, ordinal); crossentropy on a regression: the bounded recipe (target scaled to 0-1, sigmoid, BCE)
    loss: Literal["auto", "crossentropy", "focal", "mse", "huber"] = "auto"
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism(): same seed, same predictions
    seeds: int = Field(1, ge=1)  # models per fold, each from its own seed; their predictions are averaged
    # Keras' run_eagerly: every step in Python, no tf.function tracing. Slower per step, but a large backbone's first
    # step on a CPU goes from minutes of graph building to seconds: for one-step checks and debugging, not for runs.
    run_eagerly: bool = False
    executor: Literal["local", "ray"] = "local"  # ray: each fold a Ray task on $RAY_ADDRESS's cluster ([ray], executors.py)


class ParamSpec(_Strict):
    """One dimension of a search space: ``choices``, or a ``low``..``high`` range.

    Integer bounds give ``suggest_int``, float bounds ``suggest_float``; ``log`` samples on a log scale.
    """

    choices: list[int] | list[float] | list[str] | None = None
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either choices = [...] or both low and high")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        return self


# The default search space (optimizer ranking on DACON: Adam ~ Nadam > Adamax ~ RMSprop > SGD >> Adagrad).
DEFAULT_SPACE: dict[str, ParamSpec] = {
    key: ParamSpec(**spec)
    for key, spec in {
        "optimizer": {"choices": ["adam", "nadam", "adamw", "sgd"]},
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
        "batch_size": {"choices": [32, 64, 128]},
        "dropout": {"low": 0.0, "high": 0.5},
        "label_smoothing": {"low": 0.0, "high": 0.2},
        "augment.shift": {"low": 0.0, "high": 0.2},
        "augment.rotation": {"low": 0.0, "high": 20.0},
        "augment.zoom": {"low": 0.0, "high": 0.2},
    }.items()
}


class Tune(_Strict):
    """The Optuna study of each backbone: search space, scored folds, pruner, storage."""

    trials: int = Field(20, ge=1)  # finished (complete or pruned) trials per study
    folds: list[int] = Field([0], min_length=1)  # validation folds; the objective is their mean score
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int = 42  # TPE sampler seed
    storage: str = ""  # "" -> sqlite:///runs/<competition>/optuna.db; env OPTUNA_STORAGE wins
    heartbeat_interval: int = Field(60, ge=1)  # seconds; a trial silent for grace_period is failed
    grace_period: int = Field(180, ge=1)
    max_retry: int = Field(2, ge=0)  # times a failed trial's parameters are run again
    space: dict[str, ParamSpec] = {}  # replaces or adds dimensions of DEFAULT_SPACE for every backbone
    backbone_space: dict[str, dict[str, ParamSpec]] = {}  # per backbone: replaces or adds dimensions
    executor: Literal["local", "ray"] = "local"  # ray: each trial a Ray task ([ray]); the storage must reach every node

    def space_for(self, backbone: str) -> dict[str, ParamSpec]:
        """The search space of ``backbone``: DEFAULT_SPACE, updated by ``space``, then ``backbone_space[backbone]``.

        A dimension is fixed by giving it a single choice, e.g. ``optimizer = {choices = ["adam"]}``.
        """
        return {**DEFAULT_SPACE, **self.space, **self.backbone_space.get(backbone, {})}


class Ensemble(_Strict):
    """How the backbones' OOF probabilities are blended."""

    select: Literal["best", "equal", "fitted", "hard", "caruana", "stacked"] = "best"
    stacking: bool = False  # also blend by a logistic-regression meta-model on the OOF probabilities ("stacked")
    stacking_c: float = Field(1.0, gt=0)  # the meta-model's C: inverse L2 regularisation strength
    caruana_iterations: int = Field(25, ge=1)  # picks of Caruana's ensemble selection (with replacement)

    @model_validator(mode="after")
    def _stacked_needs_stacking(self) -> Ensemble:
        if self.select == "stacked" and not self.stacking:
            raise ValueError('select = "stacked" needs stacking = true')
        return self


class Pseudo(_Strict):
    """`make pseudo`: which test predictions become pseudo-labels (see pseudo.py)."""

    threshold: float = Field(0.95, gt=0, le=1)  # minimum mean top probability of the fold's backbones


class Adversarial(_Strict):
    """`make adversarial`: a classifier telling train images from test images (see adversarial.py)."""

    backbone: str = "cnn_small"  # trained from scratch on images only, never on labels
    width: float = Field(0.5, gt=0)  # filter multiplier: the smallest net that separates shifted sets
    input_size: int | None = Field(None, ge=8)  # square side fed to the backbone; None: image size
    epochs: int = Field(8, ge=1)  # F-MNIST vs DACON, 400 fit rows: 4 epochs gave pooled AUC 0.74 (folds 0.80-0.95), 8 gave 1.00
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    n_splits: int = Field(5, ge=2)  # K folds: every image gets an out-of-fold P(test)
    max_rows: int = Field(5000, ge=10)  # random rows drawn from each of train and test, to bound compute
    top: int = Field(200, ge=1)  # train rows most like test written to train_like_test.csv
    seed: int = 42


class Ray(_Strict):
    """The Ray executor (``train.executor`` / ``tune.executor = "ray"``, see executors.py)."""

    cpus_per_task: int = Field(1, ge=1)  # CPUs a fold or trial task reserves; also its TensorFlow threads
    gpus_per_task: float | None = Field(None, ge=0)  # None: 1 when train.devices names GPUs or the driver sees one, else 0
    max_retries: int = Field(2, ge=0)  # runs again of a task whose worker died (killed, out of memory, node lost)
    data_dir: str = ""  # the competition's data on every worker; "": the driver's data folder, as an absolute path
    num_cpus: int | None = Field(None, ge=1)  # a local cluster's CPUs (no RAY_ADDRESS); None: every core
    object_store_mb: int = Field(200, ge=80)  # a local cluster's object store (fold files travel through it)


class Tracking(_Strict):
    """Weights & Biases naming; the mode comes from WANDB_MODE (see tracking.py)."""

    project: str = ""  # "" -> the competition's name
    entity: str = ""  # "" -> your default W&B entity


class Config(_Strict):
    """The resolved configuration of one competition run."""

    competition: Competition
    folds: Folds
    train: Train = Train()
    backbones: dict[str, HyperOverride] = {}
    tune: Tune = Tune()
    ensemble: Ensemble = Ensemble()
    pseudo: Pseudo = Pseudo()
    adversarial: Adversarial = Adversarial()
    tracking: Tracking = Tracking()
    ray: Ray = Ray()

    def hyper(self, backbone: str) -> Hyper:
        """The hyperparameters of ``backbone``: ``[train]`` updated by ``[backbones.<backbone>]``."""
        base = self.train.model_dump(include=set(Hyper.model_fields))
        override = self.backbones.get(backbone)
        if override is not None:
            base.update(override.model_dump(exclude_none=True))
        return Hyper.model_validate(base)


@dataclass(frozen=True)
class Paths:
    """Where a competition's inputs and artefacts live, all relative to the project root."""

    root: Path  # the project root: configs/, wandb/
    data: Path  # the competition's files (train.csv, ...)
    folds: Path  # folds/<competition>/: folds.csv, holdout.csv
    runs: Path  # runs/<competition>/: models, histories, predictions, blends
    submissions: Path  # submissions/<competition>/: submission CSVs and leaderboard.csv

    @classmethod
    def for_competition(cls, name: str, root: Path, data_dir: Path | None = None) -> Paths:
        """Paths of competition ``name`` under ``root``; data in ``data_dir`` or ``root/data/<name>``."""
        return cls(
            root=root,
            data=Path(data_dir) if data_dir else root / "data" / name,
            folds=root / "folds" / name,
            runs=root / "runs" / name,
            submissions=root / "submissions" / name,
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"train.epochs=3"`` into ``(["train", "epochs"], 3)``.

    The value is read as a TOML value (``3``, ``0.5``, ``true``, ``["a", "b"]``); anything that
    is not valid TOML is taken as a plain string. Raises :class:`ConfigError` without ``=``.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set train.epochs=3")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def _read_toml(path: Path, what: str) -> dict:
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.toml")) if path.parent.is_dir() else []
        raise ConfigError(f"{path}: {what} not found; choose one of {choices} or create the file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix the syntax") from exc
    except UnicodeDecodeError as exc:
        at = exc.object[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {at}: not UTF-8 text ({exc.reason}); save it as UTF-8, as TOML requires") from None


def _merge(base: dict, layer: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _set_dotted(tree: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {key} is a value, not a section")
    tree[keys[-1]] = value


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {key!r}; remove it or fix its spelling"
    message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
    return f"{source}: {key}: {message} (got {first.get('input')!r}); fix it in the config or with --set"


def load_config(
    competition: str,
    preset: str | None = None,
    overrides: list[str] = (),
    config_dir: Path = Path("configs"),
) -> Config:
    """Resolve and validate the configuration of ``competition``.

    Args:
        competition: name of ``<config_dir>/<competition>.toml``.
        preset: name of ``<config_dir>/presets/<preset>.toml`` (``smoke``, ``cpu``, ``gpu``), or None;
            the competition's own ``[presets.<preset>]`` tables are applied after it.
        overrides: ``section.key=value`` strings applied last.
        config_dir: the folder holding the competition TOMLs.

    Raises:
        ConfigError: a file is missing or not TOML, a key is unknown, or a value has the wrong
            type or range; the message names the file and the key.
    """
    sources = [str(config_dir / f"{competition}.toml")]
    tree = _read_toml(config_dir / f"{competition}.toml", "competition config")
    own_presets = tree.pop("presets", {})  # [presets.<name>.<section>]: this competition's preset adjustments
    if preset:
        sources.append(str(config_dir / "presets" / f"{preset}.toml"))
        tree = _merge(tree, _read_toml(config_dir / "presets" / f"{preset}.toml", "preset"))
        tree = _merge(tree, own_presets.get(preset, {}))
    for text in overrides:
        keys, value = parse_override(text)
        _set_dotted(tree, keys, value)
    if overrides:
        sources.append("--set")
    _anchor_metric_file(tree, config_dir)
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, " + ".join(sources))) from exc
    _check_backbones(config, " + ".join(sources))
    _check_space(config, " + ".join(sources))
    _check_embed(config, " + ".join(sources))
    _check_weights(config, " + ".join(sources))
    _check_task(config, " + ".join(sources))
    _check_augment_on(config, " + ".join(sources))
    return config


def _check_augment_on(config: Config, source: str) -> None:
    """``train.augment_on = "device"`` only with transforms the device makes (elastic distortion is the pipeline's)."""
    for backbone in config.train.backbones:
        if config.train.augment_on == "device" and config.hyper(backbone).augment.elastic:
            raise ConfigError(f"{source}: backbone {backbone!r}: augment.elastic runs in the tf.data pipeline only, not with "
                              "train.augment_on = 'device'; set augment_on = 'pipeline' (or 'auto') or elastic = 0")


def _anchor_metric_file(tree: dict, config_dir: Path) -> None:
    """A metric file's path relative to the config folder made absolute, so every stage and worker finds it."""
    metric = tree.get("competition", {}).get("metric")
    if isinstance(metric, dict) and isinstance(metric.get("file"), str) and not Path(metric["file"]).is_absolute():
        metric["file"] = str((Path(config_dir) / metric["file"]).resolve())


CLASSIFICATION_LOSSES = {"auto", "crossentropy", "focal"}
REGRESSION_LOSSES = {"auto", "crossentropy", "mse", "huber"}


def _check_task(config: Config, source: str) -> None:
    """The training, fold and blend settings that the competition's task can use."""
    comp, task = config.competition, config.competition.task
    numeric = task in ("regression", "ordinal")
    allowed = REGRESSION_LOSSES if numeric else CLASSIFICATION_LOSSES
    if config.train.loss not in allowed:
        raise ConfigError(f"{source}: train.loss = {config.train.loss!r} does not apply to task {task!r}; use one of {sorted(allowed)}")
    if task == "regression" and config.train.loss == "crossentropy" and comp.target_range is None:
        raise ConfigError(f"{source}: train.loss = 'crossentropy' on a regression scales the target to 0-1 and needs "
                          "competition.target_range = [low, high]; set it or use mse / huber")
    if task == "regression" and config.train.class_weight != "none":
        raise ConfigError(f"{source}: train.class_weight = {config.train.class_weight!r} needs classes; a regression has none: remove it")
    if numeric and config.ensemble.select == "hard":
        raise ConfigError(f"{source}: ensemble.select = 'hard' (majority vote) needs classes to vote for; task {task!r} "
                          "blends by averaging: use best, equal, fitted, caruana or stacked")
    if config.folds.group_column and config.folds.group_column not in comp.extra_columns:
        raise ConfigError(f"{source}: folds.group_column {config.folds.group_column!r} is not an extra column; "
                          f"add it to competition.extra_columns {comp.extra_columns}")
    if config.folds.group_column and config.folds.max_rows:
        raise ConfigError(f"{source}: folds.max_rows samples rows, not groups, so it would split folds.group_column's groups; "
                          "remove one of the two")
    if not isinstance(comp.metric, str) and not Path(comp.metric.file).is_file():
        raise ConfigError(f"{source}: competition.metric.file {comp.metric.file!r}: not found; put the metric file there "
                          "(a path relative to the config folder)")


def _check_weights(config: Config, source: str) -> None:
    """Pretrained weights only where the competition allows them, ImageNet only for keras.applications backbones."""
    from compkit.backbones import BACKBONES

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


def _check_embed(config: Config, source: str) -> None:
    extras = config.competition.extra_columns
    for backbone in config.train.backbones:
        for column in config.hyper(backbone).embed:
            if column not in extras:
                raise ConfigError(f"{source}: embed column {column!r} is not an extra column; use one of {extras} or add it to competition.extra_columns")


def _check_space(config: Config, source: str) -> None:
    for backbone in {*config.train.backbones, *config.tune.backbone_space}:
        for key in config.tune.space_for(backbone):
            if key not in HYPER_KEYS:
                raise ConfigError(f"{source}: tune space key {key!r} is not a hyperparameter; use one of {sorted(HYPER_KEYS)}")


def _check_backbones(config: Config, source: str) -> None:
    from compkit.backbones import BACKBONES  # keeps `import compkit.config` free of keras

    known = sorted(BACKBONES)
    for name in [*config.train.backbones, *config.backbones, *config.tune.backbone_space]:
        if name not in BACKBONES:
            raise ConfigError(f"{source}: unknown backbone {name!r}; choose from {known}")
    for name in config.train.backbones:
        size = config.hyper(name).input_size or config.competition.image_shape[0]
        if size < BACKBONES[name].min_size:
            raise ConfigError(
                f"{source}: backbone {name!r} needs input_size >= {BACKBONES[name].min_size}, got {size}; "
                f"set backbones.{name}.input_size"
            )
