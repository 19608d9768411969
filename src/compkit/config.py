"""Competition configuration: one TOML per competition, a compute preset, command-line overrides.

A run's configuration is resolved in this order, later layers winning key by key:
the defaults of the models below, ``configs/<competition>.toml``,
``configs/presets/<preset>.toml``, then ``--set section.key=value`` overrides.
Every key is validated; an unknown key or a wrong type raises :class:`ConfigError`
naming the key.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compkit.errors import CompkitError


class ConfigError(CompkitError):
    """A configuration file or override that is missing, malformed, or names a bad key/value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Competition(_Strict):
    """What the competition ships and how it is scored."""

    name: str
    url: str = ""
    train_file: str = "train.csv"
    test_file: str = "test.csv"
    sample_submission: str = "sample_submission.csv"
    id_column: str = "id"
    target_column: str
    classes: list[int] | list[str] = Field(min_length=2)
    extra_columns: list[str] = []
    image_shape: list[int] = Field(min_length=3, max_length=3)
    pixel_prefix: str = ""
    metric: Literal["accuracy"] = "accuracy"
    submission_columns: list[str] = Field(min_length=2, max_length=2)

    @property
    def pixel_columns(self) -> list[str]:
        """Names of the flattened, row-major pixel columns: ``<prefix>0`` .. ``<prefix>{H*W*C-1}``."""
        height, width, channels = self.image_shape
        return [f"{self.pixel_prefix}{i}" for i in range(height * width * channels)]


class Folds(_Strict):
    """Cross-validation scheme and the local public/private holdout."""

    n_splits: int = Field(5, ge=2)
    stratify: list[str] = Field(min_length=1)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    public_share: float = Field(0.5, gt=0, lt=1)
    seed: int = 42


class Augment(_Strict):
    """Training-time augmentation, applied by Keras preprocessing layers."""

    shift: float = Field(0.1, ge=0, lt=0.5)  # fraction of height and width
    rotation: float = Field(10.0, ge=0, le=180)  # degrees
    zoom: float = Field(0.0, ge=0, lt=1)  # fraction


class Hyper(_Strict):
    """Hyperparameters of one backbone's training; ``[backbones.<name>]`` may override any of them."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "nadam", "adamw", "sgd"] = "adam"
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["constant", "plateau", "cosine"] = "plateau"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    patience: int = Field(8, ge=1)  # epochs without val_loss improvement before early stopping
    input_size: int | None = Field(None, ge=8)  # square side fed to the backbone; None: image size
    augment: Augment = Augment()


class HyperOverride(_Strict):
    """A partial :class:`Hyper`: only the keys given replace the ``[train]`` values."""

    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    optimizer: Literal["adam", "nadam", "adamw", "sgd"] | None = None
    learning_rate: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    lr_schedule: Literal["constant", "plateau", "cosine"] | None = None
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    dropout: float | None = Field(None, ge=0, lt=1)
    patience: int | None = Field(None, ge=1)
    input_size: int | None = Field(None, ge=8)
    augment: Augment | None = None


class Train(Hyper):
    """Which backbones to train and how the compute is set up."""

    backbones: list[str] = Field(["cnn_small"], min_length=1)
    seed: int = 42
    mixed_precision: bool = False  # used only when a GPU is present
    process_per_fold: bool = True  # a fresh process per fold keeps memory flat across folds


class Ensemble(_Strict):
    """How the backbones' OOF probabilities are blended."""

    select: Literal["best", "equal", "fitted", "hard"] = "best"


class Config(_Strict):
    """The resolved configuration of one competition run."""

    competition: Competition
    folds: Folds
    train: Train = Train()
    backbones: dict[str, HyperOverride] = {}
    ensemble: Ensemble = Ensemble()

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

    data: Path  # the competition's files (train.csv, ...)
    folds: Path  # folds/<competition>/: folds.csv, holdout.csv
    runs: Path  # runs/<competition>/: models, histories, predictions, blends
    submissions: Path  # submissions/<competition>/: submission CSVs and leaderboard.csv

    @classmethod
    def for_competition(cls, name: str, root: Path, data_dir: Path | None = None) -> Paths:
        """Paths of competition ``name`` under ``root``; data in ``data_dir`` or ``root/data/<name>``."""
        return cls(
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
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix the syntax") from exc


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
    return f"{source}: {key}: {first['msg']} (got {first.get('input')!r}); fix it in the config or with --set"


def load_config(
    competition: str,
    preset: str | None = None,
    overrides: list[str] = (),
    config_dir: Path = Path("configs"),
) -> Config:
    """Resolve and validate the configuration of ``competition``.

    Args:
        competition: name of ``<config_dir>/<competition>.toml``.
        preset: name of ``<config_dir>/presets/<preset>.toml`` (``smoke``, ``cpu``, ``gpu``), or None.
        overrides: ``section.key=value`` strings applied last.
        config_dir: the folder holding the competition TOMLs.

    Raises:
        ConfigError: a file is missing or not TOML, a key is unknown, or a value has the wrong
            type or range; the message names the file and the key.
    """
    sources = [str(config_dir / f"{competition}.toml")]
    tree = _read_toml(config_dir / f"{competition}.toml", "competition config")
    if preset:
        sources.append(str(config_dir / "presets" / f"{preset}.toml"))
        tree = _merge(tree, _read_toml(config_dir / "presets" / f"{preset}.toml", "preset"))
    for text in overrides:
        keys, value = parse_override(text)
        _set_dotted(tree, keys, value)
    if overrides:
        sources.append("--set")
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, " + ".join(sources))) from exc
    _check_backbones(config, " + ".join(sources))
    return config


def _check_backbones(config: Config, source: str) -> None:
    from compkit.backbones import BACKBONES  # keeps `import compkit.config` free of keras

    known = sorted(BACKBONES)
    for name in [*config.train.backbones, *config.backbones]:
        if name not in BACKBONES:
            raise ConfigError(f"{source}: unknown backbone {name!r}; choose from {known}")
    for name in config.train.backbones:
        size = config.hyper(name).input_size or config.competition.image_shape[0]
        if size < BACKBONES[name].min_size:
            raise ConfigError(
                f"{source}: backbone {name!r} needs input_size >= {BACKBONES[name].min_size}, got {size}; "
                f"set backbones.{name}.input_size"
            )
