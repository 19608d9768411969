"""Nothing lost at the edges, round two (issue 29): concurrent writers, a damaged cache, zip bombs, shapes that
cannot fit, unreachable clusters, and errors that were tracebacks. Real DACON rows and images throughout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from compkit.cli import main
from conftest import REPO, tree_digest

NAME = "dacon-cv-2020"


def env() -> dict[str, str]:
    """The environment of a ``python -m compkit`` child: this checkout's sources, W&B off."""
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "disabled"}


@pytest.fixture
def copy(tiny_run, tmp_path, monkeypatch):
    """A copy of the TINY run (folds, train, ensemble done) and the CLI options pointing at it."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root, argv = tiny_run
    shutil.copytree(root, tmp_path / "run", ignore=shutil.ignore_patterns("wandb"))
    argv = [*argv[: argv.index("--root")], "--root", str(tmp_path / "run"), *argv[argv.index("--root") + 2:]]
    return tmp_path / "run", argv


# -- concurrent submits ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_concurrent_submits_of_one_name_give_a_file_and_a_row_each(copy):
    """Six `compkit submit --name same` at once: six files, six rows, each row naming its own file."""
    root, argv = copy
    n = 6
    procs = [subprocess.Popen([sys.executable, "-m", "compkit", "submit", *argv, "--name", "same"], env=env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, errors
    folder = root / "submissions" / NAME
    files = sorted(p.name for p in folder.glob("*_same*.csv"))
    board = pd.read_csv(folder / "leaderboard.csv")
    assert len(files) == n and sorted(board["file"]) == files
    assert not list(folder.glob(".*")), "no lock or temporary file stays"
