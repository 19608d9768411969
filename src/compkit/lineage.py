"""What an artefact was made from: sha256 digests of config parts, fold files and id sets.

``fold.json`` and ``ensemble.json`` record these digests, so a rerun can tell a finished artefact made
from the current config and folds from a stale one, and tests can check what each model was fit on.
``fold.json`` also records the resolved config itself (:func:`resolved_config`), so a stale fold's message
names each changed key with its old and new value.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable

from compkit.config import Config, Hyper, Paths
from compkit.redact import mask_tree

# The fold files, named once: folds.csv, holdout.csv, pseudo.csv (only when `make pseudo` wrote it), and the
# record of the first two (compkit.artifacts)
FOLD_FILES = FOLDS_CSV, HOLDOUT_CSV, PSEUDO_CSV = ("folds.csv", "holdout.csv", "pseudo.csv")
FOLDS_RECORD = "folds.json"


def digest(obj) -> str:
    """sha256 hex of ``obj`` as canonical JSON (sorted keys, no spaces); ``obj`` must be JSON-serialisable."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def ids_digest(ids: Iterable) -> str:
    """sha256 hex of a set of ids, independent of their order and of int/str spelling (``3`` == ``"3"``)."""
    return hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode()).hexdigest()


def folds_digest(paths: Paths) -> str:
    """sha256 hex of the bytes of ``folds.csv``, ``holdout.csv`` and, when it exists, ``pseudo.csv`` in ``paths.folds``."""
    sha = hashlib.sha256()
    for name in FOLD_FILES:
        if name != PSEUDO_CSV or (paths.folds / name).is_file():
            sha.update((paths.folds / name).read_bytes())
    return sha.hexdigest()


# Config keys that do not change a fold's model: every other key of the resolved config counts.
# backbones / train.backbones / train.use_tuned are resolved into the backbone's hyperparameters.
# (pseudo.threshold acts through pseudo.csv, which the fold-file digest covers; distill.* only on a distilled student,
# whose fold.json records it apart, see distill.py.)
IRRELEVANT = ("tune", "ensemble", "pseudo", "distill", "adversarial", "tracking", "backbones", "competition.url", "competition.builder",
              "competition.platform", "competition.slug", "competition.pretrained_allowed",
              "competition.metric", "competition.sample_submission", "competition.solution_file",
              "competition.submission_columns", "train.backbones", "train.use_tuned", "train.process_per_fold",
              "train.devices", "train.workers", "train.run_eagerly", "train.executor", "train.pipeline_ram_mb", "ray", "limits")


def training_config(config: Config, hyper: Hyper) -> dict:
    """The resolved config a fold's model is made from: ``config`` with ``hyper`` (the backbone's resolved
    hyperparameters) in ``train``, less the keys in :data:`IRRELEVANT`."""
    resolved = config.model_dump(mode="json")
    resolved["train"].update(hyper.model_dump(mode="json"))
    for key in IRRELEVANT:
        *parents, leaf = key.split(".")
        node = resolved
        for part in parents:
            node = node[part]
        node.pop(leaf)
    return resolved


def config_digest(config: Config, hyper: Hyper) -> str:
    """sha256 hex of :func:`training_config`: every config key but :data:`IRRELEVANT` (loss, class weights and seeds too)."""
    return digest(training_config(config, hyper))


def resolved_config(config: Config, hyper: Hyper) -> dict:
    """:func:`training_config` with every credential masked (:func:`compkit.redact.mask_tree`): what ``fold.json`` records."""
    return mask_tree(training_config(config, hyper))


def _flat(tree: dict, prefix: str = "") -> dict:
    """``tree``'s leaves keyed by dotted path: ``{"train": {"loss": "focal"}}`` -> ``{"train.loss": "focal"}``."""
    out = {}
    for key, value in tree.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value}
    return out


def _shown(values: dict, key: str) -> str:
    """A config value as a stale message shows it: strings bare, anything else as JSON, ``(unset)`` when absent."""
    if key not in values:
        return "(unset)"
    return values[key] if isinstance(values[key], str) else json.dumps(values[key])


def config_changes(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for each dotted key whose value differs between two resolved configs, sorted by key."""
    old, new = _flat(old), _flat(new)
    return [f"{key}: {_shown(old, key)} -> {_shown(new, key)}"
            for key in sorted(old.keys() | new.keys()) if old.get(key, old) != new.get(key, new)]


def stale_reason(recorded: dict, expected: dict, clean: str, changes: Iterable[str] = ()) -> str | None:
    """Why an artefact whose ``lineage`` is ``recorded`` is stale against ``expected``; None when it is current.

    ``recorded`` and ``expected`` map ``config`` and ``folds`` to digests; ``clean`` says how to start over;
    ``changes`` (:func:`config_changes`) are named when the config changed.
    """
    names = {"config": "the config (competition, folds or hyperparameters)", "folds": "the fold files (folds.csv, holdout.csv, pseudo.csv)"}
    changed = [names[what] for what in names if recorded.get(what) != expected[what]]
    if not changed:
        return None
    changes = list(changes) if recorded.get("config") != expected["config"] else []
    named = f" ({', '.join(changes)})" if changes else ""
    return f"{' and '.join(changed)} changed since it was made{named}; {clean}, or restore the old ones"


def clean_hint(config: Config, paths: Paths, backbone: str) -> str:
    """The one-line fix for stale artefacts of ``backbone``."""
    return f"delete {paths.runs / backbone} (or `make clean COMPETITION={config.competition.name}`) to retrain"

