"""Artefact files: every write goes to a temporary file in the same folder, then is renamed into place,
so a reader (or a rerun after a crash) never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from compkit.errors import CompkitError


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
    """Read a JSON artefact; a missing one raises :class:`CompkitError` naming the stage that makes it."""
    if not Path(path).is_file():
        raise CompkitError(f"{path}: not found; run the stage that writes it first (see `make help`)")
    return json.loads(Path(path).read_text())


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
        CompkitError: the file is missing or lacks the id or probability columns.
    """
    if not Path(path).is_file():
        raise CompkitError(f"{path}: not found; run the stage that writes it first (see `make help`)")
    frame = pd.read_csv(path)
    columns = [id_column, *proba_columns(classes)]
    if list(frame.columns) != columns:
        raise CompkitError(f"{path}: columns {list(frame.columns)} are not {columns}; delete it and rerun its stage")
    return frame[id_column].to_numpy(), frame[columns[1:]].to_numpy(dtype=np.float64)
