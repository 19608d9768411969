"""Artefact files: every write goes to a temporary file in the same folder, then is renamed into place,
so a reader (or a rerun after a crash) never sees half a file. Lock files let several processes share
the folds of one run: a lock holds its creator's pid, so a dead creator's lock can be taken over."""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from compkit.errors import CompkitError, shown


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    The temporary name ends with ``path``'s name, so writers that check the extension accept it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f"-{path.name}")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600: artefacts are shared like any other output
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` without its index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_json(obj: dict, path: Path) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    """Read a JSON artefact (an object).

    Raises:
        CompkitError: the file is missing (names the stage that makes it), or empty, not UTF-8, not JSON or
            not an object (a damaged artefact: names the file and says to delete it and rerun its stage).
    """
    if not Path(path).is_file():
        raise CompkitError(f"{path}: not found; run the stage that writes it first (see `make help`)")
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        what = "empty" if not Path(path).stat().st_size else f"not valid JSON ({str(exc).splitlines()[0]})"
        raise CompkitError(f"{path}: {what}, a damaged artefact; delete it and rerun the stage that writes it") from None
    if not isinstance(obj, dict):
        raise CompkitError(f"{path}: holds a JSON {type(obj).__name__}, not an object; delete it and rerun the stage that writes it")
    return obj


def as_ids(values) -> np.ndarray:
    """Ids read as text, kept as text unless every one is a plain integer: (N,) int64, else (N,) object str.

    ``"001801"`` or ``"a.png"`` stay text (the leading zeros are part of the id); ``"1801"`` becomes 1801.
    Empty cells (NaN) are left as they are, for the caller to report.
    """
    values = pd.Series(values, dtype=object)
    text = values.dropna().astype(str)
    if len(text) and text.str.fullmatch(r"-?(0|[1-9][0-9]{0,17})").all():
        return values.astype("int64").to_numpy() if len(text) == len(values) else values.to_numpy()
    return values.to_numpy()


def read_id_csv(path: Path, id_column: str) -> pd.DataFrame:
    """``pd.read_csv`` with the ``id_column`` read as text and then made ids by :func:`as_ids`."""
    frame = pd.read_csv(path, dtype={id_column: str})
    if id_column in frame.columns:
        frame[id_column] = as_ids(frame[id_column])
    return frame


def proba_columns(classes: list) -> list[str]:
    """Column names of a probability file: ``p_<class>`` per class, in class order."""
    return [f"p_{c}" for c in classes]


def write_proba(path: Path, id_column: str, ids: np.ndarray, proba: np.ndarray, classes: list) -> None:
    """Save (N, K) class probabilities with their (N,) ids as CSV columns ``<id_column>, p_<class>...``."""
    frame = pd.DataFrame(proba, columns=proba_columns(classes))
    frame.insert(0, id_column, ids)
    write_csv(frame, path)


def read_proba(path: Path, id_column: str, classes: list) -> tuple[np.ndarray, np.ndarray]:
    """Load a probability file written by :func:`write_proba`: (N,) ids and (N, K) float64 probabilities.

    Raises:
        CompkitError: the file is missing, empty or not CSV, lacks the id or probability columns, or has a
            probability that is blank or not a number (names the line and column).
    """
    if not Path(path).is_file():
        raise CompkitError(f"{path}: not found; run the stage that writes it first (see `make help`)")
    try:
        frame = read_id_csv(path, id_column)
    except pd.errors.EmptyDataError:
        raise CompkitError(f"{path}: the file is empty (a damaged artefact); delete it and rerun its stage") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CompkitError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]}); delete it and rerun its stage") from None
    columns = [id_column, *proba_columns(classes)]
    if list(frame.columns) != columns:
        raise CompkitError(f"{path}: columns {list(frame.columns)} are not {columns}; delete it and rerun its stage")
    proba = frame[columns[1:]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(proba)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise CompkitError(f"{path}: line {row + 2}, column {columns[1 + col]!r}: {shown(frame[columns[1 + col]].iloc[row])} "
                           "is not a probability (a damaged artefact); delete it and rerun its stage")
    return frame[id_column].to_numpy(), proba


def _alive(pid: int) -> bool:
    """True when process ``pid`` exists and is not a zombie (a killed process its parent has not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True  # no /proc (macOS): os.kill said it exists


def lock_owner(lock: Path) -> int | None:
    """The live pid holding ``lock``, or None when the lock is free or its holder died."""
    try:
        text = Path(lock).read_text().strip()
    except FileNotFoundError:
        return None
    if not text:  # its creator is between os.open and write; live unless that was long ago
        return -1 if time.time() - Path(lock).stat().st_mtime < 30 else None
    return int(text) if _alive(int(text)) else None


def claim(lock: Path) -> bool:
    """Take ``lock`` for this process: create it with ``O_CREAT | O_EXCL`` and write our pid.

    A lock whose pid is dead (a killed `make train`) is taken over. Returns False when a live
    process holds it.
    """
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if lock_owner(lock) is not None:
                return False
            lock.unlink(missing_ok=True)  # a dead holder's lock; re-checked just above, so the race window is tiny
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


def release(lock: Path) -> None:
    """Remove ``lock`` if this process holds it."""
    try:
        if Path(lock).read_text().strip() == str(os.getpid()):
            Path(lock).unlink()
    except FileNotFoundError:
        pass
