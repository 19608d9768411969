"""W&B tracking, offline: the run files of a smoke pipeline hold the right job types and numbers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from compkit.cli import main
from compkit.tracking import read_run
from conftest import SMOKE_FOLDS

# One xdist worker runs every test of the smoke run, so the other never waits for its build.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smoke")]


@pytest.fixture(scope="module")
def runs(smoke_run):
    root, _ = smoke_run
    return [read_run(d) for d in sorted((root / "wandb").glob("offline-run-*"))]


def _of(runs, job_type):
    return [r for r in runs if r["job_type"] == job_type]


def test_every_stage_has_its_runs_in_one_group(runs):
    names = {r["job_type"]: sorted(x["name"] for x in _of(runs, r["job_type"])) for r in runs}
    assert names["tune"] == ["cnn_small-trial0", "cnn_small-trial1"]
    assert names["train"] == sorted(f"{b}-fold{k}" for b in ("cnn_small", "resnet_small") for k in range(SMOKE_FOLDS))
    assert names["ensemble"] == ["ensemble"]
    assert _of(runs, "submit") and all(r["name"] == "submit-" + r["summary"]["name"] for r in _of(runs, "submit"))
    assert len({r["group"] for r in _of(runs, "train") + _of(runs, "ensemble") + _of(runs, "submit")}) == 1
    for r in runs:
        assert r["config"]["competition"]["name"] == "dacon-cv-2020"
        assert len(r["config"]["git"]["commit"]) == 40 and isinstance(r["config"]["git"]["dirty"], bool)


def test_train_runs_hold_epochs_and_the_fold_scores(runs, smoke_run):
    root, _ = smoke_run
    for r in _of(runs, "train"):
        backbone, fold = r["config"]["backbone"], r["config"]["fold"]
        written = json.loads((root / f"runs/dacon-cv-2020/{backbone}/fold{fold}/fold.json").read_text())
        assert r["summary"]["oof_accuracy"] == written["oof_accuracy"]
        assert r["summary"]["oof_log_loss"] == pytest.approx(written["oof_log_loss"])
        history = pd.read_csv(root / f"runs/dacon-cv-2020/{backbone}/fold{fold}/history.csv")
        logged = [h for h in r["history"] if "epoch/val_loss" in h]
        assert len(logged) == len(history)
        assert [h["epoch/val_loss"] for h in logged] == pytest.approx(history["val_loss"].tolist())
        assert all("epoch/learning_rate" in h and "epoch/accuracy" in h for h in logged)
        assert r["config"]["hyper"] == written["hyper"]


def test_tune_runs_hold_params_state_and_intermediate_values(runs, smoke_run):
    root, _ = smoke_run
    import optuna

    study = optuna.load_study(study_name="dacon-cv-2020-cnn_small", storage=f"sqlite:///{root / 'runs/dacon-cv-2020/optuna.db'}")
    for r in _of(runs, "tune"):
        trial = study.trials[r["config"]["trial"]]
        assert r["config"]["params"] == trial.params
        assert r["summary"]["state"] == trial.state.name and r["summary"]["value"] == trial.value
        assert r["summary"]["intermediate_values"] == {str(k): v for k, v in trial.intermediate_values.items()}


def test_ensemble_and_submit_runs_match_the_files(runs, smoke_run):
    root, _ = smoke_run
    (ensemble,) = _of(runs, "ensemble")
    report = json.loads((root / "runs/dacon-cv-2020/ensemble/ensemble.json").read_text())
    assert ensemble["summary"]["blends"] == report["blends"] and ensemble["summary"]["cv"] == report["cv"]
    assert ensemble["summary"]["oof_confusion_matrix_table/nrows"] == 100  # 10 x 10 classes

    board = pd.read_csv(root / "submissions/dacon-cv-2020/leaderboard.csv")
    for r in _of(runs, "submit"):
        row = board[board["file"] == r["summary"]["file"]].iloc[0]
        for key in ("cv", "public", "private"):
            assert r["summary"][key] == pytest.approx(row[key])
        assert r["summary"]["leaderboard/_type"] == "table-file"
        assert ("dacon-cv-2020-submission", "submission") in r["artifacts"]


FAST = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--backbones", "cnn_small", "--set", "folds.n_splits=2", "--set", "train.epochs=1",
        "--set", "train.process_per_fold=false"]


def test_disabled_writes_nothing(tmp_path, dacon_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main(["all", *FAST, "--data-dir", str(dacon_dir), "--root", str(tmp_path)]) == 0
    assert not (tmp_path / "wandb").exists()


@pytest.mark.parametrize("mode", ["online", "nonsense"])
def test_a_tracking_failure_does_not_fail_the_stage(tmp_path, dacon_dir, monkeypatch, capfd, mode):
    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: online mode has no login
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert main(["all", *FAST, "--data-dir", str(dacon_dir), "--root", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    assert f"W&B: could not start a {mode} run" in out
    if mode == "online":
        assert "run `wandb login`" in out
    assert list((tmp_path / "submissions/dacon-cv-2020").glob("*_blend-*.csv"))
