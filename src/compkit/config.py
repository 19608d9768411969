"""Competition configuration: one TOML per competition, a compute preset, command-line overrides.

A run's configuration is resolved in this order, later layers winning key by key:
the defaults of the models (schema.py, hyper.py), ``configs/<competition>.toml``,
``configs/presets/<preset>.toml``, the competition's own ``[presets.<preset>]`` tables, then
``--set section.key=value`` overrides.
Every key is validated; an unknown key or a wrong type raises :class:`ConfigError`
naming the key. The config layer (this module, schema.py, hyper.py, checks.py, registry.py) imports none of
compkit's model code; the names of schema.py and hyper.py are importable from here too.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compkit import checks
from compkit.errors import ConfigError
from compkit.hyper import HYPER_KEYS, Augment, Hyper, HyperOverride, describe
from compkit.schema import (DEFAULT_SPACE, NAME_MAX, Adversarial, Bundle, Competition, Config, Distill, Ensemble, Folds, Head, Limits,
                            MetricFile, ParamSpec, Paths, Pseudo, Ray, Tracking, Train, Tune, check_name, name_problem)

__all__ = ["HYPER_KEYS", "DEFAULT_SPACE", "NAME_MAX", "Adversarial", "Augment", "Bundle", "Competition", "Config", "ConfigError", "Distill", "Ensemble",
           "Folds", "Head", "Hyper", "HyperOverride", "Limits", "MetricFile", "ParamSpec", "Paths", "Pseudo", "Ray", "Tracking", "Train",
           "Tune", "check_name", "load_config", "name_problem", "parse_override"]


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
        presets = sorted(p.stem for p in (config_dir / "presets").glob("*.toml"))
        if name_problem(preset):
            raise ConfigError(f"--preset {preset[:NAME_MAX]!r}: {name_problem(preset)}; choose one of {presets}")
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
        raise ConfigError(describe(exc, " + ".join(sources))) from exc
    checks.check_backbones(config, " + ".join(sources))
    checks.check_space(config, " + ".join(sources))
    checks.check_embed(config, " + ".join(sources))
    checks.check_weights(config, " + ".join(sources))
    checks.check_task(config, " + ".join(sources))
    checks.check_augment_on(config, " + ".join(sources))
    return config


def _anchor_metric_file(tree: dict, config_dir: Path) -> None:
    """A metric file's path relative to the config folder made absolute, so every stage and worker finds it."""
    metric = tree.get("competition", {}).get("metric")
    if isinstance(metric, dict) and isinstance(metric.get("file"), str) and not Path(metric["file"]).is_absolute():
        metric["file"] = str((Path(config_dir) / metric["file"]).resolve())
