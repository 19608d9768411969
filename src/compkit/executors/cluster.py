"""The Ray executor: units (folds: ``train.executor = "ray"``, Optuna trials: ``tune.executor = "ray"``, adversarial
validation's classifier folds: ``adversarial.executor = "ray"``) as Ray tasks.

``RAY_ADDRESS`` names the cluster (``ray start --head`` on one machine, ``ray start --address=<head>:6379`` on
the others); without it ``ray.init()`` starts a local one-machine cluster for the command (``ray.num_cpus``
CPUs, ``ray.object_store_mb`` of object store, no dashboard). Ray is an optional extra, imported only here
and only on this path: without it the command stops with one line naming ``pip install -e '.[ray]'``.

No shared file system is needed for artefacts. A task carries its unit's ``inputs`` (a fold: folds.csv, holdout.csv,
folds.json, pseudo.csv and best/<backbone>.json, a few hundred kB), runs in a temporary root on its worker
(:func:`worker_root`, :func:`run_unit`) and returns the files of its ``returns`` folder as bytes; the driver lands
them with the unit's ``land`` (a fold: checked against the fold.json they came with and written into ``runs/`` as a
local fold is written, fold.json last: :meth:`compkit.artifacts.runs.FoldRuns.write_files`). The competition's
data is read from ``ray.data_dir`` on the worker, by default the driver's data folder as an absolute path:
every machine needs the data there.

Each task reserves ``ray.cpus_per_task`` CPUs (its TensorFlow intra-op threads, unless that is every core)
and ``ray.gpus_per_task`` GPUs (default: 1 when ``train.devices`` names GPUs or the driver sees one, else 0;
Ray then sets the task's ``CUDA_VISIBLE_DEVICES``). A task runs in a fresh worker process (``max_calls=1``,
so no TensorFlow state outlives a fold), and a task whose worker died is run again, up to
``ray.max_retries`` times (Ray's own retry: exceptions raised by the work are not retried). Where a fold
ran is recorded in its fold.json (``where``: executor, host, pid, device).
"""

from __future__ import annotations

import os
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator

from compkit import console
from compkit.config import Config, Paths
from compkit.devices import DETERMINISTIC_THREADS, Slot, cores, enter
from compkit.errors import CompkitError
from compkit.executors.base import Ended, Unit
from compkit.redact import mask

INSTALL = "pip install -e '.[ray]'"


def ray_module():
    """The ``ray`` module, imported on first use.

    Raises:
        CompkitError: Ray is not installed (names the install command).
    """
    try:
        import ray
    except ImportError:
        raise CompkitError(f"executor 'ray': Ray is not installed; run `{INSTALL}` (or use the local executor)") from None
    return ray


def connect(config: Config):
    """Join the cluster at ``$RAY_ADDRESS``, else start a local one; once per process. Returns the ``ray`` module."""
    ray = ray_module()
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning"}
        if not os.environ.get("RAY_ADDRESS"):
            options |= {"num_cpus": config.ray.num_cpus or cores(), "object_store_memory": config.ray.object_store_mb * 2**20}
        where = mask(os.environ.get("RAY_ADDRESS", "")) or "a local cluster"
        probe(os.environ.get("RAY_ADDRESS", ""), config.ray.connect_timeout_s)
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            reason = (str(exc).strip().splitlines() or [""])[0][:300]
            raise CompkitError(f"ray: cannot start or join {where} ({type(exc).__name__}: {reason}); check RAY_ADDRESS, "
                               "that `ray start` runs there, and the auth token (README, \"Many machines\")") from None
        resources = ray.cluster_resources()
        console.info(f"ray: {where}, {len(alive_nodes(ray))} node(s), "
                     f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    return ray


def probe(address: str, timeout: float) -> None:
    """Open a TCP connection to the head at ``address`` (``host:port`` or ``ray://host:port``; ``""`` and ``auto`` are
    not probed) within ``timeout`` seconds: Ray itself retries an unreachable head without end.

    Raises:
        CompkitError: nothing answers there in time; names the address and ``ray.connect_timeout_s``.
    """
    target = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise CompkitError(f"ray: cannot reach the head at RAY_ADDRESS={mask(address)} within ray.connect_timeout_s = {timeout:g} s "
                           f"({type(exc).__name__}); check the address, that `ray start --head` runs there and its port is open, "
                           "or unset RAY_ADDRESS for a local cluster") from None


def alive_nodes(ray) -> list[dict]:
    """The cluster's live nodes (``ray.nodes()`` entries)."""
    return [n for n in ray.nodes() if n.get("Alive")]


def task_gpus(config: Config) -> float:
    """GPUs one task reserves: ``ray.gpus_per_task``, else 1 when ``train.devices`` names GPUs or the driver sees one."""
    if config.ray.gpus_per_task is not None:
        return config.ray.gpus_per_task
    from compkit.devices import visible_gpus

    return 1.0 if config.train.devices or visible_gpus() else 0.0


def fits(config: Config, ray) -> int:
    """Tasks the cluster can run at once now: its CPUs, or GPUs, divided by one task's share.

    Raises:
        CompkitError: not one task fits (it would wait forever): names the resources and the keys to change.
    """
    resources, gpus = ray.cluster_resources(), task_gpus(config)
    fits = resources.get("CPU", 0) // config.ray.cpus_per_task
    if gpus:
        fits = min(fits, resources.get("GPU", 0) // gpus)
    if fits < 1:
        raise CompkitError(f"ray: a task needs {config.ray.cpus_per_task} CPU(s) and {gpus:g} GPU(s), but the cluster has "
                           f"{resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs; "
                           "lower ray.cpus_per_task / ray.gpus_per_task (--set) or add nodes")
    return int(fits)


@dataclass(frozen=True)
class Shipped:
    """What a Ray task gets of a :class:`~compkit.executors.base.Unit`: its function, config and arguments, its input
    files' bytes by path relative to the root, where the data is on the worker, the folder it returns and its env."""

    fn: Callable[..., Any]
    config: Config
    args: tuple
    files: dict[str, bytes]
    data_dir: str
    returns: str | None
    env: dict[str, str] = field(repr=False)


def ship(unit: Unit) -> Shipped:
    """``unit`` as a Ray task carries it: its ``inputs`` read here (the missing ones skipped: no pseudo.csv, no tuning)."""
    root = unit.paths.root
    files = {str(f.relative_to(root)): f.read_bytes() for f in unit.inputs if f.is_file()}
    returns = str(unit.returns.relative_to(root)) if unit.returns is not None else None
    return Shipped(unit.fn, unit.config, unit.args, files, data_dir(unit.config, unit.paths), returns, dict(unit.env))


def _enter(config: Config) -> None:
    """The task's TensorFlow threads: :data:`compkit.devices.DETERMINISTIC_THREADS` with ``train.deterministic`` (as a local
    fold process), else its reserved CPUs, or TensorFlow's default when it has every core."""
    threads = config.ray.cpus_per_task
    if config.train.deterministic:
        threads = DETERMINISTIC_THREADS
    enter(Slot(None, threads if threads < cores() or config.train.deterministic else 0))


@contextmanager
def worker_root(config: Config, files: dict[str, bytes], data_dir: str) -> Iterator[Paths]:
    """Inside a Ray task: the task's threads set (:func:`_enter`), then the Paths of a temporary root holding ``files``
    (relative path -> bytes) and reading the data from ``data_dir``; the root is deleted after."""
    _enter(config)
    with tempfile.TemporaryDirectory(prefix="compkit-task-") as tmp:
        paths = Paths.for_competition(config.competition.name, Path(tmp), Path(data_dir))
        for name, data in files.items():
            (paths.root / name).parent.mkdir(parents=True, exist_ok=True)
            (paths.root / name).write_bytes(data)
        yield paths


def run_unit(shipped: Shipped) -> Any:
    """The body of every Ray task: the unit's function in a :func:`worker_root`; returns its result, or the files of
    its ``returns`` folder (name -> bytes; hidden files such as locks left out) for the driver to land."""
    os.environ.update(shipped.env)
    with worker_root(shipped.config, shipped.files, shipped.data_dir) as paths:
        result = shipped.fn(shipped.config, paths, *shipped.args)
        if shipped.returns is None:
            return result
        folder = paths.root / shipped.returns
        return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")}


def data_dir(config: Config, paths: Paths) -> str:
    """Where workers read the competition's data: ``ray.data_dir``, else the driver's data folder as an absolute path."""
    return config.ray.data_dir or str(paths.data.resolve())


def outcome(ray, what: str, ref, retries: int) -> Any:
    """``ray.get(ref)``; the work's own exception is re-raised as it is, a worker that kept dying is one line.

    Raises:
        CompkitError: the task's worker died ``retries + 1`` times (killed, out of memory), or the task was lost.
    """
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise exc.cause if isinstance(exc.cause, Exception) else exc from None
    except ray.exceptions.RayError as exc:  # WorkerCrashedError, ObjectLostError, NodeDiedError, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CompkitError(f"{what}: its Ray worker died {retries + 1} time(s) ({type(exc).__name__}: {reason[:200]}); "
                           "rerun to resume, or raise ray.max_retries") from None


class RayExecutor:
    """Units as Ray tasks, as many at once as the cluster fits (:func:`fits`, checked again as nodes join); each in
    a fresh worker process (``max_calls=1``) with the config's resources and retries. A unit's returned files are
    landed here, in the driver. Implements :class:`~compkit.executors.base.Executor`."""

    name = "ray"

    def __init__(self, config: Config):
        self.config, self.ray = config, connect(config)
        self.remote = self.ray.remote(num_cpus=config.ray.cpus_per_task, num_gpus=task_gpus(config), max_calls=1,
                                      max_retries=config.ray.max_retries, retry_exceptions=False)(run_unit)
        self.running: dict[Any, Unit] = {}
        self.ended: list[Ended] = []

    def capacity(self) -> int:
        """Tasks the cluster fits now (:func:`fits`)."""
        return fits(self.config, self.ray)

    def has_free(self) -> bool:
        """True when the cluster has room for one more task."""
        return len(self.running) < self.capacity()

    def busy(self) -> bool:
        """True while a task runs (or waits for resources)."""
        return bool(self.running)

    def running_keys(self) -> list[Hashable]:
        """The keys of the tasks not finished."""
        return [unit.key for unit in self.running.values()]

    def _start(self, unit: Unit):
        # Named after the unit's function: the worker's process title is then ``ray::train_fold``.
        return self.remote.options(name=unit.fn.__name__).remote(ship(unit))

    def _result(self, unit: Unit, ref) -> Any:
        result = outcome(self.ray, unit.what, ref, self.config.ray.max_retries)
        return unit.land(result) if unit.land is not None else result

    def submit(self, unit: Unit) -> None:
        """Start ``unit`` as a Ray task."""
        self.running[self._start(unit)] = unit

    def finished(self, timeout: float) -> list[Ended]:
        """Tasks ended since the last call, waiting up to ``timeout`` s for one; returned files landed."""
        if self.running:
            ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
            for ref in ready:
                unit = self.running.pop(ref)
                try:
                    self.ended.append(Ended(unit.key, self._result(unit, ref), None))
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    self.ended.append(Ended(unit.key, None, exc))
        ended, self.ended = self.ended, []
        return ended

    def cancel(self) -> None:
        """Cancel the tasks not finished: their workers are killed."""
        running, self.running = self.running, {}
        for ref in running:
            self.ray.cancel(ref, force=True)

    def run(self, unit: Unit) -> Any:
        """Run ``unit`` as a Ray task and wait for it (Ray queues it until the cluster has room); safe from several threads."""
        return self._result(unit, self._start(unit))

    def check_storage(self, url: str) -> None:
        """:func:`check_storage` on this cluster."""
        check_storage(self.ray, url)


def check_storage(ray, url: str) -> None:
    """Refuse a study storage that lives in a file (SQLite, a journal) when the cluster has a node on another
    machine than this one: its trials could not reach the file. A one-machine cluster may share it.

    Raises:
        CompkitError: names the storage and the fix (a PostgreSQL URL in ``OPTUNA_STORAGE``).
    """
    if not (url.startswith("sqlite") or url.endswith(".log")):
        return
    here = ray.util.get_node_ip_address()
    elsewhere = [n["NodeManagerAddress"] for n in alive_nodes(ray) if n["NodeManagerAddress"] != here]
    if elsewhere:
        raise CompkitError(f"tune storage {url}: a file on this machine, but the Ray cluster has nodes on {', '.join(sorted(set(elsewhere)))}; "
                           "give a database every node reaches: OPTUNA_STORAGE=postgresql://host/db")
