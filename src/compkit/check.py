"""`compkit check`: validate a competition's config against its data before anything trains."""

from __future__ import annotations

from compkit import console, tasks
from compkit.config import Config, Paths
from compkit.data import load_sample_submission
from compkit.folds import check_inputs, check_pixels, make_folds
from compkit.formats import load_solution, require_scorable, submission_format


def run(config: Config, paths: Paths) -> None:
    """Read every file the config names, check they agree, and print what was found.

    Raises:
        CompkitError: any file is missing or malformed, a test id is also a train id or is not in the
            sample submission, or a class is too rare for the folds (the one-line message names it).
    """
    comp, task = config.competition, tasks.for_config(config)
    train, test = check_inputs(config, paths)  # test checked against train and the sample submission
    sample, fmt = load_sample_submission(paths.data, comp), submission_format(paths.data, comp)
    require_scorable(fmt, task, str(paths.data / comp.sample_submission))
    solution = load_solution(paths.data, comp, fmt)
    folds, holdout = make_folds(train, config, with_holdout=solution is None)  # feasibility only: nothing is written
    train, test = check_pixels(config, paths, len(train.ids) + (len(test.ids) if test is not None else 0), build=False)  # every image read; nothing written (a current cache is read)

    console.table(task.target_table(train.labels), title=f"{comp.name}: the target ({task.kind})")
    scored = f"on {comp.solution_file} ({len(solution)} rows)" if solution is not None else f"on a {len(holdout)}-row holdout"
    console.summary(
        f"check: {comp.name} ({comp.layout}) in {paths.data}: {len(train.ids)} train images of shape "
        f"{tuple(train.images.shape[1:])}, {task.kind} task: {task.describe(train.labels)}, "
        f"test {'with ' + str(len(test.ids)) + ' images' if test is not None else 'absent (the holdout is submitted)'}, "
        f"sample submission {len(sample)} rows {list(fmt.columns)} ({'probabilities' if fmt.probabilities else 'labels'}); {len(folds)} rows in "
        f"{config.folds.n_splits} folds; scored {scored} by {task.scorer.name}"
    )
