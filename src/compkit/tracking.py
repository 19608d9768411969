"""Experiment tracking in Weights & Biases, offline by default, never fatal.

``WANDB_MODE`` decides: ``offline`` (default: runs written under ``<root>/wandb/``, no login, no
network), ``online`` (uploads; needs ``wandb login`` or ``WANDB_API_KEY``), ``disabled`` (nothing).
``make sync`` uploads offline runs with ``wandb sync``.

W&B conventions: project = competition (``tracking.project`` overrides), group = one experiment
(``--group``/``GROUP``, default one per command), job_type = tune / train / ensemble / submit, run
names that say backbone and fold or trial. Each run's config is the full resolved config plus the
git commit and dirty flag, URL passwords masked (in the command line W&B records too). A tracking
failure prints one line and switches tracking off for that run; the stage goes on.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from compkit import console
from compkit.config import Config, Paths
from compkit.redact import mask, mask_tree

DEFAULT_MODE = "offline"


def mode() -> str:
    """``$WANDB_MODE``, or ``offline`` when unset."""
    return os.environ.get("WANDB_MODE", DEFAULT_MODE)


def git_state(root: Path = Path(__file__).parent) -> dict[str, Any]:
    """``{"commit": sha or "unknown", "dirty": bool or None}`` of the git checkout holding ``root`` (compkit's code)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


class Tracker:
    """One W&B run, or a stand-in that does nothing once tracking is off or has failed.

    Every method swallows tracking errors: the first prints one line, then the tracker is off.
    """

    def __init__(self, run=None):
        self.run = run

    @property
    def active(self) -> bool:
        """True while a W&B run is recording."""
        return self.run is not None

    def _guard(self, what: str, fn, *args, **kwargs) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # a tracking problem must never stop training
            console.info(f"W&B: {what} failed ({type(exc).__name__}: {exc}); tracking is off for this run")
            self.run = None

    def log(self, metrics: dict[str, Any]) -> None:
        """Append one history row (``wandb.Run.log``)."""
        self._guard("log", lambda: self.run.log(metrics))

    def summarize(self, values: dict[str, Any]) -> None:
        """Set final values in the run summary."""
        self._guard("summary", lambda: self.run.summary.update(values))

    def table(self, key: str, frame: pd.DataFrame) -> None:
        """Log ``frame`` as a W&B Table under ``key``."""
        import wandb

        self._guard("table", lambda: self.run.log({key: wandb.Table(dataframe=frame)}))

    def confusion_matrix(self, key: str, labels: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> None:
        """Log ``wandb.plot.confusion_matrix`` of (N,) int true and predicted class indices."""
        import wandb

        self._guard(
            "confusion matrix",
            lambda: self.run.log({key: wandb.plot.confusion_matrix(
                y_true=labels.tolist(), preds=predicted.tolist(), class_names=class_names)}),
        )

    def artifact(self, path: Path, name: str, kind: str) -> None:
        """Log the file at ``path`` as an artifact ``name`` of type ``kind``."""
        import wandb

        def log():
            artifact = wandb.Artifact(name, type=kind)
            artifact.add_file(str(path))
            self.run.log_artifact(artifact)

        self._guard("artifact", log)

    def keras_callback(self) -> list:
        """``[WandbMetricsLogger]`` (per-epoch ``epoch/*`` metrics and learning rate) while active, else ``[]``."""
        if self.run is None:
            return []
        from wandb.integration.keras import WandbMetricsLogger

        tracker = self

        class SafeMetricsLogger(WandbMetricsLogger):
            def on_epoch_end(self, epoch, logs=None):
                tracker._guard("epoch log", super().on_epoch_end, epoch, logs)

        callbacks = []
        self._guard("metrics logger", lambda: callbacks.append(SafeMetricsLogger(log_freq="epoch")))
        return callbacks


@contextmanager
def _masked_argv() -> Iterator[None]:
    """``sys.argv`` with URL passwords masked while W&B reads it (it records the command line in the run)."""
    argv = sys.argv
    sys.argv = [mask(arg) for arg in argv]
    try:
        yield
    finally:
        sys.argv = argv


def _init(config: Config, paths: Paths, job_type: str, name: str, extra: dict) -> Tracker:
    import wandb

    with _masked_argv():
        run = wandb.init(
            project=config.tracking.project or config.competition.name,
            entity=config.tracking.entity or None,
            group=os.environ.get("COMPKIT_GROUP") or None,
            job_type=job_type,
            name=name,
            dir=str(paths.root),
            mode=mode(),
            config=mask_tree({**config.model_dump(), **extra, "git": git_state()}),
            reinit="finish_previous",  # one run at a time: WandbMetricsLogger logs to the global run
            settings=wandb.Settings(silent=True, console="off"),
        )
    return Tracker(run)


@contextmanager
def tracked(config: Config, paths: Paths, job_type: str, name: str, extra: dict | None = None) -> Iterator[Tracker]:
    """A :class:`Tracker` for one unit of work (a fold, a trial, a blend, a submission), finished on exit.

    With ``WANDB_MODE=disabled`` nothing is imported or written. A failure to start W&B prints
    one line and yields an inactive tracker.
    """
    tracker = Tracker()
    if mode() != "disabled":
        try:
            tracker = _init(config, paths, job_type, name, extra or {})
        except Exception as exc:
            fix = ("run `wandb login` (or set WANDB_API_KEY), or unset WANDB_MODE to record offline and `make sync` later"
                   if mode() == "online" else "check WANDB_MODE (offline, online or disabled)")
            console.info(f"W&B: could not start a {mode()} run ({type(exc).__name__}: {exc}); tracking is off: {fix}")
    try:
        yield tracker
    finally:
        tracker._guard("finish", lambda: tracker.run.finish())


def read_run(run_dir: Path) -> dict[str, Any]:
    """Read an offline run back from its ``run-<id>.wandb`` file (no network, no mocks).

    The file is a LevelDB-style log (W&B's datastore: a 7-byte ``:W&B`` header, then 32 KiB blocks
    of records with a 7-byte header: CRC32, length, type) of ``wandb_internal_pb2.Record`` messages.

    Returns:
        ``{"job_type", "name", "group", "config": dict, "summary": dict, "history": list[dict],
        "artifacts": list[(name, type)]}``; values are decoded from their JSON encoding.
    """
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(run_dir).glob("run-*.wandb")
    out: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "artifacts": []}
    for data in _log_records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(job_type=record.run.job_type, name=record.run.display_name, group=record.run.run_group)
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
        elif kind == "artifact":
            out["artifacts"].append((record.artifact.name, record.artifact.type))
        elif kind == "summary":
            for item in record.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def _log_records(data: bytes, block: int = 32768) -> Iterator[bytes]:
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the tail of a block too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            yield pending
            pending = b""
        elif kind == 0:  # zero padding
            pending = b""
