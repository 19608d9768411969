"""Fold lock files: created exclusively, holding the pid; a dead holder's lock is taken over."""

import os
import subprocess

from compkit.io import claim, lock_owner, release


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_live_holder_keeps_its_lock(tmp_path):
    lock = tmp_path / "fold0" / ".lock"
    assert claim(lock) and lock.read_text() == str(os.getpid()) and lock_owner(lock) == os.getpid()
    assert not claim(lock)  # held by a live process (this one)
    lock.write_text(str(os.getppid()))
    release(lock)  # not ours: left alone
    assert lock.read_text() == str(os.getppid())


def test_a_dead_holders_lock_is_taken_over_and_released(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text(str(_dead_pid()))
    assert lock_owner(lock) is None
    assert claim(lock) and lock.read_text() == str(os.getpid())
    release(lock)
    assert not lock.exists() and lock_owner(lock) is None
