"""`make distill`: a student per fold learning the selected blend's OOF probabilities (Hinton et al., 2015), on the
smoke and TINY runs of the real DACON rows. What each fold learnt from is read back from its files; the scores the summary
prints are recomputed here with sklearn from the written prediction files."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, log_loss

from compkit import fitting, tasks
from compkit.artifacts import Layout
from compkit.cli import main
from compkit.config import Paths
from compkit.heads import distill_loss
from conftest import SMOKE_FOLDS, dacon_config, one_line_error, tree_digest, with_root

STUDENT = "student-cnn_small"


def _softened(q: np.ndarray, t: float) -> np.ndarray:
    z = np.log(np.clip(q, 1e-7, 1)) / t
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def test_the_loss_is_hintons_and_validation_rows_are_judged_by_their_labels():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=8).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 8)]
    q = rng.dirichlet(np.ones(5), size=8)
    for t, alpha in ((1.0, 0.0), (1.0, 1.0), (4.0, 0.9), (2.0, 0.5)):
        loss = distill_loss()(t, alpha)
        got = float(loss(np.concatenate([y, _softened(q, t)], axis=1).astype(np.float32), p))
        want = np.mean(alpha * t**2 * -(_softened(q, t) * np.log(_softened(p, t))).sum(1)
                       + (1 - alpha) * -(y * np.log(p)).sum(1))
        assert got == pytest.approx(want, rel=1e-4)
        assert float(loss(y, p)) == pytest.approx(log_loss(y.argmax(1), p, labels=range(5)), rel=1e-4)  # a validation batch


@pytest.mark.slow
def test_fold_k_learns_the_labels_and_the_blends_oof_of_the_other_folds_only(tiny_run, dacon_dir):
    root, _ = tiny_run
    config = dacon_config("folds.n_splits=3", "distill.temperature=3.0")
    paths = Paths.for_competition("dacon-cv-2020", root, dacon_dir)
    blend = pd.read_csv(paths.runs / "ensemble" / "oof.csv").set_index("id")
    layout = Layout(config, paths)
    teacher = layout.ensemble.read_proba(layout.ensemble.read(), "oof.csv")
    for fold in range(3):
        data = fitting.fold_data(config, paths, fold, teacher)
        fit, others = data.soft[data.fit], np.delete(data.soft, data.fit, axis=0)
        assert np.isnan(others[:, 10:]).all()  # fold k's rows and the holdout carry no teacher value
        assert np.array_equal(fit[:, :10], np.eye(10)[data.train.labels[data.fit]])
        q = blend.loc[data.train.ids[data.fit]].to_numpy()
        np.testing.assert_allclose(fit[:, 10:], _softened(q, 3.0), atol=1e-6)
        assert tasks.for_config(config).distill_targets(data.train.labels[:2], q[:2], 3.0).shape == (2, 20)


@pytest.mark.slow
@pytest.mark.xdist_group("smoke")  # on the worker that builds the smoke run
def test_the_students_are_honest_out_of_fold_and_their_scores_recomputed(smoke_run, dacon_dir, tmp_path, capsys):
    shutil.copytree(smoke_run[0], tmp_path / "run", ignore=shutil.ignore_patterns("wandb"))
    root, argv = tmp_path / "run", with_root(smoke_run[1], tmp_path / "run")  # a blend of two backbones learnt above chance
    assert main(["distill", *argv]) == 0
    out = capsys.readouterr().out
    paths = Paths.for_competition("dacon-cv-2020", root, dacon_dir)
    folds = pd.read_csv(paths.folds / "folds.csv")
    holdout = pd.read_csv(paths.folds / "holdout.csv")
    labels = pd.read_csv(dacon_dir / "train.csv", usecols=["id", "digit"]).set_index("id")["digit"]
    teacher_sha = hashlib.sha256((paths.runs / "ensemble" / "oof.csv").read_bytes()).hexdigest()
    oofs, held = [], []
    for k in range(SMOKE_FOLDS):
        record = json.loads((paths.runs / STUDENT / f"fold{k}" / "fold.json").read_text())
        backbone = json.loads((paths.runs / "cnn_small" / f"fold{k}" / "fold.json").read_text())
        assert record["lineage"]["fit_ids"] == backbone["lineage"]["fit_ids"]  # the rows outside fold k, as its teacher's
        assert record["lineage"]["teacher"] == teacher_sha
        assert record["distilled"] == {"backbone": "cnn_small", "temperature": 2.0, "alpha": 0.5}
        oof = pd.read_csv(paths.runs / STUDENT / f"fold{k}" / "oof.csv")
        assert sorted(oof["id"]) == sorted(folds.loc[folds["fold"] == k, "id"])
        oofs.append(oof)
        held.append(pd.read_csv(paths.runs / STUDENT / f"fold{k}" / "holdout.csv").set_index("id"))
    oof = pd.concat(oofs)
    accuracy = accuracy_score(labels.loc[oof["id"]], oof.filter(like="p_").to_numpy().argmax(1))
    private = holdout.loc[holdout["Usage"] == "Private", "id"]
    mean = sum(h.loc[private].to_numpy() for h in held) / SMOKE_FOLDS
    private_accuracy = accuracy_score(labels.loc[private], mean.argmax(1))
    assert accuracy > 0.2  # 10 classes: chance is 0.1
    assert f"OOF accuracy {accuracy:.4f}" in out and f"private {private_accuracy:.4f}" in out
    assert f"{SMOKE_FOLDS} folds trained, 0 skipped" in out

    assert main(["distill", *argv]) == 0  # a rerun trains nothing
    assert f"0 folds trained, {SMOKE_FOLDS} skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_a_student_of_other_settings_or_another_blend_is_refused_in_one_line(copy, capsys):
    root, argv = copy
    assert main(["distill", *argv]) == 0
    capsys.readouterr()
    before = tree_digest(root)
    err = one_line_error(capsys, main(["distill", *argv, "--set", "distill.alpha=0.8"]))
    assert f"{STUDENT}/fold0/fold.json" in err and "distill.* was" in err and "'alpha': 0.8" in err
    assert tree_digest(root) == before
    assert main(["ensemble", *argv, "--set", "ensemble.select='hard'"]) == 0
    capsys.readouterr()
    students = tree_digest(root, (f"runs/dacon-cv-2020/{STUDENT}",))
    err = one_line_error(capsys, main(["distill", *argv]))
    assert "the blend it learnt from (the ensemble's oof.csv) changed" in err
    assert tree_digest(root, (f"runs/dacon-cv-2020/{STUDENT}",)) == students
