"""New competitions are one config file: Fashion-MNIST (built from Debian's package), the Kaggle
digit-recognizer CSV layout and an image-folder layout, each run end to end with the smoke preset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import f1_score, log_loss

from compkit.cli import main
from compkit.config import load_config
from compkit.data import DataError, load_train
from conftest import REPO

pytestmark = pytest.mark.slow

FAST = ["--preset", "smoke", "--backbones", "cnn_small", "--set", "folds.n_splits=2", "--set", "train.epochs=1",
        "--set", "train.batch_size=128", "--set", "train.process_per_fold=false"]  # the batch these tests were written with


def _submission(root, competition):
    (path,) = [p for p in (root / "submissions" / competition).glob("*.csv") if p.name != "leaderboard.csv"]
    return pd.read_csv(path)


def test_fashion_mnist_builds_and_runs_end_to_end(tmp_path, fmnist):
    """The smoke preset as it is (3 epochs on 3,000 rows), so that CI notices a change that breaks learning."""
    argv = ["--competition", "fashion-mnist", "--root", str(tmp_path), "--preset", "smoke", "--backbones", "cnn_small",
            "--set", "folds.n_splits=2", "--set", "train.process_per_fold=false"]
    assert main(["all", *argv]) == 0  # `all` builds the data first
    data = tmp_path / "data/fashion-mnist"
    train = pd.read_csv(data / "train.csv", usecols=["id", "label"])
    (x_train, y_train), (x_test, y_test) = fmnist
    assert len(train) == len(x_train) == 60000 and train["label"].value_counts().eq(6000).all()
    solution = pd.read_csv(data / "solution.csv")
    assert len(solution) == 10000 and (solution["Usage"] == "Public").sum() == 3000
    assert pd.read_csv(tmp_path / "folds/fashion-mnist/holdout.csv").empty  # scored on the real test labels

    sample = pd.read_csv(data / "sample_submission.csv")
    submission = _submission(tmp_path, "fashion-mnist")
    assert list(submission.columns) == list(sample.columns) and submission["id"].tolist() == sample["id"].tolist()
    assert submission["label"].isin(load_config("fashion-mnist", None, [], REPO / "configs").competition.classes).all()
    board = pd.read_csv(tmp_path / "submissions/fashion-mnist/leaderboard.csv")
    correct = submission["label"].to_numpy() == solution["label"].to_numpy()
    for part in ("Public", "Private"):
        assert board.loc[0, part.lower()] == pytest.approx(correct[(solution["Usage"] == part).to_numpy()].mean(), abs=1e-6)
    assert board.loc[0, "private"] >= 0.70  # chance is 0.10; the smoke preset reached 0.78 when this floor was set
    assert main(["report", *argv]) == 0  # no holdout to bootstrap: the report says so instead
    assert "No holdout: submissions are scored on solution.csv" in (tmp_path / "runs/fashion-mnist/report/index.html").read_text()


def test_kaggle_digit_recognizer_layout(tmp_path, fmnist):
    """train: label,pixel0..; test: pixels only; submission ImageId (1-based test row), Label."""
    (x, y), _ = fmnist
    data = tmp_path / "data"
    data.mkdir()
    pixels = [f"pixel{i}" for i in range(784)]
    train = pd.DataFrame(x[:800].reshape(800, -1), columns=pixels)
    train.insert(0, "label", y[:800])
    train.to_csv(data / "train.csv", index=False)
    pd.DataFrame(x[800:1000].reshape(200, -1), columns=pixels).to_csv(data / "test.csv", index=False)
    pd.DataFrame({"ImageId": np.arange(1, 201), "Label": 0}).to_csv(data / "sample_submission.csv", index=False)

    assert main(["all", "--competition", "digit-recognizer", "--data-dir", str(data), "--root", str(tmp_path), *FAST]) == 0
    submission = _submission(tmp_path, "digit-recognizer")
    assert list(submission.columns) == ["ImageId", "Label"] and submission["ImageId"].tolist() == list(range(1, 201))
    assert submission["Label"].between(0, 9).all()
    holdout = pd.read_csv(tmp_path / "folds/digit-recognizer/holdout.csv")
    assert len(holdout) == 80  # 10% of train
    # test labels are hidden: scored on the ensemble's holdout predictions, as labels (what the file holds)
    held = pd.read_csv(tmp_path / "runs/digit-recognizer/ensemble/holdout.csv").set_index("ImageId").loc[holdout["ImageId"]]
    right = held.to_numpy().argmax(axis=1) == y[holdout["ImageId"].to_numpy() - 1]
    board = pd.read_csv(tmp_path / "submissions/digit-recognizer/leaderboard.csv")
    for part in ("Public", "Private"):
        assert board.loc[0, part.lower()] == pytest.approx(right[(holdout["Usage"] == part).to_numpy()].mean(), abs=1e-6)


IMAGE_FOLDER = """
[competition]
name = "clothes"
layout = "image_folder"
train_file = "labels.csv"
train_images = "train"
test_images = "test"
sample_submission = "sample_submission.csv"
id_column = "file"
target_column = "category"
classes = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
image_shape = [28, 28, 1]
metric = "macro_f1"
submission_columns = ["file", "category"]

[folds]
n_splits = 2
stratify = ["category"]
holdout_fraction = 0.2
"""


def _image_folder(tmp_path, x, y, n_train=600, n_test=100):
    """Real Fashion-MNIST images saved as PNG files of mixed sizes and modes, labelled by class name."""
    classes = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    data = tmp_path / "data"
    for split, start, n in (("train", 0, n_train), ("test", n_train, n_test)):
        (data / split).mkdir(parents=True)
        for i in range(start, start + n):
            image = Image.fromarray(x[i])
            if i % 3 == 0:  # some are bigger and RGB: the reader resizes and converts
                image = image.resize((56, 56)).convert("RGB")
            image.save(data / split / f"img_{i:05d}.png")
    files = [f"img_{i:05d}.png" for i in range(n_train)]
    pd.DataFrame({"file": files, "category": [classes[c] for c in y[:n_train]]}).to_csv(data / "labels.csv", index=False)
    test_files = [f"img_{i:05d}.png" for i in range(n_train, n_train + n_test)]
    pd.DataFrame({"file": test_files[::-1], "category": "top"}).to_csv(data / "sample_submission.csv", index=False)
    configs = tmp_path / "configs"
    (configs / "presets").mkdir(parents=True)
    (configs / "clothes.toml").write_text(IMAGE_FOLDER)
    (configs / "presets/smoke.toml").write_text((REPO / "configs/presets/smoke.toml").read_text())
    return data, configs


def test_image_folder_layout_with_class_names_and_macro_f1(tmp_path, fmnist):
    (x, y), _ = fmnist
    data, configs = _image_folder(tmp_path, x, y)
    argv = ["--competition", "clothes", "--config-dir", str(configs), "--data-dir", str(data), "--root", str(tmp_path), *FAST]
    assert main(["all", *argv]) == 0
    submission = _submission(tmp_path, "clothes")
    sample = pd.read_csv(data / "sample_submission.csv")
    assert submission["file"].tolist() == sample["file"].tolist()  # the sample's order, not the folder's
    assert submission["category"].isin(["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]).all()
    train = load_train(data, load_config("clothes", None, [], configs).competition)
    assert train.images.shape == (600, 28, 28, 1)
    np.testing.assert_array_equal(train.images[1, :, :, 0], x[1])  # a 28x28 gray PNG round-trips exactly


def test_corrupt_image_is_a_one_line_error(tmp_path, fmnist):
    (x, y), _ = fmnist
    data, configs = _image_folder(tmp_path, x, y, n_train=40, n_test=5)
    (data / "train/img_00007.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"img_00007.png: not a readable image .*; replace or remove it"):
        load_train(data, load_config("clothes", None, [], configs).competition)


def test_check_prints_what_it_found(tmp_path, dacon_dir, capfd):
    assert main(["check", "--competition", "dacon-cv-2020", "--data-dir", str(dacon_dir), "--root", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    assert "2048 train images of shape (28, 28, 1), multiclass task: 10 classes" in out and "pixel_csv" in out
    assert not (tmp_path / "folds").exists()  # check writes nothing


HIDDEN_LABELS = """
[competition]
name = "{name}"
train_file = "train.csv"
test_file = "test.csv"
sample_submission = "sample_submission.csv"
id_column = "id"
target_column = "label"
classes = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
image_shape = [28, 28, 1]
pixel_prefix = "pixel"
metric = "{metric}"

[folds]
n_splits = 2
stratify = ["label"]
"""
FMNIST_CLASSES = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def _hidden_labels(tmp_path, fmnist, name, metric, sample_columns, n_train=400, n_test=300, options=()):
    """A Kaggle-layout competition from real Fashion-MNIST rows: train.csv (id, label, pixels), test.csv
    (id, pixels), the sample submission with ``sample_columns`` after the id, and solution.csv with the
    hidden test labels (one-hot class columns for a probability sample, else the label) and Usage.
    No ``submission_columns`` in the config: the sample's header decides."""
    (x, y), _ = fmnist
    data, configs = tmp_path / "data", tmp_path / "configs"
    (configs / "presets").mkdir(parents=True)
    data.mkdir()
    pixels = [f"pixel{i}" for i in range(784)]
    classes = np.asarray(FMNIST_CLASSES, dtype=object)
    train_ids, test_ids = np.arange(1, n_train + 1), np.arange(n_train + 1, n_train + n_test + 1)
    for file, ids, rows, extra in (("train.csv", train_ids, slice(0, n_train), {"label": classes[y[:n_train]]}),
                                   ("test.csv", test_ids, slice(n_train, n_train + n_test), {})):
        frame = pd.DataFrame(x[rows].reshape(len(ids), -1), columns=pixels)
        for i, (column, values) in enumerate({"id": ids, **extra}.items()):
            frame.insert(i, column, values)
        frame.to_csv(data / file, index=False)
    truth = classes[y[n_train:n_train + n_test]]
    sample = pd.DataFrame({"id": test_ids[::-1]})  # the sample's own order
    solution = pd.DataFrame({"id": test_ids})
    if sample_columns == ["label"]:
        sample["label"], solution["label"] = classes[0], truth
    else:
        for c in sample_columns:
            sample[c], solution[c] = 1 / len(sample_columns), (truth == c).astype(int)
    solution["Usage"] = np.where(np.arange(n_test) % 3 == 0, "Public", "Private")
    sample.to_csv(data / "sample_submission.csv", index=False)
    solution.to_csv(data / "solution.csv", index=False)
    (configs / f"{name}.toml").write_text(HIDDEN_LABELS.format(name=name, metric=metric))
    (configs / "presets/smoke.toml").write_text((REPO / "configs/presets/smoke.toml").read_text())
    argv = ["--competition", name, "--config-dir", str(configs), "--data-dir", str(data), "--root", str(tmp_path), *FAST, *options]
    assert main(["all", *argv]) == 0
    return _submission(tmp_path, name), solution, pd.read_csv(tmp_path / "submissions" / name / "leaderboard.csv"), argv


def test_log_loss_competition_submits_probabilities_scored_as_written(tmp_path, fmnist):
    """Kaggle's probability format: id then one column per class in the sample's order (here shuffled);
    the leaderboard's public/private are sklearn's log loss of the written file against solution.csv."""
    order = [FMNIST_CLASSES[i] for i in (3, 0, 9, 1, 5, 2, 8, 4, 7, 6)]
    two = ["--backbones", "cnn_small,resnet_small"]
    submission, solution, board, argv = _hidden_labels(tmp_path, fmnist, "fmnist-logloss", "log_loss", order, options=two)
    assert list(submission.columns) == ["id", *order]
    assert submission["id"].tolist() == pd.read_csv(tmp_path / "data/sample_submission.csv")["id"].tolist()
    np.testing.assert_allclose(submission[order].sum(axis=1), 1, atol=1e-9)
    rows = submission.set_index("id").loc[solution["id"]]
    truth = solution[FMNIST_CLASSES].to_numpy().argmax(axis=1)
    for part in ("Public", "Private"):
        mask = (solution["Usage"] == part).to_numpy()
        expected = log_loss(truth[mask], rows[FMNIST_CLASSES].to_numpy()[mask], labels=np.arange(10))
        assert board.loc[0, part.lower()] == pytest.approx(expected, abs=2e-6)
    assert 0.3 < board.loc[0, "public"] < 2.3  # one epoch on 200 images: better than uniform (ln 10 = 2.30)

    # the report takes the lowest log loss as the best backbone, and a positive gain as a lower loss
    assert main(["report", *argv]) == 0
    page = (tmp_path / "runs/fmnist-logloss/report/index.html").read_text(encoding="utf-8")
    scores = json.loads((tmp_path / "runs/fmnist-logloss/ensemble/ensemble.json").read_text())["scores"]
    lowest = min(scores, key=lambda b: scores[b]["log_loss"])
    assert scores["cnn_small"]["log_loss"] != scores["resnet_small"]["log_loss"]
    assert f"by the competition&#x27;s metric (log_loss (lower is better)), {lowest} (OOF log_loss {scores[lowest]['log_loss']:.4f}" in page


def test_macro_f1_competition_scored_by_sklearn_on_the_written_labels(tmp_path, fmnist):
    submission, solution, board, _ = _hidden_labels(tmp_path, fmnist, "fmnist-f1", "macro_f1", ["label"])
    assert list(submission.columns) == ["id", "label"]
    predicted = submission.set_index("id").loc[solution["id"], "label"].to_numpy()
    for part in ("Public", "Private"):
        mask = (solution["Usage"] == part).to_numpy()
        expected = f1_score(solution["label"].to_numpy()[mask], predicted[mask], average="macro")
        assert board.loc[0, part.lower()] == pytest.approx(expected, abs=2e-6)
