"""Bad inputs found before anything is written: one line naming file, row or column and the fix, and no output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compkit.artifacts import Layout
from compkit.cli import main
from compkit.config import Paths
from compkit.io import proba_frame, write_csv, write_json
from conftest import REPO, one_line_error, snapshot


@pytest.fixture(scope="module")
def train(dacon_dir) -> pd.DataFrame:
    return pd.read_csv(dacon_dir / "train.csv")


@pytest.fixture
def data(tmp_path, train) -> Path:
    """A data folder with the real train.csv, a 300-row test.csv (train images, new ids 3001-3300) and its sample."""
    folder = tmp_path / "data"
    folder.mkdir()
    train.to_csv(folder / "train.csv", index=False)
    train.head(300).drop(columns=["digit"]).assign(id=np.arange(3001, 3301)).to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"id": np.arange(3001, 3301), "digit": 0}).to_csv(folder / "submission.csv", index=False)
    return folder


def _run(stage: str, root: Path, data: Path, capsys) -> str:
    """Run ``stage``; assert it failed with exit status 2 and one line on stderr, which it returns."""
    argv = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--data-dir", str(data), "--root", str(root), "--config-dir", str(REPO / "configs")]
    return one_line_error(capsys, main([stage, *argv, "--backbones", "cnn_small"]))


def test_an_unexpected_train_column_is_named(tmp_path, data, train, capsys):
    extra = pd.DataFrame({"source": "scan", "note": 1}, index=train.index)
    pd.concat([train, extra], axis=1).to_csv(data / "train.csv", index=False)
    err = _run("folds", tmp_path / "root", data, capsys)
    assert f"{data / 'train.csv'}: unexpected column(s) 'source', 'note' (2 in all)" in err
    assert "list them in competition.extra_columns" in err
    assert not (tmp_path / "root").exists()


def test_an_id_in_both_train_and_test_is_refused(tmp_path, data, capsys):
    test = pd.read_csv(data / "test.csv")
    test.loc[4, "id"] = 17
    test.to_csv(data / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "digit": 0}).to_csv(data / "submission.csv", index=False)
    err = _run("folds", tmp_path / "root", data, capsys)
    assert f"{data / 'test.csv'}: line 6: id 17 is also in train.csv (1 shared ids)" in err
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    ("sample_ids", "fragment"),
    [
        (np.arange(3001, 3300), "submission.csv: lacks 1 ids of test.csv (first: 3300)"),
        (np.arange(3001, 3302), "submission.csv: line 302: id 3301 is not in test.csv"),
    ],
)
def test_a_sample_submission_for_other_test_ids_is_refused(tmp_path, data, capsys, sample_ids, fragment):
    pd.DataFrame({"id": sample_ids, "digit": 0}).to_csv(data / "submission.csv", index=False)
    assert fragment in _run("folds", tmp_path / "root", data, capsys)  # found by the first stage
    assert not (tmp_path / "root").exists()


def test_submit_refuses_a_sample_for_other_test_ids(tmp_path, data, capsys, dacon):
    """The sample changed after `make folds`: submit stops before writing a submission."""
    root = tmp_path / "root"
    assert main(["folds", "--competition", "dacon-cv-2020", "--preset", "smoke", "--data-dir", str(data), "--root", str(root), "--config-dir", str(REPO / "configs")]) == 0
    comp, ensemble = dacon().competition, root / "runs/dacon-cv-2020/ensemble"
    held = pd.read_csv(root / "folds/dacon-cv-2020/holdout.csv")["id"].to_numpy()
    write_csv(proba_frame("id", held, np.full((len(held), 10), 0.1), [f"p_{c}" for c in comp.classes]), ensemble / "holdout.csv")
    write_csv(proba_frame("id", np.arange(3001, 3301), np.full((300, 10), 0.1), [f"p_{c}" for c in comp.classes]), ensemble / "test.csv")
    write_json({"selected": "equal", "backbones": ["cnn_small"], "cv": 0.5}, ensemble / "ensemble.json")
    pd.DataFrame({"id": np.arange(3001, 3300), "digit": 0}).to_csv(data / "submission.csv", index=False)
    before = snapshot(root)
    assert "submission.csv: lacks 1 ids of test.csv (first: 3300)" in _run("submit", root, data, capsys)
    assert snapshot(root) == before and not (root / "submissions").exists()


@pytest.mark.parametrize(
    ("breakage", "fragment"),
    [
        (lambda f, h: (f.assign(id=f["id"] + 10000), h), "folds.csv: line 2: id 10001 is not in train.csv (1638 such ids): the folds were made for other data"),
        (lambda f, h: (pd.concat([f, h[["id"]].head(1).assign(fold=0)]), h), "is also in holdout.csv: holdout rows must be in no fold"),
    ],
)
def test_train_refuses_folds_for_other_data(tmp_path, dacon_dir, capsys, breakage, fragment, dacon):
    root = tmp_path / "root"
    argv = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--data-dir", str(dacon_dir), "--root", str(root), "--config-dir", str(REPO / "configs")]
    assert main(["folds", *argv]) == 0
    folder = root / "folds/dacon-cv-2020"
    folds, holdout = breakage(pd.read_csv(folder / "folds.csv"), pd.read_csv(folder / "holdout.csv"))
    # recorded in folds.json as `make folds` would: the pair verifies, its ids are what is wrong
    Layout(dacon(), Paths.for_competition("dacon-cv-2020", root, dacon_dir)).folds.write(folds, holdout)
    before = snapshot(root)
    err = _run("train", root, dacon_dir, capsys)
    assert fragment in err and "`make clean COMPETITION=dacon-cv-2020` then `make folds COMPETITION=dacon-cv-2020`" in err
    assert snapshot(root) == before and not (root / "runs/dacon-cv-2020/cnn_small").exists()  # runs/<c>/cache/: make folds's
