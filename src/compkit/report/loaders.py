"""The report's inputs, read from the stage files: OOF predictions per model, holdout predictions per candidate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compkit.config import Competition, Config, Paths
from compkit.data import Images
from compkit.errors import CompkitError
from compkit import tasks
from compkit.formats import SubmissionFormat, read_submission, submission_format
from compkit.artifacts import Layout


@dataclass(frozen=True)
class Model:
    """One model's OOF predictions: a backbone, or the selected blend (key ``blend``).

    Attributes:
        key: backbone name or ``blend``; used in file names and table ids.
        title: as shown, e.g. ``cnn_small`` or ``blend (fitted)``.
        ids: (N,) ids sorted ascending; proba: (N, K) float64; fold: (N,) int fold of each row.
    """

    key: str
    title: str
    ids: np.ndarray
    proba: np.ndarray
    fold: np.ndarray


@dataclass(frozen=True)
class Candidate:
    """One set of holdout predictions: a submission from the leaderboard, or a backbone's fold mean.

    ``proba`` is (H, K) float64 over the holdout rows in ``holdout.csv`` order (a label submission's
    rows are one-hot: what its labels score as).
    """

    name: str
    kind: str  # "submission", "backbone" or "ensemble"
    cv: float
    proba: np.ndarray


def backbone_oof(config: Config, paths: Paths, backbone: str) -> Model:
    """A backbone's OOF rows from each fold's verified ``oof.csv``, sorted by id."""
    return Model(backbone, backbone, *Layout(config, paths).runs.load_oof(backbone))


def blend_oof(config: Config, paths: Paths, blend: dict, folds: pd.DataFrame) -> Model:
    """The selected blend's verified ``ensemble/oof.csv`` (``blend``: ensemble.json), each row's fold from ``folds.csv``."""
    comp, layout, selected = config.competition, Layout(config, paths), blend["selected"]
    path = layout.ensemble.dir / "oof.csv"
    ids, proba = layout.ensemble.read_proba(blend, "oof.csv")
    fold = folds.set_index(comp.id_key)["fold"].reindex(ids)
    if fold.isna().any():
        raise CompkitError(f"{path}: id {ids[fold.isna().to_numpy()][0]!r} is in no fold of folds.csv; rerun `make ensemble`")
    order = np.argsort(ids, kind="stable")
    return Model("blend", f"blend ({selected})", ids[order], proba[order], fold.to_numpy(dtype=np.int64)[order])


def rows_of(ids: np.ndarray, train: Images, source: Path) -> np.ndarray:
    """(N,) rows of ``train`` holding ``ids``; an id not in train raises :class:`CompkitError`."""
    rows = pd.Series(np.arange(len(train.ids)), index=train.ids).reindex(ids)
    if rows.isna().any():
        raise CompkitError(f"{source}: id {ids[rows.isna().to_numpy()][0]!r} is not in the training file; rerun its stage")
    return rows.to_numpy(dtype=np.int64)


def read_leaderboard(config: Config, paths: Paths) -> pd.DataFrame | None:
    """The verified ``submissions/<competition>/leaderboard.csv``, or None before the first submission."""
    layout = Layout(config, paths)
    return layout.board.read() if layout.board.path.is_file() else None


def _on_holdout(ids: np.ndarray, proba: np.ndarray, held_ids: np.ndarray) -> np.ndarray:
    """The (N, K) rows of ``proba`` (one per id of ``ids``) put in ``held_ids`` order: (H, K)."""
    return proba[pd.Series(np.arange(len(ids)), index=ids).loc[held_ids].to_numpy()]


def _submission_proba(path: Path, comp: Competition, fmt: SubmissionFormat, held_ids: np.ndarray) -> np.ndarray | None:
    """(H, K) probabilities per holdout row of a submission file that predicts the holdout ids, as scored
    (see :func:`compkit.formats.read_submission`); None for a missing file or one that predicts the test file."""
    if not path.is_file():
        return None
    task = tasks.of(comp)
    ids, written = read_submission(path, fmt, task)
    proba = written.pred if written.pred is not None else np.eye(len(task.classes))[written.decision]
    if len(ids) != len(held_ids) or set(ids) != set(held_ids):
        return None
    return _on_holdout(ids, proba, held_ids)


def holdout_candidates(config: Config, paths: Paths, blend: dict, train: Images, holdout: pd.DataFrame,
                       board: pd.DataFrame | None) -> tuple[list[Candidate], list[str], np.ndarray]:
    """Every leaderboard submission that predicts the holdout, then every backbone's fold-mean holdout
    prediction; the ensemble's ``holdout.csv`` stands in when no submission file predicts the holdout.

    Returns:
        The candidates, the names of the submissions left out (file missing, or it predicts test), and
        the (H,) int true classes of the holdout rows.
    """
    comp, layout = config.competition, Layout(config, paths)
    held_ids, fmt = holdout[comp.id_key].to_numpy(), submission_format(paths.data, comp)
    truth = train.labels[rows_of(held_ids, train, paths.folds / "holdout.csv")]
    out, skipped = [], []
    for row in ([] if board is None else board.itertuples(index=False)):
        proba = _submission_proba(paths.submissions / str(row.file), comp, fmt, held_ids)
        if proba is None:
            skipped.append(str(row.name))
        else:
            out.append(Candidate(str(row.name), "submission", float(row.cv), proba))
    if not out:
        ids, proba = layout.ensemble.read_proba(blend, "holdout.csv")
        out.append(Candidate(f"ensemble ({blend['selected']}), not submitted", "ensemble", float(blend["cv"]), _on_holdout(ids, proba, held_ids)))
    for backbone in blend["backbones"]:
        ids, proba = layout.runs.load_fold_mean(backbone, "holdout.csv")
        out.append(Candidate(backbone, "backbone", float(blend["scores"][backbone][blend["metric"]]), _on_holdout(ids, proba, held_ids)))
    return out, skipped, truth
