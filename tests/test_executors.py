"""The executor protocol (compkit.executors): units run in fresh processes on their slots, results and errors come back,
cancel kills, and no stage asks which executor it has. The Ray executor runs the same units in tests/test_ray.py."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

from compkit import executors
from compkit.devices import Slot
from compkit.executors import LocalExecutor, Unit
from conftest import REPO, dacon_config

SRC = REPO / "src" / "compkit"


def where_am_i(config, paths, tag: str) -> dict:
    """A unit: where it ran."""
    import tensorflow as tf

    return {"tag": tag, "pid": os.getpid(), "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "threads": tf.config.threading.get_intra_op_parallelism_threads()}


def fails(config, paths, message: str) -> None:
    """A unit that raises."""
    raise ValueError(message)


def sleeps(config, paths, pid_file: str) -> None:
    """A unit that writes its pid, then sleeps far past any test."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(600)


def unit(key, fn, *args, paths=None) -> Unit:
    return Unit(key, f"unit {key}", fn, dacon_config(), paths, args)


def drain(executor) -> dict:
    ended = {}
    while executor.busy():
        for key, result, error in executor.finished(timeout=1):
            ended[key] = (result, error)
    return ended


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z" if Path(f"/proc/{pid}").exists() else True


def test_units_run_in_fresh_processes_on_their_own_slots():
    """Two GPU ids on a machine without a GPU: each unit's process sees its own CUDA_VISIBLE_DEVICES and threads,
    never two units on one slot at once, and the executor reports both results by key."""
    executor = LocalExecutor([Slot("0", 1), Slot("2", 1)])
    assert executor.capacity() == 2
    for key in ("a", "b"):
        assert executor.has_free()
        executor.submit(unit(key, where_am_i, key))
    assert not executor.has_free() and sorted(executor.running_keys()) == ["a", "b"]
    ended = drain(executor)
    results = {key: result for key, (result, error) in ended.items() if error is None}
    assert set(results) == {"a", "b"} and {r["tag"] for r in results.values()} == {"a", "b"}
    assert sorted(r["device"] for r in results.values()) == ["0", "2"]
    assert all(r["pid"] != os.getpid() and r["threads"] == 1 for r in results.values())
    assert len({r["pid"] for r in results.values()}) == 2 and executor.has_free()


def test_a_units_exception_comes_back_as_it_was_raised():
    executor = LocalExecutor([Slot(None, 1)])
    executor.submit(unit("bad", fails, "fold 3 broke"))
    (result, error), = drain(executor).values()
    assert result is None and isinstance(error, ValueError) and str(error) == "fold 3 broke"
    with pytest.raises(ValueError, match="fold 3 broke"):
        executor.run(unit("again", fails, "fold 3 broke"))


def test_without_fresh_processes_one_slot_runs_the_unit_here():
    executor = LocalExecutor([Slot(None, 0)], fresh=False)
    assert executor.run(unit("here", where_am_i, "here"))["pid"] == os.getpid()
    executor.submit(unit("here too", where_am_i, "x"))
    assert drain(executor) == {} and executor.finished(timeout=0)[0].result["pid"] == os.getpid()


def test_cancel_kills_a_running_unit_and_frees_its_slot(tmp_path):
    executor, pid_file = LocalExecutor([Slot(None, 1)]), tmp_path / "pid"
    executor.submit(unit("long", sleeps, str(pid_file)))
    deadline = time.time() + 120
    while not pid_file.is_file() and time.time() < deadline:
        time.sleep(0.2)
    pid = int(pid_file.read_text())
    executor.cancel()
    deadline = time.time() + 10
    while alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(pid) and not executor.busy() and executor.has_free()


def test_run_is_safe_from_several_threads_and_never_shares_a_slot():
    """tune's n_jobs threads each call run(): with two slots, four units run two at a time, each on a slot of its own."""
    executor, results, errors = LocalExecutor([Slot("5", 1), Slot("6", 1)]), [], []

    def one(i):
        try:
            results.append(executor.run(unit(i, where_am_i, str(i))))
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(r["tag"] for r in results) == ["0", "1", "2", "3"]
    assert sorted(r["device"] for r in results) == ["5", "5", "6", "6"] and executor.free.qsize() == 2


def test_make_gives_the_local_executor_on_trains_slots():
    executor = executors.make(dacon_config("train.workers=2"), "local")
    assert isinstance(executor, LocalExecutor) and executor.capacity() == 2 and executor.name == "local"


STAGE_MODULES = ("train", "tune", "adversarial", "folds", "ensemble", "submit", "predict", "pseudo")


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_no_stage_asks_which_executor_it_has(module):
    text = (SRC / f"{module}.py").read_text()
    asks = re.findall(r"executor\s*[!=]=|isinstance\([^)]*(?:Local|Ray)Executor|\"ray\"", text)
    assert not asks, f"{module}.py tests its executor: {asks}"
