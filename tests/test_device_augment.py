"""Augmentation on the device (``train.augment_on = "device"``): per-transform checks on real images (DACON letters
and digits, scikit-image photos) under every dtype policy, XLA, seeds, the pipeline that only gathers bytes, and a
deterministic streamed fit whose saved model predicts without augmentation."""

from __future__ import annotations

from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf

from compkit import augment, devices, fitting
from compkit.config import Augment, ConfigError, load_config
from compkit.data import load_train
from conftest import REPO, dacon_config

POLICIES = ["float32", "mixed_float16", "mixed_bfloat16"]
SIZE = 64  # photos are resized to SIZE x SIZE
OFF = {"shift": 0.0, "rotation": 0.0}  # the defaults' geometric transforms off


@pytest.fixture(scope="module")
def dacon_train(dacon_dir):
    return load_train(dacon_dir, load_config("dacon-cv-2020", "smoke", [], REPO / "configs").competition)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """(4, SIZE, SIZE, 3) uint8: scikit-image's astronaut, coffee, chelsea and rocket photos."""
    import skimage.data
    from skimage.transform import resize

    names = ("astronaut", "coffee", "chelsea", "rocket")
    return np.stack([(resize(getattr(skimage.data, n)(), (SIZE, SIZE), anti_aliasing=True) * 255).astype(np.uint8) for n in names])


@pytest.fixture
def policy():
    """Sets the global dtype policy for one test; float32 again afterwards."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def _apply(images: np.ndarray, targets: np.ndarray, aug: Augment, seed=(0, 1)):
    """:func:`augment.draw` then :func:`augment.apply` compiled by XLA (as a GPU's training step is): (images, targets, params)."""
    params = augment.draw(aug, len(images), images.shape[1:3], tf.constant(seed, tf.int64))
    step = tf.function(lambda x, y: augment.apply(x, y, aug), jit_compile=True)
    out, mixed = step({"image": images, augment.PARAMS: params}, targets)
    assert out["image"].dtype == tf.float32 and augment.PARAMS not in out
    return np.asarray(out["image"]), np.asarray(mixed), {k: np.asarray(v) for k, v in params.items()}


def _best_shift(before: np.ndarray, after: np.ndarray, reach: int) -> tuple[int, int, float]:
    """The whole-pixel shift (dy, dx), |dy|, |dx| <= reach, that best maps ``before`` onto ``after`` where both overlap, and its mean error."""
    h, w = before.shape[:2]
    best = (0, 0, np.inf)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            a = after[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
            b = before[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            error = float(np.abs(a - b.astype(np.float32)).mean())
            best = min(best, (dy, dx, error), key=lambda t: t[2])
    return best


@pytest.mark.parametrize("dtype_policy", POLICIES)
def test_shift_moves_pixels_by_at_most_the_fraction(dtype_policy, photos, dacon_train, policy):
    """shift = 0.1, nearest: every photo and letter comes out as itself moved by whole pixels, at most 0.1 x its side
    (searched up to twice that), and moved at all for most; float32 pixels 0-255 under every policy."""
    policy(dtype_policy)
    aug = Augment(shift=0.1, rotation=0.0, interpolation="nearest")
    for images in (photos, dacon_train.images[:8]):
        out, _, params = _apply(images, np.zeros((len(images), 1), np.float32), aug)
        side, limit = images.shape[1], 0.1 * images.shape[1]
        moves = [_best_shift(before, after, int(2 * limit) + 1) for before, after in zip(images, out)]
        assert all(error < 1e-3 for _, _, error in moves), moves
        assert all(abs(dy) <= limit + 0.5 and abs(dx) <= limit + 0.5 for dy, dx, _ in moves), moves
        assert sum(dy != 0 or dx != 0 for dy, dx, _ in moves) >= len(images) // 2
        np.testing.assert_allclose(params["warp"][:, [0, 4]], 1)  # no rotation, zoom or shear in the map
        assert out.min() >= 0 and out.max() <= 255 and side == out.shape[1]


@pytest.mark.parametrize("dtype_policy", POLICIES)
def test_rotation_keeps_the_image_mass(dtype_policy, photos, dacon_train, policy):
    """rotation = 10 degrees about the centre, bilinear: the mass (sum of pixels) of each DACON image and of each photo
    inside a centred disc (what a rotation keeps in the frame) stays within 2%, and the pixels did move."""
    policy(dtype_policy)
    ys, xs = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    disc = (np.hypot(ys, xs) < 0.45 * SIZE)[None, :, :, None]
    aug = Augment(shift=0.0, rotation=10.0)
    for images in ((photos * disc).astype(np.uint8), dacon_train.images[:16]):
        out, _, _ = _apply(images, np.zeros((len(images), 1), np.float32), aug)
        mass, kept = images.reshape(len(images), -1).sum(axis=1), out.reshape(len(out), -1).sum(axis=1)
        np.testing.assert_allclose(kept, mass, rtol=0.02)
        assert np.abs(out - images).mean() > 1


@pytest.mark.parametrize("dtype_policy", POLICIES)
def test_cutmix_label_weights_equal_the_pasted_area(dtype_policy, photos, dacon_train, policy):
    """CutMix alone: inside each drawn box the pixels are the partner's, outside the image's own, and the partner's
    label weighs exactly the box's share of the image (one-hot targets, one class per row)."""
    policy(dtype_policy)
    for images in (np.concatenate([photos, photos[::-1]]), dacon_train.images[:16]):
        n = len(images)
        out, mixed, params = _apply(images, np.eye(n, dtype=np.float32), Augment(**OFF, cutmix=1.0), seed=(3, 4))
        perm, boxes = params["cutmix_perm"], params["cutmix_box"].astype(int)
        assert sorted(perm) == list(range(n)) and (boxes[:, 2] - boxes[:, 0]).max() > 0
        for i in range(n):
            y0, x0, y1, x1 = boxes[i]
            mask = np.zeros(images.shape[1:3], bool)
            mask[y0:y1, x0:x1] = True
            np.testing.assert_array_equal(out[i][mask], images[perm[i]][mask])
            np.testing.assert_array_equal(out[i][~mask], images[i][~mask])
            expected = np.zeros(n, np.float32)
            expected[i] += 1 - mask.mean()
            expected[perm[i]] += mask.mean()
            np.testing.assert_allclose(mixed[i], expected, atol=1e-6)


@pytest.mark.parametrize("dtype_policy", POLICIES)
def test_flip_mirrors_about_half_the_images_exactly(dtype_policy, photos, policy):
    """flip alone, on the device (XLA) and by Keras' RandomFlip in the pipeline: each photo comes out as itself or its
    exact left-right mirror, both happen over 32 images, and a TTA view's map flips too."""
    policy(dtype_policy)
    aug, images = Augment(**OFF, flip=True), np.concatenate([photos] * 8)
    device, _, _ = _apply(images, np.zeros((len(images), 1), np.float32), aug)
    pipeline = np.asarray(augment.geometric(aug, seed=3)(tf.cast(images, tf.float32), training=True))
    for out in (device, pipeline):
        mirrored = [np.array_equal(o, i[:, ::-1].astype(np.float32)) for o, i in zip(out, images)]
        kept = [np.array_equal(o, i.astype(np.float32)) for o, i in zip(out, images)]
        assert all(m or k for m, k in zip(mirrored, kept)) and 4 <= sum(mirrored) <= 28
    maps = np.asarray(augment.draw_warp(aug, 32, (SIZE, SIZE), tf.constant((1, 2), tf.int64), crop=False))
    assert 4 <= (maps[:, 0] < 0).sum() <= 28


def test_erasing_and_mixup_on_the_device(photos):
    """erasing = 1: each photo is 0 inside its drawn box and itself outside; mixup: images and one-hot targets are the
    same convex mixture of a row and its partner."""
    out, _, params = _apply(photos, np.zeros((4, 1), np.float32), Augment(**OFF, erasing=1.0))
    for i, (y0, x0, y1, x1) in enumerate(params["erase"].astype(int)):
        assert (y1 - y0) * (x1 - x0) > 0 and not out[i, y0:y1, x0:x1].any()
        np.testing.assert_array_equal(out[i].sum(), photos[i].astype(np.float32).sum() - photos[i, y0:y1, x0:x1].astype(np.float32).sum())
    out, mixed, params = _apply(photos, np.eye(4, dtype=np.float32), Augment(**OFF, mixup=0.4))
    w, perm = params["mixup_weight"][:, None, None, None], params["mixup_perm"]
    np.testing.assert_allclose(out, w * photos + (1 - w) * photos[perm], atol=1e-3)
    np.testing.assert_allclose(mixed.sum(axis=1), 1, atol=1e-6)


def test_draws_are_the_seeds_and_the_pipeline_only_gathers_bytes(dacon_train):
    """The same seed draws the same parameters, another seed others; the device pipeline yields uint8 images as
    gathered plus each batch's parameters, the same batches twice per seed, others in the next epoch."""
    aug = Augment(shift=0.1, rotation=10.0, zoom=0.1, cutmix=1.0)
    a, b, c = (augment.draw(aug, 8, (28, 28), tf.constant(s, tf.int64)) for s in ((1, 2), (1, 2), (1, 3)))
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["warp"], c["warp"])
    hyper = dacon_config().hyper("cnn_small").model_copy(update={"batch_size": 16, "augment": aug})
    rows = np.arange(64)
    elements, load = fitting.stream_rows([(dacon_train, rows)], hyper)
    targets = np.eye(10, dtype=np.float32)[dacon_train.labels[rows]]

    def epochs(ds, n=2):
        return [[(np.asarray(x["image"]), np.asarray(x[augment.PARAMS]["warp"])) for x, _ in ds] for _ in range(n)]

    ds = fitting._dataset(elements, targets, hyper, seed=0, load=load, where="device")
    assert ds.element_spec[0]["image"].dtype == tf.uint8 and set(ds.element_spec[0][augment.PARAMS]) == {"warp", "cutmix_perm", "cutmix_box"}
    first, again = epochs(ds), epochs(fitting._dataset(elements, targets, hyper, seed=0, load=load, where="device"))
    for (img, warp), (img2, warp2) in zip(first[0] + first[1], again[0] + again[1]):
        np.testing.assert_array_equal(img, img2)
        np.testing.assert_array_equal(warp, warp2)
    assert not np.array_equal(first[0][0][1], first[1][0][1])  # the next epoch draws anew
    np.testing.assert_array_equal(np.sort(np.concatenate([i for i, _ in first[0]]).ravel()),
                                  np.sort(dacon_train.images[rows].ravel()))  # the rows' bytes, untouched


@pytest.mark.parametrize("dtype_policy", POLICIES)
def test_random_resized_crop_equals_crop_and_resize_of_its_box(dtype_policy, photos, policy):
    """crop = 0.3 alone: each photo comes out as TensorFlow's own crop_and_resize (bilinear) of the box draw_crop drew,
    stretched over the whole image; every box lies inside the image with 0.3-1 of its area (less only where a side was
    clipped to the image's) and an aspect ratio in 3/4-4/3 (or a clipped side)."""
    policy(dtype_policy)
    aug = Augment(**OFF, crop=0.3)
    seed = tf.constant((3, 4), tf.int64)
    params = augment.draw(aug, len(photos), photos.shape[1:3], seed)
    out = np.asarray(augment.apply({"image": photos, augment.PARAMS: params}, np.zeros((len(photos), 1), np.float32), aug)[0]["image"])
    crop = np.asarray(augment.draw_crop(0.3, len(photos), (SIZE, SIZE), tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_split(seed, 10)[0], 6)))
    ax, bx, ay, by = crop.T
    last = SIZE - 1  # crop_and_resize samples y1 (H-1) + i (y2 - y1) (H-1) / (h-1): the same points as a p + b
    boxes = np.stack([by / last, bx / last, (ay * last + by) / last, (ax * last + bx) / last], axis=1)
    expected = tf.image.crop_and_resize(photos.astype(np.float32), boxes, np.arange(len(photos)), (SIZE, SIZE))
    np.testing.assert_allclose(out, np.asarray(expected), atol=0.05)
    x0, y0 = bx - ax / 2 + 0.5, by - ay / 2 + 0.5  # the box's corner in pixels
    assert (x0 >= -1e-4).all() and (y0 >= -1e-4).all() and (x0 + ax * SIZE <= SIZE + 1e-3).all() and (y0 + ay * SIZE <= SIZE + 1e-3).all()
    clipped = (ax > 1 - 1e-6) | (ay > 1 - 1e-6)
    assert ((ax * ay >= 0.3 - 1e-6) | clipped).all() and (ax * ay <= 1 + 1e-6).all()
    assert ((ax / ay >= 0.75 - 1e-4) & (ax / ay <= 4 / 3 + 1e-4) | clipped).all()
    assert (ax * ay < 0.95).any()  # cropped, not only the whole image


def test_tta_views_never_crop():
    """The crop is training's only: a TTA view's map of an aug with crop alone is the identity."""
    aug = Augment(**OFF, crop=0.3)
    assert augment.warps(aug) and not augment.warps(aug, crop=False)
    maps = np.asarray(augment.draw_warp(aug, 4, (SIZE, SIZE), tf.constant((1, 2), tf.int64), crop=False))
    np.testing.assert_allclose(maps, np.tile([1, 0, 0, 0, 1, 0], (4, 1)), atol=1e-6)


def test_where_augmentation_runs(monkeypatch):
    """auto: the device with a GPU (not with elastic distortion, the pipeline's only), else the pipeline, but the device
    with the random-resized crop (the device's only) on a CPU too; device with elastic, or the crop in the pipeline, is
    a config error naming the key."""
    aug, elastic = Augment(), Augment(elastic=0.5)
    assert devices.augment_where("auto", Augment(crop=0.3)) == "device"
    for bad in (["train.augment_on='pipeline'"], ["train.augment.elastic=0.5"]):
        with pytest.raises(ConfigError, match="augment.crop runs on the device only"):
            dacon_config("train.augment.crop=0.3", *bad)
    assert devices.augment_where("device", aug) == "device" and devices.augment_where("pipeline", aug) == "pipeline"
    assert devices.augment_where("auto", aug) == ("device" if devices.visible_gpus() else "pipeline")
    monkeypatch.setattr(devices, "visible_gpus", lambda: ("0",))
    assert devices.augment_where("auto", aug) == "device" and devices.augment_where("auto", elastic) == "pipeline"
    with pytest.raises(ConfigError, match="augment.elastic runs in the tf.data pipeline only"):
        dacon_config("train.augment_on='device'", "train.augment.elastic=0.5")


_config = partial(dacon_config, "train.epochs=1", "train.width=0.25", "train.batch_size=32", "train.augment_on='device'",
                  "train.deterministic=true", "train.tta=2", "train.augment.zoom=0.1", "train.augment.cutmix=1.0",
                  "train.augment.erasing=0.5", "train.augment.mixup=0.2", "train.augment.crop=0.5", "train.input_size=24")


@pytest.mark.slow
def test_device_fit_is_deterministic_and_saves_a_plain_model(dacon_train, tmp_path):
    """Device augmentation, deterministic ops (``--deterministic``): one epoch of cnn_small on 128 real DACON rows, trained
    on random-resized crops of the 28-px cache at input size 24 (a larger cache than the model's input),
    twice: the streamed OOF predictions (2 TTA views, on the device) are identical. The fitted model is the plain
    inference model (no augmentation layer); saved and reloaded it predicts the same twice, as before saving."""
    from compkit.backbones import load_model

    tf.config.experimental.enable_op_determinism()
    config = _config()
    hyper = config.hyper("cnn_small")
    rows = np.arange(192)
    data = fitting.FoldData(train=dacon_train, test=None, fit=rows[:128], val=rows[128:], held=rows[128:],
                            targets=np.eye(10, dtype=np.float32)[dacon_train.labels], pseudo=np.array([], int),
                            pseudo_targets=np.zeros((0, 10), np.float32))
    oof = []
    for run in range(2):
        keras.utils.set_random_seed(0)
        model, history = fitting.fit(config, hyper, "cnn_small", data, 0, f"[device run {run}]")
        assert np.isfinite(history["loss"]).all()
        oof.append(augment.predict_tta(model, fitting.stream(dacon_train, data.val, hyper), hyper.augment, 2, 0, where="device"))
    np.testing.assert_array_equal(oof[0], oof[1])
    assert oof[0].shape == (64, 10) and not np.allclose(oof[0], oof[0].mean(axis=0))

    assert type(model).__name__ == "Functional"
    assert not [layer for layer in model.layers if "Random" in type(layer).__name__ or "Mix" in type(layer).__name__]
    model.save(tmp_path / "model.keras")
    saved = load_model(tmp_path / "model.keras")
    inputs = fitting.model_inputs(dacon_train, data.val, hyper)
    first, second = saved.predict(inputs, verbose=0), saved.predict(inputs, verbose=0)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, model.predict(inputs, verbose=0), atol=1e-6)


def test_published_rates_name_their_source_and_judge_a_pipeline():
    """Every published GPU rate names its source; a GPU name as TensorFlow reports it picks its kind's rows, and a
    pipeline slower than a GPU eats is input-bound."""
    from compkit import rates
    from compkit.backbones import BACKBONES

    assert all(r.source.startswith("NVIDIA DeepLearningExamples") and r.backbone in BACKBONES for r in rates.PUBLISHED)
    a100 = rates.for_gpu("NVIDIA A100-SXM4-80GB")
    assert a100 and {r.gpu for r in a100} == {"A100"} and rates.for_gpu("") == list(rates.PUBLISHED)
    b0 = next(r for r in a100 if r.backbone == "efficientnetb0" and r.precision == "mixed")
    assert b0.images_per_s == 3454 and "INPUT-BOUND" in rates.verdict(230, b0) and "not input-bound" in rates.verdict(9000, b0)
