"""Weight decay shrinks kernels only: biases and BatchNorm gamma/beta are excluded (timm's ndim <= 1 rule)."""

import numpy as np
import pytest

from compkit.backbones import build_model
from compkit.config import load_config
from compkit.fitting import _optimizer, no_decay_variables
from conftest import REPO


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_one_decay_step_shrinks_kernels_and_leaves_biases_and_batchnorm(optimizer):
    import keras

    config = load_config("dacon-cv-2020", "smoke", [f"train.optimizer='{optimizer}'", "train.weight_decay=0.1",
                                                     "train.learning_rate=0.5", "train.lr_schedule='constant'"], REPO / "configs")
    hyper = config.hyper("cnn_small")
    model = build_model("cnn_small", config.competition.image_shape, 10, hyper)
    opt = _optimizer(hyper, 10)
    opt.exclude_from_weight_decay(var_list=no_decay_variables(model))
    before = [v.numpy().copy() for v in model.trainable_variables]
    opt.apply_gradients([(keras.ops.zeros_like(v), v) for v in model.trainable_variables])  # zero gradients: decay only
    names = [v.path for v in model.trainable_variables]
    assert any("gamma" in n for n in names) and any("bias" in n for n in names)
    for name, old, var in zip(names, before, model.trainable_variables):
        if old.ndim <= 1:
            np.testing.assert_array_equal(var.numpy(), old, err_msg=name)
        else:  # decoupled decay: w <- w - lr * wd * w
            np.testing.assert_allclose(var.numpy(), old * (1 - 0.5 * 0.1), rtol=1e-5, err_msg=name)
