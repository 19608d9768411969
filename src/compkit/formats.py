"""The submission's format, read from the sample submission's header (Kaggle's conventions).

Two formats: an id column then the target column (``id,label``), or an id column then one probability column
per class, named as the classes, in whatever order the sample uses (``id,class_a,class_b,...``: log-loss
competitions). What the target column holds is the task's (:mod:`compkit.tasks`): a class label, a binary
task's P(positive) under a probability metric (Histopathologic's ``id,label``), a regression's value. ``competition.submission_columns`` may be
left out; given, it must equal the sample's header. The solution file (the hidden test labels) has
the sample's columns plus ``Usage`` (Public/Private): for a probability submission one-hot class
columns, or a single column named as the target (``competition.target_column``) holding the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compkit import tasks
from compkit.config import Competition, Config
from compkit.data import _check_ids, _read_csv, _require_columns, locate
from compkit.errors import DataError, line, shown
from compkit.tasks import Submitted, Task

ROW_SUM_TOLERANCE = 1e-6  # a probability row may miss 1 by this much (CSV rounding of float64)


@dataclass(frozen=True)
class SubmissionFormat:
    """What a submission file holds.

    Attributes:
        columns: the sample submission's header, in order: the id column first.
        target: the label column's name; None for a probability submission.
    """

    columns: tuple[str, ...]
    target: str | None

    @property
    def id_column(self) -> str:
        """The id column: the sample's first column."""
        return self.columns[0]

    @property
    def probabilities(self) -> bool:
        """True when the submission holds one probability column per class."""
        return self.target is None


def format_of(header: list[str], comp: Competition, source: str) -> SubmissionFormat:
    """The format a sample submission's ``header`` names, checked against the config.

    Raises:
        DataError: the header differs from ``competition.submission_columns`` (when given), or is
            neither ``id, target`` nor an id then one column per class; names ``source`` and the fix.
    """
    header = [str(c) for c in header]
    if comp.submission_columns is not None and header != comp.submission_columns:
        raise DataError(
            f"{source}: columns {header} differ from competition.submission_columns {comp.submission_columns}; "
            "fix the config or leave submission_columns out (the sample's header decides)"
        )
    names = [str(c) for c in comp.classes or []]
    rest = header[1:]
    if len(rest) == len(names) and sorted(rest) == sorted(names):
        return SubmissionFormat(tuple(header), None)
    if len(rest) == 1 and rest[0] not in names:
        return SubmissionFormat(tuple(header), rest[0])
    raise DataError(
        f"{source}: columns {header}: expected an id column, then either the target column or one column per "
        f"class {names}; fix the sample submission or competition.classes"
    )


def require_scorable(fmt: SubmissionFormat, task: Task, source: str) -> None:
    """Refuse a label submission under a probability metric of a multiclass task: its one-hot rows would score the
    labels (log loss ~34 per wrong row), not the model. (A binary task writes P(positive) in its one column.)

    Raises:
        DataError: the metric scores probabilities and the sample has a label column; names ``source``.
    """
    if task.scorer.needs == "proba" and not fmt.probabilities and not task.writes_probability:
        raise DataError(
            f"{source}: metric {task.scorer.name} scores probabilities, but the sample submission's {fmt.target!r} column "
            f"holds labels; use a sample with one column per class ({fmt.id_column},{','.join(map(str, task.classes))}) "
            "or another metric"
        )


def with_sample_columns(config: Config, data_dir: Path) -> Config:
    """``config`` as the stages read it: a row-number-id competition (``id_column = ""``) without
    ``submission_columns`` takes the sample submission's header as its submission columns, whose first names the
    id column of compkit's files (the sample decides, as it does for the format). Other configs are returned as they are.

    Raises:
        DataError: the sample submission is not in ``data_dir`` (names it and where to get it).
    """
    comp = config.competition
    if comp.id_column or comp.submission_columns is not None:
        return config
    header = [str(c) for c in pd.read_csv(locate(data_dir, comp.sample_submission, comp), nrows=0).columns]
    return config.model_copy(update={"competition": comp.model_copy(update={"submission_columns": header})})


def submission_format(data_dir: Path, comp: Competition) -> SubmissionFormat:
    """The format of competition ``comp``'s sample submission in ``data_dir`` (its header only is read).

    Raises:
        DataError: the sample is missing or its header is not a submission format (see :func:`format_of`).
    """
    path = locate(data_dir, comp.sample_submission, comp)
    return format_of(list(pd.read_csv(path, nrows=0).columns), comp, str(path))


def to_frame(fmt: SubmissionFormat, ids: np.ndarray, pred: np.ndarray, task: Task, post: dict | None) -> pd.DataFrame:
    """The submission of (N,) ``ids`` and (N, D) predictions in the task's space, in the sample's columns.

    The target column gets :meth:`compkit.tasks.Task.submitted` (decisions with the fitted post-processing ``post``,
    or a probability; a multi-label task's tags, space-separated); a probability submission the class probabilities,
    renormalised to sum to 1 (a multi-label task's tag probabilities as they are), in the sample's column order.
    """
    if not fmt.probabilities:
        return pd.DataFrame({fmt.id_column: ids, fmt.target: task.submitted(pred, post)})
    proba = task.class_proba(pred)
    if task.normalises_rows:
        proba = proba / proba.sum(axis=1, keepdims=True)
    position = {str(c): i for i, c in enumerate(task.classes)}
    frame = pd.DataFrame(proba[:, [position[c] for c in fmt.columns[1:]]], columns=list(fmt.columns[1:]))
    frame.insert(0, fmt.id_column, ids)
    return frame


def check_values(frame: pd.DataFrame, fmt: SubmissionFormat, task: Task, source: str) -> None:
    """Check a submission's values: the target column as the task reads it back (labels among the classes, a
    probability, a number), or probabilities in [0, 1] with rows summing to 1.

    Raises:
        DataError: names ``source``, the row (1-based) and column, and the fix.
    """
    if not fmt.probabilities:
        task.parse_submitted(frame[fmt.target], Path(source), fmt.target)
        return
    columns = list(fmt.columns[1:])
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~((values >= 0) & (values <= 1))  # NaN (not a number) is bad too
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(
            f"{source}: line {line(row)}, column {columns[col]!r}: {shown(frame[columns[col]].iloc[row])} is not a "
            "probability in [0, 1]; write probabilities"
        )
    off = np.abs(values.sum(axis=1) - 1) > ROW_SUM_TOLERANCE
    if task.normalises_rows and off.any():
        row = int(np.flatnonzero(off)[0])
        raise DataError(f"{source}: line {line(row)}: probabilities sum to {values[row].sum():.6g}, not 1; normalise each row")


def read_submission(file, fmt: SubmissionFormat, task: Task, source: Path | None = None) -> tuple[np.ndarray, Submitted]:
    """A submission's CSV parsed back: (N,) ids and what it holds (:class:`compkit.tasks.Submitted`).

    ``file`` is a path or a binary buffer (the bytes about to be written, so the scores are those of the
    file); ``source`` names it in messages (default: ``file``). The target column reads back as the task parses it
    (labels as decisions, a binary probability as a prediction); a probability submission's columns, put in class
    order, as predictions.

    Raises:
        DataError: the file's columns are not the format's, or a value is not a label / probability / number.
    """
    path = Path(source if source is not None else file)
    frame = _read_csv(file if source is not None else path, fmt.id_column)
    if list(frame.columns) != list(fmt.columns):
        raise DataError(f"{path}: columns {list(frame.columns)} are not the sample's {list(fmt.columns)}; write the sample's columns")
    check_values(frame, fmt, task, str(path))
    ids = frame[fmt.id_column].to_numpy()
    if not fmt.probabilities:
        return ids, task.parse_submitted(frame[fmt.target], path, fmt.target)
    return ids, Submitted(pred=task.from_class_proba(frame[[str(c) for c in task.classes]].to_numpy(dtype=np.float64)))


def load_solution(data_dir: Path, comp: Competition, fmt: SubmissionFormat) -> pd.DataFrame | None:
    """The hidden test labels (Kaggle's solution file), or None when the competition ships none.

    Columns: the id column, then the label column (``fmt.target``; for a probability submission
    ``comp.target_column`` or else one column per class: one-hot, or 0/1 tags for multi-label), then ``Usage``.

    Returns:
        DataFrame with the id column, ``label`` (the encoded target: int64 class index, float64 value, or a (T,) tag
        array per row) and
        ``Usage`` (``Public`` or ``Private``), in file order.

    Raises:
        DataError: missing columns, an empty, duplicate or mixed id, a label outside the classes, a class column
            value other than 0/1 or (single-label) a row that is not one-hot, a Usage other than Public/Private, or no row of one of the two parts; names the
            file, line and column.
    """
    path = Path(data_dir) / comp.solution_file
    if not path.is_file():
        return None
    frame = _read_csv(path, fmt.id_column)
    target = fmt.target or comp.target_column
    if fmt.probabilities and target not in frame.columns:
        _require_columns(frame, path, [fmt.id_column, *fmt.columns[1:], "Usage"])
        labels = tasks.of(comp).from_columns(frame[[str(c) for c in comp.classes]], path)
    else:
        _require_columns(frame, path, [fmt.id_column, target, "Usage"])
        labels = tasks.of(comp).encode(frame[target], path, target)
    _check_ids(frame, path, fmt.id_column)
    bad = ~frame["Usage"].isin(["Public", "Private"]).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: line {line(row)}, column 'Usage': {shown(frame['Usage'].iloc[row])}; use Public or Private")
    for part in ("Public", "Private"):
        if not (frame["Usage"] == part).any():
            raise DataError(f"{path}: no {part} row in column 'Usage', so the {part.lower()} score is undefined; "
                            f"mark some rows {part}")
    label = list(labels) if labels.ndim == 2 else labels  # a multi-label row's (T,) tags in one cell
    return pd.DataFrame({fmt.id_column: frame[fmt.id_column], "label": label, "Usage": frame["Usage"]})
