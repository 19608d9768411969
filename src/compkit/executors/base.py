"""The executor protocol: a stage hands units of work to an executor and collects what they return.

A :class:`Unit` is one fold, trial or classifier fold: a module-level function called as ``fn(config, paths, *args)``,
with what it reads besides the competition's data (``inputs``: files under the project root) and, when it writes
artefacts, the folder they land in (``returns``) and the call that lands them where the stage keeps them (``land``,
run by the stage's own process). An :class:`Executor` runs units where it can: fresh local processes
(:class:`compkit.executors.local.LocalExecutor`) or a Ray cluster (:class:`compkit.executors.cluster.RayExecutor`).
Both return the same result for a unit, so a stage never asks which one it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, NamedTuple, Protocol

from compkit.config import Config, Paths


@dataclass(frozen=True)
class Unit:
    """One unit of work.

    Attributes:
        key: names the unit in :meth:`Executor.finished` (``(backbone, fold)``, a trial number).
        what: names it in errors (``"resnet_small fold 2"``).
        fn: a module-level function (a remote worker imports it by name), called as ``fn(config, paths, *args)``.
        config, paths: the run's config and paths; a remote worker gets paths of its own temporary root.
        args: the rest of ``fn``'s arguments (picklable).
        inputs: files under ``paths.root`` that ``fn`` reads besides the competition's data (fold files, tuned
            parameters); a remote worker gets a copy of each at the same relative path.
        returns: the folder under ``paths.root`` whose files ``fn`` writes; a remote worker sends them back as bytes
            and ``land(files)`` (file name -> bytes) writes them here, checked, and gives the unit's result.
        land: see ``returns``; None: the result is ``fn``'s return value.
        env: environment variables the work needs on a remote worker (a study's storage URL); never printed.
    """

    key: Hashable
    what: str
    fn: Callable[..., Any]
    config: Config
    paths: Paths
    args: tuple = ()
    inputs: tuple[Path, ...] = ()
    returns: Path | None = None
    land: Callable[[dict[str, bytes]], Any] | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def __call__(self) -> Any:
        """Run the unit here, in this process."""
        return self.fn(self.config, self.paths, *self.args)


class Ended(NamedTuple):
    """A unit that ended: its key, its result (None after an error) and its exception (None after success)."""

    key: Hashable
    result: Any
    error: BaseException | None


class Executor(Protocol):
    """Where units run. ``submit`` / ``finished`` / ``cancel`` drive many units from one loop (train); ``run`` is
    one unit, waited for, callable from several threads at once (tune's ``n_jobs``)."""

    name: str  # "local" or "ray", recorded where a fold ran

    def capacity(self) -> int:
        """Units that can run at once."""

    def has_free(self) -> bool:
        """True when :meth:`submit` can start a unit now."""

    def busy(self) -> bool:
        """True while a submitted unit has not ended."""

    def running_keys(self) -> list[Hashable]:
        """The keys of the submitted units that have not ended."""

    def submit(self, unit: Unit) -> None:
        """Start ``unit``; its :class:`Ended` comes from :meth:`finished`."""

    def finished(self, timeout: float) -> list[Ended]:
        """The units ended since the last call, waiting up to ``timeout`` seconds for one."""

    def cancel(self) -> None:
        """Stop every unit that has not ended (Ctrl-C, a failed fold); their processes are killed."""

    def run(self, unit: Unit) -> Any:
        """Run ``unit`` and wait for it; returns its result, re-raises its exception."""

    def check_storage(self, url: str) -> None:
        """Refuse a study storage (``url``) the executor's workers cannot all reach."""
