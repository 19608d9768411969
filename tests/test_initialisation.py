"""airbench's initialisations (Jordan, 2024): the frozen whitening convolution and identity (Dirac) convolutions."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from compkit import fitting
from compkit.backbones import build_model
from compkit.initialisation import WHITENING_EPS, image_patches, whitening_sample
from compkit.cli import main
from compkit.config import Paths
from compkit.data import load_train
from compkit.errors import CompkitError
from compkit.hyper import Hyper
from conftest import REPO, dacon_config

SMALL = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--set", "folds.n_splits=2", "--config-dir", str(REPO / "configs")]


def _images(dacon_dir, rows: int) -> np.ndarray:
    """(rows, 28, 28, 1) uint8: the first DACON training images."""
    return load_train(dacon_dir, dacon_config().competition).images[:rows]


def test_the_whitening_layer_whitens_the_patches_of_its_sample(dacon_dir):
    """On the images it was fitted to, the layer's 2 x 2 x 1 = 4 outputs of each patch are uncorrelated, each of
    (uncentred) variance eigenvalue / (eigenvalue + eps) of the patch covariance (1 but for the eigenvalue floor), and
    the other 4 outputs are their negatives."""
    sample = _images(dacon_dir, 500)
    model = build_model("cnn_small", [28, 28, 1], 10, Hyper(whiten=2), sample=sample)
    kernel = model.get_layer("whiten").get_weights()[0]
    assert kernel.shape == (2, 2, 1, 8) and not model.get_layer("whiten").trainable
    patches = image_patches(sample.astype(np.float32) / 255, 2)
    outputs = patches @ kernel.reshape(4, 8)
    covariance = outputs[:, :4].T @ outputs[:, :4] / len(outputs)
    eigenvalues = np.linalg.eigvalsh(patches.T @ patches / len(patches))[::-1]  # largest first, as the filters
    np.testing.assert_allclose(covariance, np.diag(eigenvalues / (eigenvalues + WHITENING_EPS)), atol=1e-4)
    np.testing.assert_array_equal(outputs[:, 4:], -outputs[:, :4])


def test_dirac_convolutions_start_as_identities():
    """With dirac, every 3x3 convolution whose filters are at least its inputs passes its first channels through."""
    model = build_model("cnn_small", [28, 28, 1], 10, Hyper(dirac=True, width=0.25))
    square = [layer for layer in model.get_layer("backbone").layers
              if isinstance(layer, keras.layers.Conv2D) and layer.kernel.shape[2] == layer.kernel.shape[3]]
    assert len(square) == 3  # the second conv of each block: 8 -> 8, 16 -> 16, 32 -> 32
    x = np.random.default_rng(0).normal(size=(2, 7, 7, square[0].kernel.shape[2])).astype(np.float32)
    np.testing.assert_allclose(np.asarray(square[0](x)), x, atol=1e-6)
    plain = build_model("cnn_small", [28, 28, 1], 10, Hyper(width=0.25))
    first = [layer for layer in plain.get_layer("backbone").layers if isinstance(layer, keras.layers.Conv2D)][1]
    assert not np.allclose(np.asarray(first(x)), x, atol=1e-2)


def test_whiten_and_dirac_refuse_keras_applications_backbones_and_dirac_refuses_weights():
    with pytest.raises(CompkitError, match=r"backbones.mobilenetv3small: whiten and dirac .*\[backbones.<name>\] of cnn_small, resnet_small, airbench"):
        build_model("mobilenetv3small", [32, 32, 3], 10, Hyper(dirac=True))
    with pytest.raises(CompkitError, match=r"dirac initialises a backbone trained from scratch.*drop one of them"):
        build_model("cnn_small", [28, 28, 1], 10, Hyper(dirac=True, weights="model.keras"))


@pytest.mark.slow
def test_a_whitened_model_trains_with_its_layer_frozen_and_reloads(tmp_path, dacon_dir):
    """A fold trained with whiten = 2 and dirac (2 epochs, quarter width): the whitening kernel is the one fitted
    to the fold's training rows before training, unchanged by it, and the saved model predicts the same after a reload."""
    paths = Paths.for_competition("dacon-cv-2020", tmp_path, dacon_dir)
    assert main(["folds", *SMALL, "--data-dir", str(dacon_dir), "--root", str(tmp_path)]) == 0
    config = dacon_config("folds.n_splits=2", "train.epochs=2", "train.width=0.25", "train.whiten=2", "train.dirac=true")
    hyper, data = config.hyper("cnn_small"), fitting.fold_data(config, paths, 0)
    fitted = build_model("cnn_small", config.competition.image_shape, 10, hyper, fitting.vocabularies(data.train, hyper),
                         whitening_sample(data.train.images, data.fit, 2)).get_layer("whiten").get_weights()[0]
    model, history = fitting.fit(config, hyper, "cnn_small", data, 7, "[whiten test]")
    assert len(history) == 2 and history["val_accuracy"].iloc[-1] > 0.15  # it learns: chance is 0.10
    np.testing.assert_allclose(model.get_layer("whiten").get_weights()[0], fitted, rtol=1e-6)
    model.save(tmp_path / "model.keras")
    inputs = fitting.model_inputs(data.train, data.val[:16], hyper)
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "model.keras").predict(inputs, verbose=0),
                               model.predict(inputs, verbose=0), atol=1e-5)
