"""Submissions and the local leaderboard: ``submissions/<c>/<UTC time>_<name>.csv`` and ``leaderboard.csv``, a row
per submission with the file's sha256 (make submit; compkit.platform adds the platform's scores to the rows)."""

from __future__ import annotations

import itertools
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from compkit.artifacts.store import Store
from compkit.errors import CompkitError, shown
from compkit.io import held, write_csv
from compkit.records import sha256_file

LEADERBOARD_COLUMNS = ["time", "name", "file", "backbones", "blend", "cv", "public", "private"]
LEADERBOARD_NUMBERS = ("cv", "public", "private")
LEADERBOARD_WAIT_S = 120  # seconds a submit waits for another's leaderboard lock (a submit holds it well under a second)


class Leaderboard(Store):
    """The submissions of a competition and their rows in leaderboard.csv (:data:`LEADERBOARD_COLUMNS`)."""

    @property
    def path(self) -> Path:
        """``submissions/<c>/leaderboard.csv``: one row per submission."""
        return self.paths.submissions / "leaderboard.csv"

    def submission_path(self, name: str, n: int = 1) -> Path:
        """``submissions/<c>/<UTC time>_<name>.csv``, or ``<name>-<n>`` for ``n`` > 1 (the path's name, not reserved)."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return self.paths.submissions / f"{stamp}_{name}{'' if n == 1 else f'-{n}'}.csv"

    def _reserve(self, name: str) -> Path:
        """Create an empty ``submission_path(name, n)`` exclusively (``O_EXCL``), for the first ``n`` whose file is free."""
        self.paths.submissions.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            path = self.submission_path(name, n)
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                continue
            return path

    def read(self) -> pd.DataFrame:
        """leaderboard.csv (an empty table with :data:`LEADERBOARD_COLUMNS` when there is none).

        Raises:
            CompkitError: unreadable, a column missing, or a cv/public/private cell that is not a number
                (names the row); the fix is to correct the row or move the file away.
        """
        path = self.path
        if not path.is_file():
            return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
        fix = f"correct it or move it away (a new one is started; the submission files stay in {path.parent})"
        try:
            board = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            raise CompkitError(f"{path}: not a readable CSV; {fix}") from None
        missing = [c for c in LEADERBOARD_COLUMNS if c not in board.columns]
        if missing:
            raise CompkitError(f"{path}: missing column(s) {missing}; {fix}")
        for column in LEADERBOARD_NUMBERS:
            number = pd.to_numeric(board[column], errors="coerce")
            bad = (number.isna() & board[column].notna()).to_numpy()
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise CompkitError(f"{path}: row {row + 1}, column {column!r}: {shown(board[column].iloc[row])} is not a number; {fix}")
            board[column] = number
        return board

    def write(self, board: pd.DataFrame) -> None:
        """Write leaderboard.csv (atomically): ``board``, rows as :meth:`read` returns them."""
        write_csv(board, self.path)

    def add(self, name: str, submission: pd.DataFrame, row: dict) -> tuple[Path, pd.DataFrame]:
        """Add a submission named ``name``: returns its path and the leaderboard with its ``row`` appended.

        Under a kernel lock on ``submissions/<c>/.leaderboard.lock`` (waiting up to :data:`LEADERBOARD_WAIT_S`), so
        concurrent submits each get their own file and row: the file is created exclusively under a free name
        (:meth:`submission_path`), the submission written into it, then the leaderboard is read again, ``row`` (with
        ``file``, the name, and ``sha256``, the file's digest) appended and written. A failure removes the CSV again.
        """
        with held(self.paths.submissions / ".leaderboard.lock", LEADERBOARD_WAIT_S):
            path = self._reserve(name)
            try:
                write_csv(submission, path)
                row = {**row, "file": path.name, "sha256": sha256_file(path)}  # `make upload` sends only these bytes
                board = pd.concat([self.read(), pd.DataFrame([row])], ignore_index=True)
                self.write(board)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        return path, board
