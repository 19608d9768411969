"""The local executor: each unit in a fresh process on a free :class:`compkit.devices.Slot` of this machine.

One slot per GPU (``train.devices``, else every GPU seen), or ``train.workers`` on the CPU
(:func:`compkit.devices.slots`); never two units on one slot. A fresh process per unit keeps memory flat and
leaves no TensorFlow state behind; with one slot and ``train.process_per_fold = false`` a unit runs in this
process instead.
"""

from __future__ import annotations

import queue
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Hashable

from compkit.devices import Slot, enter
from compkit.executors.base import Ended, Unit
from compkit.process import outcome, stop, submit_fresh


class LocalExecutor:
    """Runs :class:`~compkit.executors.base.Unit` s on ``slots``, in fresh processes unless ``fresh`` is false
    and there is one slot. Implements :class:`~compkit.executors.base.Executor`."""

    name = "local"

    def __init__(self, slots: list[Slot], fresh: bool = True):
        self.slots, self.fresh = list(slots), fresh or len(slots) > 1
        self.free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        for slot in self.slots:
            self.free.put(slot)
        self.running: dict[Future, tuple[Unit, Slot, ProcessPoolExecutor]] = {}
        self.ended: list[Ended] = []
        self.inline: list[Hashable] = []  # the unit running in this process, if any

    def capacity(self) -> int:
        """The number of slots."""
        return len(self.slots)

    def has_free(self) -> bool:
        """True when a slot is free."""
        return not self.free.empty()

    def busy(self) -> bool:
        """True while a submitted unit runs."""
        return bool(self.running)

    def running_keys(self) -> list[Hashable]:
        """The keys of the units running now."""
        return [*self.inline, *(unit.key for unit, _, _ in self.running.values())]

    def submit(self, unit: Unit) -> None:
        """Start ``unit`` on a free slot (:meth:`has_free` first), or run it here when not ``fresh``."""
        slot = self.free.get_nowait()
        if not self.fresh:
            self.inline.append(unit.key)
            try:
                self.ended.append(Ended(unit.key, unit(), None))
            except Exception as exc:  # noqa: BLE001 - handed to the caller by finished()
                self.ended.append(Ended(unit.key, None, exc))
            finally:
                self.inline.remove(unit.key)
                self.free.put(slot)
            return
        future, pool = _start(unit, slot)
        self.running[future] = (unit, slot, pool)

    def finished(self, timeout: float) -> list[Ended]:
        """Units ended since the last call, waiting up to ``timeout`` s for one; frees their slots."""
        if self.running and not self.ended:
            wait(list(self.running), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in [f for f in list(self.running) if f.done()]:
            unit, slot, pool = self.running.pop(future)
            pool.shutdown()
            self.free.put(slot)
            try:
                self.ended.append(Ended(unit.key, outcome(unit.what, future), None))
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                self.ended.append(Ended(unit.key, None, exc))
        ended, self.ended = self.ended, []
        return ended

    def cancel(self) -> None:
        """Kill the processes of the units still running and free their slots."""
        running, self.running = self.running, {}
        for _, slot, pool in running.values():
            stop(pool)
            self.free.put(slot)

    def run(self, unit: Unit) -> Any:
        """Run ``unit`` on the next free slot (waiting for one) and return its result; safe from several threads.

        Raises:
            CompkitError: its process died without an answer; else the unit's own exception.
        """
        slot = self.free.get()
        try:
            if not self.fresh:
                return unit()
            future, pool = _start(unit, slot)
            with pool:
                return outcome(unit.what, future)
        finally:
            self.free.put(slot)

    def check_storage(self, url: str) -> None:
        """Every local unit reaches what this process reaches: nothing to refuse."""


def _start(unit: Unit, slot: Slot) -> tuple[Future, ProcessPoolExecutor]:
    """``unit`` in a fresh process that first enters ``slot`` (its GPU and threads: :func:`compkit.devices.enter`)."""
    return submit_fresh(unit.fn, unit.config, unit.paths, *unit.args, initializer=enter, initargs=(slot,))
