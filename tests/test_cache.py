"""The decode-once pixel cache on real images (Fashion-MNIST written as PNG files), and the streamed
pipelines against the in-memory ones on DACON."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compkit.tasks import for_config
from compkit import cache
from compkit.config import load_config
from compkit.data import load_labels, load_test, load_test_ids, load_train
from conftest import REPO

PHOTOS = """
[competition]
name = "photos"
layout = "image_folder"
train_file = "labels.csv"
train_images = "train"
test_images = "test"
sample_submission = "sample_submission.csv"
id_column = "file"
target_column = "category"
classes = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
image_shape = [28, 28, 1]
metric = "accuracy"

[folds]
n_splits = 2
stratify = ["category"]
"""
CLASSES = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


@pytest.fixture
def photos(tmp_path, fmnist):
    """An image-folder competition of 300 train and 40 test real Fashion-MNIST PNG files; returns (data, configs, x)."""
    (x, y), _ = fmnist
    data, configs = tmp_path / "data", tmp_path / "configs"
    for split, rows in (("train", range(300)), ("test", range(300, 340))):
        (data / split).mkdir(parents=True)
        for i in rows:
            Image.fromarray(x[i]).save(data / split / f"img_{i:05d}.png")
    pd.DataFrame({"file": [f"img_{i:05d}.png" for i in range(300)], "category": [CLASSES[c] for c in y[:300]]}).to_csv(
        data / "labels.csv", index=False)
    configs.mkdir()
    (configs / "photos.toml").write_text(PHOTOS)
    return data, configs, x


def _comp(configs, *overrides):
    return load_config("photos", None, list(overrides), configs).competition


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_cache_is_reused_and_rebuilt_when_an_image_or_the_shape_changes(tmp_path, photos):
    data, configs, x = photos
    comp, folder = _comp(configs), tmp_path / "cache"
    train = load_train(data, comp, folder)
    assert isinstance(train.images.base, mmap.mmap) and not train.images.flags.writeable
    np.testing.assert_array_equal(train.images, load_train(data, comp).images)  # the same pixels as a decode
    np.testing.assert_array_equal(train.images[:, :, :, 0], x[:300])
    (npy,) = folder.glob("train-*.npy")
    built = os.stat(npy)
    assert _files(folder) == sorted([npy.name, npy.with_suffix(".json").name])

    again = load_train(data, comp, folder)  # reused: the same file, not rewritten
    assert os.stat(npy).st_ino == built.st_ino and os.stat(npy).st_mtime_ns == built.st_mtime_ns
    np.testing.assert_array_equal(again.images, train.images)

    Image.fromarray(x[1000]).save(data / "train/img_00005.png")  # a changed source image: rebuilt under a new key
    changed = load_train(data, comp, folder)
    (new,) = folder.glob("train-*.npy")
    assert new != npy and not npy.exists() and len(_files(folder)) == 2  # the superseded cache is gone
    np.testing.assert_array_equal(changed.images[5, :, :, 0], x[1000])
    np.testing.assert_array_equal(np.delete(changed.images, 5, axis=0), np.delete(train.images, 5, axis=0))

    bigger = load_train(data, _comp(configs, "competition.image_shape=[32, 32, 3]"), folder)  # a new shape: rebuilt
    (resized,) = folder.glob("train-*.npy")
    assert resized != new and bigger.images.shape == (300, 32, 32, 3)
    np.testing.assert_array_equal(bigger.images, load_train(data, _comp(configs, "competition.image_shape=[32, 32, 3]")).images)


def test_test_split_and_tables_without_pixels(tmp_path, photos):
    data, configs, x = photos
    comp, folder = _comp(configs), tmp_path / "cache"
    test = load_test(data, comp, folder)
    np.testing.assert_array_equal(test.images[:, :, :, 0], x[300:340])  # sorted file names: the row order
    assert list(load_test_ids(data, comp)) == list(test.ids) and len(list(folder.glob("test-*.npy"))) == 1
    labels = load_labels(data, comp)
    assert labels.images is None and labels.ids.tolist() == load_train(data, comp).ids.tolist()


def test_pixel_csv_is_parsed_once_and_its_table_read_without_pixels(tmp_path, dacon, dacon_dir):
    comp = dacon().competition
    first = load_train(dacon_dir, comp, tmp_path)
    (npy,) = tmp_path.glob("train-*.npy")
    built = os.stat(npy)
    again, memory, labels = load_train(dacon_dir, comp, tmp_path), load_train(dacon_dir, comp), load_labels(dacon_dir, comp)
    assert os.stat(npy).st_ino == built.st_ino and os.stat(npy).st_mtime_ns == built.st_mtime_ns
    for split in (first, again, labels):
        assert split.ids.tolist() == memory.ids.tolist() and split.labels.tolist() == memory.labels.tolist()
        assert split.extras.equals(memory.extras)
    np.testing.assert_array_equal(again.images, memory.images)


BUILD = """
import sys
from pathlib import Path
from compkit.config import load_config
from compkit.data import load_train
comp = load_config("photos", None, ["competition.image_shape=[224, 224, 3]"], Path(sys.argv[1])).competition
load_train(Path(sys.argv[2]), comp, Path(sys.argv[3]))
"""


def test_a_killed_build_leaves_no_cache_that_is_used(tmp_path, photos):
    """SIGKILL while the cache is being written (its temporary file exists); then a record-less .npy (a kill
    between the rename and the record). Neither is used: the next read rebuilds and clears the leftovers."""
    data, configs, _ = photos
    folder = tmp_path / "cache"
    comp = _comp(configs, "competition.image_shape=[224, 224, 3]")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", BUILD, str(configs), str(data), str(folder)], env=env)
    deadline = time.monotonic() + 120
    while not list(folder.glob(".build-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    (left,) = folder.glob(".build-*")
    assert not list(folder.glob("train-*"))  # nothing a reader would take
    train = load_train(data, comp, folder)
    assert not left.exists() and len(list(folder.glob("train-*.npy"))) == 1
    expected = load_train(data, comp).images
    np.testing.assert_array_equal(train.images, expected)

    (npy,) = folder.glob("train-*.npy")
    npy.with_suffix(".json").unlink()  # killed after the rename, before the record
    inode = os.stat(npy).st_ino
    del train
    rebuilt = load_train(data, comp, folder)
    assert os.stat(npy).st_ino != inode and npy.with_suffix(".json").is_file()
    np.testing.assert_array_equal(rebuilt.images, expected)

    with open(npy, "r+b") as f:  # cut short: refused by the reader, rebuilt
        f.truncate(os.path.getsize(npy) - 1)
    digest = npy.stem.split("-", 1)[1]
    assert cache.find(folder, "train", digest, (224, 224, 3)) is None
    np.testing.assert_array_equal(load_train(data, comp, folder).images, expected)


@pytest.mark.slow
def test_streamed_oof_equals_the_in_memory_pipeline_on_dacon(tmp_path, dacon_dir):
    """One epoch of cnn_small (augmented, the letter embedded) on 512 real DACON rows, CPU, deterministic ops:
    trained on the streamed pipeline from the memory-mapped cache (as `fit` does) and on the in-memory float32
    arrays (the pipeline before the cache), the OOF predictions (2 TTA views) agree to 1e-6."""
    import keras
    import tensorflow as tf

    from compkit import fitting
    from compkit.augment import predict_tta
    from compkit.backbones import build_model

    tf.config.experimental.enable_op_determinism()
    config = load_config("dacon-cv-2020", "smoke", ["train.batch_size=64", "train.tta=2", "train.augment.shift=0.1",
                                                    'train.embed=["letter"]'], REPO / "configs")
    comp, hyper = config.competition, config.hyper("cnn_small")
    streamed, memory = load_train(dacon_dir, comp, tmp_path), load_train(dacon_dir, comp)
    assert isinstance(streamed.images.base, mmap.mmap) and isinstance(memory.images, np.ndarray)
    rows = np.random.default_rng(0).permutation(len(memory.ids))
    fit_rows, val = rows[:384], rows[384:512]
    onehot = np.eye(10, dtype=np.float32)[memory.labels]
    data = fitting.FoldData(train=streamed, test=None, fit=fit_rows, val=val, held=val, targets=onehot,
                            pseudo=np.array([], int), pseudo_targets=np.zeros((0, 10), np.float32))

    def model():
        keras.utils.set_random_seed(0)
        net = build_model("cnn_small", comp.image_shape, 10, hyper, fitting.vocabularies(memory, hyper))
        net.compile(optimizer=fitting._optimizer(hyper, 6), loss=for_config(config).loss(hyper.label_smoothing))
        return net

    net = model()
    net.fit(fitting.training_set(data, hyper, seed=0), epochs=1, verbose=0, shuffle=False,
            validation_data=fitting.stream(streamed, val, hyper, onehot[val]))
    oof_streamed = predict_tta(net, fitting.stream(streamed, val, hyper), hyper.augment, 2, seed=1)

    net = model()
    inputs = fitting.model_inputs(memory, fit_rows, hyper)
    net.fit(fitting._dataset(inputs, onehot[fit_rows], hyper, seed=0), epochs=1, verbose=0, shuffle=False,
            validation_data=(fitting.model_inputs(memory, val, hyper), onehot[val]), batch_size=hyper.batch_size)
    oof_memory = predict_tta(net, fitting.model_inputs(memory, val, hyper), hyper.augment, 2, seed=1, batch_size=hyper.batch_size)

    assert oof_streamed.shape == (128, 10)
    np.testing.assert_allclose(oof_streamed, oof_memory, atol=1e-6, rtol=0)
    assert not np.allclose(oof_streamed, oof_streamed.mean(axis=0))  # a model that learned something per row


def test_streamed_pipelines_hold_their_buffers_to_the_budget(tmp_path, dacon_dir):
    """Training and prediction pipelines carry `train.pipeline_ram_mb` as tf.data's autotune RAM budget and start
    their parallel maps at one call (TF's defaults: half the RAM, 16 calls); their batches are unchanged by it, and
    prediction's batches are training's size (a larger one would outgrow training's memory at 224 px)."""
    from compkit import fitting

    config = load_config("dacon-cv-2020", "smoke", ["train.pipeline_ram_mb=64"], REPO / "configs")
    hyper, train = config.hyper("cnn_small"), load_train(dacon_dir, config.competition, tmp_path)
    onehot = np.eye(10, dtype=np.float32)[train.labels]
    data = fitting.FoldData(train=train, test=None, fit=np.arange(96), val=np.arange(96, 160), held=np.arange(0),
                            targets=onehot, pseudo=np.array([], int), pseudo_targets=np.zeros((0, 10), np.float32))
    predicted = fitting.stream(train, data.val, hyper)
    for ds in (fitting.training_set(data, hyper, seed=0), predicted):
        assert ds.options().autotune.ram_budget == 64 * 2**20 and ds.options().autotune.initial_parallelism == 1
    batches = [batch["image"].numpy() for batch in predicted]
    assert [len(b) for b in batches] == [hyper.batch_size, 64 - hyper.batch_size] and hyper.batch_size < 64
    np.testing.assert_array_equal(np.concatenate(batches), train.images[96:160].astype(np.float32))
