"""A submission that does not match the sample is refused with one line naming row or column."""

import numpy as np
import pandas as pd
import pytest

from compkit.errors import CompkitError
from compkit.submit import SubmissionError, validate_submission
from conftest import one_line_error


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


def _proba_sample(sample):
    """DACON's sample ids with Kaggle's probability columns, classes in a shuffled order."""
    frame = sample[["id"]].copy()
    for c in (3, 1, 0, 2, 9, 8, 7, 6, 5, 4):
        frame[str(c)] = 0.1
    return frame


def test_a_probability_header_is_a_probability_format(dacon, sample):
    from compkit.formats import format_of

    comp = dacon().competition.model_copy(update={"submission_columns": None})
    fmt = format_of(list(_proba_sample(sample).columns), comp, "s.csv")
    assert fmt.probabilities and fmt.id_column == "id" and fmt.columns[1] == "3"
    assert format_of(["id", "digit"], comp, "s.csv").target == "digit"
    with pytest.raises(CompkitError, match=r"s.csv: columns \['id', '0', '1'\]: expected an id column"):
        format_of(["id", "0", "1"], comp, "s.csv")
    with pytest.raises(CompkitError, match="differ from competition.submission_columns"):
        format_of(list(_proba_sample(sample).columns), dacon().competition, "s.csv")  # the config says id, digit


@pytest.mark.parametrize(
    ("breakage", "fragment"),
    [
        (lambda s: s.assign(**{"3": s["3"].where(s.index != 5, 1.5)}), "line 7, column '3': 1.5 is not a probability"),
        (lambda s: s.assign(**{"3": s["3"].where(s.index != 2, 0.2)}), "line 4: probabilities sum to 1.1, not 1"),
        (lambda s: s.rename(columns={"3": "three"}), "differ from the sample's"),
    ],
)
def test_bad_probabilities_are_refused(dacon, sample, breakage, fragment):
    comp = dacon().competition.model_copy(update={"submission_columns": None})
    expected = _proba_sample(sample)
    validate_submission(expected, expected, comp, "sub.csv")
    with pytest.raises(SubmissionError) as err:
        validate_submission(breakage(expected), expected, comp, "sub.csv")
    assert str(err.value).startswith("sub.csv: ") and fragment in str(err.value) and "\n" not in str(err.value)


def test_log_loss_with_a_label_sample_is_refused(dacon, dacon_dir, tmp_path, capsys):
    """One-hot labels would be scored, not the model's probabilities: `check` (and `submit`) say so up front."""
    from compkit.cli import main

    argv = ["check", "--competition", "dacon-cv-2020", "--data-dir", str(dacon_dir), "--root", str(tmp_path), "--set", "competition.metric='log_loss'"]
    err = one_line_error(capsys, main(argv))
    assert "submission.csv: metric log_loss scores probabilities, but the sample submission's 'digit' column holds labels" in err


def test_a_probability_solution_may_hold_one_hot_columns_or_the_label(dacon, dacon_dir, tmp_path):
    from compkit.data import load_train
    from compkit.formats import format_of, load_solution

    comp = dacon().competition.model_copy(update={"submission_columns": None})
    train = load_train(dacon_dir, comp)
    ids, labels = train.ids[:50], train.labels[:50]  # real DACON rows standing in for hidden test labels
    fmt = format_of(["id", *map(str, (3, 1, 0, 2, 9, 8, 7, 6, 5, 4))], comp, "s.csv")
    usage = np.where(np.arange(50) % 2 == 0, "Public", "Private")
    one_hot = pd.DataFrame({"id": ids, **{c: (labels == int(c)).astype(int) for c in fmt.columns[1:]}, "Usage": usage})
    one_hot.to_csv(tmp_path / "solution.csv", index=False)
    assert load_solution(tmp_path, comp, fmt)["label"].tolist() == labels.tolist()
    pd.DataFrame({"id": ids, "digit": labels, "Usage": usage}).to_csv(tmp_path / "solution.csv", index=False)  # named as the target
    assert load_solution(tmp_path, comp, fmt)["label"].tolist() == labels.tolist()
    one_hot.assign(**{"3": 1}).to_csv(tmp_path / "solution.csv", index=False)
    with pytest.raises(CompkitError, match=r"solution.csv: line \d+: class columns .* are not one-hot"):
        load_solution(tmp_path, comp, fmt)
