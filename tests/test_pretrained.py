"""Pretrained weights, offline: real weights files, the head / fine-tune phases, each family's preprocess_input,
the new keras.applications backbones at their minimum size, and an image-folder competition of real RGB photos
(patches of scikit-image's and scikit-learn's packaged photos, labelled by photo) run end to end from a weights file."""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compkit.tasks import for_config
from compkit import finetune, fitting
from compkit.backbones import BACKBONES, _preprocess_layer, build_backbone, build_model, load_model
from compkit.cli import main
from compkit.config import ConfigError, Hyper, Paths, load_config
from compkit.data import load_train
from compkit.errors import CompkitError
from compkit.tracking import read_run
from conftest import REPO, write_image_competition

NEW = ["efficientnetv2b0", "convnexttiny", "resnet50v2", "mobilenetv3small"]


def _photos() -> dict[str, np.ndarray]:
    """Real RGB photos shipped with scikit-image and scikit-learn, by name: (H, W, 3) uint8."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    return {"astronaut": skimage.data.astronaut(), "cat": skimage.data.chelsea(), "coffee": skimage.data.coffee(),
            "rocket": skimage.data.rocket(), "flower": load_sample_image("flower.jpg")}


def _patches(photo: np.ndarray, n: int, side: int, columns: tuple[float, float], rng) -> np.ndarray:
    """``n`` random (side, side, 3) crops of ``photo`` whose left edge lies in the ``columns`` fraction of its width."""
    height, width, _ = photo.shape
    lo, hi = int(columns[0] * width), int(columns[1] * width) - side
    return np.stack([photo[y:y + side, x:x + side] for y, x in zip(rng.integers(0, height - side, n), rng.integers(lo, hi, n))])


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# --- the rule ------------------------------------------------------------------------------------------------

def test_dacon_refuses_pretrained_weights_before_training(tmp_path, dacon_dir, capfd):
    argv = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--backbones", "resnet50", "--set", "backbones.resnet50.input_size=32",
            "--set", "backbones.resnet50.weights='imagenet'", "--data-dir", str(dacon_dir), "--root", str(tmp_path),
            "--config-dir", str(REPO / "configs")]
    assert main(["all", *argv]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "competition.pretrained_allowed is false" in err[0] and "backbones.resnet50.weights" in err[0]
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_weights_config_errors_name_the_key(config_dir):
    allowed = ["competition.pretrained_allowed=true", "train.backbones=['cnn_small']"]
    with pytest.raises(ConfigError, match="cnn_small is compkit's own, with no ImageNet weights"):
        load_config("dacon-cv-2020", "smoke", [*allowed, "backbones.cnn_small.weights='imagenet'"], config_dir)
    with pytest.raises(ConfigError, match=r"freeze_epochs, unfreeze_layers, backbone_lr_scale and finetune_batchnorm need backbones.cnn_small.weights"):
        load_config("dacon-cv-2020", "smoke", [*allowed, "train.freeze_epochs=1"], config_dir)
    with pytest.raises(ConfigError, match="expected 'imagenet' or a .weights.h5, .h5 or .keras file"):
        load_config("dacon-cv-2020", "smoke", [*allowed, "train.weights='model.ckpt'"], config_dir)
    config = load_config("dacon-cv-2020", "smoke", [*allowed, "train.weights='w.weights.h5'", "train.freeze_epochs=1",
                                                    "tune.space.backbone_lr_scale={low=0.01, high=1.0, log=true}"], config_dir)
    assert config.hyper("cnn_small").freeze_epochs == 1 and "backbone_lr_scale" in config.tune.space_for("cnn_small")


# --- weights files -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cnn_small", "mobilenetv3small"])
def test_a_saved_backbone_loads_back_tensor_for_tensor(tmp_path, name):
    shape = (32, 32, 3)
    saved = build_backbone(name, shape, 0.5)
    saved.save_weights(tmp_path / "backbone.weights.h5")
    loaded = build_backbone(name, shape, 0.5, str(tmp_path / "backbone.weights.h5"))
    assert _same(saved.get_weights(), loaded.get_weights())  # BatchNorm moving statistics included
    assert not _same(saved.get_weights(), build_backbone(name, shape, 0.5).get_weights())  # a fresh one differs
    with pytest.raises(CompkitError, match=r"missing.weights.h5 not found"):
        build_backbone(name, shape, 0.5, str(tmp_path / "missing.weights.h5"))
    other = "resnet_small" if name == "cnn_small" else "cnn_small"
    with pytest.raises(CompkitError, match=rf"backbone.weights.h5: not weights of {other}"):
        build_backbone(other, shape, 0.5, str(tmp_path / "backbone.weights.h5"))


def test_imagenet_offline_says_where_to_put_the_file():
    """No internet here: Keras' download fails and the error names the file and ~/.keras/models."""
    try:
        build_backbone("mobilenetv3small", (32, 32, 3), 1.0, "imagenet")
    except CompkitError as exc:
        message = str(exc)
    else:
        pytest.skip("the ImageNet file is cached or downloadable here: nothing offline to test")
    assert "\n" not in message
    assert "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5" in message
    assert ".keras/models/" in message and "backbones.mobilenetv3small.weights" in message


# --- preprocessing -------------------------------------------------------------------------------------------

def test_pretrained_input_is_each_familys_preprocess_input_on_real_photos(tmp_path):
    rng = np.random.default_rng(0)
    images = np.concatenate([_patches(p, 4, 32, (0, 1), rng) for p in _photos().values()]).astype(np.float32)
    for spec in (b for b in BACKBONES.values() if b.family):
        expected = getattr(keras.applications, spec.family).preprocess_input(images.copy())
        np.testing.assert_allclose(np.asarray(_preprocess_layer()(spec.family)(images)), expected, rtol=1e-6, atol=1e-4, err_msg=spec.family)
    # wired into a model: densenet121 (torch mode: per-channel mean and std) sees preprocess_input of the RGB pixels
    build_backbone("densenet121", (32, 32, 3), 1.0).save_weights(tmp_path / "densenet.weights.h5")
    for weights, expected in (("", images / 255), (str(tmp_path / "densenet.weights.h5"), keras.applications.densenet.preprocess_input(images.copy()))):
        model = build_model("densenet121", [32, 32, 3], 5, Hyper(weights=weights))
        feeding = model.layers[model.layers.index(model.get_layer("backbone")) - 1]  # the layer whose output the backbone sees
        seen = keras.Model(model.inputs, feeding.output)({"image": images})
        np.testing.assert_allclose(np.asarray(seen), expected, rtol=1e-6, atol=1e-4)


# --- phases --------------------------------------------------------------------------------------------------

def _dacon_rows(config, dacon_dir, n_fit: int, n_val: int) -> fitting.FoldData:
    data = load_train(dacon_dir, config.competition)
    rows = np.random.default_rng(0).permutation(len(data.ids))
    return fitting.FoldData(train=data, test=None, fit=rows[:n_fit], val=rows[n_fit:n_fit + n_val], held=rows[:0],
                          targets=np.eye(10, dtype=np.float32)[data.labels], pseudo=rows[:0], pseudo_targets=np.zeros((0, 10), np.float32))


class _Snapshots(keras.callbacks.Callback):
    """The backbone's and the head's weights at the start and at the end of each phase."""

    def __init__(self):
        super().__init__()
        self.backbone, self.head = [], []

    def _take(self):
        self.names = [w.path.rsplit("/", 1)[-1] for w in self.model.get_layer("backbone").weights]
        self.backbone.append(self.model.get_layer("backbone").get_weights())
        self.head.append(self.model.get_layer("proba").get_weights())

    def on_train_begin(self, logs=None):
        if not self.backbone:
            self._take()

    def on_train_end(self, logs=None):
        self._take()


@pytest.mark.slow
def test_freeze_epochs_train_the_head_then_fine_tune_the_backbone(tmp_path, dacon_dir, config_dir):
    build_backbone("cnn_small", (28, 28, 1), 0.25).save_weights(tmp_path / "pretrained.weights.h5")
    config = load_config("dacon-cv-2020", "smoke", ["competition.pretrained_allowed=true", "train.backbones=['cnn_small']",
                                                   "train.width=0.25", "train.epochs=2", "train.patience=2", "train.batch_size=32",
                                                   f"train.weights='{tmp_path / 'pretrained.weights.h5'}'", "train.freeze_epochs=1",
                                                   "train.backbone_lr_scale=0.1"], config_dir)
    hyper, snapshots = config.hyper("cnn_small"), _Snapshots()
    keras.utils.set_random_seed(0)
    _, history = fitting.fit(config, hyper, "cnn_small", _dacon_rows(config, dacon_dir, 256, 64), 0, "[freeze test]", [snapshots])
    (start, after_head, after_tune), (head0, head1, head2) = snapshots.backbone, snapshots.head
    is_bn = [name in ("moving_mean", "moving_variance") for name in snapshots.names]
    assert sum(is_bn) == 12  # 6 BatchNorm layers
    assert _same(start, after_head)  # frozen, moving statistics included
    assert not _same(head0, head1) and not _same(head1, head2)  # the head learns in both phases
    changed = [not np.array_equal(a, b) for a, b in zip(after_head, after_tune)]
    assert any(changed) and not any(c for c, bn in zip(changed, is_bn) if bn)  # fine-tuned; BatchNorm stays in inference mode
    assert history["phase"].tolist() == ["head", "fine-tune"] and history["epoch"].tolist() == [1, 2]


def test_phases_split_the_epochs_and_unfreeze_the_top_layers():
    hyper = Hyper(weights="x.weights.h5", epochs=5, freeze_epochs=2, unfreeze_layers=4)
    assert [(p.name, p.start, p.end) for p in finetune.phases(hyper)] == [("head", 0, 2), ("fine-tune", 2, 5)]
    assert [p.name for p in finetune.phases(hyper.model_copy(update={"freeze_epochs": 0}))] == ["fine-tune"]
    assert [p.name for p in finetune.phases(Hyper(epochs=5))] == ["scratch"]
    model = build_model("cnn_small", [28, 28, 1], 10, Hyper(width=0.25))
    layers = model.get_layer("backbone").layers
    finetune.set_phase(model, hyper, finetune.phases(hyper)[0])
    assert not model.get_layer("backbone").trainable_weights and model.get_layer("proba").trainable
    finetune.set_phase(model, hyper, finetune.phases(hyper)[1])
    trainable = [layer.name for layer in layers if layer.trainable and layer.weights]
    top = [layer.name for layer in layers[-4:] if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    assert trainable == top and len(top) == 1  # the last conv; its BatchNorm stays frozen
    finetune.set_phase(model, hyper.model_copy(update={"finetune_batchnorm": True}), finetune.phases(hyper)[1])
    assert [layer.name for layer in layers if layer.trainable and layer.weights] == [layer.name for layer in layers[-4:] if layer.weights]


@pytest.mark.slow
def test_the_backbone_learns_at_backbone_lr_scale_of_the_head_rate():
    """One Adam step from the same weights: the backbone moves 0.1 x as far with backbone_lr_scale = 0.1, the head as far."""
    hyper = Hyper(weights="x.weights.h5", backbone_lr_scale=0.1, dropout=0.0, learning_rate=1e-3)
    images = np.concatenate([_patches(p, 8, 32, (0, 1), np.random.default_rng(1)) for p in _photos().values()]).astype(np.float32)
    labels = np.eye(5, dtype=np.float32)[np.repeat(np.arange(5), 8)]
    moved = {}
    for scale in (1.0, 0.1):
        keras.utils.set_random_seed(0)  # the same initial weights for both
        model = build_model("cnn_small", [32, 32, 3], 5, Hyper(width=0.25))
        start = {part: model.get_layer(part).get_weights() for part in ("backbone", "proba")}
        phase = finetune.Phase(finetune.FINE_TUNE, 0, 1)
        finetune.set_phase(model, hyper, phase)
        optimizer = finetune.phase_optimizer(keras.optimizers.Adam(1e-3), model, hyper.model_copy(update={"backbone_lr_scale": scale}), phase)
        model.compile(optimizer=optimizer, loss="categorical_crossentropy")
        model.train_on_batch({"image": images}, labels)
        moved[scale] = {part: np.concatenate([np.abs(a - b).ravel() for a, b in zip(model.get_layer(part).get_weights(), before)])
                        for part, before in start.items()}
    kernels = moved[1.0]["backbone"] > 1e-6  # Adam's first step is about lr x sign(gradient)
    assert kernels.sum() > 1000
    np.testing.assert_allclose(moved[0.1]["backbone"][kernels] / moved[1.0]["backbone"][kernels], 0.1, rtol=0.05)
    np.testing.assert_allclose(moved[0.1]["proba"], moved[1.0]["proba"], rtol=1e-5)


# --- new backbones -------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_new_backbone_trains_a_step_at_its_true_minimum_size(name, dacon_dir, config_dir):
    """Refused one pixel below the minimum (by Keras itself and by the config), one real training step at it.

    The step runs eagerly: tracing these graphs (XLA included) costs minutes on 2 CPU cores, eager seconds; the
    compiled fit loop is the same code for every backbone and is covered by the tests above.
    """
    spec = BACKBONES[name]
    with pytest.raises(ValueError, match=f"at least {spec.min_size}"):  # Keras' own floor: the minimum is true
        getattr(keras.applications, spec.constructor)(include_top=False, weights=None, input_shape=(spec.min_size - 1,) * 2 + (3,))
    with pytest.raises(ConfigError, match=f"needs input_size >= {spec.min_size}"):
        load_config("dacon-cv-2020", "smoke", [f"train.backbones=['{name}']", f"train.input_size={spec.min_size - 1}"], config_dir)
    config = load_config("dacon-cv-2020", "smoke", [f"train.backbones=['{name}']", f"train.input_size={spec.min_size}"], config_dir)
    hyper, data = config.hyper(name), _dacon_rows(config, dacon_dir, 8, 0)
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = build_model(name, config.competition.image_shape, 10, hyper)
    assert model.get_layer("backbone").input.shape[1:] == (spec.min_size, spec.min_size, 3)  # gray 28 px -> RGB at the minimum
    before = model.get_layer("backbone").get_weights()
    model.compile(optimizer=fitting._optimizer(hyper, 1), loss=for_config(config).loss(hyper.label_smoothing), run_eagerly=True)
    loss = model.train_on_batch(fitting.model_inputs(data.train, data.fit, hyper), data.targets[data.fit])
    assert np.isfinite(loss) and not _same(before, model.get_layer("backbone").get_weights())
    print(f"{name}: built and trained one step at {spec.min_size} px in {time.perf_counter() - start:.1f}s")


# --- a real RGB competition, end to end from a weights file ---------------------------------------------------

PHOTOS = """
[competition]
name = "photos"
layout = "image_folder"
train_file = "labels.csv"
train_images = "train"
test_images = "test"
id_column = "file"
target_column = "photo"
classes = ["astronaut", "cat", "coffee", "rocket", "flower"]
image_shape = [32, 32, 3]
metric = "macro_f1"
submission_columns = ["file", "photo"]
pretrained_allowed = true

[folds]
n_splits = 2
stratify = ["photo"]
"""


def _photo_competition(root) -> tuple:
    """Patches of 5 real photos, labelled by photo, imbalanced (60 to 12 per class); train from the left 70% of each
    photo, test (with a solution.csv) from the right 30%. Returns the data and config folders."""
    data, rng = root / "data", np.random.default_rng(0)
    rows, tests = [], []
    for split in ("train", "test"):
        (data / split).mkdir(parents=True)
    for (name, photo), n in zip(_photos().items(), (60, 45, 30, 20, 12)):
        for split, count, columns, out in (("train", n, (0, 0.7), rows), ("test", 10, (0.7, 1), tests)):
            for patch in _patches(photo, count, 32, columns, rng):
                file = f"{split}_{len(out):04d}.png"  # opaque ids: the photo is the label
                Image.fromarray(patch).save(data / split / file)
                out.append((file, name))
    return write_image_competition(root, "photos", PHOTOS, ["file", "photo"], rows, tests, "cat")


@pytest.mark.slow
def test_rgb_photos_fine_tune_from_a_previous_runs_model_end_to_end(tmp_path):
    """Run 1 trains cnn_small from scratch; its model.keras is the weights file of run 2 (head, then fine-tune),
    which runs the whole smoke pipeline; the backbone taken from the file is that model's, tensor for tensor."""
    data, configs = _photo_competition(tmp_path)
    fast = ["--competition", "photos", "--preset", "smoke", "--config-dir", str(configs), "--data-dir", str(data), "--backbones", "cnn_small",
            "--set", "train.width=0.5", "--set", "train.process_per_fold=false"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["folds", *fast, "--root", str(first)]) == 0 and main(["train", *fast, "--root", str(first), "--set", "train.epochs=1"]) == 0
    source = first / "runs/photos/cnn_small/fold0/model.keras"

    taken = build_backbone("cnn_small", (32, 32, 3), 0.5, str(source))
    assert _same(taken.get_weights(), load_model(source).get_layer("backbone").get_weights())

    tuned = ["--set", f"backbones.cnn_small.weights='{source}'", "--set", "backbones.cnn_small.freeze_epochs=1", "--set", "train.epochs=2",
             "--set", "backbones.cnn_small.backbone_lr_scale=0.3"]
    assert main(["all", *fast, *tuned, "--root", str(second)]) == 0
    for k in range(2):
        history = pd.read_csv(second / f"runs/photos/cnn_small/fold{k}/history.csv")
        assert history["phase"].tolist() == ["head", "fine-tune"]
    board = pd.read_csv(second / "submissions/photos/leaderboard.csv")
    assert len(board) == 1 and 0 <= board.loc[0, "private"] <= 1
    paths = Paths.for_competition("photos", second, data)
    assert load_train(paths.data, load_config("photos", None, [], configs).competition).images.shape == (167, 32, 32, 3)
    trained = [read_run(d) for d in sorted((second / "wandb").glob("offline-run-*"))]
    phases = [[h["epoch/phase"] for h in r["history"] if "epoch/phase" in h] for r in trained if r["job_type"] == "train"]
    assert phases == [["head", "fine-tune"]] * 2
