"""Blend weights on the simplex, no worse than equal weights on OOF; hard voting with soft tie-break."""

import numpy as np
import pytest
from sklearn.metrics import log_loss

from compkit.config import load_config
from compkit.data import load_train
from conftest import REPO
from compkit.ensemble import fit_weights, hard_vote, soft_vote


@pytest.fixture(scope="module")
def labels(dacon_dir):
    return load_train(dacon_dir, load_config("dacon-cv-2020", "smoke", [], REPO / "configs").competition).labels


def _model(labels, skill, rng):
    """Probabilities that put `skill` extra mass on the true class of the real DACON labels."""
    logits = rng.normal(size=(len(labels), 10))
    logits[np.arange(len(labels)), labels] += skill
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_fitted_weights_on_simplex_and_no_worse_than_equal(labels):
    rng = np.random.default_rng(0)
    probas = np.stack([_model(labels, s, rng) for s in (3.0, 2.0, 0.0)])  # the last one is noise
    weights = fit_weights(probas, labels)
    assert weights.shape == (3,) and (weights >= 0).all() and weights.sum() == pytest.approx(1)
    fitted = log_loss(labels, soft_vote(probas, weights))
    equal = log_loss(labels, soft_vote(probas, np.full(3, 1 / 3)))
    assert fitted < equal
    assert weights[2] < 0.05  # the noise model is all but dropped


def test_one_model_gets_all_the_weight(labels):
    probas = _model(labels, 2.0, np.random.default_rng(1))[None]
    assert fit_weights(probas, labels).tolist() == [1.0]


def test_soft_vote_is_the_weighted_mean():
    probas = np.random.default_rng(2).dirichlet(np.ones(4), size=(3, 5))
    np.testing.assert_allclose(soft_vote(probas, np.array([0.5, 0.5, 0.0])), probas[:2].mean(axis=0))


def test_hard_vote_majority_and_soft_tie_break():
    a = np.array([[0.6, 0.4, 0.0], [0.9, 0.1, 0.0]])
    b = np.array([[0.6, 0.4, 0.0], [0.0, 0.55, 0.45]])
    c = np.array([[0.1, 0.2, 0.7], [0.0, 0.2, 0.8]])
    votes = hard_vote(np.stack([a, b, c]))
    np.testing.assert_allclose(votes.sum(axis=1), 1)
    assert votes[0].argmax() == 0  # two votes of three for class 0
    assert votes[1].argmax() == 2  # one vote each: class 2 has the largest mean probability (1.25 / 3)
    assert votes[0, 0] == pytest.approx(2 / 3, abs=1e-3)
