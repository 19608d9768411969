"""Every competition shape from one config: binary (ROC AUC), regression (RMSE), ordinal (QWK), a competition's
own metric file, grouped folds. Each runs end to end on competitions made from the real DACON rows (the digit
turned into the task's target); every leaderboard score is recomputed here with sklearn from the written file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, mean_squared_error, roc_auc_score

from compkit import tasks
from compkit.cli import main
from compkit.config import ConfigError, load_config
from conftest import REPO, tree_digest

FAST = ["--preset", "smoke", "--backbones", "cnn_small", "--set", "train.epochs=2", "--set", "train.process_per_fold=false"]

BASE = """
[competition]
name = "{name}"
train_file = "train.csv"
sample_submission = "submission.csv"
target_column = "digit"
extra_columns = ["letter"]
image_shape = [28, 28, 1]
{competition}

[folds]
holdout_fraction = 0.2
seed = 42
{folds}

[train.augment]
interpolation = "nearest"
"""


@pytest.fixture(scope="module")
def dacon_rows(dacon_dir) -> pd.DataFrame:
    return pd.read_csv(dacon_dir / "train.csv")


def make_competition(root: Path, rows: pd.DataFrame, name: str, target, competition: str = "",
                     folds: str = "n_splits = 2") -> list[str]:
    """A competition of DACON's rows with ``target`` as its digit column, its config in ``root/configs``; the CLI
    options that run it."""
    data, configs = root / "data" / name, root / "configs"
    data.mkdir(parents=True)
    shutil.copytree(REPO / "configs" / "presets", configs / "presets")
    rows.assign(digit=target).to_csv(data / "train.csv", index=False)
    pd.DataFrame({"id": [1], "digit": [0]}).to_csv(data / "submission.csv", index=False)
    (configs / f"{name}.toml").write_text(BASE.format(name=name, competition=competition, folds=folds))
    return ["--competition", name, "--root", str(root), "--data-dir", str(data), "--config-dir", str(configs)]


def run_all(argv: list[str]) -> None:
    for stage in ("folds", "train", "ensemble", "submit"):
        assert main([stage, *argv, *FAST]) == 0, stage


def written(root: Path, name: str, truth: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The written submission joined to the holdout's Usage and true target, and the leaderboard."""
    (path,) = [p for p in (root / "submissions" / name).glob("*.csv") if p.name != "leaderboard.csv"]
    holdout = pd.read_csv(root / "folds" / name / "holdout.csv")
    frame = pd.read_csv(path).merge(holdout, on="id")
    frame["truth"] = truth.loc[frame["id"]].to_numpy()
    return frame, pd.read_csv(root / "submissions" / name / "leaderboard.csv")


def reported(root: Path, argv: list[str], name: str, words: str) -> None:
    """`make report` draws the task's compact report: the OOF figure of the blend and of each backbone, the curves."""
    assert main(["report", *argv]) == 0
    folder = root / "runs" / name / "report"
    assert {"oof_blend.png", "oof_cnn_small.png", "learning_curves_cnn_small.png"} <= {p.name for p in folder.glob("*.png")}
    assert words in (folder / "index.html").read_text()


def per_part(frame: pd.DataFrame, score) -> dict[str, float]:
    return {part.lower(): score(frame[frame["Usage"] == part]) for part in ("Public", "Private")}


@pytest.mark.slow
def test_binary_submits_p_positive_scored_by_roc_auc(tmp_path, dacon_rows):
    """DACON's digit >= 5 as a binary target; the sample's `id,digit` gets P(positive) under ROC AUC."""
    target = (dacon_rows["digit"] >= 5).astype(int)
    argv = make_competition(tmp_path, dacon_rows, "big-digit", target, 'task = "binary"\nclasses = [0, 1]\nmetric = "roc_auc"')
    run_all(argv)
    oof = pd.read_csv(tmp_path / "runs/big-digit/cnn_small/fold0/oof.csv")
    assert list(oof.columns) == ["id", "p_1"] and oof["p_1"].between(0, 1).all()
    frame, board = written(tmp_path, "big-digit", pd.Series(target.to_numpy(), index=dacon_rows["id"]))
    assert frame["digit"].between(0, 1).all() and frame["digit"].nunique() > 2  # probabilities, not labels
    expected = per_part(frame, lambda f: roc_auc_score(f["truth"], f["digit"]))
    assert board.loc[0, "public"] == pytest.approx(expected["public"], abs=1e-6)
    assert board.loc[0, "private"] == pytest.approx(expected["private"], abs=1e-6)
    assert json.loads((tmp_path / "runs/big-digit/ensemble/ensemble.json").read_text())["post"] == {"threshold": 0.5}
    reported(tmp_path, argv, "big-digit", "Task binary")


@pytest.mark.slow
def test_regression_submits_clipped_values_scored_by_rmse(tmp_path, dacon_rows):
    """DACON's digit as a number (a regression in [0, 9]); folds stratified on quantile bins of the target."""
    target = dacon_rows["digit"].astype(float)
    argv = make_competition(tmp_path, dacon_rows, "digit-value", target,
                            'task = "regression"\ntarget_range = [0, 9]\nmetric = "rmse"')
    run_all(argv)
    frame, board = written(tmp_path, "digit-value", pd.Series(target.to_numpy(), index=dacon_rows["id"]))
    assert frame["digit"].between(0, 9).all() and frame["digit"].nunique() > 10  # values, clipped to the range
    expected = per_part(frame, lambda f: mean_squared_error(f["truth"], f["digit"]) ** 0.5)
    assert board.loc[0, "public"] == pytest.approx(expected["public"], abs=1e-6)
    assert board.loc[0, "private"] == pytest.approx(expected["private"], abs=1e-6)
    folds = pd.read_csv(tmp_path / "folds/digit-value/folds.csv")
    values = pd.Series(target.to_numpy(), index=dacon_rows["id"]).loc[folds["id"]].to_numpy()
    whole = np.bincount(values.astype(int), minlength=10) / len(values)
    for k in range(2):  # every fold's target histogram within 1.5 points of the whole's, bin by bin
        mine = values[folds["fold"].to_numpy() == k].astype(int)
        assert np.abs(np.bincount(mine, minlength=10) / len(mine) - whole).max() < 0.015
    blend = json.loads((tmp_path / "runs/digit-value/ensemble/ensemble.json").read_text())
    assert "hard" not in blend["blends"] and set(blend["scores"]["cnn_small"]) == {"rmse", "mae"}
    reported(tmp_path, argv, "digit-value", "Task regression")


@pytest.mark.slow
def test_ordinal_cut_points_fitted_out_of_fold_and_scored_by_qwk(tmp_path, dacon_rows):
    """DACON's digit as a grade 0-9 under quadratic weighted kappa."""
    argv = make_competition(tmp_path, dacon_rows, "digit-grade", dacon_rows["digit"],
                            f'task = "ordinal"\nclasses = {list(range(10))}\nmetric = "qwk"')
    run_all(argv)
    truth = pd.Series(dacon_rows["digit"].to_numpy(), index=dacon_rows["id"])
    frame, board = written(tmp_path, "digit-grade", truth)
    assert frame["digit"].isin(range(10)).all()
    expected = per_part(frame, lambda f: cohen_kappa_score(f["truth"], f["digit"], weights="quadratic"))
    assert board.loc[0, "public"] == pytest.approx(expected["public"], abs=1e-6)
    assert board.loc[0, "private"] == pytest.approx(expected["private"], abs=1e-6)
    # OOF: cut points fitted on the other fold's rows against plain rounding, both scored by sklearn here
    oof = pd.read_csv(tmp_path / "runs/digit-grade/ensemble/oof.csv")
    folds = pd.read_csv(tmp_path / "folds/digit-grade/folds.csv").set_index("id").loc[oof["id"], "fold"].to_numpy()
    y, score = truth.loc[oof["id"]].to_numpy(), oof[["score"]].to_numpy()
    task = tasks.of(load_config("digit-grade", "smoke", [], tmp_path / "configs").competition)
    fitted = cohen_kappa_score(y, task.cross_fit_decide(y, score, folds), weights="quadratic")
    rounded = cohen_kappa_score(y, np.clip(np.rint(score[:, 0]), 0, 9).astype(int), weights="quadratic")
    print(f"OOF QWK: plain rounding {rounded:.4f}, cross-fitted cut points {fitted:.4f}")
    assert fitted >= rounded
    reported(tmp_path, argv, "digit-grade", "Task ordinal")


METRIC = '''
import pandas as pd
from sklearn.metrics import balanced_accuracy_score


def score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str) -> float:
    """Balanced accuracy, in Kaggle's metric signature."""
    target = [c for c in solution.columns if c != row_id_column_name][0]
    merged = solution.merge(submission, on=row_id_column_name, suffixes=("", "_pred"))
    return balanced_accuracy_score(merged[target].astype(str), merged[target + "_pred"].astype(str))
'''


@pytest.mark.slow
def test_a_metric_file_selects_the_blend_and_scores_the_leaderboard(tmp_path, dacon_rows, capsys):
    argv = make_competition(tmp_path, dacon_rows, "digit-balanced", dacon_rows["digit"],
                            f'classes = {list(range(10))}\nmetric = {{ file = "balanced.py", greater_is_better = true }}')
    (tmp_path / "configs/balanced.py").write_text(METRIC)
    run_all(argv)
    blend = json.loads((tmp_path / "runs/digit-balanced/ensemble/ensemble.json").read_text())
    assert blend["metric"] == "balanced" and blend["cv"] == max(b["balanced"] for b in blend["blends"].values())
    truth = pd.Series(dacon_rows["digit"].to_numpy(), index=dacon_rows["id"])
    frame, board = written(tmp_path, "digit-balanced", truth)
    expected = per_part(frame, lambda f: balanced_accuracy_score(f["truth"].astype(str), f["digit"].astype(str)))
    assert board.loc[0, "public"] == pytest.approx(expected["public"], abs=1e-9)
    assert board.loc[0, "private"] == pytest.approx(expected["private"], abs=1e-9)

    (tmp_path / "configs/balanced.py").write_text(METRIC.replace('"""Balanced', 'raise ValueError("no such column")\n    """'))
    before = tree_digest(tmp_path)
    capsys.readouterr()
    assert main(["ensemble", *argv, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "balanced.py: score() raised ValueError: no such column; fix the metric file" in err and "\n" not in err
    assert tree_digest(tmp_path) == before


def test_grouped_folds_keep_every_group_whole(tmp_path, dacon_rows):
    """folds.group_column = letter: no letter in two folds, nor in a fold and the holdout (StratifiedGroupKFold)."""
    argv = make_competition(tmp_path, dacon_rows, "by-letter", dacon_rows["digit"], f"classes = {list(range(10))}",
                            'group_column = "letter"\nn_splits = 4')
    assert main(["folds", *argv]) == 0
    letter = pd.Series(dacon_rows["letter"].to_numpy(), index=dacon_rows["id"])
    folds = pd.read_csv(tmp_path / "folds/by-letter/folds.csv")
    holdout = pd.read_csv(tmp_path / "folds/by-letter/holdout.csv")
    parts = [set(letter.loc[folds.loc[folds["fold"] == k, "id"]]) for k in range(4)] + [set(letter.loc[holdout["id"]])]
    assert all(parts) and sum(len(p) for p in parts) == len(set().union(*parts)) == letter.nunique()
    for usage in ("Public", "Private"):
        assert (holdout["Usage"] == usage).any()
    public, private = (set(letter.loc[holdout.loc[holdout["Usage"] == u, "id"]]) for u in ("Public", "Private"))
    assert not public & private


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["competition.metric='rmse'"], "metric 'rmse' does not apply to task 'multiclass'; use one of"),
    (["competition.metric='qwk2'"], "unknown metric 'qwk2'"),
    (["competition.task='regression'"], "task = \"regression\" has no classes; remove classes"),
    (["competition.task='binary'"], "task = 'binary' needs exactly 2 classes [negative, positive], got 10"),
    (["train.loss='mse'"], "train.loss = 'mse' does not apply to task 'multiclass'"),
    (["competition.task='ordinal'", "ensemble.select='hard'"], "ensemble.select = 'hard' (majority vote) needs one class per row"),
    (["folds.group_column='letters'"], "folds.group_column 'letters' is not an extra column"),
])
def test_a_setting_the_task_cannot_use_is_a_config_error(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config("dacon-cv-2020", "smoke", overrides, REPO / "configs")
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("stage, rule", [("pseudo", "pseudo-label"), ("distill", "distillation")])
def test_a_task_without_a_pseudo_label_or_distillation_rule_says_so_in_one_line(tmp_path, dacon_rows, capsys, stage, rule):
    argv = make_competition(tmp_path, dacon_rows, "digit-value", dacon_rows["digit"].astype(float), 'task = "regression"')
    before = tree_digest(tmp_path)
    assert main([stage, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert f"competition.task = 'regression' has no {rule} rule" in err and "\n" not in err
    assert tree_digest(tmp_path) == before


def test_row_number_ids_take_the_id_column_from_the_sample_header(tmp_path, dacon_rows):
    """Kaggle's digit-recognizer layout (no id column; ids are 1-based row numbers) without submission_columns: the
    sample's header names the id column of the fold files."""
    data, configs = tmp_path / "data" / "rows", tmp_path / "configs"
    data.mkdir(parents=True)
    shutil.copytree(REPO / "configs" / "presets", configs / "presets")
    pixels = dacon_rows[[str(i) for i in range(784)]].rename(columns=lambda c: f"pixel{c}")
    pd.concat([dacon_rows[["digit"]].rename(columns={"digit": "label"}), pixels], axis=1).to_csv(data / "train.csv", index=False)
    pd.DataFrame({"ImageId": [1], "Label": [0]}).to_csv(data / "sample_submission.csv", index=False)
    toml = (REPO / "configs/digit-recognizer.toml").read_text().replace('submission_columns = ["ImageId", "Label"]\n', "")
    (configs / "rows.toml").write_text(toml.replace('name = "digit-recognizer"', 'name = "rows"'))
    assert main(["folds", "--competition", "rows", "--root", str(tmp_path), "--data-dir", str(data), "--config-dir", str(configs)]) == 0
    folds = pd.read_csv(tmp_path / "folds/rows/folds.csv")
    assert list(folds.columns) == ["ImageId", "fold"] and folds["ImageId"].between(1, len(dacon_rows)).all()
