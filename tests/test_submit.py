"""A submission that does not match the sample is refused with one line naming row or column."""

import pandas as pd
import pytest

from compkit.submit import SubmissionError, validate_submission


@pytest.fixture(scope="module")
def sample(dacon_dir):
    return pd.read_csv(dacon_dir / "submission.csv")


def _good(sample):
    return sample.assign(digit=sample["id"] % 10)


def test_a_good_submission_passes(dacon, sample):
    validate_submission(_good(sample), sample, dacon().competition, "sub.csv")


@pytest.mark.parametrize(
    ("breakage", "fragment"),
    [
        (lambda s: s.rename(columns={"digit": "label"}), "columns ['id', 'label'] differ from the sample's ['id', 'digit']"),
        (lambda s: s[["digit", "id"]], "differ from the sample's"),
        (lambda s: s.iloc[:-1], "20479 rows, the sample has 20480"),
        (lambda s: s.astype({"digit": float}).assign(digit=lambda f: f["digit"].where(f.index != 7)), "line 9, column 'digit' is empty"),
        (lambda s: s.iloc[::-1].reset_index(drop=True), "line 2: id 22528 where the sample has 2049"),
        (lambda s: s.assign(digit=s["digit"].where(s.index != 3, 10)), "line 5, column 'digit': label 10 is not one of the classes"),
    ],
)
def test_mismatches_are_refused(dacon, sample, breakage, fragment):
    with pytest.raises(SubmissionError) as err:
        validate_submission(breakage(_good(sample)), sample, dacon().competition, "sub.csv")
    assert str(err.value).startswith("sub.csv: ") and fragment in str(err.value) and "\n" not in str(err.value)
