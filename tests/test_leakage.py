"""No model sees what it is scored on: checked from the files of a real run (the TINY job on DACON)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from compkit.lineage import ids_digest

pytestmark = pytest.mark.slow

RUNS = "runs/dacon-cv-2020"


@pytest.fixture(scope="module")
def tables(tiny_run):
    root, _ = tiny_run
    return pd.read_csv(root / "folds/dacon-cv-2020/folds.csv"), pd.read_csv(root / "folds/dacon-cv-2020/holdout.csv")


def test_no_holdout_id_is_in_a_training_fold(tables, dacon_dir):
    folds, holdout = tables
    assert not set(folds["id"]) & set(holdout["id"])
    assert set(folds["id"]) | set(holdout["id"]) == set(pd.read_csv(dacon_dir / "train.csv", usecols=["id"])["id"])


def test_each_model_was_fit_on_other_folds_only(tiny_run, tables):
    root, _ = tiny_run
    folds, holdout = tables
    for k in range(3):
        lineage = json.loads((root / RUNS / f"cnn_small/fold{k}/fold.json").read_text())["lineage"]
        val = set(folds.loc[folds["fold"] == k, "id"])
        fit = set(folds.loc[folds["fold"] != k, "id"])
        assert not fit & val and not fit & set(holdout["id"])
        assert lineage["fit_ids"] == ids_digest(fit) and lineage["n_fit"] == len(fit)
        assert lineage["val_ids"] == ids_digest(val) and lineage["n_val"] == len(val)
        oof = pd.read_csv(root / RUNS / f"cnn_small/fold{k}/oof.csv")
        assert set(oof["id"]) == val


def test_ensemble_weights_were_fitted_on_exactly_the_oof_ids(tiny_run, tables):
    root, _ = tiny_run
    folds, holdout = tables
    lineage = json.loads((root / RUNS / "ensemble/ensemble.json").read_text())["lineage"]
    assert lineage["fit_ids"] == ids_digest(folds["id"]) and lineage["n_fit"] == len(folds)
    assert lineage["fit_ids"] != ids_digest([*folds["id"], *holdout["id"]])
