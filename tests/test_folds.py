"""Folds and holdout on the real DACON train.csv: stratified, disjoint, deterministic."""

import numpy as np
import pandas as pd
import pytest

from compkit import folds
from compkit.config import load_config
from compkit.data import DataError, load_train
from conftest import REPO


@pytest.fixture(scope="module")
def train(dacon_dir):
    return load_train(dacon_dir, load_config("dacon-cv-2020", "smoke", [], REPO / "configs").competition)


def test_holdout_and_folds_partition_train(dacon, train):
    fold_table, holdout = folds.make_folds(train, dacon())
    fold_ids, held_ids = set(fold_table["id"]), set(holdout["id"])
    assert not fold_ids & held_ids
    assert fold_ids | held_ids == set(train.ids)
    assert len(holdout) == round(0.2 * len(train.ids))
    assert set(fold_table["fold"]) == set(range(5))
    assert fold_table["id"].is_unique and fold_table["id"].is_monotonic_increasing


def test_folds_and_public_private_are_stratified(dacon, train):
    fold_table, holdout = folds.make_folds(train, dacon())
    label = pd.Series(train.labels, index=train.ids)
    per_fold = pd.crosstab(fold_table["fold"], label.loc[fold_table["id"]].to_numpy())
    assert (per_fold.max() - per_fold.min()).max() <= 1  # each digit spread evenly over the 5 folds
    per_part = pd.crosstab(holdout["Usage"], label.loc[holdout["id"]].to_numpy())
    assert (per_part.loc["Public"] - per_part.loc["Private"]).abs().max() <= 1
    overall = np.bincount(train.labels) / len(train.labels)
    held = np.bincount(label.loc[holdout["id"]], minlength=10) / len(holdout)
    assert np.abs(held - overall).max() < 0.01


def test_same_seed_same_bytes_other_seed_other_split(dacon, paths, tmp_path):
    folds.run(dacon(), paths)
    first = [(paths.folds / n).read_bytes() for n in ("folds.csv", "holdout.csv")]
    folds.run(dacon(), paths)
    assert [(paths.folds / n).read_bytes() for n in ("folds.csv", "holdout.csv")] == first
    other = paths.__class__.for_competition("dacon-cv-2020", tmp_path / "other", paths.data)
    folds.run(dacon("smoke", "folds.seed=7"), other)
    assert (other.folds / "folds.csv").read_bytes() != first[0]


def test_stratifying_on_target_and_letter(dacon, train):
    fold_table, _ = folds.make_folds(train, dacon("smoke", "folds.stratify=['letter']", "folds.n_splits=4"))
    letters = train.extras["letter"].to_numpy()[np.searchsorted(train.ids, fold_table["id"])]
    per_fold = pd.crosstab(fold_table["fold"], letters)
    assert (per_fold.max() - per_fold.min()).max() <= 1


def test_a_class_too_rare_for_k_is_a_clear_error(dacon, train):
    with pytest.raises(DataError, match=r"stratum '\d' of folds.stratify has only \d+ rows, too few for 170 stratified folds"):
        folds.make_folds(train, dacon("smoke", "folds.n_splits=170"))
    with pytest.raises(DataError, match="'pixels' is neither the target nor an extra column"):
        folds.make_folds(train, dacon("smoke", "folds.stratify=['pixels']"))
