"""Adversarial validation on real images: Fashion-MNIST train vs its own test set (one distribution, AUC near
0.5) and vs DACON images written as the test set (another distribution, AUC near 1)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from compkit import adversarial
from compkit.config import Paths, load_config
from compkit.errors import CompkitError
from conftest import REPO

N = 300  # images per side: 600 in 3 folds, a few seconds of training
SMALL = ["adversarial.n_splits=3", "adversarial.top=50"]


def _competition(tmp_path, train_images: np.ndarray, test_images: np.ndarray) -> tuple:
    """A Fashion-MNIST-layout competition in ``tmp_path/data`` whose test.csv holds ``test_images``."""
    config = load_config("fashion-mnist", "smoke", SMALL, REPO / "configs")
    pixels = config.competition.pixel_columns
    data = tmp_path / "data"
    data.mkdir()
    train = pd.DataFrame(train_images.reshape(len(train_images), -1), columns=pixels)
    train.insert(0, "label", "Bag")  # labels are never read by the classifier
    train.insert(0, "id", np.arange(1, len(train) + 1))
    test_ids = np.arange(len(train) + 1, len(train) + len(test_images) + 1)
    test = pd.DataFrame(test_images.reshape(len(test_images), -1), columns=pixels)
    test.insert(0, "id", test_ids)
    train.to_csv(data / "train.csv", index=False)
    test.to_csv(data / "test.csv", index=False)
    pd.DataFrame({"id": test_ids, "label": "Bag"}).to_csv(data / "sample_submission.csv", index=False)
    return config, Paths.for_competition("fashion-mnist", tmp_path, data)


@pytest.mark.slow
def test_same_distribution_gives_auc_near_half(tmp_path, fmnist):
    (x_train, _), (x_test, _) = fmnist
    config, paths = _competition(tmp_path, x_train[:N], x_test[:N])
    summary = adversarial.run(config, paths)
    assert abs(summary["auc"] - 0.5) < 0.1, summary  # null sd of the AUC at 300 vs 300 is 0.024
    folder = paths.runs / "adversarial"
    assert json.loads((folder / "adversarial.json").read_text())["auc"] == summary["auc"]
    oof = pd.read_csv(folder / "oof.csv")
    assert len(oof) == 2 * N and oof["p_test"].between(0, 1).all() and sorted(oof["fold"].unique()) == [0, 1, 2]
    like = pd.read_csv(folder / "train_like_test.csv")
    assert len(like) == 50 and like["id"].isin(range(1, N + 1)).all() and like["p_test"].is_monotonic_decreasing
    assert "one distribution" in summary["verdict"]

    from compkit.report.page import _Page

    page = _Page(tmp_path / "report")
    adversarial.report_section(page, paths)
    assert summary["verdict"] in "\n".join(page.parts) and (tmp_path / "report/adversarial.png").is_file()


@pytest.mark.slow
def test_shifted_distribution_gives_auc_near_one(tmp_path, fmnist, dacon_dir):
    (x_train, _), _ = fmnist
    dacon = pd.read_csv(dacon_dir / "train.csv", nrows=N)
    dacon_images = dacon[[str(i) for i in range(784)]].to_numpy(dtype=np.uint8).reshape(N, 28, 28)
    config, paths = _competition(tmp_path, x_train[:N], dacon_images)
    summary = adversarial.run(config, paths)
    assert summary["auc"] > 0.95, summary
    assert "clearly different distributions" in summary["verdict"]


def test_needs_a_test_set(tmp_path, dacon, dacon_dir):
    paths = Paths.for_competition("dacon-cv-2020", tmp_path, dacon_dir)  # DACON's test.csv is not shipped
    with pytest.raises(CompkitError, match=r"test.csv: not found; adversarial validation compares train with the test set"):
        adversarial.run(dacon(), paths)
    assert not (tmp_path / "runs").exists()


def test_unknown_backbone_names_the_key(tmp_path, dacon, dacon_dir):
    paths = Paths.for_competition("dacon-cv-2020", tmp_path, dacon_dir)
    with pytest.raises(CompkitError, match=r"adversarial.backbone: unknown backbone 'nope'"):
        adversarial.run(dacon("smoke", "adversarial.backbone='nope'"), paths)
