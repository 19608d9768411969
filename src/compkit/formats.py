"""The submission's format, read from the sample submission's header (Kaggle's conventions).

Two formats: an id column then the target column (``id,label``), or an id column then one probability column
per class, named as the classes, in whatever order the sample uses (``id,class_a,class_b,...``: log-loss
competitions). What the target column holds is the task's (:mod:`compkit.tasks`): a class label, a binary
task's P(positive) under a probability metric (Histopathologic's ``id,label``), a regression's value. ``competition.submission_columns`` may be
left out; given, it must equal the sample's header. The solution file (the hidden test labels) has
the sample's columns plus ``Usage`` (Public/Private): for a probability submission one-hot class
columns, or a single column named as the target (``competition.target_column``) holding the label.

A multi-head task (:attr:`compkit.tasks.Task.submitted_heads`) is submitted wide (an id column, then one column per head
holding its label, in the sample's order) or long (Bengali.AI's ``row_id,target``: a row per image and head, its id
``<id>_<head>``, in the sample's row order where there is one to follow (a test set: :func:`in_sample_rows`), else
each image's heads in the config's order); any other two-column header is long.
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
from compkit.io import as_ids
from compkit.tasks import Submitted, Task

ROW_SUM_TOLERANCE = 1e-6  # a probability row may miss 1 by this much (CSV rounding of float64)


@dataclass(frozen=True)
class SubmissionFormat:
    """What a submission file holds.

    Attributes:
        columns: the sample submission's header, in order: the id column first.
        target: the label column's name; None for a probability submission or a wide multi-head one.
        heads: a multi-head task's heads, in the task's order; () for one target.
        long: a multi-head submission with a row per image and head (``row_id,target``).
    """

    columns: tuple[str, ...]
    target: str | None
    heads: tuple[str, ...] = ()
    long: bool = False

    @property
    def id_column(self) -> str:
        """The id column: the sample's first column."""
        return self.columns[0]

    @property
    def probabilities(self) -> bool:
        """True when the submission holds one probability column per class."""
        return self.target is None and not self.heads


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
    heads = tasks.of(comp).submitted_heads
    if heads:
        return _heads_format(header, heads, source)
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


def _heads_format(header: list[str], heads: list[str], source: str) -> SubmissionFormat:
    """A multi-head sample's format: wide (an id column, then the heads in any order) or long (two columns).

    Raises:
        DataError: neither; names ``source`` and both forms.
    """
    if len(header) == len(heads) + 1 and sorted(header[1:]) == sorted(heads):
        return SubmissionFormat(tuple(header), None, tuple(heads))
    if len(header) == 2:
        return SubmissionFormat(tuple(header), header[1], tuple(heads), long=True)
    raise DataError(f"{source}: columns {header}: expected an id column then one column per head {heads} (wide), or "
                    "row_id,target with a row per image and head (long); fix the sample submission or competition.targets")


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
    if fmt.heads:
        return _heads_frame(fmt, ids, task.submitted(pred, post))
    if not fmt.probabilities:
        return pd.DataFrame({fmt.id_column: ids, fmt.target: task.submitted(pred, post)})
    proba = task.class_proba(pred)
    if task.normalises_rows:
        proba = proba / proba.sum(axis=1, keepdims=True)
    position = {str(c): i for i, c in enumerate(task.classes)}
    frame = pd.DataFrame(proba[:, [position[c] for c in fmt.columns[1:]]], columns=list(fmt.columns[1:]))
    frame.insert(0, fmt.id_column, ids)
    return frame


def _heads_frame(fmt: SubmissionFormat, ids: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """A multi-head submission of (N,) ids and (N, H) labels as written (the heads in :attr:`SubmissionFormat.heads`
    order): wide, in the sample's columns, or long, a row ``<id>_<head>`` per image and head."""
    if not fmt.long:
        by_head = dict(zip(fmt.heads, labels.T))
        return pd.DataFrame({fmt.id_column: ids, **{h: by_head[h] for h in fmt.columns[1:]}})
    return pd.DataFrame({fmt.id_column: submission_ids(fmt, ids), fmt.target: labels.reshape(-1)})


def submission_ids(fmt: SubmissionFormat, ids: np.ndarray) -> np.ndarray:
    """The id column of a submission of (N,) image ids: the ids; a long multi-head one's (N * H) ``<id>_<head>``, each
    image's heads in the task's order."""
    if not fmt.long:
        return np.asarray(ids)
    return np.array([f"{i}_{h}" for i in ids for h in fmt.heads], dtype=object)


def image_ids(frame: pd.DataFrame, fmt: SubmissionFormat, source: Path) -> np.ndarray:
    """(N,) the image ids of a submission's (or sample submission's) id column, in its order, each once (a long
    multi-head one names each image once per head).

    Raises:
        DataError: a long row id that ends with no head; names ``source`` and the line.
    """
    if not fmt.long:
        return frame[fmt.id_column].to_numpy()
    ids, _ = _long_keys(frame, fmt, Path(source))
    return as_ids(pd.unique(ids))


def in_sample_rows(frame: pd.DataFrame, sample: pd.DataFrame, fmt: SubmissionFormat) -> pd.DataFrame:
    """The submission ``frame`` with its rows in the order of ``sample``'s id column (the same ids, checked before:
    :func:`compkit.data.check_sample_ids`): a long multi-head sample may order each image's heads its own way."""
    position = pd.Series(np.arange(len(frame)), index=frame[fmt.id_column].astype(str).to_numpy())
    return frame.iloc[position.loc[sample[fmt.id_column].astype(str).to_numpy()].to_numpy()].reset_index(drop=True)


def _long_keys(frame: pd.DataFrame, fmt: SubmissionFormat, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(n,) image ids (text) and (n,) heads of a long submission's row ids ``<id>_<head>`` (the longest head that ends
    it: a head may end with another's name).

    Raises:
        DataError: a row id that ends with no head; names the file and line.
    """
    heads = sorted(fmt.heads, key=len, reverse=True)
    ids, row_heads = [], []
    for row, row_id in enumerate(frame[fmt.id_column].astype(str)):
        head = next((h for h in heads if row_id.endswith(f"_{h}") and len(row_id) > len(h) + 1), None)
        if head is None:
            raise DataError(f"{path}: line {line(row)}, column {fmt.id_column!r}: {shown(row_id)} is not <id>_<head> for a "
                            f"head of {list(fmt.heads)}; write one row per image and head")
        ids.append(row_id[:-len(head) - 1])
        row_heads.append(head)
    return np.array(ids, dtype=object), np.array(row_heads, dtype=object)


def _parse_heads(frame: pd.DataFrame, fmt: SubmissionFormat, task: Task, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A multi-head submission (or solution) read back: (N,) image ids in the file's order, their (N, H) int64 class
    indices (the task's head order) and (N,) the file row of each image's first row.

    Raises:
        DataError: a label not among its head's classes, a long row id that names no head, or an image without a row
            for every head; names the file, line and column.
    """
    if not fmt.long:
        return frame[fmt.id_column].to_numpy(), task.read_target(frame, path), np.arange(len(frame))
    ids, heads = _long_keys(frame, fmt, path)
    codes = task.encode_rows(frame[fmt.target], heads, path, fmt.target)
    table = pd.DataFrame({"id": ids, "head": heads, "code": codes})
    repeated = table.duplicated(["id", "head"]).to_numpy()
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        raise DataError(f"{path}: line {line(row)}, column {fmt.id_column!r}: {shown(frame[fmt.id_column].iloc[row])} is "
                        "repeated; write one row per image and head")
    first = table.drop_duplicates("id").index.to_numpy()
    wide = table.pivot(index="id", columns="head", values="code").reindex(index=ids[first], columns=list(fmt.heads))
    if wide.isna().any().any():
        image, head = wide.stack(future_stack=True).loc[lambda v: v.isna()].index[0]
        raise DataError(f"{path}: no row {image}_{head}: every image needs a row per head {list(fmt.heads)}; add it")
    return as_ids(ids[first]), wide.to_numpy(dtype=np.int64), first


def check_values(frame: pd.DataFrame, fmt: SubmissionFormat, task: Task, source: str) -> None:
    """Check a submission's values: the target column as the task reads it back (labels among the classes, a
    probability, a number), or probabilities in [0, 1] with rows summing to 1.

    Raises:
        DataError: names ``source``, the row (1-based) and column, and the fix.
    """
    if fmt.heads:
        _parse_heads(frame, fmt, task, Path(source))
        return
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
    frame = _read_csv(file if source is not None else path, fmt.id_column, task.text_columns)
    if list(frame.columns) != list(fmt.columns):
        raise DataError(f"{path}: columns {list(frame.columns)} are not the sample's {list(fmt.columns)}; write the sample's columns")
    if fmt.heads:
        ids, decision, _ = _parse_heads(frame, fmt, task, path)
        return ids, Submitted(decision=decision)
    check_values(frame, fmt, task, str(path))
    ids = frame[fmt.id_column].to_numpy()
    if not fmt.probabilities:
        return ids, task.parse_submitted(frame[fmt.target], path, fmt.target)
    return ids, Submitted(pred=task.from_class_proba(frame[[str(c) for c in task.classes]].to_numpy(dtype=np.float64)))


def load_solution(data_dir: Path, comp: Competition, fmt: SubmissionFormat) -> pd.DataFrame | None:
    """The hidden test labels (Kaggle's solution file), or None when the competition ships none.

    Columns: the id column, then the label column (``fmt.target``; for a probability submission
    ``comp.target_column`` or else one column per class: one-hot, or 0/1 tags for multi-label), then ``Usage``; a
    multi-head solution: the sample's columns (wide or long), then ``Usage`` (a long one's: its image's first row's).

    Returns:
        DataFrame with the id column (a long multi-head solution's: the image ids), ``label`` (the encoded target:
        int64 class index, float64 value, a (T,) tag array or (H,) head class indices per row) and
        ``Usage`` (``Public`` or ``Private``), in file order.

    Raises:
        DataError: missing columns, an empty, duplicate or mixed id, a label outside the classes, a class column
            value other than 0/1 or (single-label) a row that is not one-hot, a Usage other than Public/Private, or no row of one of the two parts; names the
            file, line and column.
    """
    path = Path(data_dir) / comp.solution_file
    if not path.is_file():
        return None
    frame = _read_csv(path, fmt.id_column, tasks.of(comp).text_columns)
    target = fmt.target or comp.target_column
    if fmt.heads:  # the sample's columns (wide or long) and Usage, one Usage per image (its first row's)
        _require_columns(frame, path, [*fmt.columns, "Usage"])
        _check_ids(frame, path, fmt.id_column)
        ids, labels, first = _parse_heads(frame, fmt, tasks.of(comp), path)
        _check_usage(frame, path)
        frame = pd.DataFrame({fmt.id_column: ids, "Usage": frame["Usage"].to_numpy()[first]})
    elif fmt.probabilities and target not in frame.columns:
        _require_columns(frame, path, [fmt.id_column, *fmt.columns[1:], "Usage"])
        labels = tasks.of(comp).from_columns(frame[[str(c) for c in comp.classes]], path)
    else:
        _require_columns(frame, path, [fmt.id_column, target, "Usage"])
        labels = tasks.of(comp).encode(frame[target], path, target)
    if not fmt.heads:
        _check_ids(frame, path, fmt.id_column)
        _check_usage(frame, path)
    label = list(labels) if labels.ndim == 2 else labels  # a multi-label row's (T,) tags (a multi-head's (H,) classes) in one cell
    return pd.DataFrame({fmt.id_column: frame[fmt.id_column], "label": label, "Usage": frame["Usage"]})


def _check_usage(frame: pd.DataFrame, path: Path) -> None:
    """Refuse a solution's ``Usage`` other than Public/Private, or without a row of one of the two.

    Raises:
        DataError: names the file, and the line of a bad value.
    """
    bad = ~frame["Usage"].isin(["Public", "Private"]).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: line {line(row)}, column 'Usage': {shown(frame['Usage'].iloc[row])}; use Public or Private")
    for part in ("Public", "Private"):
        if not (frame["Usage"] == part).any():
            raise DataError(f"{path}: no {part} row in column 'Usage', so the {part.lower()} score is undefined; "
                            f"mark some rows {part}")
