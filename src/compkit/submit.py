"""Stage 4: the submission CSV in the competition's exact format, validated, scored, on the leaderboard.

With the competition's test set present, the submission predicts test: the sample submission's
columns, ids and order. Without it (DACON's test set is not shipped here) the submission predicts
the local holdout, in the same columns, sorted by id. The columns are a label column or one
probability column per class, as the sample's header says (see formats.py). Public and private
scores, in the competition's metric, are of the file as written (read back): on the competition's
solution file (test labels with a Usage column, Kaggle's convention) when it ships one, else on the
Public and Private parts of the holdout. A row is appended to ``submissions/<competition>/leaderboard.csv``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from compkit import console
from compkit.config import Competition, Config, Paths
from compkit.data import check_sample_ids, has_test, load_sample_submission, load_test, load_train
from compkit.errors import CompkitError, shown
from compkit.folds import load_folds
from compkit.formats import (SubmissionFormat, as_submitted, check_values, format_of, load_solution, read_submission,
                             require_probabilities_for_log_loss, submission_format, to_frame)
from compkit.io import read_json, read_proba, write_csv
from compkit.lineage import ids_digest
from compkit.metrics import GREATER_IS_BETTER, score
from compkit.tracking import tracked

LEADERBOARD_COLUMNS = ["time", "name", "file", "backbones", "blend", "cv", "public", "private"]


class SubmissionError(CompkitError):
    """A submission that does not match the competition's expected format."""


def validate_submission(submission: pd.DataFrame, expected: pd.DataFrame, comp: Competition, source: str) -> None:
    """Check ``submission`` against ``expected`` (the sample submission, or the holdout ids).

    Its format (a label column, or one probability column per class) is the one ``expected``'s columns name.

    Raises:
        SubmissionError: columns differ (names or order), row count differs, a value is missing,
            an id differs from the expected id at the same row, a label is not a class, or a probability
            is outside [0, 1] or a row's do not sum to 1.
            The message names ``source``, the row (1-based) or column, and the fix.
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
        raise SubmissionError(f"{source}: row {row + 1}, column {submission.columns[col]!r} is empty; fill it in")
    id_column = expected.columns[0]
    differs = submission[id_column].astype(str).to_numpy() != expected[id_column].astype(str).to_numpy()
    if differs.any():
        row = int(np.flatnonzero(differs)[0])
        raise SubmissionError(
            f"{source}: row {row + 1}: {id_column} {shown(submission[id_column].iloc[row])} where the sample has "
            f"{shown(expected[id_column].iloc[row])}; keep the sample's ids and order"
        )
    try:
        check_values(submission, format_of(list(expected.columns), comp, source), comp, source)
    except CompkitError as exc:
        raise SubmissionError(str(exc)) from None


def _submission_path(folder: Path, name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path, n = folder / f"{stamp}_{name}.csv", 1
    while path.exists():  # two submissions in one second keep both files
        n += 1
        path = folder / f"{stamp}_{name}-{n}.csv"
    return path


def _predictions(config: Config, paths: Paths, sample: pd.DataFrame, fmt: SubmissionFormat) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(ids, (N, K) probabilities, expected frame) of what is submitted: test when shipped, else the holdout."""
    comp = config.competition
    id_column = fmt.id_column
    if not has_test(paths.data, comp):
        ids, proba = read_proba(paths.runs / "ensemble" / "holdout.csv", comp.id_key, comp.classes)
        return ids, proba, to_frame(fmt, ids, np.eye(len(comp.classes))[np.zeros(len(ids), dtype=int)], comp)
    test_ids = load_test(paths.data, comp).ids
    check_sample_ids(sample, test_ids, paths.data, comp)
    ids, proba = read_proba(paths.runs / "ensemble" / "test.csv", comp.id_key, comp.classes)
    if ids_digest(ids) != ids_digest(test_ids):
        raise SubmissionError(
            f"{paths.runs / 'ensemble' / 'test.csv'}: its ids are not those of the test set in {paths.data}; "
            "rerun `make train ensemble` on this test set"
        )
    proba = proba[pd.Series(np.arange(len(ids)), index=ids).loc[sample[id_column]].to_numpy()]
    return sample[id_column].to_numpy(), proba, sample


def _score_parts(config: Config, paths: Paths, ids: np.ndarray, proba: np.ndarray, fmt: SubmissionFormat) -> tuple[dict[str, float], str]:
    """Public and private ``metric`` of the submission as written ((N,) ids, (N, K) probabilities read back
    from its file), on the solution file when the competition ships one, else on the holdout: the file's
    rows when it predicts the holdout, else (test without labels) the ensemble's holdout predictions in
    the submission's format."""
    comp = config.competition
    index = pd.Series(np.arange(len(ids)), index=ids)
    solution = load_solution(paths.data, comp, fmt)
    if solution is not None:
        missing = ~solution[fmt.id_column].isin(ids).to_numpy()
        if missing.any():
            raise SubmissionError(f"{paths.data / comp.solution_file}: {int(missing.sum())} ids are not in the submission; "
                                  "the solution and the test set must have the same ids")
        proba = proba[index.loc[solution[fmt.id_column]].to_numpy()]
        truth, usage, where = solution["label"].to_numpy(), solution["Usage"].to_numpy(), comp.solution_file
    else:
        _, holdout = load_folds(config, paths)
        train = load_train(paths.data, comp)
        held = holdout[comp.id_key].to_numpy()
        if has_test(paths.data, comp):  # the file predicts test: the ensemble's holdout predictions, as the format writes them
            held_ids, held_proba = read_proba(paths.runs / "ensemble" / "holdout.csv", comp.id_key, comp.classes)
            proba = as_submitted(fmt, held_proba)[pd.Series(np.arange(len(held_ids)), index=held_ids).loc[held].to_numpy()]
        else:  # the file predicts the holdout
            proba = proba[index.loc[held].to_numpy()]
        truth = pd.Series(train.labels, index=train.ids).loc[held].to_numpy()
        usage, where = holdout["Usage"].to_numpy(), "the holdout"
    parts = {part.lower(): score(comp.metric, truth[usage == part], proba[usage == part]) for part in ("Public", "Private")}
    counts = f"{int((usage == 'Public').sum())} public / {int((usage == 'Private').sum())} private rows of {where}"
    return parts, counts


def run(config: Config, paths: Paths, name: str | None = None) -> Path:
    """Stage entry point: write, validate and score the ensemble's submission; returns its path."""
    comp = config.competition
    blend = read_json(paths.runs / "ensemble" / "ensemble.json")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name or f"blend-{blend['selected']}")
    sample, fmt = load_sample_submission(paths.data, comp), submission_format(paths.data, comp)
    require_probabilities_for_log_loss(fmt, comp, str(paths.data / comp.sample_submission))
    ids, proba, expected = _predictions(config, paths, sample, fmt)
    submission = to_frame(fmt, ids, proba, comp)
    path = _submission_path(paths.submissions, name)
    validate_submission(submission, expected, comp, str(path))
    write_csv(submission, path)

    parts, counts = _score_parts(config, paths, *read_submission(path, fmt, comp), fmt)  # the file as written
    row = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "name": name,
        "file": path.name,
        "backbones": "+".join(blend["backbones"]),
        "blend": blend["selected"],
        "cv": round(blend["cv"], 6),
        **{k: round(v, 6) for k, v in parts.items()},
    }
    board_path = paths.submissions / "leaderboard.csv"
    board = pd.read_csv(board_path) if board_path.is_file() else pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    board = pd.concat([board, pd.DataFrame([row])], ignore_index=True)
    write_csv(board, board_path)
    shown_board = board.drop(columns=["file"]).sort_values("cv", ascending=not GREATER_IS_BETTER[comp.metric], kind="stable")
    console.table(shown_board, title=f"{comp.name} local leaderboard ({comp.metric}, best CV first)")
    with tracked(config, paths, "submit", f"submit-{name}", {"submission": path.name}) as tracker:
        tracker.summarize(row)
        tracker.table("leaderboard", board)
        tracker.artifact(path, f"{comp.name}-submission", "submission")
    console.summary(
        f"submit: {path} ({len(submission)} rows) CV {row['cv']:.4f} public {row['public']:.4f} "
        f"private {row['private']:.4f} ({comp.metric}; {counts})"
    )
    return path
