"""Stage 4: the submission CSV in the competition's exact format, validated, scored, on the leaderboard.

With the competition's test set present, the submission predicts test: the sample submission's
columns, ids and order. Without it (DACON's test set is not shipped here) the submission predicts
the local holdout, in the same columns, sorted by id. The columns are a label column or one
probability column per class, as the sample's header says (see formats.py). Public and private
scores, in the competition's metric, are of the file's bytes as they will be written (parsed back): on
the competition's solution file (test labels with a Usage column, Kaggle's convention) when it ships
one, else on the Public and Private parts of the holdout. A row is appended to
``submissions/<competition>/leaderboard.csv``. The ensemble set is verified first (compkit.artifacts), and the
submission is validated and scored and the leaderboard read before anything is written, so a failure
leaves neither an orphan submission nor a changed leaderboard.
"""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from compkit import console, tasks
from compkit.artifacts import Layout
from compkit.artifacts.store import csv_bytes
from compkit.config import Competition, Config, Paths
from compkit.data import check_sample_ids, has_test, load_labels, load_sample_submission, load_test_ids
from compkit.errors import CompkitError, shown
from compkit.formats import (SubmissionFormat, check_values, format_of, image_ids, in_sample_rows, load_solution,
                             read_submission, require_scorable, submission_format, submission_ids, to_frame)
from compkit.lineage import ids_digest
from compkit.tasks import Submitted
from compkit.tracking import tracked


class SubmissionError(CompkitError):
    """A submission that does not match the competition's expected format."""


def validate_submission(submission: pd.DataFrame, expected: pd.DataFrame, comp: Competition, source: str) -> None:
    """Check ``submission`` against ``expected`` (the sample submission, or the holdout ids).

    Its format (a label column, or one probability column per class) is the one ``expected``'s columns name.

    Raises:
        SubmissionError: columns differ (names or order), row count differs, a value is missing,
            an id differs from the expected id at the same row, a label is not a class, or a probability
            is outside [0, 1] or a row's do not sum to 1.
            The message names ``source``, the line (header: line 1) or column, and the fix.
    """
    if list(submission.columns) != list(expected.columns):
        raise SubmissionError(
            f"{source}: columns {list(submission.columns)} differ from the sample's {list(expected.columns)}; "
            "write exactly the sample's columns"
        )
    if len(submission) != len(expected):
        raise SubmissionError(f"{source}: {len(submission)} rows, the sample has {len(expected)}; predict every id once")
    missing = submission.isna().to_numpy()
    if missing.any():
        row, col = map(int, np.argwhere(missing)[0])
        raise SubmissionError(f"{source}: line {row + 2}, column {submission.columns[col]!r} is empty; fill it in")
    id_column = expected.columns[0]
    differs = submission[id_column].astype(str).to_numpy() != expected[id_column].astype(str).to_numpy()
    if differs.any():
        row = int(np.flatnonzero(differs)[0])
        raise SubmissionError(
            f"{source}: line {row + 2}: {id_column} {shown(submission[id_column].iloc[row])} where the sample has "
            f"{shown(expected[id_column].iloc[row])}; keep the sample's ids and order"
        )
    try:
        check_values(submission, format_of(list(expected.columns), comp, source), tasks.of(comp), source)
    except CompkitError as exc:
        raise SubmissionError(str(exc)) from None


def _predictions(config: Config, paths: Paths, sample: pd.DataFrame, test_ids: np.ndarray | None,
                 blend: dict, fmt: SubmissionFormat) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(ids, (N, D) predictions, expected frame) of what is submitted: test when shipped (``test_ids``), else the holdout.

    ``blend`` is the verified ensemble.json (:meth:`compkit.artifacts.ensemble.EnsembleSet.read`); ``fmt`` the
    submission's format (the holdout's own predictions stand for the expected holdout rows: only the columns and
    ids are compared).
    """
    layout = Layout(config, paths)
    if test_ids is None:
        ids, proba = layout.ensemble.read_proba(blend, "holdout.csv")
        return ids, proba, to_frame(fmt, ids, proba, tasks.for_config(config), blend.get("post"))
    ids, proba = layout.ensemble.read_proba(blend, "test.csv")
    if ids_digest(ids) != ids_digest(test_ids):
        raise SubmissionError(
            f"{layout.ensemble.dir / 'test.csv'}: its ids are not those of the test set in {paths.data}; "
            "rerun `make train ensemble` on this test set"
        )
    order = image_ids(sample, fmt, paths.data / config.competition.sample_submission)
    return order, in_sample_order(order, ids, proba), sample


def in_sample_order(order: np.ndarray, ids: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(N, D) predictions ``pred`` of (N,) ``ids`` in the sample submission's image order ``order`` (the same ids,
    checked before: :func:`compkit.data.check_sample_ids`; :func:`compkit.formats.image_ids`)."""
    return pred[pd.Series(np.arange(len(ids)), index=ids).loc[order].to_numpy()]


def _rows(submitted: Submitted, rows: np.ndarray) -> Submitted:
    """``rows`` of a parsed submission."""
    return Submitted(*(None if part is None else part[rows] for part in (submitted.pred, submitted.decision)))


def _score_parts(config: Config, paths: Paths, blend: dict, ids: np.ndarray, written: Submitted,
                 fmt: SubmissionFormat) -> tuple[dict[str, float], str]:
    """Public and private ``metric`` of the submission as written ((N,) ids and what its bytes parse back to),
    on the solution file when the competition ships one, else on the holdout: the file's rows when it predicts the
    holdout, else (test without labels) the ensemble's holdout predictions written and parsed as the file is."""
    comp, layout, task = config.competition, Layout(config, paths), tasks.for_config(config)
    index = pd.Series(np.arange(len(ids)), index=ids)
    solution = load_solution(paths.data, comp, fmt)
    if solution is not None:
        missing = ~solution[fmt.id_column].isin(ids).to_numpy()
        if missing.any():
            raise SubmissionError(f"{paths.data / comp.solution_file}: {int(missing.sum())} ids are not in the submission; "
                                  "the solution and the test set must have the same ids")
        written = _rows(written, index.loc[solution[fmt.id_column]].to_numpy())
        truth, usage, where = np.asarray(solution["label"].tolist()), solution["Usage"].to_numpy(), comp.solution_file
    else:
        _, holdout = layout.folds.read()
        train = load_labels(paths.data, comp)
        held = holdout[comp.id_key].to_numpy()
        if has_test(paths.data, comp):  # the file predicts test: the ensemble's holdout predictions, as the format writes them
            held_ids, held_pred = layout.ensemble.read_proba(blend, "holdout.csv")
            frame = to_frame(fmt, held_ids, held_pred, task, blend.get("post"))
            _, as_written = read_submission(io.BytesIO(csv_bytes(frame)), fmt, task, source=layout.ensemble.dir / "holdout.csv")
            written = _rows(as_written, pd.Series(np.arange(len(held_ids)), index=held_ids).loc[held].to_numpy())
        else:  # the file predicts the holdout
            written = _rows(written, index.loc[held].to_numpy())
        truth = train.labels[pd.Series(np.arange(len(train.ids)), index=train.ids).loc[held].to_numpy()]
        usage, where = holdout["Usage"].to_numpy(), "the holdout"
    parts = {}
    for part in ("Public", "Private"):
        mine = _rows(written, usage == part)
        parts[part.lower()] = task.score(truth[usage == part], mine.pred, mine.decision)
    counts = f"{int((usage == 'Public').sum())} public / {int((usage == 'Private').sum())} private rows of {where}"
    return parts, counts


def run(config: Config, paths: Paths, name: str | None = None) -> Path:
    """Stage entry point: validate, score and rank the ensemble's submission, then write it and its
    leaderboard row; returns its path. Every check runs before the first write, so a failure leaves
    no submission file and the leaderboard as it was.
    """
    comp, layout, task = config.competition, Layout(config, paths), tasks.for_config(config)
    sample, fmt = load_sample_submission(paths.data, comp), submission_format(paths.data, comp)
    require_scorable(fmt, task, str(paths.data / comp.sample_submission))
    test_ids = load_test_ids(paths.data, comp) if has_test(paths.data, comp) else None
    if test_ids is not None:
        check_sample_ids(sample, submission_ids(fmt, test_ids), paths.data, comp)
    blend = layout.ensemble.read()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name or f"blend-{blend['selected']}")
    ids, proba, expected = _predictions(config, paths, sample, test_ids, blend, fmt)
    submission = in_sample_rows(to_frame(fmt, ids, proba, task, blend.get("post")), expected, fmt)
    path = layout.board.submission_path(name)
    validate_submission(submission, expected, comp, str(path))
    written = read_submission(io.BytesIO(csv_bytes(submission)), fmt, task, source=path)  # the bytes the file will hold
    parts, counts = _score_parts(config, paths, blend, *written, fmt)
    layout.board.read()  # refused before anything is written when damaged
    row = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "name": name,
        "backbones": "+".join(blend["backbones"]),
        "blend": blend["selected"],
        "cv": round(blend["cv"], 6),
        **{k: round(v, 6) for k, v in parts.items()},
    }
    path, board = layout.board.add(name, submission, row)
    row["file"] = path.name
    metric = task.scorer
    shown_board = board.drop(columns=["file"]).sort_values("cv", ascending=not metric.greater_is_better, kind="stable")
    console.table(shown_board, title=f"{comp.name} local leaderboard ({metric.name}, best CV first)")
    with tracked(config, paths, "submit", f"submit-{name}", {"submission": path.name}) as tracker:
        tracker.summarize(row)
        tracker.table("leaderboard", board)
        tracker.artifact(path, f"{comp.name}-submission", "submission")
    console.summary(
        f"submit: {path} ({len(submission)} rows) CV {row['cv']:.4f} public {row['public']:.4f} "
        f"private {row['private']:.4f} ({metric.name}; {counts})"
    )
    return path
