"""Kill and resume, two `make train` at once, determinism: real training runs of the TINY job on DACON."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, TINY, read_oof

pytestmark = pytest.mark.slow

FOLDS = 3
RUNS = "runs/dacon-cv-2020/cnn_small"


def _start_train(root: Path, dacon_dir: Path) -> subprocess.Popen:
    """`python -m compkit train` of the TINY job as a child process, with the folds of ``root``."""
    argv = [sys.executable, "-m", "compkit", "train", *TINY, "--data-dir", str(dacon_dir), "--root", str(root),
            "--config-dir", str(REPO / "configs")]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "disabled"}
    return subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _with_folds_of(run_root: Path, root: Path) -> Path:
    shutil.copytree(run_root / "folds", root / "folds")
    return root


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


def test_killed_train_resumes_without_redoing_finished_folds(tiny_run, tmp_path, dacon_dir):
    reference, _ = tiny_run
    root = _with_folds_of(reference, tmp_path)
    out = root / RUNS
    job = _start_train(root, dacon_dir)
    _wait_for(lambda: (out / "fold0/fold.json").is_file() and (out / "fold1/.lock").is_file(), 300, "fold 0 is done")
    _wait_for(lambda: _children(job.pid), 30, "fold 1's process starts")
    time.sleep(3)  # fold 1's process is loading TensorFlow or training
    workers = _children(job.pid)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert not (out / "fold1/fold.json").is_file(), "fold 1 finished before the kill; the test needs it in progress"
    _wait_for(lambda: all(_gone(p) for p in workers), 10, f"the fold processes {workers} exit after their parent")
    assert (out / "fold1/.lock").is_file()  # the dead run's lock file is still there (its kernel lock went with it)
    stamp = (out / "fold0/fold.json").stat().st_mtime_ns

    rerun = _start_train(root, dacon_dir)
    log, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, log
    assert "[cnn_small fold 1/3] done earlier, skipped" in log and "(2 trained, 1 skipped)" in log
    assert (out / "fold0/fold.json").stat().st_mtime_ns == stamp
    assert not list(root.rglob(".tmp-*")) and not list(root.rglob(".lock"))
    resumed, uninterrupted = read_oof(root, "cnn_small", FOLDS), read_oof(reference, "cnn_small", FOLDS)
    assert resumed["id"].tolist() == uninterrupted["id"].tolist()
    np.testing.assert_allclose(resumed.filter(like="p_").to_numpy(), uninterrupted.filter(like="p_").to_numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def concurrent_run(tiny_run, tmp_path_factory, dacon_dir) -> tuple[Path, list[str]]:
    """Two `train` processes of the TINY job started together on one root; returns the root and their logs."""
    root = _with_folds_of(tiny_run[0], tmp_path_factory.mktemp("concurrent"))
    jobs = [_start_train(root, dacon_dir) for _ in range(2)]
    logs = [job.communicate(timeout=600)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], logs
    return root, logs


def test_two_trains_at_once_train_each_fold_exactly_once(concurrent_run):
    root, logs = concurrent_run
    trained = [[k for k in range(FOLDS) if f"[cnn_small fold {k + 1}/3] OOF accuracy" in log] for log in logs]
    assert sorted(trained[0] + trained[1]) == list(range(FOLDS)), logs
    assert trained[0] and trained[1], "one process trained every fold: the other never ran in parallel"
    for k in range(FOLDS):
        assert {p.name for p in (root / RUNS / f"fold{k}").iterdir()} == {"model.keras", "history.csv", "oof.csv", "holdout.csv", "fold.json"}


def test_same_seed_gives_identical_oof(tiny_run, concurrent_run):
    """Two runs of the deterministic TINY job (one alone, one split over two processes) agree to the bit."""
    first, second = read_oof(tiny_run[0], "cnn_small", FOLDS), read_oof(concurrent_run[0], "cnn_small", FOLDS)
    assert first["id"].tolist() == second["id"].tolist()
    assert np.array_equal(first.filter(like="p_").to_numpy(), second.filter(like="p_").to_numpy())
    assert first.filter(like="p_").std().min() > 1e-4  # real predictions that vary by image, not a constant
