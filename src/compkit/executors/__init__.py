"""Executors: where units of work (a fold, an Optuna trial, an adversarial classifier's fold) run.

One protocol (:class:`Executor`: submit a :class:`Unit`, collect what :meth:`Executor.finished` returns, cancel; or
:meth:`Executor.run` one unit and wait) with two implementations: fresh local processes, one per
:class:`compkit.devices.Slot` (:class:`LocalExecutor`), and Ray tasks on ``$RAY_ADDRESS``'s cluster
(:class:`compkit.executors.cluster.RayExecutor`, which also lands the files a remote unit returns). Stages build units
and ask :func:`make` for the executor a config key names; they never test which one they got.
"""

from __future__ import annotations

from compkit.config import Config
from compkit.devices import slots
from compkit.executors.base import Ended, Executor, Unit
from compkit.executors.local import LocalExecutor

__all__ = ["Ended", "Executor", "LocalExecutor", "Unit", "make"]


def make(config: Config, kind: str) -> Executor:
    """The executor ``kind`` names (``train.executor``, ``tune.executor`` or ``adversarial.executor``): ``"local"``, a
    :class:`LocalExecutor` on :func:`compkit.devices.slots` (fresh processes unless ``train.process_per_fold`` is
    false), or ``"ray"``, a :class:`~compkit.executors.cluster.RayExecutor` (Ray imported and the cluster joined here).

    Raises:
        CompkitError: Ray is not installed, or its cluster cannot be started or reached.
    """
    if kind == "ray":
        from compkit.executors.cluster import RayExecutor

        return RayExecutor(config)
    return LocalExecutor(slots(config.train), fresh=config.train.process_per_fold)
