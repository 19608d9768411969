"""Digit sequences (SVHN's shape, Goodfellow et al. 2013): a number of 1-5 digits is a length head and five digit heads
with a "none" class, scored by whole-number accuracy. The numbers are composed from scikit-learn's real handwritten
digits (load_digits); every score a test checks is counted here from the written files."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from compkit import tasks
from compkit.cli import main
from compkit.config import ConfigError, Paths, load_config
from compkit.data import load_train
from compkit.datasets import build_digit_sequences
from compkit.errors import DataError
from compkit.formats import format_of, read_submission, to_frame
from conftest import REPO, one_line_error

NAME = "digit-sequences"
FAST = ["--preset", "smoke", "--backbones", "cnn_small", "--set", "train.epochs=2", "--set", "train.process_per_fold=false",
        "--set", "train.batch_size=16", "--set", "folds.n_splits=2"]


def sequence_task(*overrides: str) -> tasks.Task:
    return tasks.of(load_config(NAME, "smoke", list(overrides), REPO / "configs").competition)


def one_hot_pred(task: tasks.Task, length: int, digits: list[int]) -> np.ndarray:
    """One row of probabilities: ``length`` on the length head, ``digits`` on the first positions, "none" elsewhere
    with 0.9 (so "none" beats every symbol inside the length too: :meth:`decide` must never choose it there)."""
    row = np.zeros(task.width)
    spans = task.spans
    row[spans[0][0] + length - 1] = 1
    for position, (start, end) in enumerate(spans[1:]):
        row[end - 1] = 0.9
        if position < len(digits):
            row[start + digits[position]] = 0.8
    return row[None, :]


def test_a_right_length_with_one_wrong_digit_is_a_wrong_number():
    task = sequence_task()
    truth = task.encode(pd.Series(["4071"]), Path("t.csv"), "number")
    right, wrong = one_hot_pred(task, 4, [4, 0, 7, 1]), one_hot_pred(task, 4, [4, 0, 1, 1])
    short = one_hot_pred(task, 3, [4, 0, 7, 1])  # the digits right, the length one short
    assert task.written(task.decide(right)).tolist() == ["4071"]  # "none" (0.9) never decided inside the length
    assert task.written(task.decide(wrong)).tolist() == ["4011"]
    assert task.written(task.decide(short)).tolist() == ["407"]
    assert task.score(truth, right) == 1.0
    assert task.score(truth, wrong) == 0.0 and task.score(truth, short) == 0.0
    both = np.vstack([right, wrong, right, short])
    assert task.score(np.repeat(truth, 4, axis=0), both) == pytest.approx(0.5)
    assert task.metric_names == ["exact_match"]


def test_numbers_round_trip_as_text_with_leading_zeros():
    task = sequence_task()
    numbers = pd.Series(["007", "0", "12345", "90", "5"])
    codes = task.encode(numbers, Path("t.csv"), "number")
    assert codes.shape == (5, 6) and codes.dtype == np.int64
    np.testing.assert_array_equal(codes[0], [2, 0, 0, 7, 10, 10])  # length 3 (index 2), "none" (10) past it
    assert task.written(codes).tolist() == numbers.tolist()
    np.testing.assert_array_equal(task.strata(codes), ["3", "1", "5", "2", "1"])
    assert task.heads == ["length", "digit1", "digit2", "digit3", "digit4", "digit5"]
    assert task.head_classes[1] == [*map(str, range(10)), "none"] and task.width == 5 + 5 * 11


@pytest.mark.parametrize(("number", "fragment"), [
    (np.nan, "an empty cell is not a number of 1 to 5 symbols"),
    ("123456", "'123456' is not a number of 1 to 5 symbols"),
    ("12a", "'12a' is not a number of 1 to 5 symbols"),
    ("1 2", "'1 2' is not a number of 1 to 5 symbols"),
])
def test_a_bad_number_is_one_line_naming_the_file_line_and_column(number, fragment):
    task = sequence_task()
    with pytest.raises(DataError) as err:
        task.encode(pd.Series(["12", "3", number], dtype=object), Path("train.csv"), "number")
    message = str(err.value)
    assert message.startswith("train.csv: line 4, column 'number': ") and fragment in message and "\n" not in message
    assert "fix the row, competition.classes or competition.sequence_length" in message


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["competition.metric='weighted_macro_recall'"], "metric 'weighted_macro_recall' does not apply to task 'sequence'; "
                                                     "use one of ['exact_match']"),
    (["competition.classes=['0', '10']"], "classes ['10']: a sequence's symbols are one character each"),
    (["competition.target_column=''"], 'task = "sequence" reads each number from target_column'),
    (["competition.sequence_length=1"], "competition.sequence_length"),
    (["ensemble.stacking=true"], "ensemble.stacking has no sequence meta-model"),
    (["ensemble.select='hard'"], "ensemble.select = 'hard' (majority vote) needs one class per row"),
    (["train.class_weight='balanced'"], "train.class_weight = 'balanced' weighs one class per row; task 'sequence'"),
])
def test_a_sequence_setting_that_cannot_apply_is_a_config_error(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(NAME, "smoke", overrides, REPO / "configs")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_columns_pooling_keeps_each_column_of_the_feature_maps_left_to_right():
    """cnn_small on a 16x80 canvas: 4x20 maps after two max-pools; ``columns`` gives 20 columns' features (a digit
    moved to another slot moves its features with it), ``avg`` one global average."""
    from compkit.backbones import build_backbone

    columns = build_backbone("cnn_small", (16, 80, 1), 0.25, pooling="columns")
    assert columns.output.shape[1:] == (20 * 32,)
    assert build_backbone("cnn_small", (16, 80, 1), 0.25).output.shape[1:] == (32,)
    canvas = np.zeros((2, 16, 80, 1), dtype=np.float32)
    canvas[0, :, 16:32, 0] = canvas[1, :, 48:64, 0] = np.kron(load_digits().images[0], np.ones((2, 2))) / 16
    features = np.asarray(columns(canvas)).reshape(2, 20, 32)
    np.testing.assert_allclose(features[0, 6:8], features[1, 14:16], rtol=1e-4, atol=1e-5)  # the digit's middle columns
    assert not np.allclose(features[0, 6:8], features[1, 6:8], atol=1e-3)
    with pytest.raises(ConfigError) as err:
        load_config(NAME, "smoke", ["train.backbones=['resnet50']", "backbones.resnet50.input_size=32"], REPO / "configs")
    assert "backbones.resnet50.pooling = 'columns': keras.applications backbones pool by their global average" in str(err.value)


def test_the_submission_is_one_column_of_numbers_read_back_as_text():
    task = sequence_task()
    fmt = format_of(["id", "number"], task.comp, "sample")
    assert fmt.target == "number" and not fmt.heads and not fmt.probabilities
    pred = np.vstack([one_hot_pred(task, 3, [0, 0, 7]), one_hot_pred(task, 1, [9]), one_hot_pred(task, 5, [1, 2, 3, 4, 5])])
    frame = to_frame(fmt, np.array([7, 8, 9]), pred, task, None)
    assert frame["number"].tolist() == ["007", "9", "12345"]
    ids, got = read_submission(io.BytesIO(frame.to_csv(index=False).encode()), fmt, task, source=Path("s.csv"))
    np.testing.assert_array_equal(got.decision, task.decide(pred))


def build(root: Path, train_rows: int, test_rows: int) -> list[str]:
    """The digit-sequence competition built into ``root`` with ``train_rows`` / ``test_rows`` numbers (the config
    under ``root/configs``); the CLI options that run it."""
    configs = root / "configs"
    shutil.copytree(REPO / "configs" / "presets", configs / "presets")
    shutil.copy(REPO / "configs" / f"{NAME}.toml", configs)
    paths = Paths.for_competition(NAME, root)
    paths.data.mkdir(parents=True)
    build_digit_sequences(load_config(NAME, None, [], configs), paths, train_rows, test_rows)
    return ["--competition", NAME, "--root", str(root), "--config-dir", str(configs)]


def test_the_builder_composes_real_digits_from_disjoint_halves(tmp_path):
    """Every slot of every canvas is a load_digits image upscaled 2x (gray 0-16 -> 0-255) whose digit is the number's,
    or blank past the number; no image is in both train and test; lengths 1-5 each appear; leading zeros kept."""
    build(tmp_path, 400, 200)
    data = tmp_path / "data" / NAME
    digits = load_digits()
    upscaled = np.kron(np.rint(digits.images * 255 / 16), np.ones((2, 2))).astype(np.uint8).reshape(len(digits.images), -1)
    source = {row.tobytes(): i for i, row in enumerate(upscaled)}
    used = {}
    for split in ("train", "solution"):
        numbers = pd.read_csv(data / f"{split}.csv", usecols=["id", "number"], dtype={"number": str})
        pixels = pd.read_csv(data / ("train.csv" if split == "train" else "test.csv")).filter(like="pixel")
        canvases = pixels.to_numpy(dtype=np.uint8).reshape(-1, 16, 80)
        assert pixels.shape[1] == 16 * 80 and len(canvases) == len(numbers)
        used[split] = set()
        for canvas, number in zip(canvases, numbers["number"]):
            assert 1 <= len(number) <= 5 and number.isdigit()
            slots = [canvas[:, 16 * s:16 * (s + 1)] for s in range(5)]
            for slot, digit in zip(slots, number):
                image = source[np.ascontiguousarray(slot).reshape(-1).tobytes()]  # KeyError: not a load_digits image
                assert digits.target[image] == int(digit)
                used[split].add(image)
            assert all(not slot.any() for slot in slots[len(number):])
        assert set(numbers["number"].str.len()) == {1, 2, 3, 4, 5}
        assert numbers["number"].str.startswith("0").any()  # a leading zero, kept as text
    assert not used["train"] & used["solution"]
    solution = pd.read_csv(data / "solution.csv")
    assert set(solution["Usage"]) == {"Public", "Private"}
    assert list(pd.read_csv(data / "sample_submission.csv").columns) == ["id", "number"]


def test_folds_are_stratified_by_length_and_the_train_file_reads_as_text(tmp_path):
    argv = build(tmp_path, 400, 40)
    config = load_config(NAME, "smoke", [], tmp_path / "configs")
    train = load_train(tmp_path / "data" / NAME, config.competition)
    numbers = pd.read_csv(tmp_path / "data" / NAME / "train.csv", usecols=["number"], dtype=str)["number"]
    assert tasks.of(config.competition).written(train.labels).tolist() == numbers.tolist()
    assert main(["folds", *argv, "--set", "folds.n_splits=2"]) == 0
    folds = pd.read_csv(tmp_path / f"folds/{NAME}/folds.csv")
    lengths = numbers.str.len().to_numpy()[folds["id"].to_numpy() - 1]
    counts = pd.crosstab(lengths, folds["fold"].to_numpy())
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 1


def test_a_bad_number_in_the_train_file_stops_the_folds_in_one_line(tmp_path, capsys):
    argv = build(tmp_path, 40, 40)
    path = tmp_path / "data" / NAME / "train.csv"
    frame = pd.read_csv(path, dtype={"number": str})
    frame.loc[6, "number"] = "123456"
    frame.to_csv(path, index=False)
    err = one_line_error(capsys, main(["folds", *argv]))
    assert f"{path}: line 8, column 'number': '123456' is not a number of 1 to 5 symbols" in err


@pytest.mark.slow
def test_sequences_end_to_end_scored_by_whole_number_accuracy(tmp_path):
    """Folds, train, ensemble and submit on 1,200 composed numbers: the submission is one column of numbers of 1-5
    digits, and the leaderboard's public / private are the whole-number accuracies counted from the written file
    against solution.csv (strings compared, ids joined); the report draws the heads' recalls."""
    argv = build(tmp_path, 1200, 300)
    for stage in ("folds", "train", "ensemble", "submit"):
        assert main([stage, *argv, *FAST]) == 0, stage
    (path,) = [p for p in (tmp_path / f"submissions/{NAME}").glob("*.csv") if p.name != "leaderboard.csv"]
    written = pd.read_csv(path, dtype=str)
    assert list(written.columns) == ["id", "number"]
    assert written["number"].str.fullmatch(r"[0-9]{1,5}").all()
    solution = pd.read_csv(tmp_path / f"data/{NAME}/solution.csv", dtype=str)
    joined = solution.merge(written, on="id", suffixes=("_true", "_submitted"), validate="one_to_one")
    assert len(joined) == len(solution) == 300
    board = pd.read_csv(tmp_path / f"submissions/{NAME}/leaderboard.csv")
    for part in ("Public", "Private"):
        rows = joined[joined["Usage"] == part]
        assert board.loc[0, part.lower()] == pytest.approx((rows["number_true"] == rows["number_submitted"]).mean(), abs=1e-6)
    assert written["number"].str.len().nunique() > 1  # the model learnt the lengths: not one length for every image
    assert main(["report", *argv, *FAST]) == 0  # the compact report: each head's per-class recall (length, digit1..5), per model
    assert {"oof_blend.png", "oof_cnn_small.png"} <= {p.name for p in (tmp_path / f"runs/{NAME}/report").glob("*.png")}
    print(f"sequence smoke: CV {board.loc[0, 'cv']:.4f} public {board.loc[0, 'public']:.4f} private {board.loc[0, 'private']:.4f}")
