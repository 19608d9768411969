"""Reading the real DACON train.csv, and one clear line for each kind of bad file."""

import numpy as np
import pandas as pd
import pytest

from compkit.data import DataError, load_sample_submission, load_test, load_train


def test_real_train_loads_with_the_readme_counts(dacon, dacon_dir):
    train = load_train(dacon_dir, dacon().competition)
    assert train.images.shape == (2048, 28, 28, 1) and train.images.dtype == np.uint8
    assert train.ids.tolist() == list(range(1, 2049))
    counts = np.bincount(train.labels, minlength=10).tolist()
    assert counts == [191, 202, 233, 205, 207, 225, 212, 194, 182, 197]
    assert set(train.extras["letter"]) == set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert load_test(dacon_dir, dacon().competition) is None  # not shipped
    assert len(load_sample_submission(dacon_dir, dacon().competition)) == 20480


@pytest.fixture(scope="module")
def rows(dacon_dir):
    return pd.read_csv(dacon_dir / "train.csv", nrows=20)


def _break(frame, how):
    frame = frame.copy()
    if how == "nan":
        frame.loc[4, "300"] = np.nan
    elif how == "range":
        frame.loc[4, "300"] = 300
    elif how == "text":
        frame["300"] = frame["300"].astype(object)
        frame.loc[4, "300"] = "x"
    elif how == "pixels":
        frame = frame.drop(columns=["783"])
    elif how == "duplicate":
        frame.loc[4, "id"] = frame.loc[1, "id"]
    elif how == "label":
        frame.loc[4, "digit"] = 11
    elif how == "target":
        frame = frame.drop(columns=["digit"])
    return frame


@pytest.mark.parametrize(
    ("how", "fragment"),
    [
        ("nan", "line 6, column '300': pixel nan is not an integer in 0-255"),
        ("range", "line 6, column '300': pixel 300"),
        ("text", "line 6, column '300': pixel 'x'"),
        ("pixels", "missing column(s) '783'"),
        ("duplicate", "line 6: duplicate id 2 (also on line 3)"),
        ("label", "line 6, column 'digit': label 11 is not one of the classes"),
        ("target", "missing column(s) 'digit'"),
    ],
)
def test_bad_train_file_is_one_line_naming_file_row_and_fix(dacon, rows, tmp_path, how, fragment):
    _break(rows, how).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError) as err:
        load_train(tmp_path, dacon().competition)
    message = str(err.value)
    assert str(tmp_path / "train.csv") in message and fragment in message and "\n" not in message


def test_missing_empty_and_header_only_files(dacon, rows, tmp_path):
    comp = dacon().competition
    with pytest.raises(DataError, match="train.csv: not found in .*download it from https://dacon.io"):
        load_train(tmp_path, comp)
    (tmp_path / "train.csv").write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        load_train(tmp_path, comp)
    rows.head(0).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match="header only"):
        load_train(tmp_path, comp)


def test_sample_submission_with_other_columns(dacon, tmp_path):
    pd.DataFrame({"id": [1], "label": [0]}).to_csv(tmp_path / "submission.csv", index=False)
    with pytest.raises(DataError, match=r"columns \['id', 'label'\] differ from competition.submission_columns"):
        load_sample_submission(tmp_path, dacon().competition)
