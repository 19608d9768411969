"""End to end on the real DACON train.csv with the smoke preset: folds -> train -> ensemble -> submit."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, log_loss

from compkit.blends import cross_fitted_oof, fit_weights
from compkit.cli import main
from conftest import SMOKE_FOLDS, one_line_error

# One xdist worker runs every test of the smoke run, so the other never waits for its build.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smoke")]

BACKBONES = ["cnn_small", "resnet_small"]


@pytest.fixture
def run(smoke_run):
    return smoke_run


def _labels(dacon_dir):
    train = pd.read_csv(dacon_dir / "train.csv", usecols=["id", "digit"])
    return train.set_index("id")["digit"]


def test_every_fold_predicts_exactly_its_own_ids(run):
    root, _ = run
    folds = pd.read_csv(root / "folds/dacon-cv-2020/folds.csv")
    holdout = pd.read_csv(root / "folds/dacon-cv-2020/holdout.csv")
    for backbone in BACKBONES:
        for k in range(SMOKE_FOLDS):
            out = root / f"runs/dacon-cv-2020/{backbone}/fold{k}"
            assert {p.name for p in out.iterdir()} == {"model.keras", "history.csv", "oof.csv", "holdout.csv", "fold.json"}
            oof = pd.read_csv(out / "oof.csv")
            assert oof["id"].tolist() == folds.loc[folds["fold"] == k, "id"].tolist()
            assert pd.read_csv(out / "holdout.csv")["id"].tolist() == holdout["id"].tolist()
            np.testing.assert_allclose(oof.filter(like="p_").sum(axis=1), 1, atol=1e-4)
            assert len(pd.read_csv(out / "history.csv")) == json.loads((out / "fold.json").read_text())["epochs"]


def test_ensemble_scores_match_the_oof_files(run, dacon_dir):
    root, _ = run
    report = json.loads((root / "runs/dacon-cv-2020/ensemble/ensemble.json").read_text())
    truth = _labels(dacon_dir)
    for backbone in BACKBONES:
        oof = pd.concat(pd.read_csv(root / f"runs/dacon-cv-2020/{backbone}/fold{k}/oof.csv") for k in range(SMOKE_FOLDS))
        proba = oof.filter(like="p_").to_numpy()
        proba /= proba.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 within ~1e-7
        y = truth.loc[oof["id"]].to_numpy()
        assert report["scores"][backbone]["accuracy"] == pytest.approx(accuracy_score(y, proba.argmax(1)))
        assert report["scores"][backbone]["log_loss"] == pytest.approx(log_loss(y, proba, labels=range(10)))
    blends = report["blends"]
    assert set(blends) == {"equal", "fitted", "hard", "caruana"}
    assert sum(blends["fitted"]["weights"].values()) == pytest.approx(1, abs=1e-5)
    # the fitted blend is scored out of fold: weights fitted on the other folds' OOF rows (folds.csv)
    oofs = [pd.concat(pd.read_csv(root / f"runs/dacon-cv-2020/{b}/fold{k}/oof.csv") for k in range(SMOKE_FOLDS)).sort_values("id") for b in BACKBONES]
    ids, probas = oofs[0]["id"].to_numpy(), np.stack([o.filter(like="p_").to_numpy(dtype=np.float64) for o in oofs])
    fold = pd.read_csv(root / "folds/dacon-cv-2020/folds.csv").set_index("id").loc[ids, "fold"].to_numpy()
    y = truth.loc[ids].to_numpy()
    blended = cross_fitted_oof(fit_weights, probas, y, fold)
    assert blends["fitted"]["log_loss"] == pytest.approx(log_loss(y, blended / blended.sum(axis=1, keepdims=True), labels=range(10)))
    assert report["cv"] == max(b["accuracy"] for b in blends.values())
    assert report["cv"] >= 0.3  # chance is 0.1: the smoke preset must learn (0.56 when this floor was set)
    blend_oof = pd.read_csv(root / "runs/dacon-cv-2020/ensemble/oof.csv")
    y = truth.loc[blend_oof["id"]].to_numpy()
    assert accuracy_score(y, blend_oof.filter(like="p_").to_numpy().argmax(1)) == pytest.approx(report["cv"])


def test_submission_matches_the_format_and_the_leaderboard_scores_it(run, dacon_dir):
    root, _ = run
    folder = root / "submissions/dacon-cv-2020"
    (path,) = [p for p in folder.glob("*.csv") if p.name != "leaderboard.csv"]
    submission = pd.read_csv(path)
    holdout = pd.read_csv(root / "folds/dacon-cv-2020/holdout.csv")
    assert list(submission.columns) == ["id", "digit"]
    assert submission["id"].tolist() == holdout["id"].tolist()
    assert submission["digit"].isin(range(10)).all()

    board = pd.read_csv(folder / "leaderboard.csv")
    assert len(board) == 1 and board.loc[0, "file"] == path.name
    correct = (submission["digit"].to_numpy() == _labels(dacon_dir).loc[submission["id"]].to_numpy())
    for part in ("Public", "Private"):
        mask = (holdout["Usage"] == part).to_numpy()
        assert board.loc[0, part.lower()] == pytest.approx(correct[mask].mean(), abs=1e-6)
    assert board.loc[0, "backbones"] == "+".join(BACKBONES)
    assert not list(folder.glob(".tmp-*")) and not list(root.rglob(".tmp-*"))


def test_rerun_skips_finished_folds_and_submit_appends(run, capfd, tmp_path):
    root = tmp_path / "run"  # a copy: the smoke run is shared, read-only, by every test of this group
    shutil.copytree(run[0], root, ignore=shutil.ignore_patterns("wandb"))
    argv = [*run[1][: run[1].index("--root")], "--root", str(root), *run[1][run[1].index("--root") + 2 :]]
    done = sorted(root.glob("runs/dacon-cv-2020/*/fold*/fold.json"))
    stamps = [p.stat().st_mtime_ns for p in done]
    assert main(["train", *argv]) == 0
    assert capfd.readouterr().out.count("done earlier, skipped") == len(BACKBONES) * SMOKE_FOLDS
    assert [p.stat().st_mtime_ns for p in done] == stamps
    assert main(["submit", *argv, "--name", "again"]) == 0
    board = pd.read_csv(root / "submissions/dacon-cv-2020/leaderboard.csv")
    assert board["name"].tolist()[-1] == "again" and len(board) == 2


def test_with_a_test_file_the_submission_follows_the_sample(tmp_path, dacon_dir):
    """A competition that ships test.csv: predictions for the sample submission's ids, in its order."""
    data = tmp_path / "data"
    data.mkdir()
    train = pd.read_csv(dacon_dir / "train.csv")
    train.to_csv(data / "train.csv", index=False)
    test = train.sample(300, random_state=0).drop(columns=["digit"]).assign(id=lambda f: np.arange(3001, 3301))
    test.to_csv(data / "test.csv", index=False)
    sample = pd.DataFrame({"id": np.arange(3300, 3000, -1), "digit": 0})  # reversed: order comes from the sample
    sample.to_csv(data / "submission.csv", index=False)
    argv = ["all", "--competition", "dacon-cv-2020", "--preset", "smoke", "--data-dir", str(data), "--root", str(tmp_path), "--backbones", "cnn_small",
            "--set", "folds.n_splits=2", "--set", "train.epochs=1", "--set", "train.process_per_fold=false"]
    assert main(argv) == 0
    for k in range(2):
        assert len(pd.read_csv(tmp_path / f"runs/dacon-cv-2020/cnn_small/fold{k}/test.csv")) == 300
    (path,) = [p for p in (tmp_path / "submissions/dacon-cv-2020").glob("*.csv") if p.name != "leaderboard.csv"]
    submission = pd.read_csv(path)
    assert submission["id"].tolist() == sample["id"].tolist()
    blend = pd.read_csv(tmp_path / "runs/dacon-cv-2020/ensemble/test.csv").set_index("id")
    expected = blend.loc[sample["id"]].to_numpy().argmax(1)
    assert submission["digit"].tolist() == expected.tolist()


def test_missing_inputs_are_one_line_errors(tmp_path, dacon_dir, capsys):
    argv = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--root", str(tmp_path)]
    assert main(["folds", *argv, "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "train.csv: not found in" in capsys.readouterr().err
    err = one_line_error(capsys, main(["train", *argv, "--data-dir", str(dacon_dir)]))
    assert "folds.csv: not found; run `make folds COMPETITION=dacon-cv-2020` first" in err
    assert not (tmp_path / "runs").exists()
