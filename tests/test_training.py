"""Training recipes on the real DACON data: seed averaging, TTA, mask channels, the letter embedding,
EMA of the weights, augmentation in the tf.data map, and fold-safe pseudo-labelling."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from compkit import augment, fitting
from compkit.artifacts import Layout
from compkit.backbones import load_model
from compkit.cli import main
from compkit.config import Augment, ConfigError, Paths
from compkit.data import load_train
from compkit.io import read_proba
from conftest import REPO, dacon_config

# Two folds, two epochs, a quarter-width cnn_small, in this process: seconds per fold on 2 cores.
SMALL = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--backbones", "cnn_small", "--set", "folds.n_splits=2",
         "--set", "train.epochs=2", "--set", "train.width=0.25", "--set", "train.process_per_fold=false",
         "--set", "train.batch_size=128",  # the batch these tests were written with
         "--config-dir", str(REPO / "configs")]
CLASSES = list(range(10))


# Loads a saved model in a fresh interpreter (no custom layer registered yet) and predicts 5 images.
FRESH_LOAD = """
import sys, numpy as np
from compkit.backbones import load_model
model, folder = load_model(sys.argv[1]), sys.argv[2]
inputs = {"image": np.load(folder + "/images.npy"), "letter": np.load(folder + "/letters.npy", allow_pickle=True)}
np.save(folder + "/fresh.npy", model.predict(inputs, verbose=0))
"""


_config = partial(dacon_config, "folds.n_splits=2", "train.epochs=2", "train.width=0.25", "train.batch_size=128")


@pytest.mark.slow
def test_fold_predictions_are_the_mean_over_seeds_of_tta_views(tmp_path, dacon_dir):
    """seeds=2, tta=3, two mask channels and the letter embedding: each saved model reloads, and oof.csv is
    the mean of both models' TTA predictions, each recomputed from the saved model."""
    extra = ["--set", "train.seeds=2", "--set", "train.tta=3", "--set", "train.masks=[4, 140]", "--set", 'train.embed=["letter"]']
    argv = [*SMALL, *extra, "--data-dir", str(dacon_dir), "--root", str(tmp_path)]
    assert main(["folds", *argv]) == 0 and main(["train", *argv]) == 0
    config = _config("train.seeds=2", "train.tta=3", "train.masks=[4, 140]", 'train.embed=["letter"]')
    paths = Paths.for_competition("dacon-cv-2020", tmp_path, dacon_dir)
    hyper, data = config.hyper("cnn_small"), fitting.fold_data(config, paths, 1)
    out = Layout(config, paths).runs.dir("cnn_small", 1)
    inputs = fitting.model_inputs(data.train, data.val, hyper)
    views = []
    for s, name in enumerate(["model.keras", "model-seed1.keras"]):
        model = load_model(out / name)  # in a fresh process: the custom layer registers itself first
        assert set(model.input) == {"image", "letter"}
        assert model.get_layer(index=1).compute_output_shape((None, 28, 28, 1))[-1] == 3  # image + 2 masks
        views.append(augment.predict_tta(model, inputs, hyper.augment, 3, config.train.seed + 1 + 1000 * s, hyper.batch_size))
        assert not np.allclose(views[-1], model.predict(inputs, verbose=0), atol=1e-4)  # the views are not the image
    np.save(tmp_path / "images.npy", inputs["image"][:5])
    np.save(tmp_path / "letters.npy", inputs["letter"][:5])
    fresh = subprocess.run([sys.executable, "-c", FRESH_LOAD, str(out / "model.keras"), str(tmp_path)], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "fresh.npy"), load_model(out / "model.keras").predict(
        {"image": inputs["image"][:5], "letter": inputs["letter"][:5]}, verbose=0), atol=1e-6)
    ids, oof = read_proba(out / "oof.csv", "id", [f"p_{c}" for c in CLASSES])
    assert ids.tolist() == data.train.ids[data.val].tolist()
    np.testing.assert_allclose(oof, np.mean(views, axis=0), atol=1e-5)
    history = pd.read_csv(out / "history.csv")
    fold = json.loads((out / "fold.json").read_text())
    assert history.groupby("seed").size().to_dict() == {0: 2, 1: 2} and fold["epochs"] == 4 and fold["seeds"] == 2


def test_training_map_augments_images_and_mixes_labels(dacon_dir):
    config = _config()
    paths = Paths.for_competition("dacon-cv-2020", REPO, dacon_dir)
    train_ = load_train(paths.data, config.competition)
    hyper = config.hyper("cnn_small").model_copy(update={"embed": ["letter"]})
    rows = np.arange(64)
    inputs, onehot = fitting.model_inputs(train_, rows, hyper), np.eye(10, dtype=np.float32)[train_.labels[rows]]
    transform = augment.training(Augment(shift=0.1, rotation=10, erasing=1.0, mixup=0.4), seed=0)
    out, mixed = transform({k: v for k, v in inputs.items()}, onehot)
    out, mixed = {k: np.asarray(v) for k, v in out.items()}, np.asarray(mixed)
    assert out["image"].shape == inputs["image"].shape and not np.allclose(out["image"], inputs["image"])
    assert out["letter"].astype(str).tolist() == inputs["letter"].tolist()  # columns pass through
    np.testing.assert_allclose(mixed.sum(axis=1), 1, atol=1e-5)
    assert (mixed.max(axis=1) < 1 - 1e-3).mean() > 0.5  # most labels are mixtures
    nearest = np.asarray(augment.geometric(Augment(interpolation="nearest"), seed=0)(inputs["image"], training=True))
    assert set(np.unique(nearest)) <= set(np.unique(inputs["image"])) | {0.0}  # moved, never blended
    blended = np.asarray(augment.geometric(Augment(interpolation="bilinear"), seed=0)(inputs["image"], training=True))
    assert len(set(np.unique(blended)) - set(np.unique(inputs["image"]))) > 100
    assert augment.training(Augment(shift=0, rotation=0), seed=0) is None
    assert augment.geometric(Augment(shift=0, rotation=0), seed=0) is None


@pytest.mark.slow
def test_ema_validates_and_keeps_the_averaged_weights(tmp_path, dacon_dir):
    """The raw weights' training is the same with or without EMA (same train loss); validation sees the
    averaged weights (other val loss), and the kept model is the best validated one."""
    paths = Paths.for_competition("dacon-cv-2020", tmp_path, dacon_dir)
    assert main(["folds", *SMALL, "--data-dir", str(dacon_dir), "--root", str(tmp_path)]) == 0
    tf.config.experimental.enable_op_determinism()  # as --deterministic does: same seed, same training
    runs = {}
    for ema in (0.0, 0.9):
        config = _config("train.epochs=3", f"train.ema={ema}", "train.patience=3", "train.lr_schedule='constant'")
        hyper, data = config.hyper("cnn_small"), fitting.fold_data(config, paths, 0)
        keras.utils.set_random_seed(7)
        model, history = fitting.fit(config, hyper, "cnn_small", data, 7, "[ema test]")
        loss = model.evaluate(fitting.model_inputs(data.train, data.val, hyper), data.targets[data.val], verbose=0)[0]
        runs[ema] = (history, loss)
    (plain, _), (averaged, kept) = runs[0.0], runs[0.9]
    np.testing.assert_allclose(plain["loss"], averaged["loss"], rtol=1e-4)
    assert not np.allclose(plain["val_loss"], averaged["val_loss"], rtol=1e-3)
    assert kept == pytest.approx(averaged["val_loss"].min(), rel=1e-4)


@pytest.mark.slow
def test_validating_the_last_epoch_only_trains_the_same_and_keeps_the_last_weights(tmp_path, dacon_dir):
    """validation = 'last_epoch' trains as 'each_epoch' does (same train losses), leaves the earlier epochs' val_loss
    NaN (one history row per epoch still), scores the last epoch as 'each_epoch' does, and keeps its weights."""
    paths = Paths.for_competition("dacon-cv-2020", tmp_path, dacon_dir)
    assert main(["folds", *SMALL, "--data-dir", str(dacon_dir), "--root", str(tmp_path)]) == 0
    tf.config.experimental.enable_op_determinism()
    runs = {}
    for validation in ("each_epoch", "last_epoch"):
        config = _config("train.epochs=3", "train.patience=3", "train.lr_schedule='cosine'", f"train.validation='{validation}'")
        hyper, data = config.hyper("cnn_small"), fitting.fold_data(config, paths, 0)
        keras.utils.set_random_seed(7)
        model, history = fitting.fit(config, hyper, "cnn_small", data, 7, "[validate test]")
        loss = model.evaluate(fitting.model_inputs(data.train, data.val, hyper), data.targets[data.val], verbose=0)[0]
        runs[validation] = (history, loss)
    (each, _), (last, kept) = runs["each_epoch"], runs["last_epoch"]
    assert list(last["epoch"]) == [1, 2, 3] and each["val_loss"].notna().all()
    assert last[["val_loss", "val_accuracy"]].iloc[:2].isna().all().all() and last["val_loss"].iloc[2] > 0
    np.testing.assert_allclose(last["loss"], each["loss"], rtol=1e-4)
    assert last["val_loss"].iloc[2] == pytest.approx(each["val_loss"].iloc[2], rel=1e-4)
    assert kept == pytest.approx(last["val_loss"].iloc[2], rel=1e-4)


def test_validating_the_last_epoch_only_refuses_early_stopping_and_a_plateau_schedule():
    with pytest.raises(ConfigError, match=r"validation 'last_epoch' cannot early-stop \(patience 2 < epochs 3\)"):
        _config("train.epochs=3", "train.patience=2", "train.lr_schedule='cosine'", "train.validation='last_epoch'")
    with pytest.raises(ConfigError, match="cannot reduce the learning rate on a plateau of val_loss: use lr_schedule 'cosine'"):
        _config("train.epochs=3", "train.patience=3", "train.lr_schedule='plateau'", "train.validation='last_epoch'")


def _with_test_file(dacon_dir, folder):
    """DACON with a test file: rows 1-1600 of train.csv stay train, rows 1601-2048 become test (no digit)."""
    folder.mkdir()
    frame = pd.read_csv(dacon_dir / "train.csv")
    frame.iloc[:1600].to_csv(folder / "train.csv", index=False)
    frame.iloc[1600:].drop(columns="digit").to_csv(folder / "test.csv", index=False)
    frame.iloc[1600:][["id"]].assign(digit=0).to_csv(folder / "submission.csv", index=False)
    return frame.iloc[1600:]["id"].to_numpy()


def _clear_runs(root):
    for path in (root / "runs/dacon-cv-2020/cnn_small").glob("fold*/*"):
        path.unlink()


@pytest.mark.slow
def test_pseudo_labels_are_fold_safe_test_rows_only(tmp_path, dacon_dir, capsys):
    data = tmp_path / "data"
    test_ids = _with_test_file(dacon_dir, data)
    argv = [*SMALL, "--data-dir", str(data), "--root", str(tmp_path), "--set", "pseudo.threshold=0.1"]
    for stage in ("folds", "train", "pseudo"):
        assert main([stage, *argv]) == 0
    pseudo = pd.read_csv(tmp_path / "folds/dacon-cv-2020/pseudo.csv")
    holdout = pd.read_csv(tmp_path / "folds/dacon-cv-2020/holdout.csv")["id"]
    assert set(pseudo["id"]) == set(test_ids) and not pseudo["id"].isin(holdout).any()
    for k in range(2):  # fold k's labels come from fold k's model alone
        ids, proba = read_proba(tmp_path / f"runs/dacon-cv-2020/cnn_small/fold{k}/test.csv", "id", [f"p_{c}" for c in CLASSES])
        mine = pseudo[pseudo["fold"] == k].set_index("id").loc[ids]
        assert mine["label"].tolist() == proba.argmax(axis=1).tolist()
        np.testing.assert_allclose(mine["confidence"], proba.max(axis=1), atol=1e-6)

    assert main(["train", *argv]) == 2  # models made before pseudo.csv are stale
    assert "pseudo.csv) changed since it was made" in capsys.readouterr().err
    _clear_runs(tmp_path)
    assert main(["train", *argv]) == 0
    lineage = json.loads((tmp_path / "runs/dacon-cv-2020/cnn_small/fold0/fold.json").read_text())["lineage"]
    assert lineage["n_pseudo"] == len(test_ids) and lineage["n_fit"] == 640  # 1280 CV rows in 2 folds

    pseudo.loc[3, "id"] = holdout.iloc[0]  # a holdout row must never become a pseudo-labelled row
    pseudo.to_csv(tmp_path / "folds/dacon-cv-2020/pseudo.csv", index=False)
    _clear_runs(tmp_path)
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert "pseudo.csv: row 4: id" in err and "holdout and train rows are never pseudo-labelled" in err
    assert not (tmp_path / "runs/dacon-cv-2020/cnn_small/fold0/fold.json").exists()


def test_pseudo_needs_a_test_file(tmp_path, dacon_dir, capsys):
    assert main(["pseudo", *SMALL, "--data-dir", str(dacon_dir), "--root", str(tmp_path)]) == 2
    assert "test.csv: not found; pseudo-labelling needs the unlabelled test data" in capsys.readouterr().err


def test_embedding_an_unknown_column_is_a_config_error():
    with pytest.raises(ConfigError, match="embed column 'font' is not an extra column; use one of \\['letter'\\]"):
        _config('train.embed=["font"]')


def test_cosine_warmup_is_one_cycle_shaped():
    """From learning_rate / 25 up to learning_rate over the warm-up epochs, then cosine down to 0 at the last step."""
    hyper = _config("train.lr_schedule='cosine'", "train.epochs=5", "train.warmup_epochs=2", "train.learning_rate=0.01").hyper("cnn_small")
    schedule, steps = fitting.cosine_schedule(hyper, 10), 10
    rates = np.array([float(schedule(step)) for step in range(5 * steps + 1)])
    np.testing.assert_allclose(rates[[0, 2 * steps, 5 * steps]], [0.01 / 25, 0.01, 0.0], atol=1e-7)
    assert np.all(np.diff(rates[: 2 * steps + 1]) > 0) and np.all(np.diff(rates[2 * steps:]) < 0)
    np.testing.assert_allclose(rates[int(3.5 * steps)], 0.005, rtol=1e-5)  # half-way down the cosine: half the peak
    plain = fitting.cosine_schedule(hyper.model_copy(update={"warmup_epochs": 0}), steps)
    assert float(plain(0)) == pytest.approx(0.01) and float(plain(5 * steps)) == pytest.approx(0.0, abs=1e-9)


def test_a_warmup_as_long_as_training_is_a_config_error():
    with pytest.raises(ConfigError, match="warmup_epochs 5 must be below epochs 5"):
        _config("train.lr_schedule='cosine'", "train.epochs=5", "train.warmup_epochs=5")


def test_predict_tta_refuses_arrays_without_a_batch_size():
    """The views are drawn per batch: arrays without a batch size could not reproduce train's predictions."""
    with pytest.raises(ValueError, match="pass batch_size with a dict of arrays"):
        augment.predict_tta(None, {"image": np.zeros((2, 28, 28, 1), np.float32)}, Augment(shift=0.1), 2, seed=0)
