"""The fold files' contents, checked: folds.csv (id, fold) and holdout.csv (id, Usage) as read, and as a pair against
the training ids (no foreign id, no id both in a fold and the holdout).

Every check raises :class:`~compkit.data.DataError` naming the file, the line and the value, and how to remake the
folds. Whether the files are the pair their record made is :class:`compkit.artifacts.Layout`'s to check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from compkit.config import Config, Paths
from compkit.data import DataError, line
from compkit.errors import shown
from compkit.io import read_id_csv
from compkit.lineage import FOLDS_CSV, HOLDOUT_CSV


def remake_hint(config: Config) -> str:
    """The one-line fix for damaged or foreign fold files."""
    name = config.competition.name
    return f"remake them: `make clean COMPETITION={name}` then `make folds COMPETITION={name}`"


def read_fold_file(config: Config, path: Path) -> pd.DataFrame:
    """One fold file as a DataFrame (``folds.csv``: id, fold; ``holdout.csv``: id, Usage), columns checked.

    A file with a header and no rows is valid (no holdout when the competition ships its solution file).

    Raises:
        DataError: missing (run `make folds`), empty or unreadable, or without the id column and its own column.
    """
    if not path.is_file():
        raise DataError(f"{path}: not found; run `make folds COMPETITION={config.competition.name}` first")
    try:
        frame = read_id_csv(path, config.competition.id_key)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (a damaged artefact); {remake_hint(config)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]}); {remake_hint(config)}") from None
    columns = [config.competition.id_key, "fold" if path.name == FOLDS_CSV else "Usage"]
    if list(frame.columns) != columns:
        raise DataError(f"{path}: columns {list(frame.columns)} are not {columns}; {remake_hint(config)}")
    return frame


def check_fold_values(folds: pd.DataFrame, path: Path, config: Config) -> None:
    """Refuse a ``fold`` column with a blank, a non-integer or a value outside 0..n_splits-1, or no row at all.

    ``folds`` is ``folds.csv`` as read (id, fold); ``path`` is named in the message.

    Raises:
        DataError: names the file, the line (header: line 1) and the value, and how to remake the folds.
    """
    n_splits = config.folds.n_splits
    values = pd.to_numeric(folds["fold"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.floor(values)) | (values < 0) | (values >= n_splits)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: line {line(row)}, column 'fold': {shown(folds['fold'].iloc[row])} is not a fold number "
            f"0..{n_splits - 1} (folds.n_splits = {n_splits}); {remake_hint(config)}"
        )
    if folds.empty:
        raise DataError(f"{path}: header only, no rows (a damaged artefact); {remake_hint(config)}")


def check_usage_values(holdout: pd.DataFrame, path: Path, config: Config) -> None:
    """Refuse a ``Usage`` column of ``holdout.csv`` with a value other than Public or Private.

    Raises:
        DataError: names the file, the line and the value, and how to remake the folds.
    """
    bad = ~holdout["Usage"].isin(["Public", "Private"]).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: line {line(row)}, column 'Usage': {shown(holdout['Usage'].iloc[row])} is not Public or Private; "
                        f"{remake_hint(config)}")


def check_folds(folds: pd.DataFrame, holdout: pd.DataFrame, train_ids: np.ndarray, config: Config, paths: Paths) -> None:
    """Refuse fold files made for other data (an id not in train) or leaking (an id both in a fold and the holdout).

    Raises:
        DataError: names the file, the line (header: line 1) and the id, and says to remake the folds.
    """
    id_column = config.competition.id_key
    remake = remake_hint(config)
    known = np.asarray(train_ids).astype(str)
    for table, file in ((folds, FOLDS_CSV), (holdout, HOLDOUT_CSV)):
        unknown = ~table[id_column].astype(str).isin(known).to_numpy()  # hashed: np.isin on object arrays is O(n * m)
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise DataError(
                f"{paths.folds / file}: line {line(row)}: {id_column} {shown(table[id_column].iloc[row])} is not in "
                f"{config.competition.train_file} ({int(unknown.sum())} such ids): the folds were made for other data; {remake}"
            )
    leaked = folds[id_column].isin(holdout[id_column]).to_numpy()
    if leaked.any():
        row = int(np.flatnonzero(leaked)[0])
        raise DataError(
            f"{paths.folds / FOLDS_CSV}: line {line(row)}: {id_column} {shown(folds[id_column].iloc[row])} is also in "
            f"holdout.csv: holdout rows must be in no fold; {remake}"
        )
