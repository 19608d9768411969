"""Multi-head targets (Bengali.AI 2020's shape) on the real DACON rows: the digit and the letter of each image are two
heads of one model. Every score a test checks is recomputed here with sklearn from the written files."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn.metrics import recall_score

from compkit import augment, tasks
from compkit.cli import main
from compkit.config import Augment, ConfigError, load_config
from compkit.data import load_train
from compkit.errors import DataError
from compkit.formats import format_of, read_submission, to_frame
from conftest import REPO, one_line_error

LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
FAST = ["--preset", "smoke", "--backbones", "cnn_small", "--set", "train.epochs=2", "--set", "train.process_per_fold=false",
        "--set", "train.batch_size=16"]  # 16: twice the steps of smoke's 32, so BatchNorm settles in 2 epochs
CONFIG = f"""
[competition]
name = "{{name}}"
train_file = "train.csv"
sample_submission = "submission.csv"
target_column = ""
task = "multihead"
image_shape = [28, 28, 1]
metric = "weighted_macro_recall"
metric_weights = {{{{ digit = 2, letter = 1 }}}}

[competition.targets.digit]
classes = {list(range(10))}
loss_weight = 2

[competition.targets.letter]
classes = {LETTERS}

[folds]
n_splits = 2
holdout_fraction = 0.2
seed = 42

[train.augment]
interpolation = "nearest"
"""


@pytest.fixture(scope="module")
def dacon_rows(dacon_dir) -> pd.DataFrame:
    return pd.read_csv(dacon_dir / "train.csv")


def make_heads(root: Path, rows: pd.DataFrame, name: str = "digit-letter",
               sample: pd.DataFrame | None = None) -> list[str]:
    """DACON's rows as a two-head competition (digit, letter) in ``root``, with a long sample submission by default;
    the CLI options that run it."""
    data, configs = root / "data" / name, root / "configs"
    data.mkdir(parents=True)
    shutil.copytree(REPO / "configs" / "presets", configs / "presets")
    rows.to_csv(data / "train.csv", index=False)
    (sample if sample is not None else pd.DataFrame({"row_id": ["1_digit"], "target": [0]})).to_csv(data / "submission.csv", index=False)
    (configs / f"{name}.toml").write_text(CONFIG.format(name=name))
    return ["--competition", name, "--root", str(root), "--data-dir", str(data), "--config-dir", str(configs)]


def heads_task(root: Path, name: str = "digit-letter", *overrides: str) -> tasks.Task:
    return tasks.of(load_config(name, "smoke", list(overrides), root / "configs").competition)


def test_heads_are_read_from_their_columns_and_a_bad_label_is_one_line(tmp_path, dacon_rows, capsys):
    argv = make_heads(tmp_path, dacon_rows)
    config = load_config("digit-letter", "smoke", [], tmp_path / "configs")
    task = tasks.of(config.competition)
    train = load_train(tmp_path / "data/digit-letter", config.competition)
    expected = np.stack([dacon_rows["digit"].to_numpy(), dacon_rows["letter"].map(LETTERS.index).to_numpy()], axis=1)
    np.testing.assert_array_equal(train.labels, expected)
    targets = task.targets(train.labels)
    assert targets.shape == (len(dacon_rows), 36) and task.columns[:2] == ["p_digit_0", "p_digit_1"]
    np.testing.assert_array_equal(targets, np.hstack([np.eye(10)[expected[:, 0]], np.eye(26)[expected[:, 1]]]))

    bad = dacon_rows.copy()
    bad.loc[4, "letter"] = "a?"
    bad.to_csv(tmp_path / "data/digit-letter/train.csv", index=False)
    err = one_line_error(capsys, main(["folds", *argv]))
    assert (f"{tmp_path / 'data/digit-letter/train.csv'}: line 6, column 'letter': label 'a?' is not one of the classes "
            in err and "fix the row or competition.targets.letter.classes" in err)
    assert not (tmp_path / "folds").exists()


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["competition.metric='rmse'"], "metric 'rmse' does not apply to task 'multihead'; use one of ['exact_match', "
                                    "'weighted_macro_recall']"),
    (["competition.metric_weights={digits=2}"], "metric_weights names ['digits'], not heads; use the heads ['digit', 'letter']"),
    (["competition.targets.digit.classes=[0]"], "competition.targets.digit.classes: Value should have at least 2 items after validation, not 1 (got [0])"),
    (["competition.classes=[0, 1]"], 'task = "multihead" reads each head from its own column with its own classes'),
    (["ensemble.stacking=true"], "ensemble.stacking has no multi-head meta-model"),
    (["ensemble.select='hard'"], "ensemble.select = 'hard' (majority vote) needs one class per row"),
    (["train.class_weight='balanced'"], "train.class_weight = 'balanced' weighs one class per row; task 'multihead'"),
])
def test_a_multihead_setting_that_cannot_apply_is_a_config_error(tmp_path, dacon_rows, overrides, fragment):
    make_heads(tmp_path, dacon_rows.head(8))
    with pytest.raises(ConfigError) as err:
        load_config("digit-letter", "smoke", overrides, tmp_path / "configs")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_heads_outside_a_multihead_task_are_a_config_error():
    with pytest.raises(ConfigError) as err:
        load_config("dacon-cv-2020", "smoke", ["competition.metric_weights={digit=2}"], REPO / "configs")
    assert "targets and metric_weights are a multi-head competition's; task = 'multiclass'" in str(err.value)


def test_the_loss_is_the_heads_weighted_log_losses_and_reloads_from_its_config(tmp_path, dacon_rows):
    """The compiled loss on (B, 36) softmax outputs: 2 x the digit's log loss + the letter's (sklearn's, per head, on
    the same rows), label smoothing as Keras' own cross-entropy has it; serialised and deserialised by Keras, the same."""
    import keras
    from sklearn.metrics import log_loss

    make_heads(tmp_path, dacon_rows.head(8))
    task = heads_task(tmp_path)
    rng = np.random.default_rng(1)
    truth = np.stack([rng.integers(0, 10, 64), rng.integers(0, 26, 64)], axis=1)
    pred = np.hstack([rng.dirichlet(np.ones(10), 64), rng.dirichlet(np.ones(26), 64)]).astype(np.float32)
    loss = task.loss(0.0)
    expected = 2 * log_loss(truth[:, 0], pred[:, :10], labels=range(10)) + log_loss(truth[:, 1], pred[:, 10:], labels=range(26))
    assert float(loss(task.targets(truth), pred)) == pytest.approx(expected, rel=1e-4)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(task.loss(0.1)))
    smoothed = 2 * keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(10)[truth[:, 0]], pred[:, :10]) + \
        keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(26)[truth[:, 1]], pred[:, 10:])
    assert float(again(task.targets(truth), pred)) == pytest.approx(float(smoothed), rel=1e-4)


def test_folds_are_stratified_on_the_first_head_or_the_one_named(tmp_path, dacon_rows, capsys):
    """StratifiedKFold on a head's class: every class of that head has the same rows in each fold, give or take one."""
    argv = make_heads(tmp_path, dacon_rows)
    truth = dacon_rows.set_index("id")
    for stratify, head in (([], "digit"), (["--set", "folds.stratify=['letter']"], "letter")):
        assert main(["folds", *argv, *stratify]) == 0
        folds = pd.read_csv(tmp_path / "folds/digit-letter/folds.csv")
        counts = pd.crosstab(truth.loc[folds["id"], head].to_numpy(), folds["fold"].to_numpy())
        assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 1
    capsys.readouterr()
    err = one_line_error(capsys, main(["folds", *argv, "--set", "folds.stratify=['letters']"]))
    assert "folds.stratify: 'letters' is neither the target nor an extra column; use ['digit', 'letter']" in err


def test_folds_stratified_on_both_heads_spread_every_class_of_each(tmp_path, dacon_rows, capsys):
    """folds.stratify naming both heads: iterative stratification on their one-hot (36 columns). Every digit and every
    letter keeps its share of the rows in each fold better than the digit-only split keeps the letters' (measured
    largest gaps printed); naming an extra column beside them is one line."""
    argv = make_heads(tmp_path, dacon_rows)
    truth = dacon_rows.set_index("id")

    def worst_gap(stratify):
        assert main(["folds", *argv, "--set", f"folds.stratify={stratify}"]) == 0
        folds = pd.read_csv(tmp_path / "folds/digit-letter/folds.csv")
        shares = {head: pd.crosstab(truth.loc[folds["id"], head].to_numpy(), folds["fold"].to_numpy(), normalize="columns")
                  for head in ("digit", "letter")}
        overall = {head: truth.loc[folds["id"], head].value_counts(normalize=True) for head in shares}
        return {head: float(shares[head].sub(overall[head], axis=0).abs().to_numpy().max()) for head in shares}

    both, digit_only = worst_gap("['digit', 'letter']"), worst_gap("['digit']")
    with capsys.disabled():
        print(f"largest gap of a class's share in a fold: both heads {both}, digit only {digit_only}")
    assert both["letter"] < digit_only["letter"] and both["digit"] < 0.02
    capsys.readouterr()
    err = one_line_error(capsys, main(["folds", *argv, "--set", "folds.stratify=['digit', 'letter', 'id']"]))
    assert "folds.stratify: the heads ['digit', 'letter'] are stratified together (iteratively, on their one-hot)" in err


def test_mixup_and_cutmix_mix_every_heads_labels_by_one_lambda(tmp_path, dacon_rows):
    """On a real batch of the heads' concatenated one-hot targets, each row's digit and letter labels are mixed with
    its partner's by the same weight: MixUp's lambda (on the device, drawn; in the pipeline, Keras' layer) and CutMix's
    pasted area."""
    make_heads(tmp_path, dacon_rows)
    config = load_config("digit-letter", "smoke", [], tmp_path / "configs")
    task, train = tasks.of(config.competition), load_train(tmp_path / "data/digit-letter", config.competition)
    rows = np.arange(32)
    images, targets = train.images[rows], task.targets(train.labels[rows])
    digit, letter = np.eye(10)[train.labels[rows, 0]], np.eye(26)[train.labels[rows, 1]]

    aug = Augment(shift=0.0, rotation=0.0, mixup=0.4, cutmix=1.0)
    params = augment.draw(aug, len(rows), images.shape[1:3], tf.constant((5, 6), tf.int64))
    _, mixed = augment.apply({"image": images, augment.PARAMS: params}, targets, aug)
    mixed, params = np.asarray(mixed), {k: np.asarray(v) for k, v in params.items()}
    w, perm = params["mixup_weight"][:, None], params["mixup_perm"]
    area = np.array([(y1 - y0) * (x1 - x0) for y0, x0, y1, x1 in params["cutmix_box"].astype(int)])[:, None] / 28 ** 2
    cut = params["cutmix_perm"]
    for own in (digit, letter):  # one weight for both heads: mixup then cutmix, as augment.apply orders them
        after_mixup = w * own + (1 - w) * own[perm]
        expected = (1 - area) * after_mixup + area * after_mixup[cut]
        start = 0 if own is digit else 10
        np.testing.assert_allclose(mixed[:, start:start + own.shape[1]], expected, atol=1e-5)
    assert ((0.05 < w) & (w < 0.95)).mean() > 0.3  # many rows are real mixtures (Beta(0.4, 0.4) weights)

    pipeline = augment.training(Augment(shift=0.0, rotation=0.0, mixup=0.4), seed=0)
    _, mixed = pipeline({"image": images}, targets)
    mixed, compared = np.asarray(mixed), 0
    for row in range(len(rows)):
        shares = [np.sort(mixed[row, a:b])[::-1][:2] for a, b in ((0, 10), (10, 36))]
        np.testing.assert_allclose([mixed[row, :10].sum(), mixed[row, 10:].sum()], 1, atol=1e-5)
        if all(s[1] > 1e-6 for s in shares):  # both heads' labels differ from the partner's: the same two weights
            np.testing.assert_allclose(shares[0], shares[1], atol=1e-5)
            compared += 1
    assert compared > 10


def test_wide_and_long_submissions_are_read_back_as_written(tmp_path, dacon_rows):
    """Probabilities -> each head's argmax written as its label: wide in the sample's column order, long as one row
    <id>_<head> per image and head; both parse back to the same decisions. A row id naming no head is one line."""
    make_heads(tmp_path, dacon_rows.head(8))
    task = heads_task(tmp_path)
    rng = np.random.default_rng(0)
    pred = np.hstack([rng.dirichlet(np.ones(10), 50), rng.dirichlet(np.ones(26), 50)])
    ids = np.arange(100, 150)
    decided = np.stack([pred[:, :10].argmax(axis=1), pred[:, 10:].argmax(axis=1)], axis=1)
    for header in (["id", "letter", "digit"], ["row_id", "target"]):
        fmt = format_of(header, task.comp, "sample")
        frame = to_frame(fmt, ids, pred, task, None)
        got_ids, got = read_submission(io.BytesIO(frame.to_csv(index=False).encode()), fmt, task, source=Path("s.csv"))
        np.testing.assert_array_equal(got_ids, ids)
        np.testing.assert_array_equal(got.decision, decided)
    assert frame["row_id"].tolist()[:3] == ["100_digit", "100_letter", "101_digit"]
    assert frame["target"].tolist()[:2] == [decided[0, 0], LETTERS[decided[0, 1]]]
    frame.loc[3, "row_id"] = "101_vowel"
    with pytest.raises(DataError) as err:
        read_submission(io.BytesIO(frame.to_csv(index=False).encode()), fmt, task, source=Path("s.csv"))
    assert str(err.value).startswith("s.csv: line 5, column 'row_id': '101_vowel' is not <id>_<head> for a head of ")


def long_to_wide(path: Path) -> pd.DataFrame:
    """A long submission (row_id, target) as one row per image: id, digit, letter (labels as text)."""
    frame = pd.read_csv(path, dtype=str)
    parts = frame["row_id"].str.rsplit("_", n=1, expand=True)
    wide = frame.assign(id=parts[0].astype(int), head=parts[1]).pivot(index="id", columns="head", values="target")
    return wide.reset_index()


@pytest.mark.slow
def test_multihead_end_to_end_long_submission_scored_by_weighted_macro_recall(tmp_path, dacon_rows):
    """DACON's digit (weight 2) and letter (weight 1) from one model: the long submission has a row <id>_<head> for
    every holdout id and head, the leaderboard's public / private are sklearn's macro recalls, weighted 2:1, and
    `compkit predict` writes the same labels in a test sample's own row order."""
    argv = make_heads(tmp_path, dacon_rows)
    for stage in ("folds", "train", "ensemble", "submit"):
        assert main([stage, *argv, *FAST]) == 0, stage
    oof = pd.read_csv(tmp_path / "runs/digit-letter/cnn_small/fold0/oof.csv")
    assert list(oof.columns) == ["id", *[f"p_digit_{d}" for d in range(10)], *[f"p_letter_{c}" for c in LETTERS]]
    np.testing.assert_allclose(oof.filter(like="p_digit_").sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(oof.filter(like="p_letter_").sum(axis=1), 1, atol=1e-5)

    (path,) = [p for p in (tmp_path / "submissions/digit-letter").glob("*.csv") if p.name != "leaderboard.csv"]
    holdout = pd.read_csv(tmp_path / "folds/digit-letter/holdout.csv")
    written = pd.read_csv(path, dtype=str)
    assert list(written.columns) == ["row_id", "target"]
    assert written["row_id"].tolist() == [f"{i}_{h}" for i in holdout["id"] for h in ("digit", "letter")]
    frame = long_to_wide(path).merge(holdout, on="id")
    truth = dacon_rows.set_index("id")
    board = pd.read_csv(tmp_path / "submissions/digit-letter/leaderboard.csv")
    for part in ("Public", "Private"):
        rows = frame[frame["Usage"] == part]
        digit = recall_score(truth.loc[rows["id"], "digit"].astype(str), rows["digit"], average="macro")
        letter = recall_score(truth.loc[rows["id"], "letter"], rows["letter"], average="macro")
        assert board.loc[0, part.lower()] == pytest.approx((2 * digit + letter) / 3, abs=1e-6)
        assert rows["digit"].nunique() > 3 and rows["letter"].nunique() > 3  # the model learnt: not one label per head
    # `compkit predict` on the holdout images as a test set, its long sample in its own order (images reversed, each
    # image's letter before its digit, as Bengali's sample orders its heads by name): the sample's rows, the labels
    # of `make submit`'s file
    test_dir = tmp_path / "test-data"
    test_dir.mkdir()
    dacon_rows[dacon_rows["id"].isin(holdout["id"])].drop(columns=["digit", "letter"]).to_csv(test_dir / "test.csv", index=False)
    sample = pd.DataFrame({"row_id": [f"{i}_{h}" for i in holdout["id"][::-1] for h in ("letter", "digit")], "target": 0})
    sample.to_csv(test_dir / "submission.csv", index=False)
    at = argv.index("--data-dir")
    out = tmp_path / "predicted.csv"
    assert main(["predict", *argv[:at], "--data-dir", str(test_dir), *argv[at + 2:], *FAST, "--out", str(out)]) == 0
    predicted = pd.read_csv(out, dtype=str)
    assert predicted["row_id"].tolist() == sample["row_id"].tolist()
    assert predicted.set_index("row_id")["target"].loc[written["row_id"]].tolist() == written["target"].tolist()

    assert main(["report", *argv]) == 0  # the compact report: each head's per-class recall, per model
    assert {"oof_blend.png", "oof_cnn_small.png"} <= {p.name for p in (tmp_path / "runs/digit-letter/report").glob("*.png")}
    print(f"multihead smoke: CV {board.loc[0, 'cv']:.4f} public {board.loc[0, 'public']:.4f} private {board.loc[0, 'private']:.4f}")
