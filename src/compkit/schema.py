"""The configuration's tables as pydantic models: the competition, folds, training, tuning, ensembling,
pseudo-labelling, adversarial validation, Ray, limits, tracking and the inference bundle, each key with its default and bounds.

The hyperparameters of one backbone live in hyper.py; loading and layering the TOML files in config.py; the
checks across tables in checks.py.

Over 400 lines on purpose: every table's keys stay in this one file (and hyper.py), the source the documentation's
key tables are generated from (docs/hooks/config_keys.py); split, a table would fall out of the reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from compkit.errors import ConfigError
from compkit.hyper import Hyper, HyperOverride, Strict
from compkit.metrics import TASKS, problem


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


class MetricFile(Strict):
    """The competition's own metric code: a Python file defining Kaggle's
    ``score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str) -> float``.

    ``file`` is relative to the config's folder (``configs/``); ``probabilities``: the submission frames it is given
    hold probabilities (binary: P(positive) in the target column; multiclass: one column per class), else labels.
    """

    file: str = Field(min_length=1)
    greater_is_better: bool
    probabilities: bool = False


def _distinct(value: list) -> list:
    """``value`` when no two items are equal as text (labels are matched as text: 1 and "1" would be one class)."""
    seen = set()
    for i, item in enumerate(value):
        if str(item) in seen:
            raise ValueError(f"class {item!r} (item {i + 1}) is listed twice; list each class once")
        seen.add(str(item))
    return value


class Head(Strict):
    """One target of a multi-head competition (``[competition.targets.<head>]``): the train file's column named as the
    head holds one of its classes."""

    classes: list[int] | list[str] = Field(min_length=2)
    loss_weight: float = Field(1.0, gt=0)  # its categorical cross-entropy's weight in the training loss

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, value: list) -> list:
        return _distinct(value)


class Competition(Strict):
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
    # image_folder only: cut each image to its object's box before the resize (product photos on white; photos.py)
    crop_to_object: bool = False
    object_margin: float = Field(0.05, ge=0, lt=1)  # crop_to_object: the box widened by this share of its sides, each side
    sample_submission: str = "sample_submission.csv"
    solution_file: str = "solution.csv"  # test labels + Usage (Public/Private); when present, scored on it
    id_column: str = "id"  # "": ids are the 1-based row numbers of each file (Kaggle digit-recognizer)
    # "": the target is one column per class, named as the classes (one-hot; multi-label: 0/1 per tag, as RANZCR's)
    target_column: str
    # multiclass | binary (classes = [negative, positive]) | regression (no classes) | ordinal (classes: the grades in order)
    # | multilabel (classes: the tags; target_column holds them space-separated, or "": a 0/1 column per tag)
    # | multihead (no classes, target_column = "": each of targets names its column and classes)
    # | sequence (target_column holds a number as text, 1 to sequence_length symbols; classes: the symbols, one
    # character each, default the digits 0-9: SVHN's house numbers)
    task: Literal[TASKS] = "multiclass"
    classes: list[int] | list[str] | None = Field(None, min_length=2)
    sequence_length: int = Field(5, ge=2)  # sequence: the most symbols a number has (SVHN: 5); a length head and one head per position
    # multihead: head name -> its classes and loss weight ([competition.targets.<head>]), the heads in order
    targets: dict[str, Head] = {}
    # multihead: head name -> its weight in weighted_macro_recall (Bengali.AI: 2, 1, 1); a head not named weighs 1
    metric_weights: dict[str, float] = {}
    target_range: list[float] | None = Field(None, min_length=2, max_length=2)  # regression: [low, high], clips what is submitted
    extra_columns: list[str] = []
    image_shape: list[int] = Field(min_length=3, max_length=3)
    pixel_prefix: str = ""
    pixel_start: int = Field(0, ge=0)  # number of the first pixel column: pixel0.. or pixel1..
    # a name of compkit.metrics.SCORERS the task can use, or { file = ..., greater_is_better = ... };
    # None: the task's usual one (multiclass accuracy, binary roc_auc, regression rmse, ordinal qwk)
    metric: str | MetricFile | None = None
    submission_columns: list[str] | None = Field(None, min_length=2)  # None: the sample submission's header decides
    # `make data` can build this competition's files: fashion_mnist (Fashion-MNIST), digit_sequences (numbers of 1-5
    # of scikit-learn's handwritten digits, left to right: compkit.datasets)
    builder: Literal["", "fashion_mnist", "digit_sequences"] = ""
    platform: Literal["local", "kaggle", "dacon"] = "local"  # where submissions go (see compkit.platform)
    slug: str = ""  # Kaggle's competition name, as in kaggle.com/competitions/<slug>; "" -> name
    pretrained_allowed: bool = False  # the rules allow pretrained weights (backbones.<name>.weights); DACON: false
    code_competition: bool = False  # submissions are a notebook Kaggle reruns offline: `make upload` submits the pushed kernel
    hidden_test_rows: int | None = Field(None, ge=1)  # a code competition's hidden test set, in rows; None: the local test set's
    time_limit: float = Field(32400.0, gt=0)  # seconds a code competition's notebook may run (Kaggle's usual 9 hours)

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
        return _distinct(value)

    @property
    def pixel_columns(self) -> list[str]:
        """Names of the flattened, row-major pixel columns: ``<prefix><start>`` .. ``<prefix><start + H*W*C - 1>``."""
        height, width, channels = self.image_shape
        return [f"{self.pixel_prefix}{i}" for i in range(self.pixel_start, self.pixel_start + height * width * channels)]

    @property
    def id_key(self) -> str:
        """The id column of compkit's own files (folds, predictions): ``id_column``, or the submission's id column
        (``submission_columns``, else the sample submission's header: :func:`compkit.formats.with_sample_columns`).

        Raises:
            ConfigError: row-number ids with neither.
        """
        if self.id_column or self.submission_columns:
            return self.id_column or self.submission_columns[0]
        raise ConfigError(f'competition {self.name}: id_column = "" (row-number ids) takes the id column from the sample '
                          "submission's header, and none was read; put the sample submission in the data folder or set "
                          "submission_columns")

    @field_validator("image_shape")
    @classmethod
    def _shape(cls, shape: list[int]) -> list[int]:
        if min(shape[:2]) < 1 or not 1 <= shape[2] <= 4:
            raise ValueError(f"{shape}: height and width must be at least 1 and channels 1 (gray), 2 (gray + alpha), "
                             "3 (RGB) or 4 (RGBA)")
        return shape

    @model_validator(mode="after")
    def _task_fits(self) -> Competition:
        if self.task == "multihead":
            return self._heads_fit()
        if self.task == "sequence":
            return self._sequence_fits()
        if self.targets or self.metric_weights:
            raise ValueError(f"targets and metric_weights are a multi-head competition's; task = {self.task!r} has one "
                             'target: remove them or set task = "multihead"')
        if self.task == "regression" and self.classes is not None:
            raise ValueError('task = "regression" has no classes; remove classes (set target_range to clip the values)')
        if self.task != "regression" and self.classes is None:
            raise ValueError(f"task = {self.task!r} needs classes (ordinal: the grades in order)")
        if self.task == "regression" and not self.target_column:
            raise ValueError('task = "regression" reads its values from target_column; name the column')
        if self.task == "binary" and len(self.classes) != 2:
            raise ValueError(f"task = 'binary' needs exactly 2 classes [negative, positive], got {len(self.classes)}")
        if self.target_range is not None and not self.target_range[0] < self.target_range[1]:
            raise ValueError(f"target_range {self.target_range}: give [low, high] with low < high")
        why = isinstance(self.metric, str) and problem(self.metric, self.task)  # a metric file fits any task
        if why:
            raise ValueError(why)
        return self

    def _heads_fit(self) -> Competition:
        """A multi-head competition: heads under ``targets`` (each its own column), none of the one-target keys."""
        if not self.targets:
            raise ValueError('task = "multihead" needs its heads: add [competition.targets.<column>] tables with classes')
        if self.classes is not None or self.target_column or self.target_range is not None:
            raise ValueError('task = "multihead" reads each head from its own column with its own classes; set '
                             'target_column = "" and remove classes and target_range')
        unknown = sorted(set(self.metric_weights) - set(self.targets))
        if unknown:
            raise ValueError(f"metric_weights names {unknown}, not heads; use the heads {list(self.targets)}")
        if any(w <= 0 for w in self.metric_weights.values()):
            raise ValueError(f"metric_weights {self.metric_weights}: every weight must be above 0")
        return self._builtin_metric("weighted_macro_recall or exact_match")


    def _sequence_fits(self) -> Competition:
        """A sequence competition: the number in ``target_column``, its symbols single characters, scored by a built-in
        metric."""
        if self.targets or self.metric_weights or self.target_range is not None:
            raise ValueError('task = "sequence" derives its heads (the length, then one per position) from '
                             "sequence_length; remove targets, metric_weights and target_range")
        if not self.target_column:
            raise ValueError('task = "sequence" reads each number from target_column; name the column')
        long = [c for c in self.classes or [] if len(str(c)) != 1]
        if long:
            raise ValueError(f"classes {long}: a sequence's symbols are one character each (a number is read "
                             "character by character); list single characters, or leave classes out for the digits 0-9")
        return self._builtin_metric("exact_match (whole-number accuracy)")

    def _builtin_metric(self, scored_by: str) -> Competition:
        """A multi-head or sequence target is scored by a built-in metric of its task (``scored_by`` names them)."""
        if isinstance(self.metric, MetricFile):
            raise ValueError(f'a metric file scores one target column; task = "{self.task}" is scored by {scored_by}')
        why = isinstance(self.metric, str) and problem(self.metric, self.task)
        if why:
            raise ValueError(why)
        return self


class Folds(Strict):
    """Cross-validation scheme and the local public/private holdout."""

    n_splits: int = Field(5, ge=2)
    # columns (the target's: target_column, "" for a target of class columns); None: the task's own strata of the target
    stratify: list[str] | None = Field(None, min_length=1)
    group_column: str = ""  # an extra column whose groups (e.g. a patient) stay whole: StratifiedGroupKFold
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    public_share: float = Field(0.5, gt=0, lt=1)
    max_rows: int | None = Field(None, ge=2)  # stratified subsample of the CV rows, to bound compute
    seed: int = 42


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
    executor: Literal["local", "ray"] = "local"  # ray: each fold a Ray task on $RAY_ADDRESS's cluster ([ray], executors/cluster.py)


class ParamSpec(Strict):
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


class Tune(Strict):
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


class Ensemble(Strict):
    """How the backbones' OOF probabilities are blended."""

    select: Literal["best", "equal", "fitted", "hard", "caruana", "stacked"] = "best"
    stacking: bool = False  # also blend by a logistic-regression meta-model on the OOF probabilities ("stacked")
    stacking_c: float = Field(1.0, gt=0)  # the meta-model's C: inverse L2 regularisation strength
    caruana_iterations: int = Field(25, ge=1)  # picks of Caruana's ensemble selection (with replacement)
    # hours the blend may take to predict the hidden test set (competition.hidden_test_rows, else the local test set's
    # rows), projected from each fold's predict seconds per image; Caruana and the blend choice keep within it. None: no limit
    time_budget: float | None = Field(None, gt=0)
    # multi-label: one threshold for every tag ("global"), or one per tag ("per_tag": overfits with few rows per tag)
    tag_thresholds: Literal["global", "per_tag"] = "global"

    @model_validator(mode="after")
    def _stacked_needs_stacking(self) -> Ensemble:
        if self.select == "stacked" and not self.stacking:
            raise ValueError('select = "stacked" needs stacking = true')
        return self


class Pseudo(Strict):
    """`make pseudo`: which test predictions become pseudo-labels (see pseudo.py)."""

    threshold: float = Field(0.95, gt=0, le=1)  # minimum mean top probability of the fold's backbones


class Distill(Strict):
    """`make distill`: one student model per fold learning the selected blend's OOF probabilities (see distill.py)."""

    backbone: str = ""  # the student's backbone; "": the first of train.backbones
    # Hinton et al. (2015): both distributions softened by T, the soft loss x T^2. On Fashion-MNIST (cnn_small learning
    # its own 3-fold blend, fold 0) T 2 / alpha 0.5 kept the teacher's accuracy (0.9240 vs 0.9234); T 4 / alpha 0.9 lost 0.7 points.
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the soft (teacher) loss; 1 - alpha on the labels


class Adversarial(Strict):
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
    executor: Literal["local", "ray"] = "local"  # where the K classifiers train: fresh processes on train's slots, or Ray tasks


class Ray(Strict):
    """The Ray executor (``train.executor`` / ``tune.executor`` / ``adversarial.executor = "ray"``, see executors/cluster.py)."""

    cpus_per_task: int = Field(1, ge=1)  # CPUs a fold or trial task reserves; also its TensorFlow threads (1 with train.deterministic)
    gpus_per_task: float | None = Field(None, ge=0)  # None: 1 when train.devices names GPUs or the driver sees one, else 0
    max_retries: int = Field(2, ge=0)  # runs again of a task whose worker died (killed, out of memory, node lost)
    data_dir: str = ""  # the competition's data on every worker; "": the driver's data folder, as an absolute path
    num_cpus: int | None = Field(None, ge=1)  # a local cluster's CPUs (no RAY_ADDRESS); None: every core
    object_store_mb: int = Field(200, ge=80)  # a local cluster's object store (fold files travel through it)
    connect_timeout_s: float = Field(60.0, gt=0)  # seconds to reach $RAY_ADDRESS's head before giving up with one line


class Limits(Strict):
    """Guards against inputs that would fill the disk or memory before any work starts (issue 29)."""

    zip_unpacked_gb: float = Field(200.0, gt=0)  # total uncompressed size a competition zip may unpack to (GB, 1e9 bytes)
    zip_ratio: float = Field(200.0, ge=1)  # largest uncompressed / compressed size of one zip member (CSV ~5-10, PNG ~1)
    memory_fraction: float = Field(0.8, gt=0, le=1)  # share of the machine's memory a decoded split may take in memory
    disk_fraction: float = Field(0.9, gt=0, le=1)  # share of the free disk under runs/ a split's pixel cache may take


class Bundle(Strict):
    """`make package`: the offline inference bundle of a code competition and its Kaggle kernel (see package.py)."""

    owner: str = ""  # Kaggle user name owning the kernel and the bundle's dataset; "": a placeholder to replace before pushing
    enable_gpu: bool = False  # the kernel runs on a GPU (kernel-metadata.json's enable_gpu)
    is_private: bool = True  # the kernel and the bundle's dataset stay private
    rehearse_rows: int | None = Field(None, ge=1)  # `make rehearse` runs on this many rows and projects; None: hidden_test_rows


class Tracking(Strict):
    """Weights & Biases naming; the mode comes from WANDB_MODE (see tracking.py)."""

    project: str = ""  # "" -> the competition's name
    entity: str = ""  # "" -> your default W&B entity


class Config(Strict):
    """The resolved configuration of one competition run."""

    competition: Competition
    folds: Folds
    train: Train = Train()
    backbones: dict[str, HyperOverride] = {}
    tune: Tune = Tune()
    ensemble: Ensemble = Ensemble()
    pseudo: Pseudo = Pseudo()
    distill: Distill = Distill()
    adversarial: Adversarial = Adversarial()
    tracking: Tracking = Tracking()
    bundle: Bundle = Bundle()
    ray: Ray = Ray()
    limits: Limits = Limits()

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

    @property
    def cache(self) -> Path:
        """``runs/<competition>/cache/``: each split's decoded pixels, ``<split>-<key>.npy`` and its record (:mod:`compkit.cache`)."""
        return self.runs / "cache"
