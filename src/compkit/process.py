"""Running one unit of work (a fold, a trial) in a fresh process, so no TensorFlow state outlives it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from compkit.errors import CompkitError


def _exit_with_parent(parent: int) -> None:
    """Ends this process when its parent dies, so a killed `make train` leaves no orphan training on."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _initialize(initializer: Callable | None, initargs: tuple) -> None:
    """Ctrl-C reaches the whole process group: the worker ends at once, without a traceback, and the parent
    reports it; then the caller's own ``initializer``."""
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    if initializer is not None:
        initializer(*initargs)


def _call(parent: int, fn: Callable, args: tuple) -> Any:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    return fn(*args)


def submit_fresh(fn: Callable, *args, initializer: Callable | None = None, initargs: tuple = ()) -> tuple[Future, ProcessPoolExecutor]:
    """Start ``fn(*args)`` in a spawned process; returns its future and the one-process pool to shut down after.

    ``initializer(*initargs)`` runs in the new process before ``fn`` and its arguments are unpickled, so it can
    set the environment TensorFlow reads when it is first imported (``CUDA_VISIBLE_DEVICES``, see devices.py).
    """
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_initialize, initargs=(initializer, initargs))
    return pool.submit(_call, os.getpid(), fn, args), pool


def outcome(what: str, future: Future) -> Any:
    """The result of a finished :func:`submit_fresh` future; re-raises its exception.

    Raises:
        CompkitError: the process died without an answer (killed, out of memory); ``what`` names the work.
    """
    try:
        return future.result()
    except BrokenProcessPool:
        time.sleep(1)  # a Ctrl-C reaches the whole group: let this process's own interrupt win over "it died"
        raise CompkitError(f"{what}: the process died (out of memory or killed); rerun to resume") from None


def in_fresh_process(what: str, fn: Callable, *args, initializer: Callable | None = None, initargs: tuple = ()) -> Any:
    """``fn(*args)`` in a spawned process (after ``initializer(*initargs)``); returns its result and re-raises its exception.

    Raises:
        CompkitError: the process died without an answer (killed, out of memory); ``what`` names the work.
    """
    future, pool = submit_fresh(fn, *args, initializer=initializer, initargs=initargs)
    with pool:
        return outcome(what, future)
