"""The GPU's dtype policies on this CPU: every augmentation computes in float32 under float32, mixed_float16 and
mixed_bfloat16; a fit and TTA predict per policy on real DACON rows; every gpu-preset backbone trains a step at its
minimum input size under mixed_float16 through the resize path; saved models reload in a float32 process."""

from __future__ import annotations

import subprocess
import sys
import time
from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf

from compkit import augment, fitting
from compkit.backbones import BACKBONES, load_model
from compkit.config import Augment, load_config
from compkit.data import load_train
from conftest import REPO, dacon_config

POLICIES = ["float32", "mixed_float16", "mixed_bfloat16"]
AUGMENTS = {  # each alone (geometric defaults off)
    "shift": {"shift": 0.1}, "rotation": {"rotation": 10.0}, "zoom": {"zoom": 0.2}, "shear": {"shear": 0.2},
    "elastic": {"elastic": 0.5}, "erasing": {"erasing": 1.0}, "mixup": {"mixup": 0.4}, "cutmix": {"cutmix": 1.0},
}
EVERY_AUGMENT = {k: v for a in AUGMENTS.values() for k, v in a.items()}
GPU_BACKBONES = load_config("dacon-cv-2020", "gpu", [], REPO / "configs").train.backbones


@pytest.fixture(scope="module")
def dacon_train(dacon_dir):
    return load_train(dacon_dir, load_config("dacon-cv-2020", "smoke", [], REPO / "configs").competition)


@pytest.fixture
def policy():
    """Sets the global dtype policy for one test; float32 again afterwards."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


_config = partial(dacon_config, "train.epochs=1", "train.width=0.25", "train.batch_size=16")


def _fold(dacon_train, n_fit: int, n_val: int) -> fitting.FoldData:
    rows = np.arange(n_fit + n_val)
    return fitting.FoldData(train=dacon_train, test=None, fit=rows[:n_fit], val=rows[n_fit:], held=rows[n_fit:],
                          targets=np.eye(10, dtype=np.float32)[dacon_train.labels], pseudo=np.array([], int),
                          pseudo_targets=np.zeros((0, 10), np.float32))


@pytest.mark.parametrize("name", [*AUGMENTS, "tta"])
@pytest.mark.parametrize("dtype_policy", POLICIES)
def test_augmentation_stays_float32_0_255_under_every_policy(dtype_policy, name, dacon_train, policy):
    """The batches of the real tf.data pipeline (or the TTA views) are float32 pixels in 0-255 and changed;
    labels still sum to 1. Under mixed_float16, cutmix and elastic failed (float16 ranges), mixup mixed dtypes."""
    policy(dtype_policy)
    images = dacon_train.images[:32].astype(np.float32)
    if name == "tta":
        views = augment.geometric(Augment(shift=0.1, rotation=10.0, zoom=0.1), seed=0)(images, training=True)
        assert views.dtype == tf.float32
        out, labels = np.asarray(views), np.ones((32, 1), np.float32)
    else:
        hyper = _config().hyper("cnn_small").model_copy(update={"batch_size": 32, "augment": Augment(**{"shift": 0, "rotation": 0, **AUGMENTS[name]})})
        ds = fitting._dataset({"image": images}, np.eye(10, dtype=np.float32)[dacon_train.labels[:32]], hyper, seed=0)
        assert ds.element_spec[0]["image"].dtype == tf.float32 and ds.element_spec[1].dtype == tf.float32
        batch, labels = next(iter(ds))
        out, labels = np.asarray(batch["image"]), np.asarray(labels)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255
    np.testing.assert_allclose(labels.sum(axis=1), 1, atol=1e-5)
    assert not np.allclose(np.sort(out.sum(axis=(1, 2, 3))), np.sort(images.sum(axis=(1, 2, 3))))  # augmented


# Reloads each saved model in a fresh process, whose global policy is float32, and predicts the saved inputs.
RELOAD = """
import sys, numpy as np
from compkit.backbones import load_model
folder = sys.argv[1]
for name in sys.argv[2:]:
    inputs = {"image": np.load(f"{folder}/images.npy")}
    np.save(f"{folder}/{name}-fresh.npy", load_model(f"{folder}/{name}.keras").predict(inputs, verbose=0))
"""


@pytest.mark.slow
def test_fit_and_tta_predict_under_each_policy_and_reload_in_float32(dacon_train, policy, tmp_path):
    """Per policy, every augmentation on (and the mask channels, as the DACON cpu preset trains): the model computes
    in the policy, takes float32 0-255 images, outputs float32 probabilities that sum to 1, and its saved file
    predicts the same in a fresh float32 process."""
    data = _fold(dacon_train, 32, 16)
    inputs = fitting.model_inputs(dacon_train, data.val, _config().hyper("cnn_small"))
    np.save(tmp_path / "images.npy", inputs["image"])
    expected = {}
    for dtype_policy in POLICIES:
        config = _config(f"train.precision='{dtype_policy}'", "train.masks=[4, 140]", "train.tta=2",
                         *(f"train.augment.{k}={v}" for k, v in EVERY_AUGMENT.items()))
        hyper = config.hyper("cnn_small")
        model, history = fitting.fit(config, hyper, "cnn_small", data, 0, f"[{dtype_policy}]")
        assert model.dtype_policy.name == dtype_policy and model.get_layer("proba").dtype_policy.name == "float32"
        assert model.inputs[0].dtype == "float32" and np.isfinite(history["loss"]).all()
        proba = augment.predict_tta(model, inputs, hyper.augment, hyper.tta, seed=0, batch_size=hyper.batch_size)
        assert proba.dtype == np.float32 and proba.shape == (16, 10)
        np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
        model.save(tmp_path / f"{dtype_policy}.keras")
        expected[dtype_policy] = model.predict(inputs, verbose=0)
    fresh = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path), *POLICIES], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    for dtype_policy in POLICIES:
        np.testing.assert_allclose(np.load(tmp_path / f"{dtype_policy}-fresh.npy"), expected[dtype_policy], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", GPU_BACKBONES)
def test_gpu_backbone_trains_a_step_at_min_size_under_mixed_float16(backbone, dacon_train, policy, tmp_path):
    """One step (8 real rows, batch 8) through the resize path (28 px -> the backbone's minimum), then model.keras reloads.

    keras.applications run eagerly: tracing their train and test graphs on a CPU took 30-80 s each for one step;
    the graph path of one of them under mixed_float16 is test_devices' gpu-preset pipeline (efficientnetb0).
    """
    size = BACKBONES[backbone].min_size
    assert size != 28  # so the Resizing layer is in the model
    eager = bool(BACKBONES[backbone].constructor)
    config = _config("train.precision='mixed_float16'", "train.batch_size=8", f"train.input_size={size}", "train.dropout=0.0",
                     f"train.run_eagerly={str(eager).lower()}")
    hyper, data = config.hyper(backbone), _fold(dacon_train, 8, 4)
    start = time.perf_counter()
    model, history = fitting.fit(config, hyper, backbone, data, 0, f"[{backbone} {size}px]")
    assert model.dtype_policy.name == "mixed_float16" and np.isfinite(history["loss"]).all()
    assert any(isinstance(layer, keras.layers.Resizing) and layer.height == size for layer in model.layers)
    inputs = fitting.model_inputs(dacon_train, data.val, hyper)
    proba = np.asarray(model(inputs, training=False))  # eager calls: no predict function to trace for 4 rows
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    model.save(tmp_path / "model.keras")
    np.testing.assert_allclose(np.asarray(load_model(tmp_path / "model.keras")(inputs, training=False)), proba, atol=1e-6)
    print(f"{backbone} at {size}px: {time.perf_counter() - start:.1f}s")
    keras.backend.clear_session()
