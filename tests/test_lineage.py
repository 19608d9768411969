"""Stale artefacts: a rerun after a config or fold change stops with one line instead of mixing old and new."""

from __future__ import annotations

import json

import pytest

from compkit.cli import main
from compkit.lineage import digest, ids_digest
from conftest import one_line_error, snapshot

pytestmark = pytest.mark.slow


def test_digests_ignore_order_and_spelling():
    assert ids_digest([3, 1, 2]) == ids_digest(["1", "2", "3"]) != ids_digest([1, 2])
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1}) != digest({"a": 1, "b": [2, 1]})


def test_train_after_a_config_change_refuses_the_stale_folds(copy, capsys):
    root, argv = copy
    before = snapshot(root)
    err = one_line_error(capsys, main(["train", *argv, "--set", "train.learning_rate=0.001"]))
    assert "cnn_small/fold0/fold.json: the config (competition, folds or hyperparameters) changed since it was made" in err
    assert f"delete {root}/runs/dacon-cv-2020/cnn_small (or `make clean COMPETITION=dacon-cv-2020`)" in err
    assert snapshot(root) == before


def test_train_after_new_folds_refuses_the_stale_folds(copy, capsys):
    root, argv = copy
    assert main(["folds", *argv, "--set", "folds.seed=7"]) == 0
    before = snapshot(root)
    err = one_line_error(capsys, main(["train", *argv]))  # the folds on disk were made with another config
    assert "folds/dacon-cv-2020/folds.json" in err and "run `make folds COMPETITION=dacon-cv-2020` with this config" in err
    err = one_line_error(capsys, main(["train", *argv, "--set", "folds.seed=7"]))  # the folds agree; the trained fold does not
    assert "cnn_small/fold0/fold.json: the config (competition, folds or hyperparameters) and the fold files" in err
    assert "(folds.seed: 42 -> 7)" in err
    assert snapshot(root) == before


def test_train_reruns_with_the_same_config_skip_every_fold(copy, capsys):
    root, argv = copy
    before = {k: v for k, v in snapshot(root).items() if k.endswith("fold.json")}
    assert main(["train", *argv]) == 0
    assert "(0 trained, 3 skipped)" in capsys.readouterr().out
    assert {k: v for k, v in snapshot(root).items() if k.endswith("fold.json")} == before


@pytest.mark.parametrize(("key", "fragment"), [("folds", "made from other fold files"), ("config", "made from another config than")])
def test_ensemble_refuses_mixed_folds(copy, capsys, key, fragment):
    root, argv = copy
    path = root / "runs/dacon-cv-2020/cnn_small/fold2/fold.json"
    fold = json.loads(path.read_text())
    fold["lineage"][key] = "0" * 64
    path.write_text(json.dumps(fold))
    before = snapshot(root)
    err = one_line_error(capsys, main(["ensemble", *argv]))
    assert f"{path}: {fragment}" in err and "make clean COMPETITION=dacon-cv-2020" in err
    assert snapshot(root) == before
