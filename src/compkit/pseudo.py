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

from compkit import console, tasks
from compkit.artifacts import Layout
from compkit.config import Config, Paths
from compkit.data import load_test_ids
from compkit.errors import CompkitError


def fold_labels(config: Config, paths: Paths, fold: int) -> pd.DataFrame:
    """Fold ``fold``'s confident test rows: id, fold, label (a class), confidence, by the task's rule
    (:meth:`compkit.tasks.Task.pseudo`: multiclass, the backbones' mean top probability; binary, max(p, 1 - p))."""
    comp, layout = config.competition, Layout(config, paths)
    parts = [layout.runs.read_proba(b, fold, "test.csv") for b in config.train.backbones]
    ids, pred = parts[0][0], np.mean([p for _, p in parts], axis=0)
    keep, labels, confidence = tasks.for_config(config).pseudo(pred, config.pseudo.threshold)
    return pd.DataFrame({comp.id_key: ids[keep], "fold": fold, "label": labels, "confidence": confidence.round(6)})


def run(config: Config, paths: Paths) -> None:
    """Stage entry point: write ``pseudo.csv`` from the trained folds' test predictions, print a summary.

    Raises:
        CompkitError: the competition has no test file, or a fold's ``test.csv`` is missing or fails verification.
    """
    comp, layout = config.competition, Layout(config, paths)
    tasks.for_config(config).require_pseudo()
    if load_test_ids(paths.data, comp) is None:
        raise CompkitError(f"{paths.data / comp.test_file}: not found; pseudo-labelling needs the unlabelled test data")
    table = pd.concat([fold_labels(config, paths, k) for k in range(config.folds.n_splits)], ignore_index=True)
    layout.folds.write_pseudo(table)
    per_fold = table["fold"].value_counts().reindex(range(config.folds.n_splits), fill_value=0)
    console.summary(
        f"pseudo: {len(table)} test rows with confidence >= {config.pseudo.threshold} over {config.folds.n_splits} folds "
        f"({per_fold.min()}-{per_fold.max()} a fold) -> {layout.folds.pseudo_csv}; delete {paths.runs} and `make train` to use them"
    )
