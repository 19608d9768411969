"""The Ray executor: folds (``train.executor = "ray"``) and Optuna trials (``tune.executor = "ray"``) as Ray tasks.

``RAY_ADDRESS`` names the cluster (``ray start --head`` on one machine, ``ray start --address=<head>:6379`` on
the others); without it ``ray.init()`` starts a local one-machine cluster for the command (``ray.num_cpus``
CPUs, ``ray.object_store_mb`` of object store, no dashboard). Ray is an optional extra, imported only here
and only on this path: without it the command stops with one line naming ``pip install -e '.[ray]'``.

No shared file system is needed for artefacts. A fold task carries the fold files (folds.csv, holdout.csv,
folds.json, pseudo.csv) and the tuned parameters (best/<backbone>.json), a few hundred kB, trains into a
temporary root on its worker (:func:`worker_root`; :func:`compkit.train.train_fold_task`) and returns the fold's files as
bytes; the driver checks them against the fold.json they came with and writes them into ``runs/`` as a
local fold is written, fold.json last (:meth:`compkit.artifacts.runs.FoldRuns.write_files`). The competition's
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
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator

from compkit import console
from compkit.config import Config, Paths
from compkit.devices import DETERMINISTIC_THREADS, Slot, cores, enter
from compkit.errors import CompkitError
from compkit.lineage import FOLD_FILES, FOLDS_RECORD
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


def capacity(config: Config, ray) -> int:
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


def bundle(paths: Paths, backbone: str) -> dict[str, bytes]:
    """The files a task needs besides the data, by path relative to the root: the fold files and the tuned parameters."""
    files = [paths.folds / name for name in (*FOLD_FILES, FOLDS_RECORD)]
    files.append(paths.runs / "best" / f"{backbone}.json")
    return {str(f.relative_to(paths.root)): f.read_bytes() for f in files if f.is_file()}


def _unpack(files: dict[str, bytes], root: Path) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def _worker_paths(config: Config, root: Path, data_dir: str) -> Paths:
    return Paths.for_competition(config.competition.name, root, Path(data_dir))


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
    (:func:`bundle`) and reading the data from ``data_dir``; the root is deleted after."""
    _enter(config)
    with tempfile.TemporaryDirectory(prefix="compkit-task-") as tmp:
        paths = _worker_paths(config, Path(tmp), data_dir)
        _unpack(files, paths.root)
        yield paths


def data_dir(config: Config, paths: Paths) -> str:
    """Where workers read the competition's data: ``ray.data_dir``, else the driver's data folder as an absolute path."""
    return config.ray.data_dir or str(paths.data.resolve())


def remote(ray, config: Config, fn: Callable):
    """``fn`` as a Ray remote function with this config's resources, a fresh worker per task and its retries."""
    return ray.remote(num_cpus=config.ray.cpus_per_task, num_gpus=task_gpus(config), max_calls=1,
                      max_retries=config.ray.max_retries, retry_exceptions=False)(fn)


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


class RayScheduler:
    """:class:`compkit.devices.Scheduler`'s interface with Ray tasks as the units: as many at once as the
    cluster fits (:func:`capacity`, checked again as nodes join)."""

    def __init__(self, config: Config):
        self.config, self.ray = config, connect(config)
        self.running: dict[Any, tuple[Hashable, str]] = {}
        self.ended: list[tuple[Hashable, Any, BaseException | None]] = []

    def has_free(self) -> bool:
        """True when the cluster has room for one more task."""
        return len(self.running) < capacity(self.config, self.ray)

    def busy(self) -> bool:
        """True while a task runs (or waits for resources)."""
        return bool(self.running)

    def running_keys(self) -> list[Hashable]:
        """The keys of the tasks not finished."""
        return [key for key, _ in self.running.values()]

    def submit(self, key: Hashable, what: str, fn: Callable, *args) -> None:
        """Start ``fn(*args)`` as a Ray task (a module-level function: workers import it by name)."""
        ref = remote(self.ray, self.config, fn).remote(*args)
        self.running[ref] = (key, what)

    def finished(self, timeout: float) -> list[tuple[Hashable, Any, BaseException | None]]:
        """Tasks ended since the last call, waiting up to ``timeout`` s for one: (key, result, exception or None)."""
        if self.running:
            ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
            for ref in ready:
                key, what = self.running.pop(ref)
                try:
                    self.ended.append((key, outcome(self.ray, what, ref, self.config.ray.max_retries), None))
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    self.ended.append((key, None, exc))
        ended, self.ended = self.ended, []
        return ended

    def cancel(self) -> None:
        """Cancel the tasks not finished (Ctrl-C, a failed fold): their workers are killed."""
        for ref in self.running:
            self.ray.cancel(ref, force=True)


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
