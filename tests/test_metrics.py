"""Metrics other than accuracy: the blend, Optuna's direction and the leaderboard follow the metric."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from compkit.config import load_config
from compkit.data import load_train
from compkit.metrics import GREATER_IS_BETTER, best, direction, gain, score_table
from compkit.tasks import for_config
from conftest import REPO


def test_best_follows_the_direction():
    assert best("accuracy", {"a": 0.5, "b": 0.7}) == "b"
    assert best("log_loss", {"a": 0.5, "b": 0.7}) == "a"
    assert best("macro_f1", {"a": 0.7, "b": 0.7}) == "a"  # ties: the first
    assert not GREATER_IS_BETTER["log_loss"]
    assert direction("log_loss") == "minimize" and direction("macro_f1") == "maximize"
    assert gain("log_loss", 0.3, 0.5) == pytest.approx(0.2) and gain("accuracy", 0.3, 0.5) == pytest.approx(-0.2)


def test_macro_f1_with_an_absent_class_is_sklearns(dacon_dir):
    """Classes in neither truth nor prediction do not count (sklearn's labels = present in either)."""
    labels = load_train(dacon_dir, load_config("dacon-cv-2020", "smoke", [], REPO / "configs").competition).labels
    rows = np.flatnonzero(labels < 4)[:300]  # real rows of digits 0-3 only: 6 of 10 classes absent
    truth = labels[rows]
    predicted = np.where(np.arange(len(rows)) % 5 == 0, 4, truth)  # every 5th predicted as 4: absent from truth
    scores = score_table(truth, np.eye(10)[predicted])
    assert scores["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert scores["macro_f1"] > f1_score(truth, predicted, labels=np.arange(10), average="macro", zero_division=0) + 0.3


def test_macro_f1_on_real_labels(dacon_dir):
    labels = load_train(dacon_dir, load_config("dacon-cv-2020", "smoke", [], REPO / "configs").competition).labels
    proba = np.eye(10)[(labels + (np.arange(len(labels)) % 4 == 0)) % 10]  # every 4th row wrong
    scores = score_table(labels, proba)
    assert scores["accuracy"] == pytest.approx(np.mean(np.arange(len(labels)) % 4 != 0))
    assert scores["macro_f1"] == pytest.approx(f1_score(labels, proba.argmax(1), average="macro"))


def test_balanced_class_weights_follow_sklearns_formula(dacon_dir):
    config = load_config("dacon-cv-2020", "smoke", ["train.class_weight='balanced'"], REPO / "configs")
    train = load_train(dacon_dir, config.competition)
    fit = np.flatnonzero((train.labels != 0) | (np.arange(len(train.labels)) % 10 == 0))  # digit 0 made rare
    weights = for_config(config).class_weight(config.train.class_weight, train.labels[fit])
    counts = np.bincount(train.labels[fit], minlength=10)
    assert weights[0] == pytest.approx(len(fit) / (10 * counts[0])) and weights[0] > 5 * weights[1]
    plain = load_config("dacon-cv-2020", "smoke", [], REPO / "configs")
    assert for_config(plain).class_weight(plain.train.class_weight, train.labels[fit]) is None
