"""Running one unit of work (a fold, a trial) in a fresh process, so no TensorFlow state outlives it."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from compkit.errors import CompkitError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _exit_with_parent(parent: int) -> None:
    """Ends this process when its parent dies, so a killed `make train` leaves no orphan training on."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _die_with_parent(parent: int) -> None:
    """On Linux, ask the kernel to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``): it acts
    even while the main thread holds the GIL in a long C++ call (TensorFlow's import), where the watcher thread of
    :func:`_call` cannot run. Elsewhere that thread alone ends it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # it died before the request was made
        os._exit(1)


def _initialize(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    """Ends with ``parent``; Ctrl-C reaches the whole process group: the worker ends at once, without a traceback,
    and the parent reports it; then the caller's own ``initializer``."""
    _die_with_parent(parent)
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
    pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_initialize,
                               initargs=(os.getpid(), initializer, initargs))
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


def stop(pool: ProcessPoolExecutor) -> None:
    """Kill the process of a :func:`submit_fresh` pool at once (a cancelled unit), then shut the pool down."""
    if hasattr(pool, "kill_workers"):  # Python 3.14+
        pool.kill_workers()
    else:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def in_fresh_process(what: str, fn: Callable, *args, initializer: Callable | None = None, initargs: tuple = ()) -> Any:
    """``fn(*args)`` in a spawned process (after ``initializer(*initargs)``); returns its result and re-raises its exception.

    Raises:
        CompkitError: the process died without an answer (killed, out of memory); ``what`` names the work.
    """
    future, pool = submit_fresh(fn, *args, initializer=initializer, initargs=initargs)
    with pool:
        return outcome(what, future)
