"""Pseudo-labelling: confident test predictions become extra training rows, fold by fold.

``make pseudo`` (after ``make train``) reads each fold's ``test.csv`` from every backbone, averages
them over the backbones, and keeps the test rows whose top probability reaches ``pseudo.threshold``.
It writes ``folds/<competition>/pseudo.csv`` (id, fold, label, confidence). While that file exists,
``make train`` adds fold k's pseudo-labelled test rows to fold k's training rows.

Fold-safe by construction: fold k's pseudo-labels come only from fold k's models, which never saw fold
k's validation rows, so OOF scores stay honest. Only test rows are ever pseudo-labelled: the file is
keyed by test ids and read against test.csv, and an id that is a train or holdout id is refused. The
file is part of the fold files' digest (lineage.py), so models trained before it was written (or
changed) are reported stale: delete ``runs/<competition>`` and train again. Recipe: Lee (2013),
"Pseudo-Label: the simple and efficient semi-supervised learning method for deep neural networks".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compkit import console
from compkit.config import Config, Paths
from compkit.data import DataError, Images, load_test
from compkit.errors import CompkitError
from compkit.io import read_proba, write_csv


def pseudo_path(paths: Paths):
    """``folds/<competition>/pseudo.csv``."""
    return paths.folds / "pseudo.csv"


def fold_labels(config: Config, paths: Paths, fold: int) -> pd.DataFrame:
    """Fold ``fold``'s confident test rows: id, fold, label (a class), confidence (the backbones' mean top probability)."""
    from compkit.train import fold_dir  # train imports this module

    comp = config.competition
    parts = [read_proba(fold_dir(paths, b, fold) / "test.csv", comp.id_key, comp.classes) for b in config.train.backbones]
    ids, proba = parts[0][0], np.mean([p for _, p in parts], axis=0)
    keep = proba.max(axis=1) >= config.pseudo.threshold
    return pd.DataFrame({
        comp.id_key: ids[keep],
        "fold": fold,
        "label": np.asarray(comp.classes, dtype=object)[proba[keep].argmax(axis=1)],
        "confidence": proba[keep].max(axis=1).round(6),
    })


def run(config: Config, paths: Paths) -> None:
    """Stage entry point: write ``pseudo.csv`` from the trained folds' test predictions, print a summary.

    Raises:
        CompkitError: the competition has no test file, or a fold's ``test.csv`` is missing.
    """
    from compkit.train import fold_dir

    comp = config.competition
    if load_test(paths.data, comp) is None:
        raise CompkitError(f"{paths.data / comp.test_file}: not found; pseudo-labelling needs the unlabelled test data")
    for backbone in config.train.backbones:
        for k in range(config.folds.n_splits):
            if not (fold_dir(paths, backbone, k) / "test.csv").is_file():
                raise CompkitError(f"{fold_dir(paths, backbone, k) / 'test.csv'}: not found; run `make train` first")
    table = pd.concat([fold_labels(config, paths, k) for k in range(config.folds.n_splits)], ignore_index=True)
    write_csv(table, pseudo_path(paths))
    per_fold = table["fold"].value_counts().reindex(range(config.folds.n_splits), fill_value=0)
    console.summary(
        f"pseudo: {len(table)} test rows with confidence >= {config.pseudo.threshold} over {config.folds.n_splits} folds "
        f"({per_fold.min()}-{per_fold.max()} a fold) -> {pseudo_path(paths)}; delete {paths.runs} and `make train` to use them"
    )


def load_pseudo(config: Config, paths: Paths, train: Images, test: Images | None, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``fold``'s pseudo-labelled rows: (n,) int row indices into ``test`` and (n,) int class indices.

    Empty when ``pseudo.csv`` does not exist.

    Raises:
        DataError: names ``pseudo.csv``'s row and the fix when an id is not a test id, is a train or holdout
            id, or a label is not a class.
    """
    path = pseudo_path(paths)
    if not path.is_file():
        return np.zeros(0, int), np.zeros(0, int)
    comp, table = config.competition, pd.read_csv(path)
    remake = f"rerun `make pseudo COMPETITION={comp.name}` or delete {path}"
    if test is None:
        raise DataError(f"{path}: pseudo-labels but no {comp.test_file} in {paths.data}; delete {path}")
    ids = table[comp.id_key].astype(str).to_numpy()
    for bad, what in ((np.isin(ids, train.ids.astype(str)) & bool(comp.id_column), f"a {comp.train_file} id: holdout and train rows are never pseudo-labelled"),
                      (~np.isin(ids, test.ids.astype(str)), f"not in {comp.test_file}"),
                      (~table["label"].astype(str).isin([str(c) for c in comp.classes]).to_numpy(), "labelled outside the classes")):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: row {row + 1}: {comp.id_key} {ids[row]} is {what}; {remake}")
    mine = table[table["fold"] == fold]
    row_of = {i: r for r, i in enumerate(test.ids.astype(str))}
    class_of = {str(c): k for k, c in enumerate(comp.classes)}
    rows = np.array([row_of[i] for i in mine[comp.id_key].astype(str)], dtype=int)
    return rows, np.array([class_of[str(c)] for c in mine["label"]], dtype=int)
