"""Running one unit of work (a fold, a trial) in a fresh process, so no TensorFlow state outlives it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from compkit.errors import CompkitError


def _exit_with_parent(parent: int) -> None:
    """Ends this process when its parent dies, so a killed `make train` leaves no orphan training on."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _quiet_interrupt() -> None:
    """Ctrl-C reaches the whole process group: the worker ends at once, without a traceback; the parent reports it."""
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))


def _call(parent: int, fn: Callable, args: tuple) -> Any:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    return fn(*args)


def in_fresh_process(what: str, fn: Callable, *args) -> Any:
    """``fn(*args)`` in a spawned process; returns its result and re-raises its exception.

    Raises:
        CompkitError: the process died without an answer (killed, out of memory); ``what`` names the work.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_quiet_interrupt) as pool:
        try:
            return pool.submit(_call, os.getpid(), fn, args).result()
        except BrokenProcessPool:
            raise CompkitError(f"{what}: the process died (out of memory or killed); rerun to resume") from None
