"""`compkit check`: validate a competition's config against its data before anything trains."""

from __future__ import annotations

import numpy as np
import pandas as pd

from compkit import console
from compkit.config import Config, Paths
from compkit.data import load_sample_submission, load_solution, load_test, load_train
from compkit.errors import CompkitError
from compkit.folds import make_folds


def run(config: Config, paths: Paths) -> None:
    """Read every file the config names, check they agree, and print what was found.

    Raises:
        CompkitError: any file is missing or malformed, the test ids do not match the sample
            submission, or a class is too rare for the folds (the one-line message names it).
    """
    comp = config.competition
    train = load_train(paths.data, comp)
    test = load_test(paths.data, comp)
    sample = load_sample_submission(paths.data, comp)
    solution = load_solution(paths.data, comp)
    if test is not None:
        id_column = comp.submission_columns[0]
        if sorted(map(str, sample[id_column])) != sorted(map(str, test.ids)):
            raise CompkitError(
                f"{paths.data / comp.sample_submission}: its {len(sample)} ids are not the {len(test.ids)} test ids; "
                "use the sample submission that ships with this test set"
            )
        clash = np.intersect1d(train.ids.astype(str), test.ids.astype(str))
        if len(clash):
            raise CompkitError(f"{paths.data}: id {clash[0]} is in both train and test; ids must identify one image")
    folds, holdout = make_folds(train, config, with_holdout=solution is None)  # feasibility only: nothing is written

    counts = pd.Series(np.bincount(train.labels, minlength=len(comp.classes)), index=[str(c) for c in comp.classes])
    console.table(counts.rename("rows").rename_axis("class").reset_index(), title=f"{comp.name}: train rows per class")
    scored = f"on {comp.solution_file} ({len(solution)} rows)" if solution is not None else f"on a {len(holdout)}-row holdout"
    console.summary(
        f"check: {comp.name} ({comp.layout}) in {paths.data}: {len(train.ids)} train images of shape "
        f"{tuple(train.images.shape[1:])}, {len(comp.classes)} classes, "
        f"test {'with ' + str(len(test.ids)) + ' images' if test is not None else 'absent (the holdout is submitted)'}, "
        f"sample submission {len(sample)} rows {comp.submission_columns}; {len(folds)} rows in "
        f"{config.folds.n_splits} folds; scored {scored} by {comp.metric}"
    )
