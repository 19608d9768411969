"""Blend weights on the simplex, no worse than equal weights on OOF; hard voting with soft tie-break;
the stacked meta-model, cross-validated on the competition's folds (on the TINY job's real OOF predictions)."""

import json
import re
import shutil
from functools import partial

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from compkit import tasks
from compkit.artifacts import Layout
from compkit.cli import main
from compkit.config import ConfigError, Paths, load_config
from compkit.data import load_train
from compkit.errors import CompkitError
from conftest import REPO, SMOKE_FOLDS, dacon_config, one_line_error, with_root
from compkit.blends import caruana_weights, cross_fitted_oof, fit_weights, hard_vote, meta_model, soft_vote, stacked_oof
from compkit.ensemble import oof_folds
from compkit.metrics import best, score_table
from compkit.tasks import Multiclass

COMP = "dacon-cv-2020"

BLENDS = Multiclass.blend_names  # the multiclass task's blends, in order


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


# ---------------------------------------------------------------------------------------------
# Stacking: a logistic regression on the OOF probabilities, scored out of fold
# ---------------------------------------------------------------------------------------------


_tiny_config = partial(dacon_config, 'train.backbones=["cnn_small"]', "folds.n_splits=3")  # the TINY job's (conftest.TINY): cnn_small, 3 folds


def _read(folder):
    """ensemble.json and the (ids, probabilities) of oof.csv and holdout.csv of an ensemble folder."""
    csv = {name: pd.read_csv(folder / f"{name}.csv") for name in ("oof", "holdout")}
    return json.loads((folder / "ensemble.json").read_text()), {n: (f["id"].to_numpy(), f.iloc[:, 1:].to_numpy()) for n, f in csv.items()}


@pytest.fixture(scope="module")
def stacking_runs(tiny_run, tmp_path_factory, dacon_dir):
    """`make ensemble` on a copy of the TINY run: as configured, with stacking on, then with stacking selected.

    Returns the copy's root, its CLI options, its Paths, and the (ensemble.json, csv files) of each
    run by name: ``off``, ``best``, ``on``.
    """
    root, argv = tiny_run
    copy = tmp_path_factory.mktemp("stacking") / "run"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("wandb"))
    argv = with_root(argv, copy)
    folder, results = copy / "runs" / COMP / "ensemble", {}
    assert main(["ensemble", *argv]) == 0
    results["off"] = _read(folder)
    assert main(["ensemble", *argv, "--set", "ensemble.stacking=true"]) == 0
    results["best"] = _read(folder)
    assert main(["ensemble", *argv, "--set", "ensemble.stacking=true", "--set", "ensemble.select=stacked"]) == 0
    results["on"] = _read(folder)
    return copy, argv, Paths.for_competition(COMP, copy, dacon_dir), results


@pytest.fixture(scope="module")
def tiny_oof(stacking_runs, dacon_dir):
    """The TINY run's OOF: (N,) sorted ids, (N, 10) cnn_small probabilities, (N,) labels, (N,) folds read from folds.csv."""
    _, _, paths, _ = stacking_runs
    config = _tiny_config()
    ids, proba, _ = Layout(config, paths).runs.load_oof("cnn_small")
    train = load_train(dacon_dir, config.competition)
    labels = pd.Series(train.labels, index=train.ids).loc[ids].to_numpy()
    fold = pd.read_csv(paths.folds / "folds.csv").set_index("id")["fold"].loc[ids].to_numpy()
    return ids, proba, labels, fold


@pytest.mark.slow
def test_stacked_oof_equals_a_manual_loop_over_the_competition_folds(stacking_runs, tiny_oof):
    _, _, paths, _ = stacking_runs
    ids, real, labels, fold = tiny_oof
    assert np.array_equal(oof_folds(_tiny_config(), paths, ids), fold) and sorted(set(fold)) == [0, 1, 2]
    other = _model(labels, 1.5, np.random.default_rng(3))  # a second, synthetic backbone
    got = stacked_oof(np.stack([real, other]), labels, fold, 1.0)

    features = np.concatenate([real, other], axis=1)  # (N, 2 * 10)
    expected = np.full_like(got, np.nan)
    for k in range(3):
        model = meta_model(1.0).fit(features[fold != k], labels[fold != k])  # never sees fold k's labels
        expected[fold == k] = model.predict_proba(features[fold == k])
    np.testing.assert_allclose(got, expected, atol=1e-10)
    in_sample = meta_model(1.0).fit(features, labels).predict_proba(features)
    assert np.abs(got - in_sample).max() > 1e-3  # what a leaky implementation would return instead


@pytest.mark.slow
def test_stacked_oof_on_random_labels_stays_at_chance_where_an_in_sample_fit_does_not(tiny_oof):
    """Labels shuffled: no feature can predict them, so an honest OOF score is chance and an in-sample one is not."""
    _, real, labels, fold = tiny_oof
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(labels)
    probas = np.stack([real, *rng.dirichlet(np.ones(10), size=(2, len(labels)))])  # the real backbone and two of pure noise
    prior = np.bincount(shuffled, minlength=10) / len(shuffled)
    chance_loss = -np.sum(prior * np.log(prior))  # the log loss of always predicting the class shares

    stacked = score_table(shuffled, stacked_oof(probas, shuffled, fold, 1.0))
    features = np.concatenate(list(probas), axis=1)
    in_sample = score_table(shuffled, meta_model(1.0).fit(features, shuffled).predict_proba(features))
    # 0.1 + 0.03: four standard errors of chance accuracy on these 1,638 rows (0.0074); in-sample it is about 0.16
    assert stacked["accuracy"] <= 0.1 + 0.03 < in_sample["accuracy"]
    assert stacked["log_loss"] > chance_loss > in_sample["log_loss"]


@pytest.mark.slow
def test_stacking_off_keeps_ensemble_json_as_before(stacking_runs):
    _, _, _, results = stacking_runs
    blend, _ = results["off"]
    assert set(blend) == {"backbones", "scores", "blends", "selected", "metric", "task", "post", "apply", "cv", "inference",
                          "lineage", "files"}
    selected = blend["blends"][blend["selected"]]
    assert blend["apply"] == {"vote": "hard"} if blend["selected"] == "hard" else \
        blend["apply"]["weights"] == pytest.approx(list(selected["weights"].values()), abs=1e-6)  # the weights, unrounded
    assert sorted(blend["blends"]) == sorted(BLENDS) == ["caruana", "equal", "fitted", "hard"]
    assert all(set(spec) == {"accuracy", "macro_f1", "log_loss", "weights"} for spec in blend["blends"].values())
    assert blend["selected"] == best("accuracy", {n: blend["blends"][n]["accuracy"] for n in BLENDS})  # ties: BLENDS order


@pytest.mark.slow
def test_stacking_on_joins_the_selection_on_oof(stacking_runs):
    _, _, _, results = stacking_runs
    (off, _), (blend, _) = results["off"], results["best"]
    assert sorted(blend["blends"]) == sorted([*BLENDS, "stacked"]) and set(blend["blends"]["stacked"]) == {"accuracy", "macro_f1", "log_loss"}
    assert blend["selected"] == best("accuracy", {n: blend["blends"][n]["accuracy"] for n in [*BLENDS, "stacked"]})  # ties: the first
    assert {n: s for n, s in blend["blends"].items() if n != "stacked"} == off["blends"]


@pytest.mark.slow
def test_selected_stacked_blend_writes_its_oof_and_the_refitted_model_on_the_holdout(stacking_runs, tiny_oof):
    root, _, _, results = stacking_runs
    (off, _), (on, files) = results["off"], results["on"]
    ids, real, labels, fold = tiny_oof
    assert on["selected"] == "stacked" and sorted(on["blends"]) == sorted([*BLENDS, "stacked"])
    assert {n: s for n, s in on["blends"].items() if n != "stacked"} == off["blends"] and on["lineage"] == off["lineage"]

    # OOF: the cross-validated predictions, scored like the other blends (no weights: one backbone, 100 coefficients)
    oof_ids, oof = files["oof"]
    assert np.array_equal(oof_ids, ids)
    np.testing.assert_allclose(oof, stacked_oof(real[None], labels, fold, 1.0), atol=1e-12)
    assert on["blends"]["stacked"] == pytest.approx(score_table(labels, oof)) and on["cv"] == on["blends"]["stacked"]["accuracy"]

    # holdout: LogisticRegression(C=1) refitted on every OOF row, applied to the mean of the 3 fold models' holdout predictions
    folds_dir = root / "runs" / COMP / "cnn_small"
    mean = np.mean([pd.read_csv(folds_dir / f"fold{k}/holdout.csv").iloc[:, 1:].to_numpy() for k in range(3)], axis=0)
    expected = LogisticRegression(C=1.0, max_iter=1000).fit(real, labels).predict_proba(mean)
    held_ids, held = files["holdout"]
    assert np.array_equal(held_ids, pd.read_csv(folds_dir / "fold0/holdout.csv")["id"])
    np.testing.assert_allclose(held, expected, atol=1e-12)
    assert np.abs(held - mean).max() > 1e-3  # a recalibration, not the backbone's own probabilities


@pytest.mark.slow
def test_submit_and_report_take_the_stacked_blend(stacking_runs):
    root, argv, _, _ = stacking_runs
    assert main(["submit", *argv]) == 0 and main(["report", *argv]) == 0
    board = pd.read_csv(root / "submissions" / COMP / "leaderboard.csv")
    assert board["blend"].tolist() == ["stacked"]
    page = (root / "runs" / COMP / "report" / "index.html").read_text(encoding="utf-8")
    assert "Selected blend: stacked" in page
    assert re.search(r"<td>stacked</td>\s*<td>yes</td>\s*<td>n/a</td>", page)  # selected, no weight per backbone


# ---------------------------------------------------------------------------------------------
# Every blend scored out of fold; Caruana's ensemble selection
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_oof(tiny_run, dacon_dir):
    """The TINY run's cnn_small OOF: (N, 10) probabilities, (N,) labels, (N,) folds from folds.csv."""
    root, _ = tiny_run
    config, paths = _tiny_config(), Paths.for_competition(COMP, root, dacon_dir)
    ids, proba, _ = Layout(config, paths).runs.load_oof("cnn_small")
    labels = pd.Series(load_train(dacon_dir, config.competition).labels, index=load_train(dacon_dir, config.competition).ids).loc[ids].to_numpy()
    return proba, labels, oof_folds(config, paths, ids)


def _noisy(proba, scale, rng):
    """``proba`` with log-normal noise on every probability, renormalised: a model as good as ``proba`` on average."""
    noisy = proba * np.exp(scale * rng.normal(size=proba.shape))
    return noisy / noisy.sum(axis=1, keepdims=True)


@pytest.mark.slow
def test_oof_scored_fitted_blend_is_not_favoured_where_equal_weights_are_optimal(real_oof):
    """Two noisy copies of one real model: equal weights are optimal, yet fitted in sample they always win."""
    proba, labels, fold = real_oof
    for seeds in ((1, 2), (3, 4), (5, 6)):  # three draws of the noise
        copies = np.stack([_noisy(proba, 1.0, np.random.default_rng(seed)) for seed in seeds])
        equal = log_loss(labels, soft_vote(copies, np.full(2, 0.5)))
        in_sample = log_loss(labels, soft_vote(copies, fit_weights(copies, labels)))
        out_of_fold = log_loss(labels, cross_fitted_oof(fit_weights, copies, labels, fold))
        assert in_sample < equal <= out_of_fold  # the old in-sample score favoured `fitted`, the OOF one does not
        assert best("log_loss", {"equal": equal, "fitted": out_of_fold}) == "equal"


@pytest.mark.slow
def test_cross_fitted_oof_fits_each_fold_on_the_other_folds_only(real_oof):
    proba, labels, fold = real_oof
    copies = np.stack([proba, _noisy(proba, 1.0, np.random.default_rng(3))])
    got = cross_fitted_oof(fit_weights, copies, labels, fold)
    for k in np.unique(fold):
        weights = fit_weights(copies[:, fold != k], labels[fold != k])
        np.testing.assert_allclose(got[fold == k], soft_vote(copies[:, fold == k], weights), atol=1e-12)


def _caruana_key(metric: str):
    """The multiclass task's Caruana objective under ``metric`` (DACON's config with that metric)."""
    config = load_config("dacon-cv-2020", "smoke", [f"competition.metric='{metric}'"], REPO / "configs")
    return tasks.of(config.competition).caruana_key


@pytest.mark.slow
def test_caruana_drops_a_harmful_model_and_beats_equal_weights_out_of_fold(real_oof):
    """A library of the real model, a noisy copy and a harmful one (0.9 on the class after the true one)."""
    proba, labels, fold = real_oof
    harmful = np.full_like(proba, 0.1 / 9)
    harmful[np.arange(len(labels)), (labels + 1) % 10] = 0.9
    library = np.stack([proba, _noisy(proba, 0.5, np.random.default_rng(4)), harmful])
    for metric in ("accuracy", "log_loss"):
        weights = caruana_weights(library, labels, _caruana_key(metric), 25)
        assert weights[2] == 0 and weights[0] > 0 and weights.sum() == pytest.approx(1)
        fit = partial(caruana_weights, key=_caruana_key(metric), iterations=25)
        caruana = score_table(labels, cross_fitted_oof(fit, library, labels, fold))[metric]
        equal = score_table(labels, soft_vote(library, np.full(3, 1 / 3)))[metric]
        assert best(metric, {"equal": equal, "caruana": caruana}) == "caruana" and caruana != equal


def test_caruana_picks_with_replacement_and_keeps_the_best_prefix():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, size=400)
    good = np.eye(3)[np.where(rng.random(400) < 0.8, labels, (labels + 1) % 3)] * 0.7 + 0.1
    bad = np.full((400, 3), 1 / 3)
    weights = caruana_weights(np.stack([bad, good]), labels, _caruana_key("log_loss"), 10)
    assert weights.tolist() == [0.0, 1.0]  # the good model alone, picked again and again: adding `bad` only hurts


def test_caruana_under_a_budget_leaves_out_the_model_that_does_not_fit():
    """The better model costs 3 units an image, the other 1: a budget of 2 keeps Caruana to the cheap one; a budget of
    4 lets it take both, each counted once however often it is picked."""
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, size=400)
    better = np.eye(3)[np.where(rng.random(400) < 0.9, labels, (labels + 1) % 3)] * 0.7 + 0.1
    cheap = np.eye(3)[np.where(rng.random(400) < 0.6, labels, (labels + 2) % 3)] * 0.7 + 0.1
    library, cost = np.stack([cheap, better]), np.array([1.0, 3.0])
    assert caruana_weights(library, labels, _caruana_key("log_loss"), 10)[1] > 0  # unbudgeted, the better model is in
    assert caruana_weights(library, labels, _caruana_key("log_loss"), 10, cost=cost, budget=2.0).tolist() == [1.0, 0.0]
    assert caruana_weights(library, labels, _caruana_key("log_loss"), 10, cost=cost, budget=4.0)[1] > 0


@pytest.mark.slow
def test_time_budget_keeps_caruana_and_the_choice_within_the_projection(smoke_run, tmp_path, capsys):
    """The shared smoke run's real library (cnn_small and resnet_small, 3 folds; each fold's prediction seconds per
    image recorded when it was trained) and a budget between the faster backbone's projected hours and the slower's:
    Caruana leaves the slower one out, the chosen blend's projection (recomputed here from the fold.json files) fits,
    and a budget below the faster one alone is one line that changes nothing."""
    root, argv = smoke_run
    shutil.copytree(root, tmp_path / "run", ignore=shutil.ignore_patterns("wandb"))
    runs, rows = tmp_path / "run/runs" / COMP, 20480
    argv = [*with_root(argv, tmp_path / "run"), "--set", f"competition.hidden_test_rows={rows}"]
    cost = {b: sum(json.loads((runs / b / f"fold{k}/fold.json").read_text())["predict_seconds_per_image"]
                   for k in range(SMOKE_FOLDS)) for b in ("cnn_small", "resnet_small")}
    hours = {b: c * rows / 3600 for b, c in cost.items()}
    fast, slow = sorted(hours, key=hours.get)
    assert hours[slow] > hours[fast] > 0
    budget = (hours[fast] + hours[slow]) / 2
    assert main(["ensemble", *argv, "--set", f"ensemble.time_budget={budget!r}"]) == 0
    record = json.loads((runs / "ensemble/ensemble.json").read_text())
    assert record["blends"]["caruana"]["weights"] == {fast: 1.0, slow: 0.0}
    used = [b for b, w in record["blends"][record["selected"]]["weights"].items() if w > 0]
    assert used == [fast] and sum(hours[b] for b in used) <= budget
    assert record["blends"]["equal"]["predict_hours"] == pytest.approx(hours[fast] + hours[slow], abs=1e-4)
    assert record["blends"]["equal"]["predict_hours"] > budget  # both backbones: over budget, so not chosen
    assert f"predicts {rows} hidden test rows in" in capsys.readouterr().out

    before = (runs / "ensemble/ensemble.json").read_bytes()
    err = one_line_error(capsys, main(["ensemble", *argv, "--set", f"ensemble.time_budget={hours[fast] / 2!r}"]))
    assert f"the fastest backbone, {fast}, alone projects {hours[fast]:.2f} h on {rows} hidden test rows" in err
    assert (runs / "ensemble/ensemble.json").read_bytes() == before


@pytest.mark.slow
def test_ensemble_json_has_caruana_weights_scored_out_of_fold(stacking_runs, tiny_oof):
    _, _, _, results = stacking_runs
    blend, _ = results["off"]
    _, real, labels, fold = tiny_oof
    assert blend["blends"]["caruana"]["weights"] == {"cnn_small": 1.0}
    for name in ("equal", "fitted", "caruana"):  # one backbone: every soft blend is that backbone, out of fold too
        assert {k: v for k, v in blend["blends"][name].items() if k != "weights"} == pytest.approx(score_table(labels, real))


def test_select_stacked_needs_stacking_on():
    with pytest.raises(ConfigError, match="stacking = true"):
        _tiny_config("ensemble.select=stacked")
    assert _tiny_config().ensemble.stacking is False and _tiny_config().ensemble.stacking_c == 1.0


def test_an_oof_id_in_no_fold_names_folds_csv_and_the_fix(tmp_path, dacon_dir):
    paths = Paths.for_competition(COMP, tmp_path, dacon_dir)
    paths.folds.mkdir(parents=True)
    Layout(_tiny_config(), paths).folds.write(pd.DataFrame({"id": [1, 2, 4], "fold": [0, 1, 0]}),
                                             pd.DataFrame({"id": [5], "Usage": ["Public"]}))
    assert oof_folds(_tiny_config(), paths, np.array([1, 2, 4])).tolist() == [0, 1, 0]
    with pytest.raises(CompkitError, match=r"folds\.csv: OOF id 3 is in no fold \(1 such ids\); `make folds .*` then `make train"):
        oof_folds(_tiny_config(), paths, np.array([1, 2, 3]))
