"""Stage 4: the submission CSV in the competition's exact format, validated, scored, on the leaderboard.

With the competition's test file present, the submission predicts test: the sample submission's
columns, ids and order. Without it (DACON's test labels were never released, and test.csv is
not shipped here) the submission predicts the local holdout, in the same columns, sorted by id.
Either way the ensemble's holdout predictions are scored on the Public and Private parts of the
holdout, and a row is appended to ``submissions/<competition>/leaderboard.csv``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from compkit import console
from compkit.config import Competition, Config, Paths
from compkit.data import check_sample_ids, class_indices, load_sample_submission, load_test, load_train
from compkit.errors import CompkitError, shown
from compkit.folds import load_folds
from compkit.io import read_json, read_proba, write_csv
from compkit.lineage import ids_digest
from compkit.metrics import score
from compkit.tracking import tracked

LEADERBOARD_COLUMNS = ["time", "name", "file", "backbones", "blend", "cv", "public", "private"]


class SubmissionError(CompkitError):
    """A submission that does not match the competition's expected format."""


def validate_submission(submission: pd.DataFrame, expected: pd.DataFrame, comp: Competition, source: str) -> None:
    """Check ``submission`` against ``expected`` (the sample submission, or the holdout ids).

    Raises:
        SubmissionError: columns differ (names or order), row count differs, a value is missing,
            an id differs from the expected id at the same row, or a label is not a class.
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
    id_column, target = expected.columns
    differs = submission[id_column].astype(str).to_numpy() != expected[id_column].astype(str).to_numpy()
    if differs.any():
        row = int(np.flatnonzero(differs)[0])
        raise SubmissionError(
            f"{source}: row {row + 1}: {id_column} {shown(submission[id_column].iloc[row])} where the sample has "
            f"{shown(expected[id_column].iloc[row])}; keep the sample's ids and order"
        )
    try:
        class_indices(submission[target], Path(source), comp, target)
    except CompkitError as exc:
        raise SubmissionError(str(exc)) from None


def _submission_path(folder: Path, name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path, n = folder / f"{stamp}_{name}.csv", 1
    while path.exists():  # two submissions in one second keep both files
        n += 1
        path = folder / f"{stamp}_{name}-{n}.csv"
    return path


def run(config: Config, paths: Paths, name: str | None = None) -> Path:
    """Stage entry point: write, validate and score the ensemble's submission; returns its path."""
    comp = config.competition
    blend = read_json(paths.runs / "ensemble" / "ensemble.json")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name or f"blend-{blend['selected']}")
    sample = load_sample_submission(paths.data, comp)
    id_column, target = comp.submission_columns
    classes = np.asarray(comp.classes, dtype=object)

    _, holdout = load_folds(config, paths)
    held_ids, held_proba = read_proba(paths.runs / "ensemble" / "holdout.csv", comp.id_column, comp.classes)
    test = load_test(paths.data, comp)
    if test is not None:
        check_sample_ids(sample, test.ids, paths.data, comp)
        ids, proba = read_proba(paths.runs / "ensemble" / "test.csv", comp.id_column, comp.classes)
        if ids_digest(ids) != ids_digest(test.ids):
            raise SubmissionError(
                f"{paths.runs / 'ensemble' / 'test.csv'}: its ids are not those of {paths.data / comp.test_file}; "
                "rerun `make train ensemble` on this test file"
            )
        proba = proba[pd.Series(np.arange(len(ids)), index=ids).loc[sample[id_column]].to_numpy()]
        ids, expected = sample[id_column].to_numpy(), sample
    else:
        ids, proba = held_ids, held_proba
        expected = pd.DataFrame({id_column: ids, target: classes[0]})
    submission = pd.DataFrame({id_column: ids, target: classes[proba.argmax(axis=1)]})
    path = _submission_path(paths.submissions, name)
    validate_submission(submission, expected, comp, str(path))
    write_csv(submission, path)

    train = load_train(paths.data, comp)
    truth = pd.Series(train.labels, index=train.ids).loc[held_ids].to_numpy()
    usage = holdout.set_index(comp.id_column)["Usage"].loc[held_ids].to_numpy()
    parts = {part: score(comp.metric, truth[usage == part.title()], held_proba[usage == part.title()]) for part in ("public", "private")}
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
    console.table(board.drop(columns=["file"]), title=f"{comp.name} local leaderboard ({comp.metric})")
    with tracked(config, paths, "submit", f"submit-{name}", {"submission": path.name}) as tracker:
        tracker.summarize(row)
        tracker.table("leaderboard", board)
        tracker.artifact(path, f"{comp.name}-submission", "submission")
    console.summary(
        f"submit: {path} ({len(submission)} rows) CV {row['cv']:.4f} public {row['public']:.4f} "
        f"private {row['private']:.4f} (holdout: {int((usage == 'Public').sum())} public / {int((usage == 'Private').sum())} private)"
    )
    return path
