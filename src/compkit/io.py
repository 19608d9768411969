"""Artefact files: every write goes to a temporary file in the same folder, then is renamed into place,
so a reader (or a rerun after a crash) never sees half a file. Fold locks let several processes of one
machine share the folds of one run: a kernel lock on a file, released when its holder ends however it ends."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from compkit.errors import CompkitError, shown


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    The temporary name ends with ``path``'s name, so writers that check the extension accept it. The writer holds an
    ``flock`` on it, and first deletes the unheld leftovers of killed writers of the same file (:func:`clear_dead`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f"-{path.name}")
    fcntl.flock(fd, fcntl.LOCK_EX)  # held while this writer lives: the next writer deletes only unheld leftovers
    os.chmod(tmp, 0o644)  # mkstemp makes 0600: artefacts are shared like any other output
    clear_dead(path.parent, f".tmp-*-{path.name}")
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a write() that failed (full disk, ulimit -f): name the file
            exc.filename = str(path)
        raise
    finally:
        os.close(fd)


FRESH_S = 10  # a temporary file younger than this is never deleted (its writer may not have locked it yet)


def clear_dead(folder: Path, pattern: str) -> None:
    """Delete the files matching ``pattern`` in ``folder`` that no live writer holds an ``flock`` on and that are older
    than :data:`FRESH_S` seconds: temporary files of killed writers (:func:`atomic_path`). A live writer's stay."""
    for left in Path(folder).glob(pattern):
        try:
            with open(left, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if time.time() - os.fstat(f.fileno()).st_mtime > FRESH_S:
                    left.unlink(missing_ok=True)
        except (BlockingIOError, FileNotFoundError, IsADirectoryError):  # a live writer's, gone meanwhile, or a folder
            continue


def replace_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Commit a folder as a whole: ``fill(new)`` writes it into a fresh folder beside ``target``, which then replaces
    ``target`` by two renames, so a kill leaves the old folder or the new one (between the renames, none: rerun).
    A failure in ``fill`` deletes the new folder and leaves ``target`` as it was; a killed run's leftovers
    (``.<name>-new-*``, ``.<name>-old-*``) are deleted first."""
    parent, name = target.parent, target.name
    parent.mkdir(parents=True, exist_ok=True)
    for left in parent.glob(f".{name}-*"):
        shutil.rmtree(left, ignore_errors=True)
    new = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}-new-"))
    old = parent / f".{name}-old-{new.name.rsplit('-', 1)[-1]}"
    try:
        os.chmod(new, 0o755)  # mkdtemp makes 0700
        fill(new)
        if target.exists():
            os.replace(target, old)
        os.replace(new, target)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        if old.exists() and not target.exists():  # interrupted between the renames: the old folder back
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` without its index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_json(obj: dict, path: Path) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, fix: str = "") -> dict:
    """Read a JSON artefact (an object): a record (folds.json, fold.json, ensemble.json), a tuned trial, a summary.

    Raises:
        CompkitError: the file is missing, or empty, not UTF-8, not JSON or not an object (a damaged artefact); one
            line naming the file and ending in ``fix`` (default: run, or delete it and rerun, the stage that writes it).
    """
    if not Path(path).is_file():
        raise CompkitError(f"{path}: not found; {fix or 'run the stage that writes it first (see `make help`)'}")
    fix = fix or "delete it and rerun the stage that writes it"
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        what = "empty" if not Path(path).stat().st_size else f"not valid JSON ({str(exc).splitlines()[0]})"
        raise CompkitError(f"{path}: {what}, a damaged artefact (cut short?); {fix}") from None
    if not isinstance(obj, dict):
        raise CompkitError(f"{path}: holds a JSON {type(obj).__name__}, not an object; {fix}")
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


def read_id_csv(path: Path, id_column: str, text: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """``pd.read_csv`` with the ``id_column`` read as text and then made ids by :func:`as_ids` (``""``: no id column),
    and the ``text`` columns kept as text."""
    frame = pd.read_csv(path, dtype=dict.fromkeys([id_column, *text], str))
    if id_column in frame.columns:
        frame[id_column] = as_ids(frame[id_column])
    return frame


def proba_frame(id_column: str, ids: np.ndarray, pred: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """A prediction file's table: ``<id_column>, <columns>...`` from (N,) ids and (N, D) predictions (the task's
    columns: :attr:`compkit.tasks.Task.columns`, e.g. ``p_<class>`` per class)."""
    frame = pd.DataFrame(np.asarray(pred), columns=columns)
    frame.insert(0, id_column, ids)
    return frame


def read_proba(path: Path, id_column: str, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Load a prediction file (:func:`proba_frame`'s table) with value ``columns``: (N,) ids and (N, D) float64.

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
    columns = [id_column, *columns]
    if list(frame.columns) != columns:
        raise CompkitError(f"{path}: columns {list(frame.columns)} are not {columns}; delete it and rerun its stage")
    proba = frame[columns[1:]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(proba)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise CompkitError(f"{path}: line {row + 2}, column {columns[1 + col]!r}: {shown(frame[columns[1 + col]].iloc[row])} "
                           "is not a probability (a damaged artefact); delete it and rerun its stage")
    return frame[id_column].to_numpy(), proba


@contextmanager
def held(lock: Path, timeout: float) -> Iterator[None]:
    """Hold ``lock`` (an exclusive kernel lock on the file, as :func:`claim`) for the block, waiting up to ``timeout``
    seconds for another holder; the file is deleted on the way out (see :func:`release`).

    Raises:
        CompkitError: another process held it for ``timeout`` seconds; names the file.
    """
    lock = Path(lock).absolute()
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = FileLock(lock, timeout=timeout, thread_local=False)
    try:
        handle.acquire()
    except Timeout:
        raise CompkitError(f"{lock}: held by another process for {timeout:g} s; wait for it to finish, "
                           "or delete the file if no compkit is running") from None
    try:
        yield
    finally:
        with suppress(OSError):
            lock.unlink()
        handle.release()


def is_held(lock: Path) -> bool:
    """True when a live process holds ``lock`` (see :func:`claim`); a probe that creates and deletes nothing."""
    try:
        with open(lock, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no lock file: nobody holds it
        return False
    return False


_held: dict[Path, FileLock] = {}  # the fold locks this process holds, by absolute path


def claim(lock: Path) -> bool:
    """Take ``lock`` for this process without waiting; False when another holder has it.

    The lock is an exclusive ``flock`` on the file (the ``filelock`` package), held until :func:`release`
    or until this process ends: the kernel drops a dead process's lock with it, so a killed run's folds
    are free at once, a reused pid means nothing, and two processes never both hold it (no
    check-then-delete step to race). A second claim from this process is refused too.
    Only processes of one machine exclude each other (``flock`` over NFS is not to be trusted).
    """
    lock = Path(lock).absolute()
    lock.parent.mkdir(parents=True, exist_ok=True)
    if lock in _held:
        return False
    handle = FileLock(lock, timeout=0, thread_local=False)
    try:
        handle.acquire()
    except Timeout:
        return False
    _held[lock] = handle
    return True


def release(lock: Path) -> None:
    """Let go of ``lock`` if this process holds it, deleting the file first (no lock files stay behind).

    Deleting while still holding is safe: a process that opened the old file and then wins its ``flock``
    finds it unlinked (filelock checks ``st_nlink``) and tries again on the path.
    """
    handle = _held.pop(Path(lock).absolute(), None)
    if handle is None:
        return
    with suppress(OSError):
        Path(lock).unlink()
    handle.release()
