"""Fold locks: a kernel lock held for the claimer's lifetime; a dead holder's lock is free at once; racing
claimers never train one fold twice."""

import multiprocessing
import os
import signal
import time
from pathlib import Path

from compkit.io import claim, release

FOLDS, RACERS = 12, 8


def _hold(lock: Path, ready: Path) -> None:
    """A holder that claims ``lock`` and then hangs until it is killed."""
    assert claim(lock)
    ready.write_text("held")
    time.sleep(600)


def _race(root: Path, start) -> None:
    """What `make train` does per fold, training replaced by a record of who trained it: claim, check done
    again, "train" (append this pid to ``trained<k>``, take a little time, write ``done<k>``), release.
    Loops like train.run until every fold is done, so a racer that lost a claim comes back to it."""
    start.wait()
    while not all((root / f"done{k}").is_file() for k in range(FOLDS)):
        for k in range(FOLDS):
            lock = root / f"fold{k}" / ".lock"
            if (root / f"done{k}").is_file() or not claim(lock):
                continue
            if not (root / f"done{k}").is_file():
                with open(root / f"trained{k}", "a") as log:
                    log.write(f"{os.getpid()}\n")
                time.sleep(0.02)
                (root / f"done{k}").write_text("done")
            release(lock)


def test_claim_is_exclusive_and_release_removes_the_file(tmp_path):
    lock = tmp_path / "fold0" / ".lock"
    assert claim(lock) and lock.is_file()
    assert not claim(lock)  # held (by this very process): a second claim is refused
    release(lock)
    assert not lock.exists()
    release(lock)  # not held any more: nothing happens
    assert claim(lock)
    release(lock)


def test_a_killed_holders_lock_is_free_and_racing_claimers_train_each_fold_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready = tmp_path / "ready"
    holder = context.Process(target=_hold, args=(tmp_path / "fold0" / ".lock", ready))
    holder.start()
    deadline = time.monotonic() + 60
    while not ready.is_file():
        assert time.monotonic() < deadline and holder.is_alive(), "the holder never claimed its lock"
        time.sleep(0.05)
    assert not claim(tmp_path / "fold0" / ".lock")  # a live holder keeps it
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    assert (tmp_path / "fold0" / ".lock").is_file()  # the killed holder's file stays, its lock does not

    start = context.Barrier(RACERS)
    racers = [context.Process(target=_race, args=(tmp_path, start)) for _ in range(RACERS)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=120)
    assert [r.exitcode for r in racers] == [0] * RACERS
    trainers = [(tmp_path / f"trained{k}").read_text().split() for k in range(FOLDS)]
    assert all(len(t) == 1 for t in trainers), trainers  # every fold trained exactly once, fold 0 included
    assert len({t[0] for t in trainers}) > 1, "one racer trained every fold: they never raced"
    assert not list(tmp_path.rglob(".lock"))
