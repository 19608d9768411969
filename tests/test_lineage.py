"""Stale artefacts: a rerun after a config or fold change stops with one line instead of mixing old and new."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compkit.cli import main
from compkit.lineage import digest, ids_digest

pytestmark = pytest.mark.slow


def snapshot(root: Path) -> dict:
    """Every file under ``root``: relative path -> (size, mtime in ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def copy(tiny_run, tmp_path):
    """A copy of the TINY run to change, and the CLI options pointing at it."""
    root, argv = tiny_run
    shutil.copytree(root, tmp_path / "run", ignore=shutil.ignore_patterns("wandb"))
    argv = [*argv[: argv.index("--root")], "--root", str(tmp_path / "run"), *argv[argv.index("--root") + 2 :]]
    return tmp_path / "run", argv


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    return err


def test_digests_ignore_order_and_spelling():
    assert ids_digest([3, 1, 2]) == ids_digest(["1", "2", "3"]) != ids_digest([1, 2])
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1}) != digest({"a": 1, "b": [2, 1]})


def test_train_after_a_config_change_refuses_the_stale_folds(copy, capsys):
    root, argv = copy
    before = snapshot(root)
    err = _one_line_error(capsys, main(["train", *argv, "--set", "train.learning_rate=0.001"]))
    assert "cnn_small/fold0/fold.json: the config (competition, folds or hyperparameters) changed since it was made" in err
    assert f"delete {root}/runs/dacon-cv-2020/cnn_small (or `make clean COMPETITION=dacon-cv-2020`)" in err
    assert snapshot(root) == before


def test_train_after_new_folds_refuses_the_stale_folds(copy, capsys):
    root, argv = copy
    assert main(["folds", *argv, "--set", "folds.seed=7"]) == 0
    before = snapshot(root)
    err = _one_line_error(capsys, main(["train", *argv]))
    assert "fold0/fold.json: the fold files (folds.csv, holdout.csv, pseudo.csv) changed since it was made" in err
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
    err = _one_line_error(capsys, main(["ensemble", *argv]))
    assert f"{path}: {fragment}" in err and "make clean COMPETITION=dacon-cv-2020" in err
    assert snapshot(root) == before
